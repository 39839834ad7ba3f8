"""Paper figures from tidy DataFrames (``analysis.load``); each function returns a Figure.

One style for all (:func:`paper_style`): single-column width (3.4 in), 8 pt text, the Okabe-Ito
colour-blind-safe palette with the colour and marker each policy declares on its class (others by
position among the colours none claims), units on every axis. Figures
are saved as PDF + PNG with :func:`save`. The Agg backend is used, so nothing needs a display.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.methods import series_styles  # noqa: E402
from analysis.stats import t_interval  # noqa: E402

COLUMN_WIDTH_IN = 3.4
OKABE_ITO = [
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#F0E442",  # yellow
    "#000000",  # black
]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
# (axis label with unit, factor from the stored unit)
QUANTITIES: dict[str, tuple[str, float]] = {
    "accuracy": ("accuracy (%)", 100.0),
    "upload_fraction": ("uploaded samples (%)", 100.0),
    "upload_bytes": ("upload, whole fleet (MB)", 1e-6),
    "download_bytes": ("download, whole fleet (MB)", 1e-6),
    "uploaded_samples": ("uploaded samples", 1.0),
    "upload_messages": ("upload messages", 1.0),
    "updates": ("cloud updates", 1.0),
    "dropped_samples": ("uploaded samples dropped", 1.0),
    "state_staleness_mean_s": ("age of the state in use, mean (s)", 1.0),
    "stale_model_s": ("time on a stale model, all devices (s)", 1.0),
    "rebuild_ms_mean": ("cloud time per rebuild (ms)", 1.0),
    "network.uplink_scale": ("share of the measured uplink", 1.0),
    "cloud_steps": ("cloud steps", 1.0),
    "cloud_busy_s": ("cloud busy time (s)", 1.0),
    "sim_time_s": ("simulated time (s)", 1.0),
    "wall_time_s": ("wall time (s)", 1.0),
    "network.uplink_mbps": ("uplink (Mbit/s)", 1.0),
    "network.downlink_mbps": ("downlink (Mbit/s)", 1.0),
    "network.latency_ms": ("latency (ms)", 1.0),
    "fleet.devices": ("devices", 1.0),
    "policy.random.p": ("random upload probability", 1.0),
}


def quantity(key: str) -> tuple[str, float]:
    """Axis label (with unit) and scale factor for a summary metric or swept key."""
    return QUANTITIES.get(key, (key, 1.0))


def paper_rc() -> dict:
    return {
        "font.size": 8,
        "axes.titlesize": 8,
        "axes.labelsize": 8,
        "legend.fontsize": 7,
        "xtick.labelsize": 7,
        "ytick.labelsize": 7,
        "lines.linewidth": 1.2,
        "lines.markersize": 4,
        "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
        "savefig.dpi": 300,
        "savefig.bbox": "tight",
        "pdf.fonttype": 42,
        "figure.dpi": 100,
    }


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """The one style context of all fleetsim figures."""
    with plt.rc_context(paper_rc()):
        yield


# after the Okabe-Ito colours, Paul Tol's muted set: distinct series for figures with many methods
EXTRA_COLOURS = ["#882255", "#44AA99", "#999933", "#332288", "#AA4499", "#DDCC77", "#117733"]


def figure_styles(names: list[str]) -> dict[str, tuple[str, str]]:
    """Colour and marker of every series of one figure: the style its policy (or the plug-in
    naming its method) declares (:func:`analysis.methods.series_styles`) where there is one, and
    for the others (renamed methods, keys of unnamed ones) the first colours and markers that no
    series of this figure uses and, where possible, no plug-in claims, so two series of one figure
    never share a colour (and BN adapt is never drawn in CEMA's colour)."""
    styles = series_styles()
    chosen: dict[str, tuple[str, str]] = {}
    for name in names:
        style = styles.get(name)
        if style is not None and style["colour"] is not None:
            chosen[name] = (style["colour"], style["marker"] or MARKERS[0])
    claimed = {s["colour"] for s in styles.values()}
    used = {colour for colour, _ in chosen.values()}
    free = [c for c in OKABE_ITO if c not in claimed and c != "#F0E442"]  # yellow: hard to see
    palette = free + EXTRA_COLOURS + ["#F0E442"]
    palette += [c for c in OKABE_ITO if c in claimed]
    colours = [c for c in palette if c not in used] or palette
    markers = [m for m in MARKERS if m not in {m for _, m in chosen.values()}] or MARKERS
    rest = [name for name in names if name not in chosen]
    for j, name in enumerate(rest):
        chosen[name] = (colours[j % len(colours)], markers[j % len(markers)])
    return chosen


def _ordered(values: pd.Series) -> list:
    """Series names in plotting order: by the rank their plug-in declares (policies by name,
    methods by label; a renamed method that keeps its name as the first word, ``Random (CEMA
    bytes)``, ``CEMA + budget``, ranks as that method), then the others by text."""
    seen = list(dict.fromkeys(values.dropna().tolist()))
    styles = series_styles()

    def rank(value: object) -> float:
        if not isinstance(value, str):
            return math.inf
        style = styles.get(value) or styles.get(value.split(" ", 1)[0])
        return math.inf if style is None else style["rank"]

    return sorted(seen, key=lambda v: (rank(v), str(v)))


def _figure(height_in: float = 2.4, rows: int = 1, sharex: bool = False) -> tuple[Figure, list]:
    fig, axes = plt.subplots(
        rows, 1, figsize=(COLUMN_WIDTH_IN, height_in), sharex=sharex, squeeze=False
    )
    return fig, list(axes[:, 0])


def save(fig: Figure, out_dir: str | Path, stem: str) -> list[Path]:
    """Write ``stem.pdf`` and ``stem.png`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.pdf", out / f"{stem}.png"]
    with paper_style():
        for path in paths:  # no creation date in the PDF: a redrawn record is byte-identical
            meta = {"CreationDate": None} if path.suffix == ".pdf" else None
            fig.savefig(path, metadata=meta)
    return paths


# --------------------------------------------------------------------------------------------------
# Sweep-level figures (one row per run)


def pareto(
    runs: pd.DataFrame,
    x: str = "upload_bytes",
    y: str = "accuracy",
    hue: str = "policy.name",
    group: str | None = None,
) -> Figure:
    """Accuracy vs upload bytes, one series per policy; the Pareto front over all points dashed.

    Each marker is the mean over seeds of one sweep point (``group``: the swept key that is not the
    hue or the seed, e.g. the uplink budget, written beside it); error bars are 95% t-intervals.
    """
    group = group or _other_swept(runs, hue)
    x_label, x_scale = quantity(x)
    y_label, y_scale = quantity(y)
    with paper_style():
        fig, (ax,) = _figure()
        points = []
        names = _ordered(runs[hue])
        styles = figure_styles([str(n) for n in names])
        for name in names:
            rows = runs[runs[hue] == name]
            keys = [group] if group else []
            grouped = rows.groupby(keys, sort=True) if keys else [(None, rows)]
            xs, ys, x_err, y_err, tags = [], [], [], [], []
            for tag, g in grouped:
                tags.append(tag[0] if isinstance(tag, tuple) else tag)
                mx, hx = t_interval(g[x].to_numpy() * x_scale)
                my, hy = t_interval(g[y].to_numpy() * y_scale)
                xs.append(mx)
                ys.append(my)
                x_err.append(hx)
                y_err.append(hy)
            colour, marker = styles[str(name)]
            ax.errorbar(
                xs,
                ys,
                xerr=x_err,
                yerr=y_err,
                color=colour,
                marker=marker,
                linestyle="none",
                capsize=1.5,
                elinewidth=0.7,
                label=str(name),
            )
            if group and rows[group].nunique() > 1:
                labelled: dict[tuple[float, float], list[str]] = {}
                for tx, ty, tag in zip(xs, ys, tags, strict=True):  # coinciding points share one
                    labelled.setdefault((tx, ty), []).append(_format_tick(tag))
                for (tx, ty), texts in _merge_close(labelled, ax_span=(max(xs) or 1.0)):
                    ax.annotate(
                        "/".join(texts), (tx, ty), xytext=(3, 2), textcoords="offset points",
                        fontsize=5.5, color=colour,
                    )  # fmt: skip
            points.extend(zip(xs, ys, strict=True))
        front = pareto_front(points)
        if len(front) > 1:
            fx, fy = zip(*front, strict=True)
            ax.step(fx, fy, where="post", color="0.5", linestyle="--", linewidth=0.8, zorder=0)
        positive = [p[0] for p in points if p[0] > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_xscale("symlog", linthresh=min(positive))
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        title = _hue_title(hue)
        if group and runs[group].nunique() > 1:
            title += f"\nlabels: {quantity(group)[0]}"
        _legend(ax, title, len(_ordered(runs[hue])))
        fig.tight_layout()
    return fig


def _merge_close(
    labelled: dict[tuple[float, float], list[str]], ax_span: float
) -> list[tuple[tuple[float, float], list[str]]]:
    """Merge labels of points within 2% of the x span and 0.5 accuracy points of each other."""
    merged: list[tuple[tuple[float, float], list[str]]] = []
    for (x, y), texts in sorted(labelled.items()):
        for (mx, my), existing in merged:
            if abs(mx - x) <= 0.02 * ax_span and abs(my - y) <= 0.5:
                existing.extend(texts)
                break
        else:
            merged.append(((x, y), list(texts)))
    return merged


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both fewer bytes (x) and higher accuracy (y), by x."""
    front: list[tuple[float, float]] = []
    for px, py in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or py > front[-1][1]:
            front.append((px, py))
    return front


def sweep_curve(
    runs: pd.DataFrame,
    x: str | None = None,
    metric: str = "accuracy",
    hue: str = "policy.name",
    relative_to: str | None = None,
) -> Figure:
    """``metric`` vs a swept key: mean over seeds with a 95% Student-t confidence band.

    A key with numbers is a numeric axis; one with other values (lists such as
    ``stream.corruptions``, names) is placed at even positions in sorted order, labelled by value.

    ``relative_to`` (a series, e.g. ``BN adapt``) draws each other series' difference from it,
    paired per seed at each x (one seed fixes every stream, so the difference removes the streams'
    own difficulty that dominates the spread between seeds): the band is then the paired
    t-interval, and the baseline is the zero line.
    """
    swept = [k for k in runs.attrs.get("swept", []) if k in runs]
    if x is not None and x not in swept:
        raise ValueError(
            f"x key {x!r} is not swept in these runs; swept keys: {', '.join(swept) or 'none'} "
            "(choose one with --x)"
        )
    x = x or _other_swept(runs, hue)
    if x is None:
        raise ValueError(
            f"no swept key besides the series ({hue}) and the seed to put on the x axis "
            f"(swept: {', '.join(swept) or 'none'}); choose one with --x"
        )
    metrics = metric_columns(runs)
    if metric not in metrics:
        raise ValueError(
            f"unknown metric {metric!r}; metrics of these runs: {', '.join(metrics) or 'none'}"
        )
    x_label, x_scale = quantity(x)
    y_label, y_scale = quantity(metric)
    values = _sorted_values(runs[x])
    numeric = all(_is_number(v) for v in values)
    position = {v: float(v) * x_scale if numeric else float(j) for j, v in enumerate(values)}
    hues = _ordered(runs[hue]) if hue in runs else [None]
    if relative_to is not None:
        runs = _paired_differences(runs, x, metric, hue, relative_to)
        hues = [h for h in hues if h != relative_to]
        unit = " (points)" if "(%)" in y_label else ""
        y_label = f"{y_label.replace(' (%)', '')}: gain over {relative_to}{unit}"
    with paper_style():
        fig, (ax,) = _figure()
        styles = figure_styles([str(n) for n in hues])
        for name in hues:
            rows = runs if name is None else runs[runs[hue] == name]
            stats = sorted(
                (position[xv[0]], *t_interval(g[metric].to_numpy(dtype=float) * y_scale))
                for xv, g in rows.groupby([x], sort=False)
            )
            xs, means, halves = (np.asarray(v) for v in zip(*stats, strict=True))
            colour, marker = styles[str(name)]
            ax.plot(xs, means, color=colour, marker=marker, label=str(name))
            ax.fill_between(xs, means - halves, means + halves, color=colour, alpha=0.2, lw=0)
        if relative_to is not None:
            ax.axhline(0.0, color="0.4", linewidth=0.8, linestyle="--", label=relative_to)
        ticks = [position[v] for v in values]
        if numeric and min(ticks) > 0 and max(ticks) / min(ticks) >= 10:
            ax.set_xscale("log")
            ax.minorticks_off()
        if len(ticks) <= 8 or not numeric:
            ax.set_xticks(ticks, [_format_tick(v * x_scale if numeric else v) for v in values])
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        if hues != [None]:
            _legend(ax, _hue_title(hue), len(hues) + (relative_to is not None))
        fig.tight_layout()
    return fig


def _paired_differences(
    runs: pd.DataFrame, x: str, metric: str, hue: str, baseline: str
) -> pd.DataFrame:
    """``runs`` without the baseline's rows, ``metric`` minus the baseline's at the same x and seed;
    a run whose (x, seed) the baseline lacks is an error naming them."""
    if hue not in runs or baseline not in set(runs[hue]):
        have = ", ".join(map(str, _ordered(runs[hue]))) if hue in runs else "none"
        raise ValueError(f"no runs of {baseline!r} to draw the others against; series: {have}")
    keys = [x, "seed"] if "seed" in runs else [x]
    base = runs[runs[hue] == baseline]
    if base.duplicated(keys).any():
        raise ValueError(
            f"{baseline!r} has several runs at one ({', '.join(keys)}): the difference is not "
            "paired; draw a sweep with one run per point and seed"
        )
    reference = base.set_index(keys)[metric]
    others = runs[runs[hue] != baseline].copy()
    index = pd.MultiIndex.from_frame(others[keys]) if len(keys) > 1 else others[x]
    matched = reference.reindex(index).to_numpy(dtype=float)
    missing = others[np.isnan(matched)]
    if len(missing):
        first = missing.iloc[0]
        where = ", ".join(f"{k}={_format_tick(first[k])}" for k in keys)
        raise ValueError(
            f"{baseline!r} has no run at {where}, where {first[hue]!r} has one: a paired "
            "difference needs the baseline at every point and seed"
        )
    others[metric] = others[metric].to_numpy(dtype=float) - matched
    return others


def _legend(ax, title: str, entries: int) -> None:
    """The legend inside the axes for a few series, beside them (right) for more, where it can
    cover no point: the figure grows to hold it (``savefig.bbox: tight``)."""
    if entries > 4:
        ax.legend(
            title=title,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            alignment="left",
        )
        width, height = ax.figure.get_size_inches()
        if width <= COLUMN_WIDTH_IN:  # room for the legend beside a column-wide plot
            ax.figure.set_size_inches(width + 1.6, height)
    else:
        ax.legend(title=title, loc="best")


def _format_tick(value: object) -> str:
    """A number as short as it reads: 2, 0.5, 0.003, 1e-4 (not 0.0001, which crowds a log axis)."""
    if not isinstance(value, (int, float, np.number)):
        return str(value)
    if value and abs(value) < 1e-3:
        mantissa, exponent = f"{value:.6e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    return f"{value:g}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, (bool, np.bool_))


