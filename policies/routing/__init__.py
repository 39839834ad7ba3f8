"""Routing policies, found by name in ``ROUTING_POLICIES``: edge_only, edgefm.

A routing policy decides, per sample and after the edge forward pass, who answers it: the edge
model, or the cloud foundation model (the sample is offloaded and the cloud's prediction is
delivered instead).
"""

from simulator.registry import Registry

ROUTING_POLICIES: Registry = Registry("routing policy")

from policies.routing import edge_only, edgefm  # noqa: E402, F401  (register built-ins)
from policies.routing.base import (  # noqa: E402
    ROUTES,
    OffloadConfig,
    RoutingPolicy,
    margin_uncertainty,
)

__all__ = ["ROUTES", "ROUTING_POLICIES", "OffloadConfig", "RoutingPolicy", "margin_uncertainty"]
