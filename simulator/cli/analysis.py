"""``fleetsim plot``, ``report``, ``table`` and ``compare``: read run and sweep folders."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from simulator.cli.common import _fail, _note_unlisted, app, console


class PlotKind(str, Enum):
    pareto = "pareto"
    sweep = "sweep"
    timeline = "timeline"
    devices = "devices"
    cloud = "cloud"


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
    relative_to: Annotated[
        str | None,
        typer.Option(
            help="Sweep plot: draw every other method's difference from this one (e.g. 'BN "
            "adapt'), paired per seed at each x, with the paired 95% t-interval as the band; "
            "the spread between seeds' streams cancels out."
        ),
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            help="Rename a method first, as in `fleetsim table`: ADAPTER/POLICY=NAME or "
            "LABEL=NAME (repeatable), e.g. 'cema/random=Random (CEMA bytes)'."
        ),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            help="Draw only this method (its name after --label, or ADAPTER/POLICY; repeatable); "
            "default: all."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Folder for the PDF and PNG (default: the first RUNS_DIR/figures)."
        ),
    ] = None,
) -> None:
    """Draw one paper figure (PDF + PNG) from run folders.

    Example, a bandwidth sweep against the edge-only baseline: fleetsim plot runs/sweep --kind sweep --x network.uplink_scale --relative-to 'BN adapt'
    """
    from analysis.report import draw
    from simulator.runs import check_out_folder

    try:
        out_dir = check_out_folder(out or runs_dirs[0] / "figures")
        _note_unlisted(runs_dirs)
        paths = draw(
            runs_dirs,
            kind.value,
            out_dir,
            x=x,
            metric=metric,
            labels=_labels(label),
            relative_to=relative_to,
            methods=method,
        )
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
    from analysis.report import build_report
    from simulator.runs import check_out_folder

    try:
        out_dir = check_out_folder(out or runs_dirs[0] / "report")
        _note_unlisted(runs_dirs)
        skipped: list[str] = []
        paths = build_report(runs_dirs, out_dir, skipped)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    for note in skipped:
        console.print(f"note: {escape(note)}")
    for path in paths:
        console.print(f"wrote {escape(str(path))}")


TABLE_OUT = Path("table")


class TableProtocol(str, Enum):
    auto = "auto"
    reset = "reset"
    continual = "continual"


ProtocolOption = Annotated[
    TableProtocol,
    typer.Option(help="reset: one run per corruption; continual: domains inside each run."),
]


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
    protocol: ProtocolOption = TableProtocol.auto,
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
    protocol: ProtocolOption = TableProtocol.auto,
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