def _sorted_values(column: pd.Series) -> list:
    """The distinct values of a column (lists included, see ``analysis.load.ListValue``), sorted;
    by their text when they cannot be compared."""
    values = list(dict.fromkeys(column.dropna().tolist()))
    try:
        return sorted(values)
    except TypeError:  # mixed types
        return sorted(values, key=str)


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """The numeric summary fields of the runs (not the swept keys): what a sweep plot can show."""
    skip = {*runs.attrs.get("swept", []), "run", "path", "seed"}
    return [
        c
        for c in runs.columns
        if c not in skip
        and pd.api.types.is_numeric_dtype(runs[c])
        and not pd.api.types.is_bool_dtype(runs[c])
    ]


#: Keys that make the series (the method: cloud adapter with upload policy), never a sweep axis.
SERIES_KEYS = ("policy.name", "policy", "cloud.adapter", "adapter", "method")


def _other_swept(runs: pd.DataFrame, hue: str) -> str | None:
    for key in runs.attrs.get("swept", []):
        if key in (hue, "seed", *SERIES_KEYS) or key not in runs:
            continue
        if runs[key].nunique() > 1:
            return key
    return None


def _hue_title(hue: str) -> str:
    return "policy" if hue in ("policy.name", "policy") else hue


# --------------------------------------------------------------------------------------------------
# Run-level figures (events)


