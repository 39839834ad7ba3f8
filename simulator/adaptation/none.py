"""The source model: no adaptation at all (lower reference)."""

from __future__ import annotations

from collections.abc import Hashable

import torch
from pydantic import BaseModel, ConfigDict

from simulator.adaptation.base import ADAPTERS, AdaptStats, CloudAdapter, cpu_copy


@ADAPTERS.register("none")
class SourceAdapter(CloudAdapter):
    """Source model: never adapts; devices keep the pretrained normalization state."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    needs_teacher = False
    edge_norm = "eval"
    adapts_edge_state = False

    def observe(self, scope: Hashable, images: torch.Tensor) -> AdaptStats:
        """Do nothing: no cloud work, no update."""
        return AdaptStats()

    def norm_state(self, scope: Hashable) -> dict[str, torch.Tensor]:
        """The source model's normalization state."""
        return cpu_copy(self._source_state)

    def version(self, scope: Hashable) -> int:
        """Always 0: the source state is never updated."""
        return 0
