"""Figures and tables of a sweep into one folder (``fleetsim plot`` / ``fleetsim report``).

Run-level figures (timeline, devices, cloud) need a choice of runs from a sweep: the *reference
point* takes, for each swept key other than the policy and the seed, its middle value; the timeline
then pools all seeds per policy there, and devices/cloud show one run (the last policy in plotting
order, first seed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from analysis import plots, tables
from analysis.load import load_events, load_runs, read_config

KINDS = ("pareto", "sweep", "timeline", "devices", "cloud")
HUE = "policy.name"


def reference_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs at the reference point (middle value of every swept key but policy and seed)."""
    chosen = runs
    for key in runs.attrs.get("swept", []):
        if key in (HUE, "seed") or key not in runs:
            continue
        values = runs[key].dropna().unique().tolist()
        try:
            values.sort()
        except TypeError:  # mixed types: order by text
            values.sort(key=str)
        chosen = chosen[chosen[key] == values[len(values) // 2]]
    chosen = chosen.copy()
    chosen.attrs = runs.attrs
    return chosen


def representative_run(runs: pd.DataFrame) -> str:
    """One run of the reference point: the last policy in plotting order, lowest seed."""
    chosen = reference_runs(runs)
    if HUE in chosen:
        last = plots._ordered(chosen[HUE])[-1]
        chosen = chosen[chosen[HUE] == last]
    if "seed" in chosen:
        chosen = chosen.sort_values("seed")
    return str(chosen["run"].iloc[0])


def figure(runs_dir: str | Path, kind: str, x: str | None = None, metric: str = "accuracy"):
    """Build one figure of ``kind`` from the runs under ``runs_dir``; returns (Figure, stem)."""
    if kind not in KINDS:
        raise ValueError(f"unknown plot kind {kind!r}; allowed: {', '.join(KINDS)}")
    runs = load_runs(runs_dir)
    if kind == "pareto":
        return plots.pareto(runs, hue=HUE), "pareto"
    if kind == "sweep":
        fig = plots.sweep_curve(runs, x=x, metric=metric, hue=HUE)
        return fig, f"sweep_{metric}"
    if kind == "timeline":
        names = reference_runs(runs)["run"].tolist()
        return plots.timeline(load_events(runs_dir, names, kinds=["sample"])), "timeline"
    name = representative_run(runs)
    if kind == "devices":
        return plots.devices(load_events(runs_dir, [name], kinds=["sample"])), "devices"
    path = runs.loc[runs["run"] == name, "path"].iloc[0]
    cloud = read_config(path)["cloud"]
    events = load_events(runs_dir, [name])
    fig = plots.cloud(events, ms_per_step=cloud["ms_per_step"], workers=cloud["workers"])
    return fig, "cloud"


def draw(
    runs_dir: str | Path, kind: str, out: str | Path, x: str | None = None, metric: str = "accuracy"
) -> list[Path]:
    """One figure as PDF + PNG into ``out``."""
    fig, stem = figure(runs_dir, kind, x=x, metric=metric)
    try:
        return plots.save(fig, out, stem)
    finally:
        plt.close(fig)


def build_report(runs_dir: str | Path, out: str | Path) -> list[Path]:
    """Every figure that the runs support, and the run and aggregate tables (Markdown + LaTeX).

    All or nothing: missing or empty ``runs_dir`` fails before anything is created, and the files
    are written into a staging folder beside ``out`` first, so a figure that fails halfway leaves
    ``out`` as it was. Files of ``out`` that the report does not write are left alone.
    """
    runs = load_runs(runs_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        written: list[Path] = []
        kinds = ["pareto", "timeline", "devices", "cloud"]
        if plots._other_swept(runs, HUE):
            kinds.insert(1, "sweep")
        for kind in kinds:
            metrics = ["accuracy", "upload_bytes"] if kind == "sweep" else ["accuracy"]
            for metric in metrics:
                written += draw(runs_dir, kind, staging, metric=metric)
        for stem, table, caption in (
            ("runs", tables.runs_table(runs), "Every run; numbers as in summary.json."),
            (
                "aggregate",
                tables.aggregate_table(runs),
                "Mean and 95% t-interval over seeds per sweep point.",
            ),
        ):
            md, tex = staging / f"{stem}.md", staging / f"{stem}.tex"
            md.write_text(tables.to_markdown(table))
            tex.write_text(tables.to_latex(table, caption=caption, label=f"tab:{stem}"))
            written += [md, tex]
        out.mkdir(exist_ok=True)
        for path in written:
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / path.name for path in written]