def _time_bins(times: pd.Series, bins: int) -> np.ndarray:
    end = float(times.max()) if len(times) else 1.0
    return np.linspace(0.0, max(end, 1e-9), bins + 1)


def domain_boundaries(samples: pd.DataFrame) -> list[tuple[float, float, str]]:
    """(first, last, domain): when the devices (of all runs given) enter each domain segment.

    Devices meet the same schedule but at their own arrival times, so a boundary is a time span.
    """
    keys = ["run", "device"] if "run" in samples else ["device"]
    entries: dict[int, list[tuple[float, str]]] = {}
    for _, rows in samples.sort_values("sim_time_s").groupby(keys):
        domains = rows["domain"].astype(str)
        changes = domains.ne(domains.shift())
        times = rows.loc[changes, "sim_time_s"].astype(float)
        for k, (t, d) in enumerate(zip(times, domains[changes], strict=True)):
            entries.setdefault(k, []).append((t, d))
    return [
        (min(t for t, _ in seg), max(t for t, _ in seg), seg[0][1])
        for _, seg in sorted(entries.items())
    ]


def timeline(
    events: pd.DataFrame, hue: str = "policy", bins: int = 40, smooth_bins: int = 3
) -> Figure:
    """Edge accuracy over simulated time (binned, rolling mean), one line per ``hue`` value, with
    the domain (corruption) boundaries as dotted lines (shaded while devices cross at their own
    times)."""
    samples = events[events["kind"] == "sample"]
    edges = _time_bins(samples["sim_time_s"], bins)
    centres = (edges[:-1] + edges[1:]) / 2
    with paper_style():
        fig, (ax,) = _figure()
        hues = _ordered(samples[hue]) if hue in samples else [None]
        styles = figure_styles([str(n) for n in hues])
        for name in hues:
            rows = samples if name is None else samples[samples[hue] == name]
            which = np.clip(np.digitize(rows["sim_time_s"], edges) - 1, 0, bins - 1)
            acc = rows["correct"].astype(float).groupby(which).mean()  # non-empty bins only
            acc = acc.rolling(smooth_bins, center=True, min_periods=1).mean()
            colour, _ = styles[str(name)]
            ax.plot(centres[acc.index], 100 * acc.to_numpy(), color=colour, label=str(name))
        for t, last, domain in domain_boundaries(samples):
            ax.axvline(t, color="0.4", linestyle=":", linewidth=0.8)
            if last > t:
                ax.axvspan(t, last, color="0.85", linewidth=0, zorder=0)
            ax.text(
                t, 1.0, f" {domain}", transform=ax.get_xaxis_transform(), rotation=90,
                va="top", ha="left", fontsize=6, color="0.3",
            )  # fmt: skip
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("accuracy (%)")
        if hues != [None]:
            _legend(ax, _hue_title(hue), len(hues))
        fig.tight_layout()
    return fig


