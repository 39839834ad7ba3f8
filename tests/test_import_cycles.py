"""No import cycles in the plug-in packages, the schema and analysis: no module imports another that
imports it back (a package's ``__init__`` included), read from the source's import statements."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("simulator", "policies", "analysis")
#: Modules that must lie on no cycle (every module of these prefixes).
CHECKED = (
    "policies",
    "simulator.adaptation",
    "simulator.cli",
    "simulator.config",
    "simulator.plugins",
    "simulator.registry",
    "analysis",
)


def module_files() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the file, functions included)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            targets |= {n for n in names if n in files and n != module}
        graph[module] = targets
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A path of imports from ``start`` back to itself, or None."""
    stack, seen = [(start, [start])], set()
    while stack:
        module, path = stack.pop()
        for target in sorted(graph[module]):
            if target == start:
                return [*path, start]
            if target not in seen:
                seen.add(target)
                stack.append((target, [*path, target]))
    return None


def test_the_import_graph_sees_a_cycle_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle_through(graph, "a") == ["a", "b", "c", "a"]
    assert cycle_through(graph, "d") is None
    assert "policies.upload.base" in import_graph()["policies.upload.cema"]


def test_plugin_packages_schema_and_analysis_lie_on_no_import_cycle():
    graph = import_graph()
    checked = [m for m in graph if m.startswith(CHECKED)]
    assert len(checked) > 30
    cycles = {m: cycle_through(graph, m) for m in checked}
    assert {m: c for m, c in cycles.items() if c} == {}
