"""``fleetsim traces``: see what a device will live on."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from simulator.cli.common import _fail, app, console

traces_app = typer.Typer(help="Network traces: see what a device will live on.")
app.add_typer(traces_app, name="traces")


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