def devices(events: pd.DataFrame, bins: int = 30) -> Figure:
    """Per-device edge accuracy over simulated time as a heatmap (one run's events)."""
    samples = events[events["kind"] == "sample"]
    if "run" in samples and samples["run"].nunique() > 1:
        samples = samples[samples["run"] == samples["run"].iloc[0]]
    edges = _time_bins(samples["sim_time_s"], bins)
    which = np.clip(np.digitize(samples["sim_time_s"], edges) - 1, 0, bins - 1)
    grid = (
        samples.assign(bin=which)
        .groupby(["device", "bin"])["correct"]
        .mean()
        .unstack("bin")
        .reindex(columns=range(bins))
    )
    with paper_style():
        n = len(grid)
        fig, (ax,) = _figure(height_in=max(1.6, 0.9 + 0.18 * n))
        image = ax.imshow(
            100 * grid.to_numpy(dtype=float),
            aspect="auto",
            cmap="viridis",
            vmin=0,
            vmax=100,
            extent=(edges[0], edges[-1], n - 0.5, -0.5),
            interpolation="nearest",
        )
        ax.set_yticks(range(n), [_format_tick(d) for d in grid.index])  # 0, not 0.0
        ax.grid(False)
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("device")
        fig.colorbar(image, ax=ax, label="accuracy (%)", pad=0.02)
        fig.tight_layout()
    return fig


