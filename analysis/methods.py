"""How a run's method is named, ordered and drawn in figures, tables and comparisons.

A method is the pair (cloud adapter, upload policy); its key is ``"<adapter>/<policy>"`` (what
``--label`` mappings and ``--method`` match) and its label the name the test-time-adaptation
literature gives it (``cema/cema`` -> ``CEMA``). :func:`method_label` is the one place a label is
made, so a figure's series, a table's row and a comparison's side name a run alike.

Names, colours, markers and order come from the plug-in classes themselves
(:class:`simulator.registry.Styled`: ``method_names``, ``colour``, ``marker``, ``rank``), built in
or loaded from an installed plug-in (entry point ``fleetsim.plugins``); nothing here lists them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from analysis.load import config_value

__all__ = [
    "method_key",
    "method_label",
    "method_order",
    "method_rank",
    "series_styles",
]


def _registries() -> tuple[Any, Any, Any]:
    """The upload policies, cloud adapters and routing policies, installed plug-ins included."""
    from policies.routing import ROUTING_POLICIES
    from policies.upload import UPLOAD_POLICIES
    from simulator.adaptation import ADAPTERS
    from simulator.plugins import load_entry_points

    load_entry_points()
    return UPLOAD_POLICIES, ADAPTERS, ROUTING_POLICIES


def _style(cls: object) -> dict[str, Any]:
    own = getattr(cls, "own_style", None)
    style = own() if callable(own) else {}
    return {"method_names": {}, "colour": None, "marker": None, "rank": math.inf, **style}


def _declared() -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(adapter, upload policy) -> (the method's name, the style of the class that names it);
    where both sides name one pair, the upload policy's name wins."""
    uploads, adapters, _ = _registries()
    found: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for adapter in adapters.names():
        style = _style(adapters.get(adapter))
        for policy, label in style["method_names"].items():
            found[(adapter, str(policy))] = (str(label), style)
    for policy in uploads.names():
        style = _style(uploads.get(policy))
        for adapter, label in style["method_names"].items():
            found[(str(adapter), policy)] = (str(label), style)
    return found


def series_styles() -> dict[str, dict[str, Any]]:
    """The style (``colour``, ``marker``, ``rank``) of each name a series may have: upload and
    routing policies by registered name, and each named method by its label (the style of the
    plug-in that names it)."""
    uploads, _, routing = _registries()
    styles: dict[str, dict[str, Any]] = {}
    for label, style in _declared().values():
        styles.setdefault(label, style)
    for registry in (routing, uploads):  # an upload policy's name wins over a routing policy's
        for name in registry.names():
            styles[name] = _style(registry.get(name))
    return styles


def method_order() -> tuple[str, ...]:
    """Every named method's label in the order of rows and series (by the ``rank`` of the plug-in
    that names it, weakest baseline first, CEMA last among the built-ins; then by label)."""
    labels = {label: style["rank"] for label, style in _declared().values()}
    return tuple(sorted(labels, key=lambda label: (labels[label], label)))


def method_key(adapter: object, policy: object) -> str:
    """``"<cloud adapter>/<upload policy>"``, the key that ``labels`` mappings match."""
    return f"{adapter}/{policy}"


def method_label(
    adapter: object,
    policy: object,
    read_config: Callable[[], Mapping[str, Any] | None] | None = None,
) -> str:
    """The method's usual name (``CEMA``), as its plug-ins declare it, else its key; a policy
    that wraps an inner one (its section of the run's config names it in ``inner``, as ``budget``
    does) adds that one: ``cema/budget (random)``. ``read_config`` gives the run's config, read only
    for such a method.

    Parameters such as ``policy.random.p`` are not part of the name, so the random baseline with
    one p per corruption (reset) stays one row; runs at several p collide and the table's error
    names the key to add to ``by``.
    """
    declared = _declared().get((str(adapter), str(policy)))
    if declared is not None:
        return declared[0]
    config = read_config() if read_config is not None else None
    inner = config_value(config or {}, f"policy.{policy}.inner")
    key = method_key(adapter, policy)
    return f"{key} ({inner})" if inner else key


def method_rank(label: str) -> int:
    """Position of a label in :func:`method_order` (a label with a suffix, ``CEMA (x)``, ranks as
    its method); labels of other methods come after them all."""
    order = method_order()
    for i, name in enumerate(order):
        if label == name or label.startswith(name + " "):
            return i
    return len(order)
