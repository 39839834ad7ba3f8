"""An upload policy written outside fleetsim: each batch's k most uncertain samples go to the cloud."""

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from policies.upload.base import LOW_INFO, UPLOAD_POLICIES, UploadPolicy, check_batch, reasons_for


@UPLOAD_POLICIES.register("top_entropy")
class TopEntropy(UploadPolicy):
    """Upload the k samples of each batch with the highest edge entropy."""

    method_names = {"cema": "Top-k entropy"}  # its name in tables and figures with CEMA's cloud
    colour, marker = "#009E73", "D"  # its series in figures

    class Config(BaseModel):  # parameters under policy.top_entropy in a scenario
        model_config = ConfigDict(extra="forbid")

        k: int = Field(8, gt=0, description="samples uploaded per batch")

    def select(self, probs: torch.Tensor, entropy: torch.Tensor) -> np.ndarray:
        batch = check_batch(probs, entropy)
        order = torch.argsort(entropy, descending=True, stable=True)
        mask = np.zeros(batch, dtype=bool)
        mask[order[: self.config.k].numpy()] = True
        self.last_reasons = reasons_for(mask, LOW_INFO)
        return mask