def cloud(
    events: pd.DataFrame, ms_per_step: float | None = None, workers: int = 1, bins: int = 30
) -> Figure:
    """The cloud adapter over simulated time, from update events (one run): queueing delay of each
    update, updates per time bin, and utilization = busy worker time / (bin width x workers).
    Each update's busy time is its ``compute_s`` (recorded since cloud profiles), else
    ``steps x ms_per_step`` (older runs)."""
    updates = events[events["kind"] == "update"].sort_values("sim_time_s")
    if "run" in updates and updates["run"].nunique() > 1:
        updates = updates[updates["run"] == updates["run"].iloc[0]]
    end_s = float(events["sim_time_s"].max()) if len(events) else 1.0
    edges = np.linspace(0.0, max(end_s, 1e-9), bins + 1)
    width = edges[1] - edges[0]
    done = updates["sim_time_s"].to_numpy(float)
    if "compute_s" in updates and updates["compute_s"].notna().all():
        start = done - updates["compute_s"].to_numpy(float)
    elif ms_per_step is not None:
        start = done - updates["steps"].to_numpy(float) * ms_per_step / 1000.0
    else:
        raise ValueError("update events without compute_s need the run's cloud.ms_per_step")
    busy = np.array(
        [np.clip(np.minimum(done, b) - np.maximum(start, a), 0, None).sum() for a, b in zip(edges[:-1], edges[1:], strict=True)]
    )  # fmt: skip
    counts, _ = np.histogram(done, edges)
    centres = (edges[:-1] + edges[1:]) / 2
    with paper_style():
        fig, (ax_queue, ax_count, ax_util) = _figure(height_in=3.6, rows=3, sharex=True)
        if "queue_s" in updates and updates["queue_s"].notna().any():
            ax_queue.plot(
                done, updates["queue_s"], color=OKABE_ITO[0], marker=".", linestyle="none"
            )
        else:  # whole-model rebuilds recorded before 2026-12-05 lack it
            ax_queue.text(
                0.5, 0.5, "not recorded", ha="center", va="center", transform=ax_queue.transAxes
            )
        ax_queue.set_ylabel("queue delay (s)")
        ax_count.bar(centres, counts, width=width * 0.9, color=OKABE_ITO[3])
        ax_count.set_ylabel("updates / bin")
        ax_util.plot(centres, 100 * busy / (width * max(workers, 1)), color=OKABE_ITO[1])
        ax_util.set_ylim(0, 105)
        ax_util.set_ylabel("utilization (%)")
        ax_util.set_xlabel("simulated time (s)")
        fig.align_ylabels()
        fig.tight_layout()
    return fig
