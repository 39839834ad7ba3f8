"""Selection policies, found by name in ``SELECTION_POLICIES``: which model each device runs.

``fixed`` runs ``edge.model`` everywhere (the default); ``adaptivenet`` picks, per device, the most
accurate member of a model family that meets the device's latency budget, and re-picks when the
budget or the measured latency changes (AdaptiveNet, Wen et al., MobiCom 2023).
"""

from simulator.registry import Registry

SELECTION_POLICIES: Registry = Registry("selection policy")

from policies.selection import adaptivenet, fixed  # noqa: E402, F401  (register built-ins)
from policies.selection.base import SWITCH_REASONS, Decision, SelectionPolicy  # noqa: E402
from policies.selection.family import FamilyMember, ModelFamily, load_family  # noqa: E402

__all__ = [
    "SELECTION_POLICIES",
    "SWITCH_REASONS",
    "Decision",
    "FamilyMember",
    "ModelFamily",
    "SelectionPolicy",
    "load_family",
]
