"""Edge inference: the frozen edge model run forward with a device's normalization state.

Every device shares one model module; only its normalization state (BN affine + running statistics)
differs, so a device costs its normalization vectors, never a model copy. The state is loaded into the
module only when it differs from the one already loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from simulator.models.norm import set_norm_state, use_batch_statistics


@dataclass
class EdgeOutput:
    probs: torch.Tensor  # (B, C) softmax
    entropy: torch.Tensor  # (B,) natural-log entropy
    prediction: torch.Tensor  # (B,) argmax


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum p log p in nats, per row."""
    logp = logits.log_softmax(dim=1)
    return -(logp.exp() * logp).sum(dim=1)


class EdgeRuntime:
    """Runs edge batches for all devices on one frozen model."""

    def __init__(self, model: nn.Module, batch_statistics: bool = False):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.batch_statistics = batch_statistics
        self._loaded: object = None

    def infer(self, images: torch.Tensor, state: dict[str, torch.Tensor]) -> EdgeOutput:
        """Classify a uint8 NCHW batch with normalization ``state``."""
        if state is not self._loaded:
            set_norm_state(self.model, state)
            self._loaded = state
        x = images.float().div_(255.0)
        with torch.inference_mode():
            if self.batch_statistics:
                with use_batch_statistics(self.model):
                    logits = self.model(x)
            else:
                logits = self.model(x)
        probs = logits.softmax(dim=1)
        return EdgeOutput(probs, softmax_entropy(logits), logits.argmax(dim=1))
