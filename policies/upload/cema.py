"""CEMA's selective upload (Chen et al., ICLR 2024, Eqns. 1-3; official code chenyaofo/CEMA).

Per edge batch, in this order (``codebase/core/tta/cema.py``: ``EntropyCriterion``, then
``SimilarityCriterion`` on the survivors):

1. the cumulative mean entropy ``mean_t`` is updated with the *whole* batch; once it has seen
   ``warmup_samples`` samples (counted in samples, checked after each batch update) its value is
   frozen as ``mean_W``;
2. unreliable: drop ``H >= E_max(t)``, ``E_max = E_0 * (mean_t / mean_W) * lambda`` after warm-up
   and ``E_0 = e0_factor * ln C`` before it (``lambda`` applies only after warm-up, as released);
3. low-informative: drop ``H <= e_min * ln C``;
4. redundant (EATA, Niu et al., ICML 2022; mr-eggplant/EATA ``eata.py``:
   ``forward_and_adapt_eata``, ``update_model_probs``; identical in CEMA's ``SimilarityCriterion``):
   keep ``|cos(p_avg, p_i)| < redundancy_threshold``; ``p_avg`` starts as the mean probability of
   the first batch's entropy-kept samples (all of which are kept), then after each batch
   ``p_avg <- m p_avg + (1 - m) mean(p_kept)`` over the samples kept by this filter (unchanged if
   none is kept).

Defaults follow the paper and fleetsim's DESIGN.md where the released ``conf/cema.conf`` differs:
the release disables the low-informative filter (``ent_low_margin: null``) and the dynamic
threshold (``warm_up_batch_size: null``); its ``lambda`` (``ent_high_margin_coeff``) of 0.6 applies
only after a warm-up, which a null warm-up never ends, so the released filter is the static ``E_0``;
here ``e_min = 0.02``, ``dynamic = True`` and ``lambda = 1.0``. The redundancy filter is not part of
the paper's method and is off by default: the release enables it with ``d_margin: 0.05``, a margin
tuned for ImageNet's 1,000 classes; with 10 classes ``|cos(p_avg, p)|`` of a confident prediction is
about 0.3, so that margin drops nearly every sample (EATA itself uses 0.4 on CIFAR-10). Switch it on
with ``filter_redundant: true`` and pick the margin for the class count. The released code does not state a warm-up length;
``warmup_samples = 640`` (ten edge batches of 64) is fleetsim's choice.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from policies.upload.base import (
    LOW_INFO,
    REDUNDANT,
    UNRELIABLE,
    UPLOAD_POLICIES,
    UPLOADED,
    UploadPolicy,
    check_batch,
)


@UPLOAD_POLICIES.register("cema")
class CemaUpload(UploadPolicy):
    """CEMA entropy band: drop unreliable (dynamic E_max), low-informative and redundant samples."""

    method_names = {"cema": "CEMA"}
    colour, marker, rank = "#D55E00", "o", 9

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", populate_by_name=True)

        dynamic: bool = Field(
            True, description="Scale E_max by mean_t / mean_W after the warm-up (else static E_0)."
        )
        filter_unreliable: bool = Field(True, description="Drop samples with H >= E_max(t).")
        filter_low_info: bool = Field(True, description="Drop samples with H <= e_min * ln C.")
        filter_redundant: bool = Field(
            False,
            description="Drop samples similar to the moving average (EATA; on in the release, "
            "off in the paper).",
        )
        e0_factor: float = Field(0.4, gt=0, le=1, description="E_0 = e0_factor * ln C.")
        e_min: float = Field(0.02, ge=0, le=1, description="Low-informative bound e_min * ln C.")
        lambda_: float = Field(
            1.0, gt=0, alias="lambda", description="Factor on the dynamic E_max after warm-up."
        )
        warmup_samples: int = Field(
            640, gt=0, description="Samples seen before mean_W is frozen and E_max turns dynamic."
        )
        redundancy_threshold: float = Field(
            0.05, gt=0, le=1, description="Keep samples with |cos(p_avg, p)| below this."
        )
        ema_momentum: float = Field(
            0.9, ge=0, lt=1, description="Momentum of the moving average p_avg of kept probs."
        )

    def __init__(self, config: BaseModel | None, num_classes: int, rng: np.random.Generator):
        super().__init__(config, num_classes, rng)
        cfg: CemaUpload.Config = self.config  # type: ignore[assignment]
        self.e0 = cfg.e0_factor * math.log(num_classes)
        self.e_low = cfg.e_min * math.log(num_classes)
        self.entropy_sum = 0.0
        self.entropy_count = 0
        self.warmup_mean: float | None = None
        self.mean_probs: torch.Tensor | None = None

    @property
    def mean_entropy(self) -> float:
        """Cumulative mean entropy ``mean_t`` of every sample seen so far (0 before any)."""
        return self.entropy_sum / self.entropy_count if self.entropy_count else 0.0

    @property
    def e_max(self) -> float:
        """Current unreliable bound: ``E_0`` before warm-up, ``E_0 mean_t/mean_W lambda`` after."""
        cfg: CemaUpload.Config = self.config  # type: ignore[assignment]
        if not cfg.dynamic or self.warmup_mean is None or self.warmup_mean <= 0:
            return self.e0
        return self.e0 * (self.mean_entropy / self.warmup_mean) * cfg.lambda_

    def select(self, probs: torch.Tensor, entropy: torch.Tensor) -> np.ndarray:
        cfg: CemaUpload.Config = self.config  # type: ignore[assignment]
        batch_size = check_batch(probs, entropy)
        entropy = entropy.detach().double().cpu()
        probs = probs.detach().float().cpu()

        self.entropy_sum += float(entropy.sum())
        self.entropy_count += batch_size
        if self.warmup_mean is None and self.entropy_count >= cfg.warmup_samples:
            self.warmup_mean = self.mean_entropy

        reasons = np.full(batch_size, UPLOADED, dtype=object)
        keep = np.ones(batch_size, dtype=bool)
        values = entropy.numpy()
        if cfg.filter_unreliable:
            unreliable = values >= self.e_max
            reasons[unreliable] = UNRELIABLE
            keep &= ~unreliable
        if cfg.filter_low_info:
            low_info = keep & (values <= self.e_low)
            reasons[low_info] = LOW_INFO
            keep &= ~low_info
        if cfg.filter_redundant:
            keep = self._filter_redundant(probs, keep, reasons)
        self.last_reasons = reasons
        return keep

    def _filter_redundant(
        self, probs: torch.Tensor, keep: np.ndarray, reasons: np.ndarray
    ) -> np.ndarray:
        """EATA's redundancy filter on the entropy-kept samples; updates ``p_avg`` afterwards."""
        cfg: CemaUpload.Config = self.config  # type: ignore[assignment]
        candidates = np.flatnonzero(keep)
        if candidates.size == 0:
            return keep
        candidate_probs = probs[torch.from_numpy(candidates)]
        if self.mean_probs is None:
            self.mean_probs = candidate_probs.mean(0)
            return keep
        cosine = F.cosine_similarity(self.mean_probs.unsqueeze(0), candidate_probs, dim=1)
        novel = (cosine.abs() < cfg.redundancy_threshold).numpy()
        redundant = candidates[~novel]
        reasons[redundant] = REDUNDANT
        keep = keep.copy()
        keep[redundant] = False
        if novel.any():
            kept_mean = candidate_probs[torch.from_numpy(novel)].mean(0)
            self.mean_probs = (
                cfg.ema_momentum * self.mean_probs + (1 - cfg.ema_momentum) * kept_mean
            )
        return keep
