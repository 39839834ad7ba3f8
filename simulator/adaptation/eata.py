"""EATA on the cloud (Niu et al., "Efficient Test-Time Model Adaptation without Forgetting",
ICML 2022; official code mr-eggplant/EATA), run without a teacher over the uploaded samples.

Per full cloud batch of ``batch_size`` uploads (FIFO, carry-over as in Tent), with BN normalising
by the batch's statistics (the whole batch is forwarded, as released), filtered as in the release
(``cloud_filter: true``; ``auto`` resolves to it behind any upload policy but ``eata``):

1. reliable: keep ``H < E_0``, ``E_0 = e0_factor * ln C`` (paper Eqn. 3, ``e_margin``);
2. non-redundant (Eqns. 4-5): keep reliable samples with ``|cos(p_avg, p_i)| < d_margin``, where
   ``p_avg`` is the scope's moving average of kept probabilities: on its first batch with reliable
   samples it becomes their mean (no redundancy filter yet), afterwards
   ``p_avg <- 0.9 p_avg + 0.1 mean(p_kept)`` (unchanged when nothing is kept);
3. loss ``mean_kept exp(E_0 - H_i) H_i`` (weights detached) ``+ fisher_alpha *
   sum_k F_k (theta_k - theta0_k)^2`` over the BN affine, ``theta0`` the source affine (Eqns. 6-9);
   no step when no sample is kept.

Filtered once. Behind the ``eata`` upload policy the devices have already applied steps 1-2 to
their own predictions (with their own ``p_avg``) and upload only what they keep, so
``cloud_filter: auto`` resolves to ``false``: every upload enters the loss of step 3. That is how
CEMA's cloud-edge EATA baseline runs (chenyaofo/CEMA, ``codebase/core/tta/eata.py``: filter the
batch, then forward and step on the kept samples only, so BN normalises with their statistics).
Filtering the uploads a second time on the cloud (``true``, fleetsim before 2026-11-30) drops
samples the devices chose, by a cloud ``p_avg`` of its own. An adapter built without a scenario
treats ``auto`` as ``true``.

When it steps (``step_on``). The released cloud-edge baseline steps once per *edge batch*, on
that batch's kept samples, however few: ``step_on: edge_batch`` (``auto`` behind the ``eata``
policy) takes one step per upload message (or per group of messages ``cloud.gather`` serves
together) on all its samples, with no carry-over. ``cloud_batch`` (``auto`` behind any other
policy, and fleetsim's behaviour before 2026-12-05 everywhere) waits for ``batch_size`` uploads.
An adapter built without a scenario treats ``auto`` as ``cloud_batch``.

Fisher information. The released ``main.py`` estimates it before adaptation from clean source
samples (``fisher_size = 2000``), each batch's squared gradient of the cross-entropy to the
model's own argmax pseudo-labels, averaged over batches; the paper describes it as estimated from
test samples with generated pseudo-labels. The cloud has no source data, so here it is estimated
per scope from its first ``fisher_samples`` uploads, one squared gradient per cloud batch, always
at the *source* affine (the anchor) with batch statistics; the regulariser uses the running
estimate from the first batch on and freezes it once ``fisher_samples`` uploads are counted. The
estimate costs one extra forward/backward per cloud batch until then. ``fisher_alpha = 0``
turns it off (the paper's ETA).

Defaults aim at the paper's CIFAR-10-C setting. The release (``main.py``) covers only ImageNet:
SGD, momentum 0.9, ``lr = 2.5e-4``, batch 64, ``E_0 = 0.4 ln 1000``, ``d_margin = 0.05``,
``fisher_alpha = 2000``, 2000 Fisher samples. For CIFAR-10 the paper sets ``d_margin = 0.4`` and
``fisher_alpha = 1`` (as the CIFAR-10-C config of mariodoebler/test-time-adaptation does too;
0.05 is too tight for 10 classes: a confident 10-class prediction has ``|cos|`` of about 0.3 to a
flat ``p_avg``) and ``lr = 0.005`` with SGD, momentum 0.9 and batch 64; ``E_0 = 0.4 ln C`` as
everywhere. Set ``optimizer: adam, lr: 0.001, batch_size: 200`` for the Tent-style CIFAR setting.

``edge_norm = "batch"`` for the same reason as Tent: EATA drops the running statistics
(``track_running_stats = False``) and always normalises with the test batch, so the edge uses the
downloaded affine with its own test-batch statistics; downloads carry the adapted affine and the
source running statistics, which fully define the edge model in that mode.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.func import functional_call

from simulator.adaptation.base import ADAPTERS
from simulator.adaptation.losses import entropy_weights, softmax_entropy
from simulator.adaptation.tent import EntropyAdapter, EntropyScope, Optimizer
from simulator.models.norm import use_batch_statistics

__all__ = ["EataAdapter", "EataFilter", "eata_filter"]


@dataclass(frozen=True)
class EataFilter:
    """Outcome of EATA's sample selection on one batch (masks over the whole batch)."""

    reliable: torch.Tensor  # bool (B,): H < E_0
    kept: torch.Tensor  # bool (B,): reliable and not redundant
    mean_probs: torch.Tensor | None  # the updated moving average p_avg


