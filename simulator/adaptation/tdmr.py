"""TDMR on the cloud: the foundation model is reprogrammed towards the fleet's task and a whole edge
model is rebuilt from it by progressive distillation, then shipped (Xu et al., "Towards Efficient
Task-Driven Model Reprogramming with Foundation Models", arXiv 2304.02263, 2023).

**What the paper states** (its abstract, v1 and v2; no code is published and the stored copies
fleetsim's authors could read held no more than that): the foundation model is *reprogrammed to
project its knowledge into a proxy space*, which eases the mismatch of tasks and the inconsistency of
domains between its pre-training and the target; during that stage the foundation model is *kept
frozen* as a feature extractor; the small target model, of another architecture, is then
*reprogrammed by progressive distillation from the proxy space*, with only limited target data; it
works with CNN and transformer foundation models. Model reprogramming in general (Chen, "Model
Reprogramming: Resource-Efficient Cross-Domain Machine Learning", AAAI 2024) adds a trainable input
transformation and an output (label) mapping around a frozen pre-trained model.

**What fleetsim chooses where the paper is silent** (each choice is an option where it matters):

* *Reprogrammed foundation model* (:class:`ProxySpace`): input transformation
  ``x' = clip(x + input_budget * tanh(W), 0, 1)`` with one learnt pattern ``W`` of the image's shape
  (visual reprogramming's additive pattern, bounded); the frozen model's penultimate features
  ``phi(x')`` (the input of its last ``Linear``, so any zoo or ``timm:`` CNN or transformer works);
  a linear projection ``P`` into a ``proxy_dim``-dimensional proxy space, ``z = P phi``; a linear
  label mapping ``h`` from the proxy space to the task's classes. ``P`` and ``h`` start as the
  foundation model's own classifier (its first ``C`` proxy dimensions are its logits, the other
  ``proxy_dim - C`` a small seeded random projection of its features, ``h`` picks the first ``C``),
  so the reprogrammed model starts exactly as the foundation model and learning only moves it.
  Trained with Adam (``reprogram_lr``) for ``reprogram_steps`` steps on a cross-entropy with the
  foundation model's own predictions on the raw uploads as labels (the fleet's uploads carry none),
  each weighted ``exp(E_0 - H)`` by the foundation model's entropy (CEMA/EATA's reliability weight,
  ``E_0 = e0_factor ln C``), plus the true labels of a small labelled target set when the cloud holds
  one (``labelled_per_domain``, weight 1).
* *Progressive distillation* (:func:`tdmr_distillation_loss`): over the ``distill_steps`` steps of a
  rebuild the target model moves from learning the proxy space to learning the task: step ``k``
  minimises ``alpha_k L_proxy + (1 - alpha_k) L_kd + ce_weight L_ce`` with ``alpha_k`` falling
  linearly from 1 to 0; ``L_proxy`` aligns the edge model's penultimate features, projected into the
  proxy space by a cloud-side linear map ``Q`` (never shipped), with the proxy features:
  ``mean ||Q psi / |Q psi| - z / |z| ||^2``; ``L_kd = T^2 KL(softmax(h z / T) || softmax(s / T))``;
  ``L_ce`` is the weighted cross-entropy against the reprogrammed model's predictions (true labels
  for the labelled set). SGD with momentum 0.9 on the edge model (``lr_edge``; ``Q`` at 10x), train-mode
  BN, warm start from the scope's last model (``warm_start``).
* *Ablations* (``variant``): ``no_proxy`` skips the reprogramming (no stage 1): the proxy space is
  the frozen foundation model's own feature space and its logits are the targets, schedule kept;
  ``no_progressive`` keeps the proxy space with a constant ``alpha = 0.5`` (the same mean weights as
  the linear schedule, no curriculum); ``plain_kd`` is Hinton distillation from the frozen
  foundation model (``L_kd + ce_weight L_ce``, no proxy, no feature term).
* *When* (``rebuild``): every ``interval_s`` of simulated time, after ``every_uploads`` new uploads,
  or on a detected shift: the mean over feature dimensions of the symmetric KL divergence between
  diagonal Gaussians fitted to low-level statistics of the last ``shift_window`` uploads and of the
  window at the last rebuild exceeds ``shift_threshold``; the statistics are the per-channel mean
  and standard deviation of the input to the foundation model's first BN layer
  (:func:`shift_features`: a robust model's penultimate features barely move under noise) (the first model of a scope is
  built once ``min_uploads`` have arrived). Every trigger waits for ``min_uploads`` new uploads.
* *What is trained on*: the scope's uploads (the last ``store_capacity``, uniform minibatches of
  ``batch_size``) and the labelled set (``labelled_batch`` per step).

Cloud work is counted in images for :class:`simulator.fleet.cloud_time.CloudTime`: a reprogramming
step runs the foundation model forward twice (labels, and through the pattern) and backward once (to
the input pattern; frozen weights); a distillation step runs it forward once and the edge model
forward once and backward at twice a forward's work (weight and input gradients, counted as two
backward images) when conv/linear weights train.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Hashable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from simulator.adaptation.base import ADAPTERS, AdaptStats, EdgeNorm, cpu_copy
from simulator.adaptation.losses import entropy_weights, softmax_entropy
from simulator.adaptation.replay import ReplayBuffer
from simulator.adaptation.whole_model import ModelShipping, WholeModelAdapter
from simulator.models.norm import get_norm_state, norm_affine_parameters, use_batch_statistics

__all__ = [
    "ProxySpace",
    "TdmrAdapter",
    "classifier_head",
    "gaussian_shift",
    "input_transform",
    "progressive_alpha",
    "proxy_alignment_loss",
    "reprogramming_loss",
    "soft_kd_loss",
    "tdmr_distillation_loss",
]

Variant = Literal["tdmr", "no_proxy", "no_progressive", "plain_kd"]
Trigger = Literal["schedule", "uploads", "shift"]


# -- the losses, as pure functions -----------------------------------------------------------------
def input_transform(images: torch.Tensor, pattern: torch.Tensor, budget: float) -> torch.Tensor:
    """Reprogrammed input ``clip(x + budget * tanh(pattern), 0, 1)`` (images in [0, 1])."""
    return (images + budget * torch.tanh(pattern)).clamp(0.0, 1.0)


def reprogramming_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Stage 1: ``mean_i w_i CE(logits_i, y_i)`` (weights detached)."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    return (weights.detach() * ce).mean()


def proxy_alignment_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``mean_i || s_i / |s_i| - t_i / |t_i| ||^2`` between rows (``= 2 - 2 cos``); teacher
    detached."""
    s = F.normalize(student, dim=1)
    t = F.normalize(teacher.detach(), dim=1)
    return (s - t).pow(2).sum(dim=1).mean()


