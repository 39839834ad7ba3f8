"""Routing policies, found by name in ``ROUTING_POLICIES``: edge_only, edgefm.

A routing policy decides, per sample and after the edge forward pass, who answers it: the edge
model, or the cloud foundation model (the sample is offloaded and the cloud's prediction is
delivered instead).

The registry lives in :mod:`policies.routing.base`, which the policies' modules import; this package
only imports them, so that importing it registers every built-in policy.
"""

from policies.routing import edge_only, edgefm  # noqa: F401  (register built-ins)
from policies.routing.base import (
    ROUTES,
    ROUTING_POLICIES,
    OffloadConfig,
    RoutingPolicy,
    margin_uncertainty,
)

__all__ = ["ROUTES", "ROUTING_POLICIES", "OffloadConfig", "RoutingPolicy", "margin_uncertainty"]
