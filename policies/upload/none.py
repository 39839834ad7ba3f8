"""Upload nothing (edge-only operation; the cloud never learns)."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from policies.upload.base import DISABLED, UPLOAD_POLICIES, UploadPolicy, check_batch


@UPLOAD_POLICIES.register("none")
class NoUpload(UploadPolicy):
    """Upload nothing: every sample stays on the device."""

    method_names = {"none": "Source"}  # with the adapter none
    colour, marker, rank = "#000000", "x", 0

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    uploads = False

    def select(self, probs: torch.Tensor, entropy: torch.Tensor) -> np.ndarray:
        batch_size = check_batch(probs, entropy)
        self.last_reasons = np.full(batch_size, DISABLED, dtype=object)
        return np.zeros(batch_size, dtype=bool)