def soft_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton's ``T^2 mean_i KL(softmax(t_i / T) || softmax(s_i / T))`` (KL summed over classes)."""
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1)
    return t * t * kl.mean()


def progressive_alpha(step: int, steps: int, variant: Variant = "tdmr") -> float:
    """Weight of the proxy-space term at distillation step ``step`` of ``steps``: linear from 1 to
    0 (``tdmr``, ``no_proxy``), 0.5 throughout (``no_progressive``), 0 (``plain_kd``)."""
    if steps < 1 or not 0 <= step < steps:
        raise ValueError(f"step must be in [0, {steps}), got {step}")
    if variant == "plain_kd":
        return 0.0
    if variant == "no_progressive":
        return 0.5
    return 1.0 - step / (steps - 1) if steps > 1 else 0.0


def tdmr_distillation_loss(
    student_proxy: torch.Tensor | None,
    teacher_proxy: torch.Tensor | None,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    label_weights: torch.Tensor,
    alpha: float,
    *,
    temperature: float = 4.0,
    ce_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage 2 at one step: ``alpha L_proxy + (1 - alpha) L_kd + ce_weight L_ce`` (see module
    docstring); ``L_proxy`` only when ``alpha > 0``. Returns the loss and its parts."""
    kd = soft_kd_loss(student_logits, teacher_logits, temperature)
    ce = reprogramming_loss(student_logits, labels, label_weights)
    total = (1.0 - alpha) * kd + ce_weight * ce
    parts = {"kd": float(kd.detach()), "ce": float(ce.detach())}
    if alpha > 0:
        if student_proxy is None or teacher_proxy is None:
            raise ValueError("alpha > 0 needs the proxy features of student and teacher")
        proxy = proxy_alignment_loss(student_proxy, teacher_proxy)
        total = total + alpha * proxy
        parts["proxy"] = float(proxy.detach())
    return total, parts


def gaussian_shift(
    ref_mean: torch.Tensor, ref_var: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
) -> float:
    """Mean over dimensions of the symmetric KL divergence between diagonal Gaussians
    ``N(ref_mean, ref_var)`` and ``N(mean, var)`` (variances floored at 1e-5)."""
    v1, v2 = ref_var.clamp_min(1e-5), var.clamp_min(1e-5)
    d2 = (mean - ref_mean).pow(2)
    kl12 = 0.5 * (v1 / v2 + d2 / v2 - 1 + torch.log(v2 / v1))
    kl21 = 0.5 * (v2 / v1 + d2 / v1 - 1 + torch.log(v1 / v2))
    return float((0.5 * (kl12 + kl21)).mean())


# -- models ----------------------------------------------------------------------------------------
def classifier_head(model: nn.Module) -> nn.Linear:
    """The model's last ``Linear`` layer: its input is the penultimate features, its output the
    logits (CIFAR ResNets' ``linear``, timm's ``fc`` / ``head``)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no Linear classifier layer to read features at"
        )
    return linears[-1]


