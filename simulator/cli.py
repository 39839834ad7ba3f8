"""The ``fleetsim`` command line: run, validate, list, zoo, sweep, plot, report, table,
match-budget, compare."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

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
zoo_app = typer.Typer(help="Models shipped with fleetsim and the command that trains them.")
app.add_typer(zoo_app, name="zoo")
data_app = typer.Typer(help="Corrupted datasets: precompute the disk cache, preview corruptions.")
app.add_typer(data_app, name="data")
traces_app = typer.Typer(help="Network traces: see what a device will live on.")
app.add_typer(traces_app, name="traces")

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


def _load(path: Path, overrides: list[str] | None):
    from simulator.config import load_scenario

    try:
        return load_scenario(path, overrides or [])
    except ValueError as exc:  # a ScenarioError, or a model lookup that failed while validating
        _fail(exc)


@app.command()
def validate(
    scenario: ScenarioArg,
    overrides: SetOption = None,
    show: Annotated[bool, typer.Option(help="Print the resolved scenario as YAML.")] = False,
) -> None:
    """Check a scenario (and overrides) without running it; exit code 2 if invalid. A `sweep:`
    section is checked too: every run it makes must be valid."""
    import yaml

    from simulator.config import dump_scenario
    from simulator.engine import scenario_warnings

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

    from simulator.config import read_scenario_yaml
    from simulator.data.datasets import DatasetError
    from simulator.engine import (
        OutputError,
        check_run_dir,
        run_scenario,
        scenario_warnings,
        write_run,
    )
    from simulator.fleet.executor import EXECUTORS
    from simulator.models.zoo import ModelError

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
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("sim {task.completed:.1f}/{task.total:.1f} s"),
        TimeElapsedColumn(),
        console=errors,
        disable=not progress,
    ) as bar:
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
    _print_summary(result.summary, out_dir)


def _print_summary(summary: dict, out_dir: Path) -> None:
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
    if summary.get("routing", "edge_only") != "edge_only":  # answers may come from the cloud

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
    console.print(f"results: {escape(str(out_dir))}/summary.json, events.parquet, config.yaml")


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


class TraceFormatChoice(str, Enum):
    auto = "auto"
    csv = "csv"
    fivegophers = "5gophers"
    mahimahi = "mahimahi"
    twocolumn = "twocolumn"


@traces_app.command("show")
def traces_show(
    trace: Annotated[
        str,
        typer.Argument(
            help="A shipped trace (fleetsim list traces) or a file: PATH, or PATH#SELECT for a "
            "5Gophers file (a carrier column, Verizon; a radio, 5G; or CARRIER/RUN)."
        ),
    ],
    format: Annotated[
        TraceFormatChoice, typer.Option("--format", help="Trace format (auto: detected).")
    ] = TraceFormatChoice.auto,
    scale: Annotated[
        float,
        typer.Option(help="Multiply every rate (network.uplink_scale; > 0)."),
    ] = 1.0,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also plot the trace to this PNG/PDF file.")
    ] = None,
) -> None:
    """Statistics of a bandwidth trace (mean, p5/p50/p95 Mbit/s, outage share) and, with --out,
    its plot: what a device on it will live on.

    Example: fleetsim traces show 5g-driving-up --scale 0.001 --out driving.png
    """
    from simulator.traces import TraceError, resolve_trace

    if not scale > 0:
        _fail(f"--scale must be > 0, got {scale}")
    try:
        rows = resolve_trace(trace, format.value).scaled(scale)  # type: ignore[arg-type]
    except (TraceError, ValueError) as exc:
        _fail(exc)
    stats = rows.stats()
    table = Table(title=f"{rows.name}" + (f" x {scale:g}" if scale != 1 else ""))
    table.add_column("statistic")
    table.add_column("value", justify="right")
    table.add_row("duration", f"{stats['duration_s']:.0f} s ({stats['rows']:.0f} rows)")
    for key in ("mean", "p5", "p50", "p95"):
        table.add_row(f"{key} rate", f"{stats[f'{key}_mbps']:.4g} Mbit/s")
    table.add_row("outage share (0 Mbit/s)", f"{100 * stats['outage_share']:.1f} %")
    console.print(table)
    for note in rows.notes:
        console.print(f"note: {escape(note)}")
    if out is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(6, 2.4))
        ax.step(rows.times_s, rows.mbps, where="post", lw=0.8)
        ax.axhline(stats["mean_mbps"], color="grey", lw=0.6, ls="--", label="mean")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("Mbit/s")
        ax.set_title(f"{rows.name}: mean {stats['mean_mbps']:.3g} Mbit/s", fontsize=8)
        ax.legend(loc="upper right", fontsize=7)
        fig.tight_layout()
        tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
        fig.savefig(tmp, dpi=150)
        plt.close(fig)
        tmp.replace(out)
        console.print(f"wrote {escape(str(out))}")


@zoo_app.command("build")
def zoo_build(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where to write the checkpoints (default: the package's weights folder)."
        ),
    ] = None,
    names: Annotated[
        list[str] | None, typer.Option("--name", help="Only this model (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
) -> None:
    """Train zoo models (deterministic per seed): by default the two synthetic models (minutes on
    2 CPU cores); --name resnet56-augmix fine-tunes the CIFAR-10 teacher (about 20 minutes on 2
    idle cores, 81 on busy ones)."""
    from simulator.models.train import build_zoo

    target = out or Path(__file__).parent / "models" / "weights"
    results = build_zoo(target, names=names, seed=seed, progress=True)
    table = Table(title=f"zoo build -> {target}")
    table.add_column("model")
    table.add_column("metrics")
    for name, metrics in results.items():
        table.add_row(name, ", ".join(f"{k}={v}" for k, v in metrics.items()))
    console.print(table)


@zoo_app.command("quantize")
def zoo_quantize(
    bits: Annotated[int, typer.Option(help="Bits of weights and activations: 8 or 4.")],
    model: Annotated[str, typer.Option(help="Edge model to quantize.")] = "resnet20",
    method: Annotated[
        str, typer.Option(help="gdfq (data-free generator + distillation) or minmax (noise).")
    ] = "gdfq",
    out: Annotated[
        Path | None,
        typer.Option(help="Checkpoint file or folder (default: the zoo cache, found by name)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of generator, noise and sampling.")] = 0,
    generator_iters: Annotated[int, typer.Option(help="GDFQ generator iterations.")] = -1,
    distill_iters: Annotated[int, typer.Option(help="GDFQ distillation iterations.")] = -1,
    batch_size: Annotated[int, typer.Option(help="GDFQ batch size.")] = -1,
    generator: Annotated[
        Path | None,
        typer.Option(help="GDFQ generator file: loaded if it exists, else trained and saved."),
    ] = None,
    threads: Annotated[
        int, typer.Option(min=1, help="Torch CPU threads (1 is faster on busy cores).")
    ] = 2,
) -> None:
    """Quantize an edge model without data; it is then the zoo model <model>-w<b>a<b>-<method>."""
    from dataclasses import replace

    from simulator.models.gdfq import GDFQConfig, build_quantized
    from simulator.models.zoo import ModelError, quantized_model_name

    try:
        quantized_model_name(model, bits, method)
        changes = {"generator_iters": generator_iters, "distill_iters": distill_iters}
        changes["batch_size"] = batch_size
        config = replace(
            GDFQConfig(seed=seed, threads=threads), **{k: v for k, v in changes.items() if v >= 0}
        )
    except (ModelError, ValueError) as exc:
        _fail(exc)
    _, report = build_quantized(
        model, bits, method, out, config=config, generator_path=generator, progress=True
    )
    table = Table(title=f"zoo quantize -> {report['path']}")
    table.add_column("key")
    table.add_column("value")
    for key, value in report.items():
        table.add_row(key, str(value))
    console.print(table)


@zoo_app.command("list")
def zoo_list() -> None:
    """Models by name, with their dataset, size and where their weights are on this machine
    (shipped with the package, found in a folder, missing with the command that builds them, or
    downloaded on first use)."""
    from simulator.models.zoo import list_models, model_info, weights_status

    table = Table(title="model zoo")
    for col in ("name", "dataset", "params", "weights", "description"):
        table.add_column(col, no_wrap=col == "name", overflow="fold")
    for name in list_models():
        info = model_info(name)
        table.add_row(
            name,
            str(info.get("dataset", "")),
            f"{info.get('params', 0):,}",
            weights_status(name),
            str(info.get("description", "")),
        )
    console.print(table)


@zoo_app.command("family")
def zoo_family(
    name: Annotated[str, typer.Option(help="Family name (written into the file).")] = (
        "cifar10_resnet"
    ),
    models: Annotated[
        str, typer.Option(help="Comma-separated zoo models, the family's members.")
    ] = "resnet20,resnet32,resnet44,resnet56",
    dataset: Annotated[str, typer.Option(help="Dataset the accuracy is measured on.")] = "cifar10",
    variant: Annotated[
        str, typer.Option(help="Dataset variant (cifar10: exact_prefix = 1,017 bit-exact images).")
    ] = "exact_prefix",
    split: Annotated[str, typer.Option(help="Dataset split.")] = "test",
    size: Annotated[int | None, typer.Option(help="Only the first N images.")] = None,
    root: Annotated[Path | None, typer.Option(help="Dataset folder (default: searched).")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="JSON file (default: the shipped families folder, <name>.json)."),
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="Torch CPU threads.")] = 2,
) -> None:
    """Measure a model family for selection (selection.adaptivenet.family): accuracy of each
    member on a stated image set, and MACs per image counted from the model; writes a JSON."""
    import torch

    from policies.selection.family import family_dir, measure_family

    torch.set_num_threads(threads)
    members = [m.strip() for m in models.split(",") if m.strip()]
    data = _dataset(dataset, split, root, variant, 0, size)
    command = (
        f"fleetsim zoo family --name {name} --models {','.join(members)} --dataset {dataset} "
        f"--variant {variant} --split {split}" + (f" --size {size}" if size else "")
    )
    try:
        family = measure_family(
            members,
            data.images,
            data.labels,
            name=name,
            measured_on={
                "dataset": dataset,
                "variant": variant,
                "split": split,
                # the file name, not this machine's folder: the md5s below pin the pixels
                "source": Path(data.source.split(" (")[0]).name
                + data.source[len(data.source.split(" (")[0]) :],
            },
            command=command,
        )
    except ValueError as exc:  # an unknown model, missing weights (ModelError), a bad family
        _fail(exc)
    target = out or family_dir() / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(family.to_json())
    table = Table(title=f"zoo family {name} -> {target} ({len(data)} images, {data.source})")
    for col in ("model", "accuracy", "correct", "MMACs/image", "params"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for m in family.members:
        table.add_row(
            m.model,
            f"{100 * m.accuracy:.2f} %",
            f"{m.correct}/{m.images}",
            f"{m.macs / 1e6:.2f}",
            f"{m.params:,}",
        )
    console.print(table)


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
    from simulator.engine import OutputError, check_writable
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


class PlotKind(str, Enum):
    pareto = "pareto"
    sweep = "sweep"
    timeline = "timeline"
    devices = "devices"
    cloud = "cloud"


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


@app.command()
def plot(
    runs_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="A sweep folder (or one run folder); several are drawn together (e.g. a sweep "
            "and the random-at-matched-bytes sweep run after it).",
            metavar="RUNS_DIR...",
        ),
    ],
    kind: Annotated[PlotKind, typer.Option(help="Which figure.")] = PlotKind.pareto,
    x: Annotated[
        str | None, typer.Option(help="Swept key on the x axis (sweep plot; default: first).")
    ] = None,
    metric: Annotated[str, typer.Option(help="Summary metric (sweep plot).")] = "accuracy",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Folder for the PDF and PNG (default: the first RUNS_DIR/figures)."
        ),
    ] = None,
) -> None:
    """Draw one paper figure (PDF + PNG) from run folders."""
    from analysis.load import check_out_folder
    from analysis.report import draw

    try:
        out_dir = check_out_folder(out or runs_dirs[0] / "figures")
        _note_unlisted(runs_dirs)
        paths = draw(runs_dirs, kind.value, out_dir, x=x, metric=metric)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        _fail(exc)
    for path in paths:
        console.print(f"wrote {escape(str(path))}")


@app.command()
def report(
    runs_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="A sweep folder (or one run folder); several are reported together.",
            metavar="RUNS_DIR...",
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Report folder (default: the first RUNS_DIR/report)."),
    ] = None,
) -> None:
    """All figures and tables (Markdown + LaTeX) of a sweep into one folder."""
    from analysis.load import check_out_folder
    from analysis.report import build_report

    try:
        out_dir = check_out_folder(out or runs_dirs[0] / "report")
        _note_unlisted(runs_dirs)
        paths = build_report(runs_dirs, out_dir)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    for path in paths:
        console.print(f"wrote {escape(str(path))}")


TABLE_OUT = Path("table")


class TableProtocol(str, Enum):
    auto = "auto"
    reset = "reset"
    continual = "continual"


class BytesPer(str, Enum):
    device = "device"
    total = "total"


def _labels(items: list[str] | None) -> dict[str, str]:
    labels = {}
    for item in items or []:
        key, sep, name = item.partition("=")
        if not sep or not key.strip() or not name.strip():
            _fail(f"--label {item!r}: expected KEY=NAME, e.g. cema/cema=CEMA")
        labels[key.strip()] = name.strip()
    return labels


@app.command()
def table(
    runs: Annotated[
        list[Path], typer.Argument(help="Run folders and/or sweep folders (all their runs).")
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Writes OUT.md, OUT.tex (a .md/.tex ending is dropped)."),
    ] = TABLE_OUT,
    by: Annotated[
        list[str] | None,
        typer.Option(
            help="Row key, repeatable: 'method' (from cloud.adapter + policy.name), 'source' (the "
            "folder given that holds the run: variants run into separate sweep folders get their "
            "own rows, named by the folder's name; --label FOLDER=NAME renames, and a FOLDER "
            "with a slash (a/runs) names that folder only), a swept or dotted config key "
            "(policy.random.p), or a summary field. Default: method."
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            help="Rename a row, repeatable: ADAPTER/POLICY=NAME or OLD=NAME "
            "(e.g. --label 'cema/cema=CEMA (ours)')."
        ),
    ] = None,
    protocol: Annotated[
        TableProtocol,
        typer.Option(help="reset: one run per corruption; continual: domains inside each run."),
    ] = TableProtocol.auto,
    bytes_per: Annotated[
        BytesPer, typer.Option(help="Upload/download MB per device or for the whole fleet.")
    ] = BytesPer.device,
    decimals: Annotated[int, typer.Option(min=0, help="Decimals of error and upload %.")] = 1,
    full_names: Annotated[
        bool, typer.Option(help="Full corruption names as column headers.")
    ] = False,
    allow_missing: Annotated[
        bool,
        typer.Option(
            help="Show missing cells as '–' (and a cell's seed count as (n=k) when some lack it) "
            "instead of stopping; e.g. while a sweep is still running."
        ),
    ] = False,
    corruption_ci: Annotated[
        bool,
        typer.Option(
            help="Confidence intervals in the corruption cells too (--no-corruption-ci: means "
            "there, intervals only on mean error, upload and bytes; narrower)."
        ),
    ] = True,
) -> None:
    """Method-comparison table (CIFAR-10-C style): error % per corruption and mean, uploaded
    samples %, upload and download MB; mean ± 95% t-interval over seeds. Writes OUT.md and
    OUT.tex (booktabs) and prints the Markdown."""
    from analysis import tta

    try:
        paths = tta.table_paths(out)
        for path in paths:
            if path.is_dir():
                raise ValueError(f"--out {out}: {path} is a folder; give a file name stem")
        above = next((d for d in paths[0].parents if d.exists() and not d.is_dir()), None)
        if above is not None:
            raise ValueError(
                f"--out {out} lies under {above}, a file, not a folder: give a path in a folder"
            )
        _note_unlisted(runs)
        per_seed = tta.seed_table(
            runs,
            by=by or ["method"],
            labels=_labels(label),
            protocol=protocol.value,  # type: ignore[arg-type]
            bytes_per=bytes_per.value,  # type: ignore[arg-type]
            allow_missing=allow_missing,
        )
        text = tta.tta_table(
            per_seed,
            decimals=decimals,
            short_names=not full_names,
            ci="all" if corruption_ci else "summary",
        )
        paths = tta.write_table(text, out)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    console.print(paths[0].read_text(), highlight=False, markup=False, soft_wrap=True)
    for path in paths:
        console.print(f"wrote {escape(str(path))}")


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


@app.command()
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="Run and/or sweep folders holding both methods' runs.")
    ],
    a: Annotated[
        str | None,
        typer.Option(
            "--a", help="The method tested: a label (CEMA) or ADAPTER/POLICY (cema/cema)."
        ),
    ] = None,
    b: Annotated[
        str | None,
        typer.Option("--b", help="The baseline it is compared with (e.g. Random or cema/random)."),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            help="Rename first, as in `fleetsim table`: a method (ADAPTER/POLICY=NAME) or, with "
            "--by source, a folder (FOLDER=NAME; a FOLDER with a slash, a/runs, names that "
            "folder only)."
        ),
    ] = None,
    protocol: Annotated[
        TableProtocol,
        typer.Option(help="reset: one run per corruption; continual: domains inside each run."),
    ] = TableProtocol.auto,
    by: Annotated[
        list[str] | None,
        typer.Option(
            help="Compare within each value of this key too, repeatable (e.g. --by "
            "network.uplink_mbps for a bandwidth sweep: one comparison per bandwidth; --by source "
            "for variants in separate folders, the folders of one variant labelled alike)."
        ),
    ] = None,
    baseline: Annotated[
        list[Path] | None,
        typer.Option(
            help="Read B from these run/sweep folders (repeatable) and A from RUNS: two variants "
            "of one method, e.g. fleetsim compare runs/cema_norep --baseline runs/cema."
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Does method A beat B? Paired comparison over seeds, with interval and p-value.

    Per seed (the same seed gives both methods the same streams): their mean error over the corruptions, A's advantage in points, uploads and MB; then the mean advantage with its 95% t-interval and the two-sided paired t-test's p, and in how many (corruption, seed) cells A's error is lower, level or higher. Without --a/--b the runs must hold exactly two methods (the baseline is the one listed first in `fleetsim table`). Example: fleetsim compare runs/c10c_continual_s5_1024 runs/c10c_continual_s5_1024_random --a CEMA --b Random
    """
    import json

    from analysis.paired import describe, paired_comparison

    try:
        _note_unlisted([*runs, *(baseline or [])])
        results = paired_comparison(
            runs,
            a=a,
            b=b,
            labels=_labels(label),
            protocol=protocol.value,  # type: ignore[arg-type]
            by=by or [],
            baseline=baseline or None,
        )
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    if json_:
        console.print_json(json.dumps([r.as_dict() for r in results]))
        return
    for result in results:
        console.print(describe(result), highlight=False, markup=False, soft_wrap=True)


