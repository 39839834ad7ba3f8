"""External plug-ins: upload policies, adapters, routing and selection policies, datasets, models
and corruptions that live outside fleetsim.

A plug-in is a Python module whose import registers its classes (``@UPLOAD_POLICIES.register``).
Two ways in, both loaded before a scenario is validated, in every process that validates one (the
command line, local sweep workers, dask workers: :func:`simulator.config.scenario_from_dict` calls
:func:`simulator.config.load_plugins_of`):

- installed packages declare an entry point in the group ``fleetsim.plugins`` (its value names the
  module to import: ``my_policy = "my_policy"``);
- a scenario lists modules or ``.py`` files in its ``plugins:`` key (files relative to the scenario
  file), for work in progress.

Loading is idempotent (a module is imported once per process). A plug-in that fails to import
raises :class:`PluginError` naming the plug-in and the error; a name that a built-in or another
plug-in registered already is such an error too, naming both sources.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
import threading
import traceback
from pathlib import Path
from types import ModuleType

from simulator.registry import Registry, registering_from

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginError",
    "import_plugin",
    "is_path",
    "load_entry_points",
    "registries",
]

#: The entry-point group installed plug-ins declare.
ENTRY_POINT_GROUP = "fleetsim.plugins"

#: Modules of plug-ins imported so far, by what named them (a module name or a resolved path).
_imported: dict[str, ModuleType] = {}
#: Entry points imported so far, by ``(distribution, value)``.
_entry_points_done: set[tuple[str, str]] = set()
#: Whether this process has imported every installed plug-in (the scan is not repeated).
_scanned = False
#: One import at a time: dask workers with threads validate scenarios side by side.
_lock = threading.RLock()


class PluginError(ValueError):
    """A plug-in that cannot be loaded: names it (``plugin``) and says why (``reason``)."""

    def __init__(self, plugin: str, reason: str):
        self.plugin, self.reason = plugin, reason
        super().__init__(f"plug-in {plugin} failed to load: {reason}")


def registries() -> dict[str, Registry]:
    """Every registry a plug-in may add to, by the name ``fleetsim list`` gives it, with the
    built-ins registered."""
    from policies.routing import ROUTING_POLICIES
    from policies.selection import SELECTION_POLICIES
    from policies.upload import UPLOAD_POLICIES
    from simulator.adaptation import ADAPTERS
    from simulator.data.corruptions import CORRUPTIONS
    from simulator.data.datasets import DATASETS
    from simulator.models.zoo import MODELS

    return {
        "policies": UPLOAD_POLICIES,
        "adapters": ADAPTERS,
        "routing": ROUTING_POLICIES,
        "selection": SELECTION_POLICIES,
        "datasets": DATASETS,
        "models": MODELS,
        "corruptions": CORRUPTIONS,
    }


def is_path(spec: str) -> bool:
    """Whether a ``plugins:`` entry names a file (``.py``, or with a folder) rather than a module."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _reason(exc: BaseException) -> str:
    """``Type: message``, and the file and line that raised it (not the import machinery's)."""
    text = f"{type(exc).__name__}: {exc}"
    machinery = str(Path(importlib.__file__).parent)
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith(("<frozen", machinery)) and f.filename != __file__
    ]
    if frames and not isinstance(exc, SyntaxError):  # a SyntaxError says where itself
        text += f" (at {frames[-1].filename}, line {frames[-1].lineno})"
    return text


def _snapshot() -> dict[Registry, set[str]]:
    return {registry: set(registry.names()) for registry in registries().values()}


def _roll_back(before: dict[Registry, set[str]]) -> None:
    """Forget what a plug-in registered before it failed, so that fixing it and loading it again
    does not clash with its own half."""
    for registry, names in before.items():
        for name in set(registry.names()) - names:
            registry.unregister(name)


def _module_name_for(path: Path) -> str:
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return f"fleetsim_plugin_{stem}_{digest}"


def _import_file(path: Path) -> ModuleType:
    name = _module_name_for(path)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: dataclasses and pickling look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_plugin(spec: str, source: str | None = None) -> ModuleType:
    """Import one plug-in, a module name or a ``.py`` file (relative to the working directory),
    once per process; what it registers comes from ``source`` (default: ``scenario plug-in
    (<spec>)``). Raises :class:`PluginError` naming ``spec`` and the import error."""
    if not isinstance(spec, str) or not spec.strip():
        raise PluginError(repr(spec), "a plug-in is a module name or a .py file, as a string")
    with _lock:
        return _import_plugin(spec, source)


def _import_plugin(spec: str, source: str | None) -> ModuleType:
    path = Path(spec).expanduser().resolve() if is_path(spec) else None
    key = str(path) if path is not None else spec
    if key in _imported:
        return _imported[key]
    if path is None and not _MODULE_NAME.match(spec):
        raise PluginError(repr(spec), "not a module name (dotted.name) nor a .py file")
    if path is not None and not path.is_file():
        raise PluginError(repr(spec), f"file {path} does not exist")
    load_entry_points()  # built-ins and installed plug-ins first: clashes name the newcomer
    before = _snapshot()
    try:
        with registering_from(source or f"scenario plug-in ({spec})"):
            module = _import_file(path) if path is not None else importlib.import_module(spec)
    except Exception as exc:
        _roll_back(before)
        raise PluginError(repr(spec), _reason(exc)) from exc
    _imported[key] = module
    return module


def load_entry_points() -> list[str]:
    """Import every installed plug-in (entry-point group ``fleetsim.plugins``) not yet imported in
    this process, after the built-ins; returns ``"<distribution>: <module>"`` for each one loaded
    now. Raises :class:`PluginError` naming the entry point and its distribution."""
    with _lock:
        return _load_entry_points()


def _load_entry_points() -> list[str]:
    global _scanned
    if _scanned:
        return []
    registries()  # the built-ins register first, as built in
    loaded = []
    for entry in sorted(
        importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.name, e.value)
    ):
        dist = getattr(getattr(entry, "dist", None), "name", None) or "unknown distribution"
        key = (dist, entry.value)
        if key in _entry_points_done:
            continue
        before = _snapshot()
        try:
            with registering_from(f"entry point ({dist})"):
                entry.load()
        except Exception as exc:
            _roll_back(before)
            raise PluginError(
                f"{entry.name!r} (entry point {entry.value!r} of {dist})", _reason(exc)
            ) from exc
        _entry_points_done.add(key)
        loaded.append(f"{dist}: {entry.value}")
    _scanned = True
    return loaded
