"""``fleetsim run``, ``validate`` and ``list`` (registries, hardware profiles, shipped traces)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from simulator.cli.common import (
    DeviceOption,
    ScenarioArg,
    SetOption,
    _device,
    _fail,
    _load,
    _progress,
    _warn,
    app,
    console,
    errors,
)


@app.command()
def validate(
    scenario: ScenarioArg,
    overrides: SetOption = None,
    show: Annotated[bool, typer.Option(help="Print the resolved scenario as YAML.")] = False,
) -> None:
    """Check a scenario (and overrides) without running it; exit code 2 if invalid. A `sweep:`
    section is checked too: every run it makes must be valid."""
    import yaml

    from simulator.checks import scenario_warnings
    from simulator.config import dump_scenario

    resolved = _load(scenario, overrides)
    plan = _sweep_plan(scenario, overrides)
    if show:
        console.print(dump_scenario(resolved), highlight=False, markup=False)
        if plan is not None:
            console.print(
                yaml.safe_dump({"sweep": plan.spec.as_dict()}, sort_keys=False),
                highlight=False,
                markup=False,
            )
    runs = "" if plan is None else f" (its sweep: section makes {len(plan.runs)} valid runs)"
    console.print(f"[green]valid[/]: {escape(str(scenario))}{escape(runs)}")
    _warn(scenario_warnings(resolved))


def _sweep_plan(scenario: Path, overrides: list[str] | None):
    """The checked sweep of a scenario YAML with a ``sweep:`` section (None without one)."""
    from simulator.config import ScenarioError, read_scenario_yaml
    from simulator.sweep import plan_sweep, shadowed_overrides

    try:
        if "sweep" not in read_scenario_yaml(scenario):
            return None
        plan = plan_sweep(scenario, overrides, refuse_shadowed=False)
    except ScenarioError as exc:
        _fail(exc)
    _warn(
        f"--set {text}: the sweep: section sweeps this key, so `fleetsim sweep` would refuse it "
        "(give it there as --grid/--zip); `fleetsim run` takes it"
        for text in shadowed_overrides(plan.spec, overrides or [])
    )
    return plan


@app.command()
def run(
    scenario: ScenarioArg,
    overrides: SetOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Run folder (default: runs/<scenario name>): new, empty or an earlier run's, "
            "which the run replaces whole.",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar of simulated time.")] = True,
    threads: Annotated[
        int,
        typer.Option(
            min=0,
            help="Torch CPU threads (0: torch's default, all cores). Use 1 when several runs share "
            "the machine: multi-threaded torch slows down sharply on busy cores.",
        ),
    ] = 0,
    executor: Annotated[
        str,
        typer.Option(
            help="Edge inference executor: 'batched' runs every device's pending batch in one "
            "forward pass; 'serial' runs one batch per pass (same numbers, slower); 'naive' loads "
            "each device's state into the model per batch (equal to float tolerance, slowest).",
        ),
    ] = "batched",
    device: DeviceOption = "cpu",
    max_rows: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="Most rows in one batched edge forward pass (default: 128 on the CPU, where "
            "ResNet-20 runs fastest per image at 64-128 rows; 4,096 on a GPU). Changes no number "
            "on the CPU; on a GPU, numbers within float rounding.",
        ),
    ] = None,
) -> None:
    """Run one scenario; write config.yaml, events.parquet and summary.json into the run folder.

    Every scenario key can be overridden with --set; `fleetsim validate SCENARIO --show` lists them all with the values in force. Plugin parameters sit under the plugin's name, e.g. --set policy.random.p=0.2 or --set cloud.cema.lr_edge=1e-3. Same scenario and seed, same numbers (at the same --threads). Invalid input exits with code 2 and writes nothing.
    """
    import torch

    from simulator.checks import scenario_warnings
    from simulator.config import read_scenario_yaml
    from simulator.data.datasets import DatasetError
    from simulator.engine import run_scenario
    from simulator.fleet.executor import EXECUTORS
    from simulator.models.zoo import ModelError
    from simulator.runs import OutputError, check_run_dir, write_run

    if executor not in EXECUTORS:
        _fail(f"--executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    compute = _device(device)
    resolved = _load(scenario, overrides)
    _warn(scenario_warnings(resolved))  # before the run: it may be long
    if "sweep" in read_scenario_yaml(scenario):
        _warn(
            [
                f"{scenario} has a sweep: section; `fleetsim run` runs its base config only "
                "(`fleetsim sweep` runs every run of it)"
            ]
        )
    if threads:
        torch.set_num_threads(threads)
    out_dir = out or Path("runs") / resolved.name
    try:
        check_run_dir(out_dir)  # before the run: it may be long
    except OutputError as exc:
        _fail(exc)
    with _progress("sim {task.completed:.1f}/{task.total:.1f} s", progress) as bar:
        task = bar.add_task(f"simulating {resolved.name}", total=1.0)

        def on_progress(now_s: float, end_s: float) -> None:
            bar.update(task, completed=now_s, total=max(end_s, now_s, 1e-9))

        try:
            result = run_scenario(
                resolved,
                progress=on_progress,
                executor=executor,  # type: ignore[arg-type]
                device=compute,
                max_rows=max_rows,
            )
        except (DatasetError, ModelError) as exc:  # data or weights missing: say where to put them
            _fail(exc)
        except KeyboardInterrupt:
            errors.print(
                f"interrupted; nothing written to {out_dir}", highlight=False, markup=False
            )
            raise typer.Exit(130) from None
    try:
        write_run(result, out_dir)
    except (OutputError, OSError) as exc:  # the folder changed or the disk failed during the run
        _fail(f"the run finished but its folder could not be written: {exc}")
    _print_summary(result.summary, out_dir, offloads=resolved.routing.plugin.offloads)


def _print_summary(summary: dict, out_dir: Path, offloads: bool = False) -> None:
    """The run's headline figures (with ``offloads``, those of answers from the cloud too)."""
    table = Table(title=f"{summary['scenario']}: {summary['policy']} / {summary['adapter']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("devices", f"{summary['devices']}"),
        ("samples", f"{summary['samples']:,}"),
        ("accuracy", f"{100 * summary['accuracy']:.2f} %"),
        (
            "uploaded samples",
            f"{summary['uploaded_samples']:,} ({100 * summary['upload_fraction']:.1f} %)",
        ),
        ("upload bytes", f"{summary['upload_bytes']:,}"),
        ("download bytes", f"{summary['download_bytes']:,}"),
        ("cloud updates / steps", f"{summary['updates']:,} / {summary['cloud_steps']:,}"),
        ("simulated time", f"{summary['sim_time_s']:.1f} s"),
        ("wall time", f"{summary['wall_time_s']:.1f} s on {summary.get('compute_device', 'cpu')}"),
    ]
    if offloads:  # answers may come from the cloud

        def scaled(key: str, factor: float, fmt: str) -> str:
            value = summary.get(key)
            return "-" if value is None else format(factor * value, fmt)

        rows[3:3] = [
            ("delivered accuracy", f"{scaled('delivered_accuracy', 100, '.2f')} %"),
            (
                "offloaded samples",
                f"{summary['offloaded_samples']:,} ({scaled('offload_fraction', 100, '.1f')} %), "
                f"{scaled('offloaded_delivered_accuracy', 100, '.1f')} % answered correctly",
            ),
            (
                "latency p50 / p95",
                f"{scaled('latency_p50_s', 1000, '.0f')} / {scaled('latency_p95_s', 1000, '.0f')} ms",
            ),
            ("offload bytes", f"{summary['offload_bytes']:,}"),
        ]
    if "rebuilds" in summary:  # an adapter that ships whole models (TDMR)
        rows[-2:-2] = [
            (
                "models rebuilt / shipped",
                f"{summary['rebuilds']:,} / {summary['model_downloads']:,} "
                f"({summary['model_payload']}, {summary['model_download_bytes']:,} bytes)",
            ),
            ("time on a stale model", f"{summary['stale_model_s']:.1f} s (all devices)"),
        ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    domains = Table(title="accuracy per domain")
    domains.add_column("domain")
    domains.add_column("samples", justify="right")
    domains.add_column("accuracy", justify="right")
    domains.add_column("uploaded", justify="right")
    for name, row in summary["per_domain"].items():
        domains.add_row(
            name,
            f"{row['samples']:,}",
            f"{100 * row['accuracy']:.2f} %",
            f"{row['uploaded_samples']:,}",
        )
    console.print(domains)
    if "model_switches" in summary:
        _print_selection(summary)
    from simulator.runs import CONFIG, EVENTS, SUMMARY

    console.print(f"results: {escape(str(out_dir))}/{SUMMARY}, {EVENTS}, {CONFIG}")


def _print_selection(summary: dict) -> None:
    """Model selection per device class: accuracy, edge compute per batch, budget, models."""
    table = Table(
        title=f"model selection per profile ({summary['model_switches']} switches: "
        + ", ".join(f"{k} {v}" for k, v in summary["switches_by_reason"].items())
        + ")"
    )
    for col in ("profile", "samples", "accuracy", "compute mean / p95", "within budget", "models"):
        table.add_column(col, justify="left" if col in ("profile", "models") else "right")
    for name, row in summary["per_profile"].items():
        within = row.get("within_budget")
        table.add_row(
            name,
            f"{row['samples']:,}",
            f"{100 * row['accuracy']:.2f} %",
            f"{row['compute_mean_ms']:.1f} / {row['compute_p95_ms']:.1f} ms",
            "-" if within is None else f"{100 * within:.1f} %",
            ", ".join(f"{m} {100 * share:.0f}%" for m, share in row["models"].items()),
        )
    console.print(table)


class ListKind(str, Enum):
    policies = "policies"
    adapters = "adapters"
    datasets = "datasets"
    models = "models"
    corruptions = "corruptions"
    profiles = "profiles"
    routing = "routing"
    selection = "selection"
    traces = "traces"


@app.command("list")
def list_(
    kind: Annotated[ListKind, typer.Argument(help="What to list.")],
    scenario: Annotated[
        Path | None,
        typer.Option(help="Also list what this scenario's plugins: (modules, .py files) register."),
    ] = None,
    plugins: Annotated[
        list[str] | None,
        typer.Option(
            "--plugins",
            help="Also list what this plug-in (module or .py file) registers. Repeatable.",
        ),
    ] = None,
) -> None:
    """List the registered upload policies, adapters, datasets, models, corruptions, hardware
    profiles (edge.profile), routing policies (routing.name), model selection (selection.name) or
    the shipped network traces and RTT sets (network.uplink_trace, network.latency.samples), each
    plug-in with where it comes from: built in, an installed package's entry point, or a plug-in."""
    from simulator.config import ScenarioError, load_plugins_of, read_scenario_yaml
    from simulator.plugins import PluginError, import_plugin, load_entry_points, registries

    try:
        load_entry_points()
        if scenario is not None:
            load_plugins_of(read_scenario_yaml(scenario), str(scenario))
        for spec in plugins or []:
            import_plugin(spec)
    except (PluginError, ScenarioError) as exc:
        _fail(exc)
    if kind is ListKind.profiles:
        _list_profiles()
        return
    if kind is ListKind.traces:
        _list_traces()
        return
    registry = registries()[kind.value]
    table = Table(title=kind.value)
    table.add_column("name", no_wrap=True)
    table.add_column("source", overflow="fold")
    table.add_column("description")
    for name in registry.names():
        table.add_row(escape(name), escape(registry.source(name)), escape(registry.describe(name)))
    if kind is ListKind.models:
        table.add_row(
            "timm:<name>",
            "timm",
            "any timm model by name: random init (optional checkpoint), or timm's published "
            "weights with edge.pretrained / cloud.teacher_pretrained (local file or cache)",
        )
    console.print(table)


def _list_profiles() -> None:
    from simulator.hardware import CLOUD_PROFILES, PROFILES

    table = Table(title="profiles (edge.profile; your own under edge.profiles)")
    for column in ("name", "GMAC/s", "ms/batch", "active W", "radio nJ/B up/down", "description"):
        left = column in ("name", "description")
        table.add_column(column, justify="left" if left else "right", no_wrap=column == "name")
    for name, p in PROFILES.items():
        table.add_row(
            name,
            f"{p.gmacs_per_s:g}",
            f"{p.batch_overhead_ms:g}",
            f"{p.active_w:g}",
            f"{p.radio_tx_nj_per_byte:.0f}/{p.radio_rx_nj_per_byte:.0f}",
            p.description,
        )
    console.print(table)
    clouds = Table(title="cloud profiles (cloud.profile; your own under cloud.profiles)")
    for column in ("name", "GMAC/s", "ms/step", "description"):
        clouds.add_column(column, justify="left" if column in ("name", "description") else "right")
    for name, c in CLOUD_PROFILES.items():
        clouds.add_row(name, f"{c.gmacs_per_s:g}", f"{c.step_overhead_ms:g}", c.description)
    console.print(clouds)


def _list_traces() -> None:
    from simulator.traces import SHIPPED, resolve_rtt, resolve_trace

    table = Table(title="shipped traces (5Gophers, CC BY 4.0; `fleetsim traces show NAME`)")
    for column in ("name", "kind", "radio", "mobility", "mean", "duration / samples", "source"):
        table.add_column(column, justify="right" if column.startswith(("mean", "dur")) else "left")
    for name, item in SHIPPED.items():
        if item.kind == "uplink":
            stats = resolve_trace(name).stats()
            mean, size = f"{stats['mean_mbps']:.2f} Mbit/s", f"{stats['duration_s']:.0f} s"
            kind = "uplink trace"
        else:
            rtts = resolve_rtt(name)
            mean, size, kind = f"{rtts.mean():.1f} ms RTT", f"{len(rtts)} RTTs", "RTT set"
        table.add_row(name, kind, item.radio, item.mobility, mean, size, item.description)
    console.print(table)