def shift_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Per image, what the shift test compares: the per-channel spatial mean and standard deviation
    of the input to the model's first BatchNorm layer (low-level statistics, which corruptions move
    even where a robust model's penultimate features do not); a model without BatchNorm gives its
    penultimate features. Eval mode, one forward pass."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return features_and_logits(model, images)[0]
    captured: list[torch.Tensor] = []
    handle = norms[0].register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0]))
    try:
        model(images)
    finally:
        handle.remove()
    x = captured[-1]
    if x.ndim <= 2:
        return x.flatten(1)
    flat = x.flatten(2)
    return torch.cat([flat.mean(dim=2), flat.std(dim=2, correction=0)], dim=1)


def features_and_logits(
    model: nn.Module, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (input of :func:`classifier_head`) and logits of one forward pass."""
    captured: list[torch.Tensor] = []
    handle = classifier_head(model).register_forward_hook(
        lambda _module, inputs, _output: captured.append(inputs[0])
    )
    try:
        logits = model(images)
    finally:
        handle.remove()
    return captured[-1].flatten(1), logits


class ProxySpace(nn.Module):
    """The trainable part of the reprogrammed foundation model: the input pattern, the projection
    into the proxy space and the label mapping out of it (the foundation model stays outside,
    frozen). ``head``: the foundation model's classifier, to start from its own logits."""

    def __init__(
        self,
        image_shape: tuple[int, ...],
        head: nn.Linear,
        proxy_dim: int,
        num_classes: int,
        input_budget: float,
        generator: torch.Generator,
    ):
        super().__init__()
        feature_dim = head.in_features
        self.input_budget = input_budget
        self.pattern = nn.Parameter(torch.zeros(1, *image_shape))
        self.project = nn.Linear(feature_dim, proxy_dim)
        self.label_map = nn.Linear(proxy_dim, num_classes)
        with torch.no_grad():
            scale = 0.1 / math.sqrt(feature_dim)
            self.project.weight.copy_(torch.randn(proxy_dim, feature_dim, generator=generator))
            self.project.weight.mul_(scale)
            self.project.bias.zero_()
            self.label_map.weight.zero_()
            self.label_map.bias.zero_()
            if head.out_features == num_classes and proxy_dim >= num_classes:
                self.project.weight[:num_classes].copy_(head.weight.detach().float().cpu())
                if head.bias is not None:
                    self.project.bias[:num_classes].copy_(head.bias.detach().float().cpu())
                self.label_map.weight[:, :num_classes].copy_(torch.eye(num_classes))
            else:  # another label set: a random mapping to learn (needs labels to mean anything)
                self.label_map.weight.copy_(
                    torch.randn(num_classes, proxy_dim, generator=generator) / math.sqrt(proxy_dim)
                )

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        return input_transform(images, self.pattern, self.input_budget)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Proxy features and task logits of foundation-model features."""
        proxy = self.project(features)
        return proxy, self.label_map(proxy)


def _scope_seed(seed: int, scope: Hashable) -> int:
    key = (
        int(scope)
        if isinstance(scope, (int, np.integer)) and not isinstance(scope, bool) and scope >= 0
        else zlib.crc32(repr(scope).encode())
    )
    return int(np.random.SeedSequence([seed, 21, key]).generate_state(1, np.uint64)[0])


@dataclass
class _Scope:
    """What one scope owns: its uploads, its newest model, the reprogramming and the student's
    projection (kept across rebuilds), and the trigger's bookkeeping."""

    store: ReplayBuffer
    generator: torch.Generator
    weights: dict[str, torch.Tensor] | None = None  # newest model (None: the source)
    version: int = 0
    uploads: int = 0
    uploads_at_rebuild: int = 0
    last_rebuild_s: float = 0.0
    proxy: ProxySpace | None = None
    projection: nn.Linear | None = None
    window: torch.Tensor | None = None  # foundation features of the latest uploads (shift)
    reference: tuple[torch.Tensor, torch.Tensor] | None = None
    last_shift: float = 0.0
    reasons: Counter = field(default_factory=Counter)


@ADAPTERS.register("tdmr")
class TdmrAdapter(WholeModelAdapter):
    """TDMR: reprogram the foundation model, distil a whole edge model progressively, ship it."""

    method_names = {"cema": "TDMR", "all": "TDMR (upload-all)"}
    colour, marker, rank = "#CC79A7", "P", 10  # after CEMA

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        variant: Variant = Field(
            "tdmr",
            description="tdmr (reprogramming + proxy space + progressive distillation), or an "
            "ablation: no_proxy (no reprogramming; the frozen foundation model's own features), "
            "no_progressive (constant proxy/task weights), plain_kd (Hinton KD from the frozen "
            "foundation model)",
        )
        rebuild: Trigger = Field(
            "uploads",
            description="when a scope's model is rebuilt: schedule (every interval_s), uploads "
            "(every every_uploads new uploads) or shift (foundation features of the latest "
            "uploads drift from those at the last rebuild)",
        )
        interval_s: float = Field(30.0, gt=0, description="rebuild period, simulated s (schedule)")
        every_uploads: int = Field(512, gt=0, description="new uploads per rebuild (uploads)")
        min_uploads: int = Field(
            64, gt=0, description="new uploads a scope needs before any rebuild (every trigger)"
        )
        shift_window: int = Field(
            128, gt=1, description="uploads whose foundation features the shift test compares"
        )
        shift_threshold: float = Field(
            0.25, gt=0, description="symmetric Gaussian KL (mean per feature) that counts as shift"
        )
        ship: Literal["full", "changed", "quantized"] = Field(
            "full",
            description="what goes down: the whole model (its serialized state_dict), only the "
            "tensors that changed since the device's model, or conv/linear weights quantized per "
            "output channel (quant_bits) with the rest in float32",
        )
        quant_bits: Literal[8, 4] = Field(8, description="weight bits of a quantized payload")
        store_capacity: int = Field(
            4096, gt=0, description="uploads kept per scope for rebuilding (FIFO)"
        )
        batch_size: int = Field(64, gt=1, description="uploads per training step (both stages)")
        labelled_per_domain: int = Field(
            0,
            ge=0,
            description="labelled target images per stream domain held by the cloud (drawn from "
            "the dataset's train split, corrupted as the domain); 0: none, the foundation "
            "model's own predictions label everything",
        )
        labelled_batch: int = Field(16, ge=0, description="labelled images added to each step")
        reprogram_steps: int = Field(
            50, ge=0, description="stage 1: steps reprogramming the foundation model per rebuild"
        )
        reprogram_lr: float = Field(1e-3, gt=0, description="stage 1: Adam learning rate")
        input_budget: float = Field(
            0.05, ge=0, le=1, description="stage 1: L-inf bound of the input pattern (pixels 0-1)"
        )
        proxy_dim: int = Field(64, gt=1, description="dimensions of the proxy space")
        distill_steps: int = Field(
            100, gt=0, description="stage 2: progressive-distillation steps per rebuild"
        )
        lr_edge: float = Field(1e-3, gt=0, description="stage 2: SGD learning rate (momentum 0.9)")
        temperature: float = Field(4.0, gt=0, description="stage 2: distillation temperature")
        ce_weight: float = Field(
            0.5, ge=0, description="stage 2: weight of the (pseudo-)label cross-entropy"
        )
        e0_factor: float = Field(
            0.4, gt=0, le=1, description="E_0 = e0_factor ln C in the label weights exp(E_0 - H)"
        )
        trainable: Literal["all", "norm", "norm_and_head"] = Field(
            "all",
            description="edge parameters trained: all, the BN affine only, or BN affine and the "
            "classifier (with ship: changed, the untouched layers are not sent)",
        )
        warm_start: bool = Field(True, description="start each rebuild from the scope's last model")
        teacher_norm: Literal["batch", "running"] = Field(
            "batch",
            description="foundation-model BN during rebuilds: each batch's statistics, or its "
            "pretrained running statistics",
        )
        edge_norm: Literal["batch", "eval"] = Field(
            "batch",
            description="how devices normalise with the shipped model: each test batch's "
            "statistics with its BN affine, or its running statistics (from the uploads)",
        )

        @model_validator(mode="after")
        def _sizes_fit(self) -> TdmrAdapter.Config:
            if self.rebuild == "uploads" and self.every_uploads < self.min_uploads:
                raise ValueError(
                    f"every_uploads ({self.every_uploads}) is below min_uploads "
                    f"({self.min_uploads}): rebuilds would wait for min_uploads anyway"
                )
            if self.store_capacity < self.min_uploads:
                raise ValueError(
                    f"store_capacity ({self.store_capacity}) is below min_uploads "
                    f"({self.min_uploads})"
                )
            return self

    needs_teacher = True
    edge_norm = "batch"

    @classmethod
    def edge_norm_for(cls, config: BaseModel | None) -> EdgeNorm:
        cfg = cls.config_or_default(config)
        return cfg.edge_norm

    def __init__(
        self,
        edge_model: nn.Module,
        teacher: nn.Module | None,
        config: BaseModel | None,
        num_classes: int,
        seed: int,
    ):
        super().__init__(edge_model, teacher, config, num_classes, seed)
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        assert self.teacher is not None
        self.edge_norm = cfg.edge_norm  # type: ignore[misc]
        if cfg.proxy_dim < num_classes:
            raise ValueError(
                f"cloud.tdmr.proxy_dim ({cfg.proxy_dim}) must be at least the number of classes "
                f"({num_classes}): the proxy space starts as the foundation model's logits"
            )
        self.teacher.eval().requires_grad_(False)
        self.edge_model.eval()
        self.e0 = cfg.e0_factor * math.log(num_classes)
        self._source_weights = {
            k: v.detach().cpu().clone() for k, v in edge_model.state_dict().items()
        }
        self._scopes: dict[Hashable, _Scope] = {}
        self._labelled: tuple[torch.Tensor, torch.Tensor] | None = None
        self._device = next(self.edge_model.parameters()).device
        self.rebuilds = 0

    # -- what the fleet asks -----------------------------------------------------------------------
    def shipping(self) -> ModelShipping:
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        return ModelShipping(kind=cfg.ship, bits=cfg.quant_bits)

    def tick_s(self) -> float | None:
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        return cfg.interval_s if cfg.rebuild == "schedule" else None

    def labelled_per_domain(self) -> int:
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        return cfg.labelled_per_domain

    def hold_labelled(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8 or len(images) != len(labels):
            raise ValueError("the labelled set is uint8 images (n, C, H, W) with n labels")
        self._labelled = (images.clone(), labels.to(torch.long).clone())

    def version(self, scope: Hashable) -> int:
        return self._scopes[scope].version if scope in self._scopes else 0

    def model_state(self, scope: Hashable) -> dict[str, torch.Tensor]:
        state = self._scopes.get(scope)
        weights = self._source_weights if state is None or state.weights is None else state.weights
        return {k: v.clone() for k, v in weights.items()}

    def norm_state(self, scope: Hashable) -> dict[str, torch.Tensor]:
        model = self._loaded(self.model_state(scope))
        try:
            return cpu_copy(get_norm_state(model))
        finally:
            self._restore_source()

    def uploads(self, scope: Hashable) -> int:
        """Uploads ``scope`` has received so far."""
        return self._scopes[scope].uploads if scope in self._scopes else 0

    def summary_figures(self) -> dict[str, int | float]:
        reasons: Counter = Counter()
        for state in self._scopes.values():
            reasons.update(state.reasons)
        return {f"rebuilds_{reason}": int(n) for reason, n in sorted(reasons.items())}

    # -- uploads and triggers ----------------------------------------------------------------------
    def _scope(self, scope: Hashable) -> _Scope:
        if scope not in self._scopes:
            cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
            self._scopes[scope] = _Scope(
                store=ReplayBuffer(cfg.store_capacity),
                generator=torch.Generator().manual_seed(_scope_seed(self.seed, scope)),
            )
        return self._scopes[scope]

    def observe(self, scope: Hashable, images: torch.Tensor) -> AdaptStats:
        """Store one message's uploads (float [0, 1]); with the shift trigger, also the foundation
        model's features of them (one forward pass, counted)."""
        if images.ndim != 4:
            raise ValueError(f"expected uploads as (n, C, H, W), got shape {tuple(images.shape)}")
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        state = self._scope(scope)
        state.store.add(images)
        state.uploads += len(images)
        if cfg.rebuild != "shift" or not len(images):
            return AdaptStats()
        with torch.no_grad():
            features = shift_features(self.teacher, self._on_device(images))  # type: ignore[arg-type]
        features = features.float().cpu()
        window = features if state.window is None else torch.cat([state.window, features])
        state.window = window[-cfg.shift_window :]
        return AdaptStats(steps=1, teacher_forward=len(images))

    def rebuild_reason(self, scope: Hashable, now_s: float) -> str | None:
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        state = self._scopes.get(scope)
        if state is None:
            return None
        new = state.uploads - state.uploads_at_rebuild
        if new < cfg.min_uploads:
            return None
        if cfg.rebuild == "schedule":
            return "schedule" if now_s - state.last_rebuild_s >= cfg.interval_s else None
        if cfg.rebuild == "uploads":
            return "uploads" if new >= cfg.every_uploads else None
        if state.window is None or len(state.window) < min(cfg.shift_window, cfg.min_uploads):
            return None
        if state.reference is None:
            return "first"
        state.last_shift = gaussian_shift(*state.reference, *_moments(state.window))
        return "shift" if state.last_shift > cfg.shift_threshold else None

    # -- the rebuild -------------------------------------------------------------------------------
    def rebuild(self, scope: Hashable, now_s: float, reason: str = "requested") -> AdaptStats:
        """Stage 1 (reprogram the foundation model) and stage 2 (progressive distillation into the
        edge model) on the scope's uploads; the scope's version goes up by one."""
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        state = self._scope(scope)
        if not len(state.store):
            raise ValueError(f"scope {scope!r} has no uploads to rebuild its model from")
        state.reasons[reason] += 1
        state.uploads_at_rebuild = state.uploads
        state.last_rebuild_s = now_s
        if state.window is not None:
            state.reference = _moments(state.window)
        work = Counter()
        with torch.inference_mode(False), torch.enable_grad():
            if cfg.variant in ("tdmr", "no_progressive"):
                self._reprogram(state, work)
            loss = self._distill(state, work)
        state.version += 1
        self.rebuilds += 1
        return AdaptStats(
            steps=work["steps"],
            samples=work["samples"],
            teacher_steps=work["teacher_steps"],
            loss=loss,
            teacher_forward=work["teacher_forward"],
            teacher_backward=work["teacher_backward"],
            edge_forward=work["edge_forward"],
            edge_backward=work["edge_backward"],
        )

    def _on_device(self, images: torch.Tensor) -> torch.Tensor:
        return self.layout(images.to(self._device, dtype=torch.float32))

    def _teacher_norm(self):  # noqa: ANN202 - a context manager
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        assert self.teacher is not None
        return use_batch_statistics(self.teacher) if cfg.teacher_norm == "batch" else nullcontext()

    def _minibatch(self, state: _Scope) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Uploads (float [0, 1]) and, when the cloud holds a labelled set, labelled images with
        their labels appended (returned as the number of unlabelled rows and the labels)."""
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        uploads = state.store.sample(min(cfg.batch_size, len(state.store)), state.generator)
        if self._labelled is None or not cfg.labelled_batch:
            return uploads, None
        images, labels = self._labelled
        pick = torch.randperm(len(images), generator=state.generator)[: cfg.labelled_batch]
        labelled = images[pick].float().div(255.0)
        return torch.cat([uploads, labelled]), labels[pick]

    def _labels(
        self, logits: torch.Tensor, true_labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets and weights: the given logits' predictions weighted ``exp(E_0 - H)``; the
        labelled rows (the last ones) their true labels, weight 1."""
        labels = logits.argmax(dim=1)
        weights = entropy_weights(softmax_entropy(logits), self.e0)
        if true_labels is not None:
            k = len(true_labels)
            labels = torch.cat([labels[: len(labels) - k], true_labels.to(labels.device)])
            weights = torch.cat([weights[: len(weights) - k], torch.ones(k, device=weights.device)])
        return labels, weights

    def _proxy_space(self, state: _Scope, image_shape: tuple[int, ...]) -> ProxySpace:
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        if state.proxy is None:
            assert self.teacher is not None
            state.proxy = ProxySpace(
                image_shape,
                classifier_head(self.teacher),
                cfg.proxy_dim,
                self.num_classes,
                cfg.input_budget,
                state.generator,
            ).to(self._device)
        return state.proxy

    def _reprogram(self, state: _Scope, work: Counter) -> None:
        """Stage 1: train the input pattern, the projection and the label mapping around the
        frozen foundation model."""
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        assert self.teacher is not None
        optimizer: torch.optim.Optimizer | None = None
        for _ in range(cfg.reprogram_steps):
            images, true_labels = self._minibatch(state)
            x = self._on_device(images)
            proxy = self._proxy_space(state, tuple(images.shape[1:]))
            if optimizer is None:  # fresh Adam moments per rebuild; the proxy space persists
                optimizer = torch.optim.Adam(proxy.parameters(), lr=cfg.reprogram_lr)
            with self._teacher_norm():
                with torch.no_grad():
                    _, raw_logits = features_and_logits(self.teacher, x)
                labels, weights = self._labels(raw_logits, true_labels)
                features, _ = features_and_logits(self.teacher, proxy.transform(x))
                _, logits = proxy(features)
                loss = reprogramming_loss(logits, labels, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n = len(images)
            work.update(steps=1, teacher_steps=1, teacher_forward=2 * n, teacher_backward=n)

    @torch.no_grad()
    def _teacher_targets(self, state: _Scope, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Proxy features and task logits of the (reprogrammed) foundation model for ``x``."""
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        assert self.teacher is not None
        with self._teacher_norm():
            if cfg.variant in ("tdmr", "no_progressive"):
                proxy = self._proxy_space(state, tuple(x.shape[1:]))
                features, _ = features_and_logits(self.teacher, proxy.transform(x))
                return proxy(features)
            return features_and_logits(self.teacher, x)

    def _projection(self, state: _Scope, teacher_dim: int) -> nn.Linear:
        if state.projection is None:
            student_dim = classifier_head(self.edge_model).in_features
            projection = nn.Linear(student_dim, teacher_dim)
            with torch.no_grad():
                projection.weight.copy_(
                    torch.randn(teacher_dim, student_dim, generator=state.generator)
                    / math.sqrt(student_dim)
                )
                projection.bias.zero_()
            state.projection = projection.to(self._device)
        return state.projection

    def _trainable(self) -> list[nn.Parameter]:
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        if cfg.trainable == "all":
            return list(self.edge_model.parameters())
        params = norm_affine_parameters(self.edge_model)
        if cfg.trainable == "norm_and_head":
            head = classifier_head(self.edge_model)
            params += [p for p in (head.weight, head.bias) if p is not None]
        return params

    def _loaded(self, weights: dict[str, torch.Tensor]) -> nn.Module:
        with torch.no_grad():
            self.edge_model.load_state_dict(weights)
        return self.edge_model

    def _restore_source(self) -> None:
        self._loaded(self._source_weights)
        self.edge_model.eval().requires_grad_(False)

    def _student_norm(self):  # noqa: ANN202 - a context manager
        return use_batch_statistics(self.edge_model) if self.edge_norm == "batch" else nullcontext()

    def _distill(self, state: _Scope, work: Counter) -> float:
        """Stage 2: progressive distillation from the proxy space into the whole edge model."""
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        start = state.weights if cfg.warm_start and state.weights is not None else None
        student = self._loaded(start if start is not None else self._source_weights)
        params = self._trainable()
        student.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        groups: list[dict] = [{"params": params, "lr": cfg.lr_edge}]
        projection: nn.Linear | None = None
        if cfg.variant != "plain_kd":  # the student's way into the proxy space (cloud-side only)
            assert self.teacher is not None
            proxy_dim = (
                cfg.proxy_dim
                if cfg.variant in ("tdmr", "no_progressive")
                else classifier_head(self.teacher).in_features
            )
            projection = self._projection(state, proxy_dim)
            groups.append({"params": list(projection.parameters()), "lr": 10 * cfg.lr_edge})
        optimizer = torch.optim.SGD(groups, lr=cfg.lr_edge, momentum=0.9)
        weight_work = 2 if cfg.trainable != "norm" else 1  # weight + input gradients
        losses: list[float] = []
        try:
            for k in range(cfg.distill_steps):
                alpha = progressive_alpha(k, cfg.distill_steps, cfg.variant)
                images, true_labels = self._minibatch(state)
                x = self._on_device(images)
                teacher_proxy, teacher_logits = self._teacher_targets(state, x)
                labels, weights = self._labels(teacher_logits, true_labels)
                student.train()
                features, logits = features_and_logits(student, x)
                loss, _ = tdmr_distillation_loss(
                    projection(features) if projection is not None else None,
                    teacher_proxy,
                    logits,
                    teacher_logits,
                    labels,
                    weights,
                    alpha,
                    temperature=cfg.temperature,
                    ce_weight=cfg.ce_weight,
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                n = len(images)
                work.update(
                    steps=1,
                    samples=n,
                    teacher_forward=n,
                    edge_forward=n,
                    edge_backward=weight_work * n,
                )
            state.weights = {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}
        finally:
            self._restore_source()
        return float(np.mean(losses))

    # -- evaluation (tests, analysis) --------------------------------------------------------------
    @torch.no_grad()
    def heldout_distillation_loss(
        self,
        scope: Hashable,
        images: torch.Tensor,
        weights: dict[str, torch.Tensor] | None = None,
    ) -> float:
        """The task part of the distillation loss (``L_kd + ce_weight L_ce``, alpha = 0) of an edge
        model (``weights``; default the scope's newest) against the scope's current teacher, on
        ``images`` (float [0, 1]) the rebuild never saw, normalised as the edge would."""
        cfg: TdmrAdapter.Config = self.config  # type: ignore[assignment]
        state = self._scope(scope)
        x = self._on_device(images)
        _, teacher_logits = self._teacher_targets(state, x)
        labels, label_weights = self._labels(teacher_logits, None)
        student = self._loaded(weights if weights is not None else self.model_state(scope))
        try:
            student.eval()
            with self._student_norm():
                logits = student(x)
            loss, _ = tdmr_distillation_loss(
                None,
                None,
                logits,
                teacher_logits,
                labels,
                label_weights,
                0.0,
                temperature=cfg.temperature,
                ce_weight=cfg.ce_weight,
            )
        finally:
            self._restore_source()
        return float(loss)


def _moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    var, mean = torch.var_mean(features, dim=0, correction=0)
    return mean, var
