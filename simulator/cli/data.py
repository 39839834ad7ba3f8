"""``fleetsim data``: precompute corrupted sets into the disk cache, preview corruptions and a
device's stream."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from simulator.cli.common import (
    ScenarioArg,
    SetOption,
    _dataset,
    _fail,
    _load,
    _progress,
    _warn,
    app,
    console,
)

data_app = typer.Typer(
    help="Corrupted datasets and streams: precompute the disk cache, preview corruptions, "
    "picture a device's stream."
)
app.add_typer(data_app, name="data")


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
    with _progress("{task.completed:,}/{task.total:,} images", progress) as bar:
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


@data_app.command("stream")
def data_stream(
    scenario: ScenarioArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Image to write (PNG, PDF, ...).")],
    device: Annotated[
        int, typer.Option("--device", min=0, help="Device id, 0 to fleet.devices - 1.")
    ] = 0,
    overrides: SetOption = None,
) -> None:
    """Draw one device's stream over simulated time: the corruption mix of each edge batch, its
    severity and its class mix (with the device's class prior under stream.labels.alpha).

    Built from the scenario exactly as a run builds it (same seed, same draws), without running
    anything: the way to check a schedule before spending a run on it. What shapes the picture
    (stream section of the scenario, or --set):

    \b
      schedule        continual | random | mixed | gradual (severity walks 1 -> 5 -> 1)
      groups          device groups with their own corruptions, severity, schedule, timing
      labels.alpha    per-device class prior ~ Dirichlet(alpha): 0.1 few classes, 1000 i.i.d.
      labels.correlation   runs of one class (RoTTA's Dirichlet order): 0.1 long runs

    \b
    Examples:
      fleetsim data stream scenarios/quickstart.yaml --device 3 --out stream.png
      fleetsim data stream scenarios/quickstart.yaml --out gradual.png \\
          --set stream.schedule=gradual --set stream.samples_per_device=2304
      fleetsim data stream scenarios/quickstart.yaml --out labels.png \\
          --set stream.labels.alpha=0.1 --set stream.labels.correlation=0.1
      fleetsim data stream scenarios/quickstart.yaml --device 2 --out groups.png \\
          --set 'stream.groups=[{devices: [0, 1], corruptions: [fog]}, {devices: [2, 3]}]'
    """
    from simulator.build import build_device_stream
    from simulator.checks import scenario_warnings
    from simulator.data.stream_preview import stream_figure, stream_summary

    resolved = _load(scenario, overrides)
    devices = resolved.fleet.devices
    if device >= devices:
        _fail(f"--device {device} does not exist: fleet.devices is {devices} (ids 0-{devices - 1})")
    _warn(w for w in scenario_warnings(resolved) if w.startswith("stream."))
    config = resolved.dataset
    dataset = _dataset(
        config.name, config.split, config.root, config.variant, resolved.seed, config.size
    )
    stream = build_device_stream(resolved, device, dataset.labels)
    own, group, _ = resolved.stream.for_device(device)
    parts = [f"{resolved.name}: device {device}"]
    if group is not None:
        parts.append(f"group {group}")
    parts.append(f"schedule {own.schedule}")
    if own.labels.alpha is not None:
        parts.append(f"alpha {own.labels.alpha:g}")
    if own.labels.correlation is not None:
        parts.append(f"correlation {own.labels.correlation:g}")
    title = ", ".join(parts)
    figure = stream_figure(stream, dataset.labels, dataset.class_names, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    console.print(f"wrote {escape(str(out))} ({escape(title)})", highlight=False)
    for line in stream_summary(stream, dataset.labels, dataset.class_names):
        console.print(f"  {escape(line)}", highlight=False)
