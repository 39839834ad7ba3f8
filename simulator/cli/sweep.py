"""``fleetsim sweep`` and ``match-budget`` (the random-upload p that spends a reference budget)."""

from __future__ import annotations

from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from simulator.cli.common import (
    DeviceOption,
    ScenarioArg,
    SetOption,
    _device,
    _fail,
    _note_unlisted,
    _warn,
    app,
    console,
    errors,
)

GridOption = Annotated[
    list[str] | None,
    typer.Option(
        "--grid",
        "-g",
        help="Sweep axis, Cartesian product with the others: key=v1,v2,... (values are YAML; "
        "key=[[1,2],[3,4]] for list values). Repeatable.",
    ),
]
ZipOption = Annotated[
    list[str] | None,
    typer.Option(
        "--zip",
        "-z",
        help="Zipped axis, walked in lock-step with the other --zip axes: key=v1,v2,... "
        "Repeatable; replaces the scenario's own sweep.zip whole.",
    ),
]


class Executor(str, Enum):
    local = "local"
    dask = "dask"


@app.command()
def sweep(
    scenario: ScenarioArg,
    grid: GridOption = None,
    zip_: ZipOption = None,
    seeds: Annotated[
        int | None, typer.Option(min=1, help="Runs per point with seed = base seed + i.")
    ] = None,
    overrides: SetOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Sweep folder (default: runs/<scenario name>-sweep)."),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Runs at once.")] = 1,
    executor: Annotated[
        Executor, typer.Option(help="local: a process pool; dask: dask.distributed.")
    ] = Executor.local,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="dask scheduler address (tcp://host:8786); a LocalCluster if omitted. The "
            "workers write run folders themselves, so --out must be on a filesystem they share."
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over runs.")] = True,
    device: DeviceOption = "cpu",
) -> None:
    """Run a scenario over a grid of overrides and seeds; resumable (finished runs are skipped).

    The scenario's own sweep: section (grid, zip, seeds) combines with --grid/--zip: a key given
    here leaves the YAML's axes, and --set of a swept key is refused. --jobs 1 runs with all
    torch threads, --jobs 2+ with one per run; the last digits of the numbers depend on it, so
    resume with the --jobs the sweep started with."""
    from simulator.runs import OutputError, check_writable
    from simulator.sweep import SweepSpec, parse_values, plan_sweep, run_sweep

    if scheduler is not None and executor is not Executor.dask:
        _fail(f"--scheduler {scheduler} needs --executor dask (the local executor has none)")
    try:
        spec = SweepSpec(
            grid=dict(parse_values(text) for text in grid or []),
            zip=dict(parse_values(text) for text in zip_ or []),
            seeds=seeds,
        )
        plan = plan_sweep(scenario, overrides, spec)
    except ValueError as exc:  # a ScenarioError, or an installed plug-in that fails to load
        _fail(exc)
    if scheduler is None:  # the runs compute here (a remote scheduler's workers check their own)
        _device(device)
    out_dir = out or Path("runs") / f"{plan.runs[0].resolved['name']}-sweep"
    try:
        check_writable(out_dir)
    except OutputError as exc:
        _fail(exc)
    console.print(f"sweep of {len(plan.runs)} runs -> {escape(str(out_dir))}")
    counts = Counter(text for run in plan.runs for text in run.warnings)
    _warn(f"({n} of {len(plan.runs)} runs) {text}" for text, n in counts.items())
    try:
        manifest = run_sweep(
            plan,
            out_dir,
            jobs=jobs,
            executor=executor.value,
            scheduler=scheduler,
            progress=progress,
            device=device,
        )
    except RuntimeError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        errors.print(
            f"interrupted; run the same command again to resume ({escape(str(out_dir))}/sweep.json)"
        )
        raise typer.Exit(130) from None
    counts = manifest["counts"]
    console.print(
        ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        + f" -> {escape(str(out_dir))}/sweep.json"
    )
    for entry in manifest["runs"]:
        if entry["status"] == "failed":
            errors.print(
                f"[red]failed[/] {escape(entry['name'])}: {escape(entry['error'])}", highlight=False
            )
    if counts.get("failed"):
        raise typer.Exit(1)


class BudgetMatch(str, Enum):
    bytes = "bytes"
    samples = "samples"


@app.command("match-budget")
def match_budget(
    runs: Annotated[
        list[Path], typer.Argument(help="The reference runs (e.g. CEMA's): run or sweep folders.")
    ],
    match: Annotated[
        BudgetMatch,
        typer.Option(help="Match sent bytes (headers included) or uploaded samples."),
    ] = BudgetMatch.bytes,
    method: Annotated[
        str | None,
        typer.Option(help="Only this method's runs: ADAPTER/POLICY (cema/cema) or label (CEMA)."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """policy.random.p at which random upload spends the reference runs' budget; prints the
    pooled p with its --set arguments and, for one-corruption (reset) runs, one p per corruption
    with --zip arguments for `fleetsim sweep`."""
    import json
    import shlex

    from analysis.tta import matched_random_p

    try:
        _note_unlisted(runs)
        found = matched_random_p(runs, match=match.value, method=method)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    zipped = found.zip_args() if found.per_domain else []
    if json_:
        record = {
            "p": found.p,
            "match": found.match,
            "samples": found.samples,
            "uploaded_samples": found.uploaded_samples,
            "sent_bytes": found.sent_bytes,
            "per_domain": found.per_domain,
            "set_args": found.set_args(),
            "zip_args": zipped,
        }
        console.print_json(json.dumps(record))
        return
    console.print(
        f"p = {found.p:.6g} (match {found.match}: {found.uploaded_samples:,} of "
        f"{found.samples:,} samples uploaded, {found.sent_bytes:,} bytes sent)",
        highlight=False,
    )
    console.print(shlex.join(found.set_args()), highlight=False, markup=False)
    if zipped:
        for domain, p in found.per_domain.items():
            console.print(f"  {domain}: p = {p:.6g}", highlight=False)
        console.print(shlex.join(zipped), highlight=False, markup=False, soft_wrap=True)
