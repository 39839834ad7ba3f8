"""How a run's method is named in figures, tables and comparisons.

A method is the pair (cloud adapter, upload policy); its key is ``"<adapter>/<policy>"`` (what
``--label`` mappings and ``--method`` match) and its label the name the test-time-adaptation
literature gives it (``cema/cema`` -> ``CEMA``). :func:`method_label` is the one place a label is
made, so a figure's series, a table's row and a comparison's side name a run alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from analysis.load import config_value

__all__ = ["METHOD_LABELS", "METHOD_ORDER", "method_key", "method_label", "method_rank"]

# (cloud adapter, upload policy) -> the method's name in the TTA literature
METHOD_LABELS = {
    ("none", "none"): "Source",
    ("bn_stats", "none"): "BN adapt",
    ("tent", "all"): "Tent",
    ("eata", "eata"): "EATA",
    ("cema", "all"): "Upload-all",
    ("cema", "random"): "Random",
    ("cema", "cema"): "CEMA",
}
#: The order of rows and series: weakest baseline first, CEMA last.
METHOD_ORDER = ("Source", "BN adapt", "Tent", "EATA", "Upload-all", "Random", "CEMA")


def method_key(adapter: object, policy: object) -> str:
    """``"<cloud adapter>/<upload policy>"``, the key that ``labels`` mappings match."""
    return f"{adapter}/{policy}"


def method_label(
    adapter: object,
    policy: object,
    read_config: Callable[[], Mapping[str, Any] | None] | None = None,
) -> str:
    """The method's usual name (``CEMA``), else its key; a policy that wraps an inner one (its
    section of the run's config names it in ``inner``, as ``budget`` does) adds that one:
    ``cema/budget (random)``. ``read_config`` gives the run's config, read only for such a method.

    Parameters such as ``policy.random.p`` are not part of the name, so the random baseline with
    one p per corruption (reset) stays one row; runs at several p collide and the table's error
    names the key to add to ``by``.
    """
    label = METHOD_LABELS.get((str(adapter), str(policy)))
    if label is not None:
        return label
    config = read_config() if read_config is not None else None
    inner = config_value(config or {}, f"policy.{policy}.inner")
    key = method_key(adapter, policy)
    return f"{key} ({inner})" if inner else key


def method_rank(label: str) -> int:
    """Position of a label in :data:`METHOD_ORDER` (a label with a suffix, ``CEMA (x)``, ranks as
    its method); labels of other methods come after them all."""
    for i, name in enumerate(METHOD_ORDER):
        if label == name or label.startswith(name + " "):
            return i
    return len(METHOD_ORDER)
