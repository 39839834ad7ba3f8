"""The ``fleetsim`` command line: run, validate, list, sweep, plot, report, table,
match-budget, compare, and the zoo, data and traces command groups.

One module per command group registers its commands on the one app (`simulator.cli.common.app`):
run.py (run, validate, list), sweep.py (sweep, match-budget), analysis.py (plot, report, table,
compare), zoo.py, data.py and traces.py (sub-apps). ``fleetsim --help`` lists them in ``COMMANDS``
and ``GROUPS`` order, whatever order the modules are imported in.
"""

from __future__ import annotations

from simulator.cli import analysis, data, run, sweep, traces, zoo
from simulator.cli.common import app

__all__ = ["COMMANDS", "GROUPS", "app", "main"]

#: The commands as ``fleetsim --help`` lists them; the command groups come after them.
COMMANDS = (
    "validate",
    "run",
    "list",
    "sweep",
    "plot",
    "report",
    "table",
    "match-budget",
    "compare",
)
GROUPS = ("zoo", "data", "traces")
_MODULES = (analysis, data, run, sweep, traces, zoo)  # imported for their registrations


def _rank(order: tuple[str, ...], name: str) -> int:
    """Position of ``name`` in ``order``; a name not in it goes last (in registration order)."""
    return order.index(name) if name in order else len(order)


def _command_name(info) -> str:
    return info.name or info.callback.__name__.lower().replace("_", "-")


app.registered_commands.sort(key=lambda info: _rank(COMMANDS, _command_name(info)))
app.registered_groups.sort(key=lambda info: _rank(GROUPS, info.name or ""))


def main() -> None:  # pragma: no cover - console entry point
    app()
