"""Uncertainty-first upload in EdgeFM's spirit (Yang et al., SenSys 2023): send the cloud the
samples the edge model is least sure of, within a budget.

EdgeFM customises the edge model with the samples it finds hard, the opposite of CEMA's choice,
which drops high-entropy samples as unreliable. Per edge batch of ``B`` samples, with EdgeFM's
uncertainty ``u = 1 - (p1 - p2)`` (top-1 minus top-2 softmax probability,
:func:`policies.routing.margin_uncertainty`):

1. samples with ``u <= min_uncertainty`` are confident: not uploaded (reason ``low_info``);
2. of the rest, the ``floor(fraction * B)`` most uncertain are uploaded (ties keep batch order);
   the others are ``over_budget``.

``fraction`` is the per-batch budget (an upper bound on the share uploaded), ``min_uncertainty`` an
optional floor; for a budget in bytes per second wrap it: ``policy.name: budget`` with
``policy.budget.inner: uncertain``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from policies.routing.base import margin_uncertainty
from policies.upload.base import (
    LOW_INFO,
    OVER_BUDGET,
    UPLOAD_POLICIES,
    UPLOADED,
    UploadPolicy,
    check_batch,
)


@UPLOAD_POLICIES.register("uncertain")
class UncertainUpload(UploadPolicy):
    """Upload the most uncertain samples (u = 1-(p1-p2)) of each batch, up to a fraction of it."""

    method_names = {"cema": "Uncertain"}  # with CEMA's cloud: EdgeFM's choice of what to send
    colour, marker, rank = "#009E73", "D", 8

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        fraction: float = Field(
            0.25, ge=0, le=1, description="upload at most floor(fraction * batch) samples per batch"
        )
        min_uncertainty: float = Field(
            0.0, ge=0, le=1, description="upload only samples with u above this"
        )

    def select(self, probs: torch.Tensor, entropy: torch.Tensor) -> np.ndarray:
        cfg: UncertainUpload.Config = self.config  # type: ignore[assignment]
        batch_size = check_batch(probs, entropy)
        u = margin_uncertainty(probs).numpy()
        reasons = np.full(batch_size, OVER_BUDGET, dtype=object)
        candidates = np.flatnonzero(u > cfg.min_uncertainty)
        reasons[u <= cfg.min_uncertainty] = LOW_INFO
        budget = math.floor(cfg.fraction * batch_size + 1e-9)
        order = np.argsort(-u[candidates], kind="stable")
        chosen = candidates[order[:budget]]
        keep = np.zeros(batch_size, dtype=bool)
        keep[chosen] = True
        reasons[keep] = UPLOADED
        self.last_reasons = reasons
        return keep
