"""Edge-only routing: the device answers every sample itself (fleetsim's behaviour before routing)."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from policies.routing.base import EDGE, ROUTING_POLICIES, RoutingPolicy, margin_uncertainty


@ROUTING_POLICIES.register("edge_only")
class EdgeOnly(RoutingPolicy):
    """Answer every sample with the edge model; nothing is offloaded."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def route(self, probs: torch.Tensor, now_s: float, edge_s: float) -> np.ndarray:
        self.last_uncertainty = margin_uncertainty(probs).numpy()
        self.last_routes = np.full(len(probs), EDGE, dtype=object)
        return np.zeros(len(probs), dtype=bool)