DatasetOption = Annotated[
    str, typer.Option("--dataset", "-d", help="Dataset name (see `fleetsim list datasets`).")
]
SplitOption = Annotated[str, typer.Option(help="Dataset split: train or test.")]
VariantOption = Annotated[str, typer.Option(help="Dataset variant (e.g. cifar10 exact_prefix).")]
RootOption = Annotated[Path | None, typer.Option(help="Dataset folder (default: searched).")]
CorruptionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--corruption",
        "-c",
        help="Corruption name, repeatable or comma-separated (default: all 19).",
    ),
]
SeverityOption = Annotated[
    list[int] | None,
    typer.Option("--severity", help="Severity 1-5, repeatable (default: 1-5)."),
]


def _corruption_grid(
    corruptions: list[str] | None, severities: list[int] | None
) -> tuple[list[str], list[int]]:
    """Validated corruption names and severities; exit code 2 with the allowed values otherwise."""
    from simulator.data.corruptions import list_corruptions

    allowed = list_corruptions()
    names = [n.strip() for item in corruptions or [] for n in item.split(",") if n.strip()]
    for name in names:
        if name not in allowed:
            _fail(f"unknown corruption {name!r}; allowed: {', '.join(allowed)}")
    bad = [s for s in severities or [] if not 1 <= s <= 5]
    if bad:
        _fail(f"severity must be 1-5 (allowed 1, 2, 3, 4, 5), got {bad[0]}")
    return names or allowed, sorted(set(severities or [1, 2, 3, 4, 5]))


