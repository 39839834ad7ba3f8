"""Upload every sample (the upload-all upper reference of CEMA's comparisons)."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from policies.upload.base import UPLOAD_POLICIES, UPLOADED, UploadPolicy, check_batch


@UPLOAD_POLICIES.register("all")
class UploadAll(UploadPolicy):
    """Upload every sample (upper reference on accuracy and on communication cost)."""

    method_names = {"cema": "Upload-all"}  # with the adapter cema
    colour, marker, rank = "#0072B2", "s", 4

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def select(self, probs: torch.Tensor, entropy: torch.Tensor) -> np.ndarray:
        batch_size = check_batch(probs, entropy)
        self.last_reasons = np.full(batch_size, UPLOADED, dtype=object)
        return np.ones(batch_size, dtype=bool)
