"""Figures and tables of a sweep into one folder (``fleetsim plot`` / ``fleetsim report``).

The series of every figure is the method: the upload policy (``policy.name``) when all runs share
one cloud adapter, else the method label from adapter and policy (``Source``, ``BN adapt``,
``CEMA``; see :func:`analysis.methods.method_label`), kept in a ``method`` column.

Run-level figures (timeline, devices, cloud) need a choice of runs from a sweep: the *reference
point* takes, for each other swept key but the seed, its middle value (among the values that every
method has, when there are such); keys that follow the method (zipped with it) are left as they
are. The timeline then pools all seeds per method there, and devices/cloud show one run (the last
method in plotting order, first seed). Each of these figures names its choice in its title.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from analysis import plots, tables
from analysis.load import RunsArg, load_events, load_runs
from analysis.methods import method_key, method_label
from simulator.runs import check_out_folder, read_config

KINDS = ("pareto", "sweep", "timeline", "devices", "cloud")
HUE = "policy.name"
METHOD = "method"


def with_methods(runs: pd.DataFrame, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """``runs`` with a ``method`` column: the method label from the summary's adapter and policy
    (or the swept ``cloud.adapter`` / ``policy.name``), e.g. ``CEMA`` for cema/cema. ``labels``
    renames as ``fleetsim table --label`` does: an ``adapter/policy`` key or a label -> a name."""
    runs = runs.copy()
    labels = labels or {}
    adapters = _column(runs, "adapter", "cloud.adapter")
    policies = _column(runs, "policy", HUE)
    paths = _column(runs, "path")
    names = []
    for a, p, path in zip(adapters, policies, paths, strict=True):
        label = method_label(a, p, lambda path=path: _config_or_none(path))
        names.append(labels.get(method_key(a, p), labels.get(label, label)))
    runs[METHOD] = names
    return runs


def _config_or_none(path: str | None) -> dict[str, Any] | None:
    """The run's config.yaml, or None when the run has no readable one."""
    if path is None:
        return None
    try:
        return read_config(path)
    except OSError:
        return None


def _column(runs: pd.DataFrame, *names: str) -> list:
    for name in names:
        if name in runs:
            return runs[name].tolist()
    return [None] * len(runs)


def series_key(runs: pd.DataFrame) -> str:
    """``method`` when the runs hold more than one cloud adapter, else ``policy.name``."""
    adapters = {str(a) for a in _column(runs, "adapter", "cloud.adapter") if a is not None}
    return METHOD if len(adapters) > 1 and METHOD in runs else HUE


def _equal(column: pd.Series, value: Any) -> pd.Series:
    """Element-wise ``column == value``; a list value (a tuple) is compared whole, not per item."""
    return column.map(lambda v: bool(v == value)).astype(bool)


