"""``fleetsim zoo``: the models shipped with fleetsim and the commands that build them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from simulator.cli.common import _dataset, _fail, app, console

zoo_app = typer.Typer(help="Models shipped with fleetsim and the command that trains them.")
app.add_typer(zoo_app, name="zoo")


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

    target = out or Path(__file__).parent.parent / "models" / "weights"
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