def eata_filter(
    probs: torch.Tensor,
    entropy: torch.Tensor,
    e0: float,
    mean_probs: torch.Tensor | None,
    d_margin: float,
    ema_momentum: float = 0.9,
    filter_redundant: bool = True,
) -> EataFilter:
    """EATA's reliable + non-redundant selection (Eqns. 3-5) and the new moving average.

    ``probs`` (B, C) softmax, ``entropy`` (B,) in nats. Without ``mean_probs`` (first batch) every
    reliable sample is kept and ``p_avg`` starts as their mean; afterwards reliable samples with
    ``|cos(p_avg, p)| >= d_margin`` are redundant and ``p_avg`` moves towards the kept ones' mean.
    Shared by the cloud adapter and the ``eata`` upload policy, so both keep the same samples.
    """
    probs = probs.detach()
    reliable = entropy.detach() < e0
    kept = reliable.clone()
    if filter_redundant and mean_probs is not None and bool(reliable.any()):
        cosine = F.cosine_similarity(mean_probs.unsqueeze(0).to(probs), probs[reliable], dim=1)
        kept[reliable] = cosine.abs() < d_margin
    if bool(kept.any()):
        kept_mean = probs[kept].mean(0)
        if mean_probs is None:
            mean_probs = kept_mean
        else:
            mean_probs = ema_momentum * mean_probs.to(probs) + (1 - ema_momentum) * kept_mean
    return EataFilter(reliable=reliable, kept=kept, mean_probs=mean_probs)


@dataclass
class EataScope(EntropyScope):
    """A Tent scope plus EATA's moving average and Fisher estimate."""

    mean_probs: torch.Tensor | None = None
    fisher_sum: list[torch.Tensor] | None = None
    fisher_batches: int = 0
    fisher_seen: int = 0
    reliable_samples: int = 0  # after the entropy filter (EATA's num_samples_update_1)
    kept_samples: int = 0  # after both filters (num_samples_update_2)