def reference_runs(runs: pd.DataFrame, hue: str | None = None) -> pd.DataFrame:
    """Runs at the reference point: every method (``hue``) and seed, and for each other swept key
    its middle value; ``attrs["reference"]`` maps those keys to the values chosen."""
    hue = hue or (series_key(runs) if METHOD in runs else HUE)
    chosen = runs
    reference: dict[str, Any] = {}
    for key in runs.attrs.get("swept", []):
        if key in (hue, "seed", *plots.SERIES_KEYS) or key not in runs:
            continue
        values = plots._sorted_values(chosen[key])
        if len(values) < 2:
            continue
        if hue in chosen:
            per_series = [set(g[key].dropna().tolist()) for _, g in chosen.groupby(hue)]
            if all(len(v) <= 1 for v in per_series):
                continue  # follows the method (zipped with it): keep every method
            common = set.intersection(*per_series)
            values = [v for v in values if v in common] or values
        value = values[len(values) // 2]
        reference[key] = value
        chosen = chosen[_equal(chosen[key], value)]
    chosen = chosen.copy()
    chosen.attrs = {**runs.attrs, "reference": reference}
    return chosen


def representative_run(runs: pd.DataFrame, hue: str | None = None) -> str:
    """One run of the reference point: the last method in plotting order, lowest seed."""
    hue = hue or (series_key(runs) if METHOD in runs else HUE)
    chosen = reference_runs(runs, hue)
    if hue in chosen:
        last = plots._ordered(chosen[hue])[-1]
        chosen = chosen[chosen[hue] == last]
    if "seed" in chosen:
        chosen = chosen.sort_values("seed")
    return str(chosen["run"].iloc[0])


def reference_note(chosen: pd.DataFrame, run: str | None = None, hue: str = HUE) -> str:
    """The title of a run-level figure: which run (method, seed) and swept values it shows."""
    parts = []
    if run is not None:
        row = chosen[chosen["run"] == run].iloc[0]
        if hue in chosen:
            parts.append(str(row[hue]))
        if "seed" in chosen:
            parts.append(f"seed {row['seed']}")
    values = [f"{k} = {plots._format_tick(v)}" for k, v in chosen.attrs["reference"].items()]
    if values:
        parts.append("at " + ", ".join(values))
    return ", ".join(parts)


def _titled(fig: Figure, note: str) -> Figure:
    if note:
        fig.axes[0].set_title(note, fontsize=6, loc="left")
        fig.tight_layout()
    return fig


def figure(
    runs_dir: RunsArg,
    kind: str,
    x: str | None = None,
    metric: str = "accuracy",
    labels: Mapping[str, str] | None = None,
    relative_to: str | None = None,
    methods: Sequence[str] | None = None,
):
    """Build one figure of ``kind`` from the runs under ``runs_dir`` (a folder or several);
    returns (Figure, stem). ``labels`` renames methods (``adapter/policy`` key or label -> name);
    ``relative_to`` (sweep figures only) draws each method's paired difference from that one;
    ``methods`` (names after renaming, or ``adapter/policy`` keys) keeps only those methods'
    runs (``relative_to``'s are kept too)."""
    if kind not in KINDS:
        raise ValueError(f"unknown plot kind {kind!r}; allowed: {', '.join(KINDS)}")
    if relative_to is not None and kind != "sweep":
        raise ValueError(f"relative_to is for sweep figures, not {kind!r} (got {relative_to!r})")
    runs = with_methods(load_runs(runs_dir), labels)
    if methods:
        runs = _only(runs, methods, keep=relative_to)
    hue = series_key(runs)
    if labels or methods or (relative_to is not None and relative_to in set(runs[METHOD])):
        hue = METHOD  # a renamed, chosen or named method is a series of its own
    if kind == "pareto":
        return plots.pareto(runs, hue=hue), "pareto"
    if kind == "sweep":
        fig = plots.sweep_curve(runs, x=x, metric=metric, hue=hue, relative_to=relative_to)
        return fig, f"sweep_{metric}" + (f"_vs_{_slug(relative_to)}" if relative_to else "")
    methods = dict(zip(runs["run"], runs[METHOD], strict=True))
    chosen = reference_runs(runs, hue)
    if kind == "timeline":
        events = load_events(runs_dir, chosen["run"].tolist(), kinds=["sample"])
        events[METHOD] = events["run"].map(methods)
        fig = plots.timeline(events, hue=METHOD if hue == METHOD else "policy")
        return _titled(fig, reference_note(chosen, hue=hue)), "timeline"
    name = representative_run(runs, hue)
    note = reference_note(chosen, name, hue)
    if kind == "devices":
        fig = plots.devices(load_events(runs_dir, [name], kinds=["sample"]))
        return _titled(fig, note), "devices"
    path = runs.loc[runs["run"] == name, "path"].iloc[0]
    cloud = read_config(path)["cloud"]
    events = load_events(runs_dir, [name])
    fig = plots.cloud(events, ms_per_step=cloud.get("ms_per_step"), workers=cloud["workers"])
    return _titled(fig, note), "cloud"


def _only(runs: pd.DataFrame, methods: Sequence[str], keep: str | None) -> pd.DataFrame:
    """The runs of ``methods`` (names or ``adapter/policy`` keys) and of ``keep``; a name no run
    has is an error listing those the runs hold."""
    keys = [method_key(a, p) for a, p in zip(
        _column(runs, "adapter", "cloud.adapter"), _column(runs, HUE), strict=True
    )]  # fmt: skip
    names = set(runs[METHOD])
    unknown = [m for m in methods if m not in names and m not in keys]
    if unknown:
        have = ", ".join(plots._ordered(runs[METHOD]))
        raise ValueError(
            f"no runs of method {', '.join(map(repr, unknown))}; the runs hold: {have}"
        )
    wanted = {*methods, *([keep] if keep else [])}
    mask = [name in wanted or key in wanted for name, key in zip(runs[METHOD], keys, strict=True)]
    chosen = runs[mask].copy()
    chosen.attrs = runs.attrs
    return chosen


def _slug(name: str) -> str:
    """A series name as part of a file name: ``BN adapt`` -> ``bn_adapt``."""
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "baseline"


def draw(
    runs_dir: RunsArg,
    kind: str,
    out: str | Path,
    x: str | None = None,
    metric: str = "accuracy",
    labels: Mapping[str, str] | None = None,
    relative_to: str | None = None,
    methods: Sequence[str] | None = None,
) -> list[Path]:
    """One figure as PDF + PNG into ``out`` (arguments as :func:`figure`)."""
    check_out_folder(out)
    fig, stem = figure(
        runs_dir, kind, x=x, metric=metric, labels=labels, relative_to=relative_to, methods=methods
    )
    try:
        return plots.save(fig, out, stem)
    finally:
        plt.close(fig)


def build_report(
    runs_dir: RunsArg, out: str | Path, skipped: list[str] | None = None
) -> list[Path]:
    """Every figure that the runs support, and the run and aggregate tables (Markdown + LaTeX).

    A figure of single runs (timeline, devices, cloud) whose runs kept no events (a record of
    summaries) is left out, and why is appended to ``skipped`` when given.

    All or nothing: missing or empty ``runs_dir`` fails before anything is created, and the files
    are written into a staging folder beside ``out`` first, so a figure that fails halfway leaves
    ``out`` as it was. Files of ``out`` that the report does not write are left alone.
    """
    out = check_out_folder(out)
    runs = with_methods(load_runs(runs_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        written: list[Path] = []
        kinds = ["pareto", "timeline", "devices", "cloud"]
        if plots._other_swept(runs, series_key(runs)):
            kinds.insert(1, "sweep")
        for kind in kinds:
            metrics = ["accuracy", "upload_bytes"] if kind == "sweep" else ["accuracy"]
            for metric in metrics:
                try:
                    written += draw(runs_dir, kind, staging, metric=metric)
                except FileNotFoundError as exc:
                    if kind in ("pareto", "sweep"):
                        raise
                    if skipped is not None:
                        skipped.append(f"no {kind} figure: {exc}")
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
