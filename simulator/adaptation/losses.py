"""Loss functions of the CEMA cloud adapter (Chen et al., ICLR 2024), as pure functions.

Facts from the official code (chenyaofo/CEMA, ``codebase/criterion/distillation.py`` and
``codebase/core/tta/cema.py``): entropies use the natural log; every sample weight is
``w = 1 / exp(H - E_0) = exp(E_0 - H)`` with ``H`` detached and ``E_0 = 0.4 ln C`` (static, not the
edge's dynamic threshold); the KL term is summed over classes per sample (temperature 1); the
pseudo-label cross-entropy and the KL term are both weighted by the *teacher's* entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample entropy ``H = -sum_c p_c log p_c`` (nats) of ``softmax(logits)``; shape (B,)."""
    log_probs = logits.log_softmax(dim=1)
    return -(log_probs.exp() * log_probs).sum(dim=1)


def entropy_weights(entropy: torch.Tensor, e0: float) -> torch.Tensor:
    """Sample weights ``exp(E_0 - H)`` (EATA/CEMA), detached from the graph."""
    return torch.exp(e0 - entropy.detach())


def teacher_entropy_loss(logits: torch.Tensor, e0: float) -> torch.Tensor:
    """Foundation-model loss ``mean_i exp(E_0 - H_i) * H_i`` over all samples of the cloud batch."""
    entropy = softmax_entropy(logits)
    return (entropy_weights(entropy, e0) * entropy).mean()


def cema_distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    e0: float,
    *,
    entropy_weight: float = 3.0,
    kl_weight: float = 3.0,
    ce_weight: float = 1.0,
) -> torch.Tensor:
    """Edge-model loss ``a*mean(w_s H(s)) + b*mean(w_t KL(t||s)) + g*mean(w_t CE(s, argmax t))``.

    ``w_s = exp(E_0 - H(s))`` from the student's entropy, ``w_t = exp(E_0 - H(t))`` from the
    teacher's, both detached; ``KL(t||s) = sum_c p_t (log p_t - log p_s)``. The teacher logits are
    constants. Defaults (3, 3, 1) are the released ``conf/cema.conf`` (alpha, beta, gamma).
    """
    teacher_logits = teacher_logits.detach()
    student_entropy = softmax_entropy(student_logits)
    w_student = entropy_weights(student_entropy, e0)
    w_teacher = entropy_weights(softmax_entropy(teacher_logits), e0)

    student_log_probs = student_logits.log_softmax(dim=1)
    teacher_log_probs = teacher_logits.log_softmax(dim=1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(1)
    ce = F.cross_entropy(student_logits, teacher_logits.argmax(dim=1), reduction="none")
    return (
        entropy_weight * (w_student * student_entropy).mean()
        + kl_weight * (w_teacher * kl).mean()
        + ce_weight * (w_teacher * ce).mean()
    )
