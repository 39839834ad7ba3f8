"""Cloud adaptation algorithms, found by name in ``ADAPTERS`` (``none``, ``bn_stats``, ``tent``,
``eata``, ``cema``, ``tdmr``).

The registry lives in :mod:`simulator.adaptation.base`, which the algorithms' modules import; this
package only imports them, so that importing it registers every built-in adapter.
"""

from simulator.adaptation import bn_stats, cema, eata, none, tdmr, tent  # noqa: F401  (built-ins)
from simulator.adaptation.base import ADAPTERS, AdaptStats, CloudAdapter

__all__ = ["ADAPTERS", "AdaptStats", "CloudAdapter"]