def _dataset(name: str, split: str, root: Path | None, variant: str, seed: int, size: int | None):
    from simulator.data.datasets import DatasetError, create_dataset
    from simulator.registry import UnknownNameError

    try:
        return create_dataset(name, split=split, root=root, variant=variant, seed=seed, size=size)
    except (UnknownNameError, ValueError, DatasetError) as exc:
        _fail(exc)


@data_app.command("corrupt")
def data_corrupt(
    dataset: DatasetOption = "synthetic",
    split: SplitOption = "test",
    variant: VariantOption = "auto",
    root: RootOption = None,
    size: Annotated[int | None, typer.Option(help="Keep only the first N images.")] = None,
    corruptions: CorruptionOption = None,
    severities: SeverityOption = None,
    seed: Annotated[int, typer.Option(help="Corruption seed (the scenario seed).")] = 0,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="Cache folder (default: $FLEETSIM_CACHE or ~/.cache/fleetsim/corrupted)."
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Precompute corrupted sets into the disk cache (all corruptions x severities by default)."""
    from simulator.data.cache import CorruptionCache

    names, levels = _corruption_grid(corruptions, severities)
    images = _dataset(dataset, split, root, variant, seed, size)
    store = CorruptionCache(cache)
    done = 0
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} images"),
        TimeElapsedColumn(),
        console=errors,
        disable=not progress,
    ) as bar:
        task = bar.add_task("corrupting", total=len(names) * len(levels) * len(images))
        for name in names:
            for severity in levels:
                bar.update(task, description=f"{name} s{severity}")
                if store.contains(images, name, severity, seed):
                    bar.advance(task, len(images))
                    continue
                store.get(images, name, severity, seed, on_progress=lambda k: bar.advance(task, k))
                done += 1
    total = len(names) * len(levels)
    console.print(
        f"{total} corrupted sets of {len(images):,} {dataset} images in {store.root} "
        f"({done} built, {total - done} already cached)",
        highlight=False,
    )


@data_app.command("preview")
def data_preview(
    out: Annotated[Path, typer.Option("--out", "-o", help="Image to write (PNG, PDF, ...).")],
    dataset: DatasetOption = "synthetic",
    split: SplitOption = "test",
    variant: VariantOption = "auto",
    root: RootOption = None,
    images: Annotated[int, typer.Option(min=1, max=16, help="Images per cell.")] = 3,
    size_px: Annotated[
        int, typer.Option(help="Resize images to 32 (CIFAR-10-C table) or 224 (ImageNet-C).")
    ] = 32,
    corruptions: CorruptionOption = None,
    severities: SeverityOption = None,
    seed: Annotated[int, typer.Option(help="Corruption seed.")] = 0,
) -> None:
    """Draw a grid: one row per corruption, columns clean and each severity, a few images each."""
    from simulator.data.preview import preview_figure

    if size_px not in (32, 224):
        _fail(f"--size-px must be 32 or 224, got {size_px}")
    names, levels = _corruption_grid(corruptions, severities)
    clean = _dataset(dataset, split, root, variant, seed, images)
    figure = preview_figure(clean.images, names, levels, size_px=size_px, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100 if size_px == 32 else 160)
    console.print(f"wrote {escape(str(out))} ({len(names)} corruptions x {len(levels)} severities)")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
