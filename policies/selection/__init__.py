"""Selection policies, found by name in ``SELECTION_POLICIES``: which model each device runs.

``fixed`` runs ``edge.model`` everywhere (the default); ``adaptivenet`` picks, per device, the most
accurate member of a model family that meets the device's latency budget, and re-picks when the
budget or the measured latency changes (AdaptiveNet, Wen et al., MobiCom 2023).

The registry lives in :mod:`policies.selection.base`, which the policies' modules import; this
package only imports them, so that importing it registers every built-in policy.
"""

from policies.selection import adaptivenet, fixed  # noqa: F401  (register built-ins)
from policies.selection.base import SELECTION_POLICIES, SWITCH_REASONS, Decision, SelectionPolicy
from policies.selection.family import FamilyMember, ModelFamily, load_family

__all__ = [
    "SELECTION_POLICIES",
    "SWITCH_REASONS",
    "Decision",
    "FamilyMember",
    "ModelFamily",
    "SelectionPolicy",
    "load_family",
]
