"""Paired comparison of two methods over seeds: is A's error lower than B's, and by how much?

In fleetsim's comparisons a seed fixes every device's stream (image order, corruption schedule,
arrivals), so two methods run with the same seed see the same samples: their per-seed results are
*paired*. The difference per seed removes the stream's own difficulty, which dominates the spread
between seeds (``fleetsim table``'s intervals), and a paired t-interval over the seeds says whether
A beats B. The numbers per seed are those of the method table (:func:`analysis.tta.seed_table`):
the mean error over the corruptions, uploaded samples %, upload bytes per device; on top, each
(corruption, seed) cell says whether A's error there is lower, level or higher.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.methods import method_label
from analysis.stats import paired_t_p_value, t_interval
from analysis.tta import Protocol, TableError, method_names, seed_table

__all__ = ["PairedComparison", "describe", "paired_comparison"]


@dataclass(frozen=True)
class PairedComparison:
    """A against B at one severity, over the seeds both have (lists in seed order).

    ``advantage`` per seed is B's mean error minus A's, in points: positive when A is better.
    ``cells`` counts (corruption, seed) cells where A's error is lower / level / higher.
    """

    a: str
    b: str
    severity: int | None
    protocol: str
    group: dict[str, str]  # the values of the other ``by`` keys (e.g. a bandwidth), else empty
    seeds: list[int]
    a_error: list[float]
    b_error: list[float]
    a_upload_pct: list[float]
    b_upload_pct: list[float]
    a_upload_bytes: list[float]
    b_upload_bytes: list[float]
    cells: tuple[int, int, int]
    corruptions: tuple[int, int, int]  # the same over corruptions, from the means over seeds
    a_download_bytes: list[float] = field(default_factory=list)
    b_download_bytes: list[float] = field(default_factory=list)

    @property
    def advantage(self) -> list[float]:
        return [b - a for a, b in zip(self.a_error, self.b_error, strict=True)]

    @property
    def interval(self) -> tuple[float, float]:
        """Mean advantage and the half-width of its 95% t-interval (0 for one seed)."""
        return t_interval(np.asarray(self.advantage))

    @property
    def p_value(self) -> float | None:
        """Two-sided paired t-test of a zero mean advantage (None for one seed)."""
        return paired_t_p_value(np.asarray(self.advantage))

    @property
    def bytes_ratio(self) -> float:
        """B's upload bytes over A's, summed over the seeds (nan when A sent nothing)."""
        sent = sum(self.a_upload_bytes)
        return sum(self.b_upload_bytes) / sent if sent else float("nan")

    def as_dict(self) -> dict[str, Any]:
        mean, half = self.interval
        return {
            "a": self.a,
            "b": self.b,
            "severity": self.severity,
            "protocol": self.protocol,
            **self.group,
            "seeds": self.seeds,
            "a_mean_error": self.a_error,
            "b_mean_error": self.b_error,
            "advantage": self.advantage,
            "advantage_mean": mean,
            "advantage_half_width_95": half,
            "p_value": self.p_value,
            "a_upload_pct": self.a_upload_pct,
            "b_upload_pct": self.b_upload_pct,
            "a_upload_bytes_per_device": self.a_upload_bytes,
            "b_upload_bytes_per_device": self.b_upload_bytes,
            "bytes_ratio_b_over_a": self.bytes_ratio,
            "a_download_bytes_per_device": self.a_download_bytes,
            "b_download_bytes_per_device": self.b_download_bytes,
            "cells_lower_level_higher": list(self.cells),
            "corruptions_lower_level_higher": list(self.corruptions),
        }


def _resolve(name: str, available: list[str], labels: Mapping[str, str]) -> str:
    """A row label from a label or an ``adapter/policy`` key (``cema/cema`` -> ``CEMA``), renamed
    by ``labels`` the way :func:`analysis.tta.key_value` names the rows (key first, then label)."""
    if name in available:
        return name
    adapter, sep, policy = name.partition("/")
    derived = method_label(adapter, policy) if sep else name
    label = labels.get(name, labels.get(derived, derived))
    if label in available:
        return label
    raise TableError(f"no runs of method {name!r}; the runs hold: {', '.join(available)}")


def _signs(a: np.ndarray, b: np.ndarray, tolerance: float = 1e-9) -> tuple[int, int, int]:
    finite = np.isfinite(a) & np.isfinite(b)
    diff = (b - a)[finite]
    lower = int((diff > tolerance).sum())
    higher = int((diff < -tolerance).sum())
    return lower, int(len(diff)) - lower - higher, higher


def _methods(n: int) -> str:
    return f"{n} method" if n == 1 else f"{n} methods"


def _pick(name: str | None, frame: pd.DataFrame, side: str, labels: Mapping[str, str]) -> str:
    available = list(dict.fromkeys(frame["method"]))
    if name is not None:
        return _resolve(name, available, labels)
    if len(available) != 1:
        raise TableError(
            f"{side}'s runs hold {_methods(len(available))} ({', '.join(available)}): name one"
        )
    return available[0]


def _select(
    frame: pd.DataFrame, method: str, by: list[str], values: list, severity
) -> pd.DataFrame:
    """The per-seed rows of ``method`` in the group (``by`` values, severity), indexed by seed."""
    mask = frame["method"] == method
    for key, value in zip([*by, "severity"], [*values, severity], strict=True):
        mask &= frame[key].isna() if pd.isna(value) else frame[key] == value
    return frame[mask].set_index("seed")


def paired_comparison(
    paths: Iterable[str | Path],
    a: str | None = None,
    b: str | None = None,
    labels: Mapping[str, str] | None = None,
    protocol: Protocol = "auto",
    by: Sequence[str] = (),
    baseline: Iterable[str | Path] | None = None,
) -> list[PairedComparison]:
    """Compare method ``a`` with ``b`` (labels such as ``CEMA`` or ``cema/cema`` keys), one
    :class:`PairedComparison` per severity and per value of the ``by`` keys (e.g.
    ``network.uplink_mbps`` for a bandwidth sweep), over the seeds both methods have there.

    Without ``a`` and ``b`` the runs must hold exactly two methods, taken in the table's order
    (``b`` first: the baseline, e.g. Random before CEMA). With ``baseline`` (run folders) B's runs
    come from there and A's from ``paths``, so two variants of one method can be compared (CEMA
    without replay against CEMA); a side without a name must then hold one method. Raises
    :class:`TableError` when a method is missing or the two share no seed.
    """
    paths = list(paths)
    baseline = None if baseline is None else list(baseline)
    labels = labels or {}
    by = [k for k in by if k != "method"]
    keys = ["method", *by]
    # named methods must exist before the table is built: a missing one is the first thing to say
    # (the table would otherwise fail on another method's runs, e.g. a key to add to --by)
    if a is not None:
        _resolve(a, method_names(paths, labels), labels)
    if b is not None:
        _resolve(b, method_names(paths if baseline is None else baseline, labels), labels)
    frame_a = seed_table(paths, by=keys, labels=labels, protocol=protocol)
    if baseline is None:
        frame_b = frame_a
        available = list(dict.fromkeys(frame_a["method"]))
        if a is None and b is None:
            if len(available) != 2:
                raise TableError(
                    f"the runs hold {_methods(len(available))} ({', '.join(available)}): "
                    "name the two to compare (--a and --b)"
                    if len(available) > 2
                    else f"the runs hold {_methods(len(available))} ({', '.join(available)}): "
                    "a comparison needs two; add the other method's runs (or --baseline FOLDER)"
                )
            b, a = available
        elif a is None or b is None:
            raise TableError("name both methods to compare, or neither when the runs hold two")
        a, b = _resolve(a, available, labels), _resolve(b, available, labels)
        if a == b:
            raise TableError(f"both sides are {a!r}: name two different methods")
        name_a, name_b = a, b
    else:
        baseline = list(baseline)
        frame_b = seed_table(baseline, by=keys, labels=labels, protocol=protocol)
        if frame_a.attrs["protocol"] != frame_b.attrs["protocol"]:
            raise TableError(
                f"the runs are {frame_a.attrs['protocol']} and the baseline's "
                f"{frame_b.attrs['protocol']}: compare runs of one protocol"
            )
        a, b = _pick(a, frame_a, "A", labels), _pick(b, frame_b, "the baseline", labels)
        name_a = a if a != b else f"{a} [{Path(paths[0]).name}]"
        name_b = b if a != b else f"{b} [{Path(baseline[0]).name}]"
    domains = [d for d in frame_a.attrs["domains"] if d != "clean"]
    other = [d for d in frame_b.attrs["domains"] if d != "clean"]
    if sorted(domains) != sorted(other):
        raise TableError(
            f"the two sides cover different corruptions ({', '.join(domains)} against "
            f"{', '.join(other)}): compare like with like"
        )
    results = []
    for key, _ in frame_a.groupby([*by, "severity"], sort=False, dropna=False):
        *values, severity = key
        rows_a = _select(frame_a, a, by, values, severity)
        rows_b = _select(frame_b, b, by, values, severity)
        seeds = sorted(set(rows_a.index) & set(rows_b.index))
        if not seeds:
            continue
        rows_a, rows_b = rows_a.loc[seeds], rows_b.loc[seeds]
        cells = _signs(rows_a[domains].to_numpy(float), rows_b[domains].to_numpy(float))
        corruptions = _signs(
            rows_a[domains].mean().to_numpy(float), rows_b[domains].mean().to_numpy(float)
        )
        results.append(
            PairedComparison(
                a=name_a,
                b=name_b,
                severity=None if pd.isna(severity) else int(severity),
                protocol=frame_a.attrs["protocol"],
                group={k: str(v) for k, v in zip(by, values, strict=True)},
                seeds=[int(s) for s in seeds],
                a_error=rows_a["mean_error"].astype(float).tolist(),
                b_error=rows_b["mean_error"].astype(float).tolist(),
                a_upload_pct=rows_a["upload_pct"].astype(float).tolist(),
                b_upload_pct=rows_b["upload_pct"].astype(float).tolist(),
                a_upload_bytes=rows_a["upload_bytes"].astype(float).tolist(),
                b_upload_bytes=rows_b["upload_bytes"].astype(float).tolist(),
                cells=cells,
                corruptions=corruptions,
                a_download_bytes=rows_a["download_bytes"].astype(float).tolist(),
                b_download_bytes=rows_b["download_bytes"].astype(float).tolist(),
            )
        )
    if not results:
        hint = (
            "; with --by source, give the folders that belong together the same name "
            "(--label FOLDER=NAME for each)"
            if "source" in keys
            else ""
        )
        raise TableError(f"{a!r} and {b!r} have no seed in common in any group{hint}")
    return results


def describe(result: PairedComparison) -> str:
    """The comparison as text: a Markdown table per seed, then the verdict lines."""
    a, b = result.a, result.b
    severity = "" if result.severity is None else f", severity {result.severity}"
    where = "".join(f", {k}={v}" for k, v in result.group.items())
    lines = [
        f"{a} against {b}{where}{severity}, {result.protocol} protocol, "
        f"{len(result.seeds)} paired seeds",
        "",
        f"| seed | {a} error % | {b} error % | {a}'s advantage (points) | {a} upload % | "
        f"{b} upload % | {a} up MB/dev | {b} up MB/dev |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, seed in enumerate(result.seeds):
        lines.append(
            f"| {seed} | {result.a_error[i]:.2f} | {result.b_error[i]:.2f} | "
            f"{result.advantage[i]:+.2f} | {result.a_upload_pct[i]:.1f} | "
            f"{result.b_upload_pct[i]:.1f} | {result.a_upload_bytes[i] / 1e6:.2f} | "
            f"{result.b_upload_bytes[i] / 1e6:.2f} |"
        )
    mean, half = result.interval
    p_value = result.p_value
    stats = (
        f"{abs(mean):.2f} ± {half:.2f} points (95% t-interval), paired t-test p = {p_value:.3g}"
        if p_value is not None
        else f"{abs(mean):.2f} points (one seed: no interval)"
    )
    if mean == 0:
        verdict = f"{a}'s mean error equals {b}'s (difference {stats})."
    else:
        direction = "lower" if mean > 0 else "higher"
        verdict = f"{a}'s mean error is {direction} than {b}'s by {stats}."
    lower, level, higher = result.cells
    c_lower, c_level, c_higher = result.corruptions
    lines += [
        "",
        verdict,
        f"{a}'s error is lower / level / higher in {lower} / {level} / {higher} (corruption, "
        f"seed) cells, and in {c_lower} / {c_level} / {c_higher} corruptions (means over seeds).",
    ]
    ratio = result.bytes_ratio
    if math.isfinite(ratio):
        more = "more" if ratio >= 1 else "fewer"
        lines.append(f"{b} sent {abs(ratio - 1) * 100:.1f} % {more} upload bytes than {a}.")
    elif sum(result.b_upload_bytes):  # A sent nothing: no ratio, but B's bytes still tell
        per_device = sum(result.b_upload_bytes) / len(result.b_upload_bytes) / 1e6
        lines.append(f"{a} sent no upload bytes; {b} sent {per_device:.3g} MB per device.")
    down_a, down_b = (
        float(np.mean(d)) if d else 0.0 for d in (result.a_download_bytes, result.b_download_bytes)
    )
    if max(down_a, down_b) > 2 * min(down_a, down_b):  # whole models against states, say
        lines.append(
            f"Downlink: {a} received {down_a / 1e6:.3g} MB per device, {b} {down_b / 1e6:.3g} MB"
            + (f" ({down_a / down_b:.3g}x)." if down_b else ".")
        )
    return "\n".join(lines) + "\n"
