"""Random upload: each sample independently with probability ``p`` (byte-matched baseline)."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from policies.upload.base import (
    NOT_SAMPLED,
    UPLOAD_POLICIES,
    UploadPolicy,
    check_batch,
    reasons_for,
)


@UPLOAD_POLICIES.register("random")
class RandomUpload(UploadPolicy):
    """Upload each sample independently with probability p (Bernoulli, from the device's rng)."""

    method_names = {"cema": "Random"}
    colour, marker, rank = "#E69F00", "^", 5

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        p: float = Field(0.5, ge=0, le=1, description="Probability of uploading each sample.")

    def select(self, probs: torch.Tensor, entropy: torch.Tensor) -> np.ndarray:
        batch_size = check_batch(probs, entropy)
        mask = self.rng.random(batch_size) < self.config.p  # type: ignore[attr-defined]
        self.last_reasons = reasons_for(mask, NOT_SAMPLED)
        return mask
