"""No import cycles in the plug-in packages, the schema, the fleet, the engine, the run folder and
analysis: no module imports another that imports it back (a package's ``__init__`` included), read
from the source's import statements (those under ``if TYPE_CHECKING:`` and in functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("simulator", "policies", "analysis")
#: Modules that must lie on no cycle (every module of these prefixes).
CHECKED = (
    "policies",
    "simulator.adaptation",
    "simulator.build",
    "simulator.cli",
    "simulator.config",
    "simulator.engine",
    "simulator.fleet",
    "simulator.metrics",
    "simulator.plugins",
    "simulator.registry",
    "simulator.runs",
    "simulator.sweep",
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


def test_the_cloud_and_the_devices_meet_only_in_their_messages():
    graph = import_graph()
    assert "simulator.fleet.device" not in graph["simulator.fleet.cloud"]
    assert "simulator.fleet.cloud" not in graph["simulator.fleet.device"]
    assert "simulator.fleet.messages" in graph["simulator.fleet.cloud"]
    assert "simulator.fleet.messages" in graph["simulator.fleet.device"]
    # the cloud that ships whole models (TDMR) meets the devices the same way
    assert "simulator.fleet.device" not in graph["simulator.fleet.redeploy"]
    assert "simulator.fleet.redeploy" not in graph["simulator.fleet.device"]
    assert "simulator.fleet.messages" in graph["simulator.fleet.redeploy"]
    assert not {m for m in graph["simulator.config"] if m.startswith("simulator.fleet")}


def test_the_run_folder_and_analysis_do_not_reach_into_the_engine():
    graph = import_graph()
    assert not graph["simulator.runs"] & {"simulator.engine", "simulator.build", "simulator.sweep"}
    for module in (m for m in graph if m.startswith("analysis")):
        assert not {
            t for t in graph[module] if t.startswith(("simulator.engine", "simulator.build"))
        }
