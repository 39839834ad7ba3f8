"""What the ``fleetsim`` commands share: the one app, the consoles, error and warning
printing, option types used by several command groups, and helpers used by more than one module."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(
    name="fleetsim",
    help=(
        "Discrete-event simulator of cloud-edge fleets with real PyTorch models.\n\n"
        "Typical day: fleetsim run scenarios/quickstart.yaml --out runs/quick; "
        "fleetsim run scenarios/quickstart.yaml --set policy.name=all --set network.uplink_mbps=2"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
errors = Console(stderr=True, soft_wrap=True)  # messages stay whole lines in logs

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override a scenario key, e.g. --set network.uplink_mbps=2 (value parsed as YAML). "
        "Repeatable.",
    ),
]
ScenarioArg = Annotated[Path, typer.Argument(help="Scenario YAML file (see scenarios/).")]
DeviceOption = Annotated[
    str,
    typer.Option(
        help="Where the edge passes, the cloud adapter and the foundation model compute: 'cpu', "
        "'cuda' or 'cuda:N' (an NVIDIA GPU), or 'auto' (the GPU if torch sees one, else the "
        "CPU). A speed choice: a GPU's numbers equal the CPU's to float rounding, not bit for "
        "bit (summary.json records the device as compute_device).",
    ),
]


def _warn(texts: Iterable[str]) -> None:
    """Print each ``warning: TEXT`` to stderr, verbatim (the command goes on)."""
    for text in texts:
        errors.print(f"warning: {text}", style="yellow", markup=False, highlight=False)


def _fail(message: object) -> NoReturn:
    """Print ``error: MESSAGE`` to stderr and exit with code 2 (bad input; nothing written).

    The message is printed verbatim: brackets in it (``[acid_rain]``, ``list[str]``, a path) are
    text, never Rich markup, which would swallow them or fail on a stray ``[/x]``.
    """
    errors.print("[bold red]error:[/]", end=" ")
    errors.print(str(message), highlight=False, markup=False)
    raise typer.Exit(2)


def _device(spec: str):
    """The checked torch device for --device, or exit 2 saying what is wrong."""
    from simulator.compute import resolve_device

    try:
        return resolve_device(spec)
    except ValueError as exc:
        _fail(f"--{exc}")


def _note_unlisted(paths: Iterable[Path]) -> None:
    """Warn about run folders a sweep folder's sweep.json does not list: they are read too."""
    from analysis.load import unlisted_runs

    for path in paths:
        names = unlisted_runs(path)
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            _warn(
                [
                    f"{path}: {len(names)} run folder{'s' if len(names) > 1 else ''} not in its "
                    f"sweep.json ({shown}), left by another sweep into the same folder or an "
                    "earlier grid, are read too; move them out to leave them out"
                ]
            )


def _dataset(name: str, split: str, root: Path | None, variant: str, seed: int, size: int | None):
    from simulator.data.datasets import DatasetError, create_dataset
    from simulator.registry import UnknownNameError

    try:
        return create_dataset(name, split=split, root=root, variant=variant, seed=seed, size=size)
    except (UnknownNameError, ValueError, DatasetError) as exc:
        _fail(exc)


def _load(path: Path, overrides: list[str] | None):
    """The validated scenario of a YAML file and ``--set`` overrides, or exit 2 naming each
    problem."""
    from simulator.config import load_scenario

    try:
        return load_scenario(path, overrides or [])
    except ValueError as exc:  # a ScenarioError, or a model lookup that failed while validating
        _fail(exc)


def _progress(count: str, enabled: bool) -> Progress:
    """A progress bar on stderr: description, bar, COUNT (a rich format of the task) and time."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn(count),
        TimeElapsedColumn(),
        console=errors,
        disable=not enabled,
    )