@ADAPTERS.register("eata")
class EataAdapter(EntropyAdapter):
    """EATA: entropy-weighted steps on reliable, non-redundant uploads, Fisher-anchored."""

    method_names = {"eata": "EATA"}
    rank = 3

    class Config(EntropyAdapter.Config):
        model_config = ConfigDict(extra="forbid")

        batch_size: int = Field(64, gt=0, description="Uploads per cloud batch (FIFO, carry-over).")
        optimizer: Optimizer = Field(
            "sgd", description="Update rule of the BN affine: Adam or SGD with momentum."
        )
        lr: float = Field(0.005, gt=0, description="Learning rate of the BN affine.")
        e0_factor: float = Field(
            0.4, gt=0, le=1, description="E_0 = e0_factor * ln(C): reliable samples have H < E_0."
        )
        d_margin: float = Field(
            0.4, gt=0, le=1, description="Redundant if |cos(p_avg, p)| >= d_margin."
        )
        filter_redundant: bool = Field(True, description="Apply the redundancy filter.")
        ema_momentum: float = Field(
            0.9, ge=0, lt=1, description="Momentum of the moving average p_avg of kept probs."
        )
        fisher_alpha: float = Field(
            1.0, ge=0, description="Weight of the Fisher regulariser (0 turns it off: ETA)."
        )
        fisher_samples: int = Field(
            2000, gt=0, description="First uploads per scope used to estimate the Fisher."
        )
        cloud_filter: bool | Literal["auto"] = Field(
            "auto",
            description="Filter each cloud batch (reliable, non-redundant) before the step: true, "
            "false, or auto: false when the devices already upload by EATA's filter (policy "
            "eata), true otherwise.",
        )

        step_on: Literal["edge_batch", "cloud_batch", "auto"] = Field(
            "auto",
            description="edge_batch: one step per upload message on all its samples (an edge "
            "batch's kept samples: the cloud-edge EATA baseline of the released CEMA code); "
            "cloud_batch: one step per batch_size uploads (carry-over); auto: edge_batch behind "
            "the eata upload policy, cloud_batch otherwise.",
        )

        @field_validator("cloud_filter", mode="before")
        @classmethod
        def _true_false_or_auto(cls, value: object) -> object:
            words = {
                "true": True,
                "on": True,
                "yes": True,
                "false": False,
                "off": False,
                "no": False,
            }
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() == "auto":
                return "auto"
            if isinstance(value, str) and value.lower() in words:
                return words[value.lower()]
            raise ValueError("should be true, false or auto")

    def __init__(
        self,
        edge_model: nn.Module,
        teacher: nn.Module | None,
        config: BaseModel | None,
        num_classes: int,
        seed: int,
    ):
        super().__init__(edge_model, teacher, config, num_classes, seed)
        cfg: EataAdapter.Config = self.config  # type: ignore[assignment]
        self.e0 = cfg.e0_factor * math.log(num_classes)
        self._anchor = [self._source_state[name].clone() for name in self._param_names]

    @classmethod
    def for_upload_policy(cls, config: BaseModel | None, policy: str) -> BaseModel | None:
        """Resolve ``cloud_filter: auto`` (false behind the ``eata`` upload policy: the device has
        applied the same filter; true behind any other) and ``step_on: auto`` (``edge_batch``
        behind the ``eata`` policy, as the released cloud-edge baseline; else ``cloud_batch``)."""
        cfg = config if config is not None else cls.Config()
        update: dict[str, object] = {}
        if cfg.cloud_filter == "auto":  # type: ignore[attr-defined]
            update["cloud_filter"] = policy != "eata"
        if cfg.step_on == "auto":  # type: ignore[attr-defined]
            update["step_on"] = "edge_batch" if policy == "eata" else "cloud_batch"
        return cfg.model_copy(update=update) if update else cfg

    def _step_per_call(self) -> bool:
        cfg: EataAdapter.Config = self.config  # type: ignore[assignment]
        return cfg.step_on == "edge_batch"

    def _new_scope(self) -> EataScope:
        return EataScope(norm={k: v.clone() for k, v in self._source_state.items()})

    def filter_counts(self, scope: Hashable) -> tuple[int, int]:
        """Cloud samples of ``scope`` kept by the entropy filter and by both filters so far."""
        state = self._scopes.get(scope)
        if not isinstance(state, EataScope):
            return 0, 0
        return state.reliable_samples, state.kept_samples

    def summary_figures(self) -> dict[str, int | float]:
        """Cloud samples kept by EATA's entropy filter and by both filters, over all scopes (every
        sample stepped on, with ``cloud_filter: false``)."""
        scopes = [s for s in self._scopes.values() if isinstance(s, EataScope)]
        return {
            "cloud_reliable_samples": sum(s.reliable_samples for s in scopes),
            "cloud_kept_samples": sum(s.kept_samples for s in scopes),
        }

    def fisher(self, scope: Hashable) -> dict[str, torch.Tensor] | None:
        """The scope's current Fisher estimate per BN affine parameter (``None`` before any)."""
        state = self._scopes.get(scope)
        if not isinstance(state, EataScope) or state.fisher_sum is None:
            return None
        return {
            name: total / state.fisher_batches
            for name, total in zip(self._param_names, state.fisher_sum, strict=True)
        }

    # -- Fisher ------------------------------------------------------------------------------
    def _step(self, state: EntropyScope, images: torch.Tensor) -> float | None:
        """Add the batch to the Fisher estimate (first ``fisher_samples`` uploads), then step."""
        cfg: EataAdapter.Config = self.config  # type: ignore[assignment]
        assert isinstance(state, EataScope)
        if cfg.fisher_alpha and state.fisher_seen < cfg.fisher_samples:
            take = images[: cfg.fisher_samples - state.fisher_seen]
            squared = [g.square() for g in self._source_pseudo_label_grads(take)]
            self._forward += len(take)
            self._backward += len(take)
            if state.fisher_sum is None:
                state.fisher_sum = squared
            else:
                state.fisher_sum = [a + b for a, b in zip(state.fisher_sum, squared, strict=True)]
            state.fisher_batches += 1
            state.fisher_seen += len(take)
        return super()._step(state, images)

    def _source_pseudo_label_grads(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Gradient of mean CE(logits, argmax logits) w.r.t. the source BN affine."""
        device = next(self.edge_model.parameters()).device
        anchor = {
            name: value.detach().to(device, copy=True).requires_grad_(True)
            for name, value in zip(self._param_names, self._anchor, strict=True)
        }
        with use_batch_statistics(self.edge_model):
            logits = functional_call(self.edge_model, anchor, (images.to(device),))
        loss = F.cross_entropy(logits, logits.argmax(dim=1))
        return torch.autograd.grad(loss, list(anchor.values()))

    # -- loss --------------------------------------------------------------------------------
    def _loss(self, state: EntropyScope, logits: torch.Tensor) -> torch.Tensor | None:
        cfg: EataAdapter.Config = self.config  # type: ignore[assignment]
        assert isinstance(state, EataScope)
        entropy = softmax_entropy(logits)
        if cfg.cloud_filter is False:  # the devices filtered: every upload counts
            state.reliable_samples += len(entropy)
            state.kept_samples += len(entropy)
            return self._weighted_entropy(state, entropy)
        selected = eata_filter(
            logits.softmax(dim=1),
            entropy,
            self.e0,
            state.mean_probs,
            cfg.d_margin,
            cfg.ema_momentum,
            cfg.filter_redundant,
        )
        state.mean_probs = selected.mean_probs
        state.reliable_samples += int(selected.reliable.sum())
        state.kept_samples += int(selected.kept.sum())
        if not bool(selected.kept.any()):
            return None
        return self._weighted_entropy(state, entropy[selected.kept])

    def _weighted_entropy(self, state: EataScope, entropy: torch.Tensor) -> torch.Tensor:
        """``mean exp(E_0 - H) H`` over ``entropy`` plus the Fisher penalty."""
        cfg: EataAdapter.Config = self.config  # type: ignore[assignment]
        loss = (entropy_weights(entropy, self.e0) * entropy).mean()
        if cfg.fisher_alpha and state.fisher_sum is not None:
            penalty = sum(
                ((total / state.fisher_batches) * (param - anchor.to(param)).square()).sum()
                for total, param, anchor in zip(
                    state.fisher_sum, self._params, self._anchor, strict=True
                )
            )
            loss = loss + cfg.fisher_alpha * penalty
        return loss
