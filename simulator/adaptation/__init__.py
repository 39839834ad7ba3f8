"""Cloud adaptation algorithms, found by name in ``ADAPTERS`` (``none``, ``bn_stats``, ``cema``)."""

from simulator.registry import Registry

ADAPTERS: Registry = Registry("adapter")

from simulator.adaptation import bn_stats, cema, eata, none, tent  # noqa: E402, F401  (register built-ins)
from simulator.adaptation.base import AdaptStats, CloudAdapter  # noqa: E402

__all__ = ["ADAPTERS", "AdaptStats", "CloudAdapter"]
