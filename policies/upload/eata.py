"""EATA's sample selection as an upload policy (Niu et al., ICML 2022, Eqns. 3-5).

A device uploads exactly the samples EATA's filters would adapt on, judged by the edge model's own
predictions: reliable (``H < E_0``, ``E_0 = e0_factor * ln C``) and not redundant
(``|cos(p_avg, p)| < d_margin``), with ``p_avg`` a per-device moving average of the uploaded
probabilities (the first batch's reliable samples are all uploaded and start it; then
``p_avg <- m p_avg + (1 - m) mean(p_uploaded)``). The selection is
:func:`simulator.adaptation.eata.eata_filter`, the one the ``eata`` cloud adapter uses, so a
benchmark compares CEMA's upload count with EATA's filter on equal terms. Behind this policy the
``eata`` cloud adapter steps on every upload without filtering again (``cloud_filter: auto``). Defaults are EATA's
CIFAR-10 setting (``d_margin = 0.4``; see ``simulator/adaptation/eata.py``). Unlike CEMA's
policy there is no dynamic threshold and no low-informative bound.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from policies.upload.base import (
    REDUNDANT,
    UNRELIABLE,
    UPLOAD_POLICIES,
    UPLOADED,
    UploadPolicy,
    check_batch,
)
from simulator.adaptation.eata import eata_filter


@UPLOAD_POLICIES.register("eata")
class EataUpload(UploadPolicy):
    """EATA filter: upload reliable (H < E_0), non-redundant samples (cosine to a moving average)."""

    rank = 7

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        e0_factor: float = Field(
            0.4, gt=0, le=1, description="E_0 = e0_factor * ln C: upload only H < E_0."
        )
        d_margin: float = Field(
            0.4, gt=0, le=1, description="Redundant if |cos(p_avg, p)| >= d_margin."
        )
        filter_redundant: bool = Field(True, description="Apply the redundancy filter.")
        ema_momentum: float = Field(
            0.9, ge=0, lt=1, description="Momentum of the moving average p_avg of uploaded probs."
        )

    def __init__(self, config: BaseModel | None, num_classes: int, rng: np.random.Generator):
        super().__init__(config, num_classes, rng)
        cfg: EataUpload.Config = self.config  # type: ignore[assignment]
        self.e0 = cfg.e0_factor * math.log(num_classes)
        self.mean_probs: torch.Tensor | None = None

    def select(self, probs: torch.Tensor, entropy: torch.Tensor) -> np.ndarray:
        cfg: EataUpload.Config = self.config  # type: ignore[assignment]
        batch_size = check_batch(probs, entropy)
        selected = eata_filter(
            probs.detach().float().cpu(),
            entropy.detach().double().cpu(),
            self.e0,
            self.mean_probs,
            cfg.d_margin,
            cfg.ema_momentum,
            cfg.filter_redundant,
        )
        self.mean_probs = selected.mean_probs
        reliable = selected.reliable.numpy()
        keep = selected.kept.numpy()
        reasons = np.full(batch_size, UPLOADED, dtype=object)
        reasons[~reliable] = UNRELIABLE
        reasons[reliable & ~keep] = REDUNDANT
        self.last_reasons = reasons
        return keep
