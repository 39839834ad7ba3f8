"""Name -> class/function registries (timm-style): ``register``, ``get``, ``create``, ``names``.

Policies, adapters, datasets, models and corruptions are each found by name through one registry, and the
scenario YAML names them. Adding one is one decorated class (or function) in one file, inside fleetsim
or in a plug-in (:mod:`simulator.plugins`): each name remembers where it came from (``source``), and
a name registered twice is an error naming both sources.

:class:`Styled` is how a plug-in class tells figures and tables how to show it (method names,
colour, marker, order); every attribute has a default.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Generic, TypeVar

T = TypeVar("T")

#: The source of everything fleetsim itself registers.
BUILT_IN = "built in"
#: Top-level packages of fleetsim: what their modules register is built in.
_INTERNAL_PACKAGES = ("simulator", "policies", "analysis")
#: Sources of the plug-ins being imported now, innermost last (see :func:`registering_from`).
_loading: list[str] = []


class UnknownNameError(KeyError):
    """A name that is not registered; the message lists what is."""

    def __init__(self, kind: str, name: str, allowed: list[str]):
        self.kind, self.name, self.allowed = kind, name, allowed
        super().__init__(f"unknown {kind} {name!r}; allowed: {', '.join(allowed)}")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


class DuplicateNameError(ValueError):
    """A name registered a second time by another object; the message names both sources."""


@contextlib.contextmanager
def registering_from(source: str) -> Iterator[None]:
    """Names registered inside the block by modules outside fleetsim come from ``source``
    (``"entry point (my-dist)"``, ``"scenario plug-in (my_policy.py)"``)."""
    _loading.append(source)
    try:
        yield
    finally:
        _loading.pop()


def _source_of(obj: object) -> str:
    module = str(getattr(obj, "__module__", "") or "")
    if module.partition(".")[0] in _INTERNAL_PACKAGES:
        return BUILT_IN
    if _loading:
        return _loading[-1]
    return f"module {module}" if module else "unknown"


def _where(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or type(obj).__name__
    return f"{module}.{name}" if module else str(name)


class Registry(Generic[T]):
    """A named collection of plugins of one kind (e.g. ``"upload policy"``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._sources: dict[str, str] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@POLICIES.register("cema")`` on a class or function.

        Registering the same object again is a no-op; another object under a taken name raises
        :class:`DuplicateNameError` naming both sources."""

        def decorator(obj: T) -> T:
            source = _source_of(obj)
            if name in self._items:
                if self._items[name] is obj:
                    return obj
                raise DuplicateNameError(
                    f"{self.kind} {name!r} is registered twice: by {self._sources[name]} "
                    f"({_where(self._items[name])}) and by {source} ({_where(obj)})"
                )
            self._items[name] = obj
            self._sources[name] = source
            return obj

        return decorator

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in that failed half-way through its import); unknown: no-op."""
        self._items.pop(name, None)
        self._sources.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self.names()) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._items)

    def source(self, name: str) -> str:
        """Where ``name`` comes from: ``built in``, ``entry point (<distribution>)``,
        ``scenario plug-in (<module or path>)`` or ``module <name>`` (registered by other code)."""
        self.get(name)
        return self._sources[name]

    def describe(self, name: str) -> str:
        """First line of the plugin's docstring, for ``fleetsim list``."""
        doc = getattr(self.get(name), "__doc__", None) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


class Styled:
    """How figures and tables show a plug-in class: attributes, each with a default.

    A *method* is a cloud adapter with an upload policy; its usual name (``CEMA``, ``Tent``) is
    declared by either side in ``method_names``, keyed by the other side's registered name: the
    upload policy ``cema`` has ``{"cema": "CEMA"}`` (with the adapter ``cema``), the adapter ``tent``
    has ``{"all": "Tent"}`` (with the upload policy ``all``). A method without a declared name is
    shown by its key, ``<adapter>/<policy>``.
    """

    #: Usual names of the methods this plug-in makes with a plug-in of the other side, by its name.
    method_names: ClassVar[Mapping[str, str]] = {}
    #: Colour (any matplotlib colour) of the plug-in's series and of its named methods; None: a
    #: colour of the palette that no plug-in claims, by position.
    colour: ClassVar[str | None] = None
    #: Matplotlib marker of those series; None: one by position.
    marker: ClassVar[str | None] = None
    #: Place among rows and series (lower first); plug-ins without one come after, by name.
    rank: ClassVar[float] = math.inf

    @classmethod
    def own_style(cls) -> dict[str, Any]:
        """``method_names``, ``colour``, ``marker`` and ``rank`` as this class declares them, the
        defaults for what it does not: a subclass of CEMA's policy is not shown as CEMA."""
        return {key: cls.__dict__.get(key, getattr(Styled, key)) for key in _STYLE_KEYS}


_STYLE_KEYS = ("method_names", "colour", "marker", "rank")
