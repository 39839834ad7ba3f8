"""A bandwidth trace as fleetsim replays it, and the statistics a user checks before trusting one.

A trace is piecewise constant: row ``i``'s rate holds from ``times_s[i]`` until ``times_s[i + 1]``;
the last row lasts as long as the step before it (one row: one second). Times start at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np

# A rate at or below this counts as an outage in the statistics (the link carries nothing useful).
OUTAGE_MBPS = 0.0


class TraceError(ValueError):
    """A trace file that cannot be read: names the file, the line and what is wrong."""

    def __init__(self, path: object, line: int | None, what: str):
        where = f"{path}" if line is None else f"{path}: line {line}"
        super().__init__(f"{where}: {what}")
        self.path, self.line, self.what = path, line, what


@dataclass(frozen=True)
class Trace:
    """Rows ``(times_s, mbps)``, a short ``name`` and where they came from (``source``)."""

    times_s: tuple[float, ...]
    mbps: tuple[float, ...]
    name: str = ""
    source: str = ""
    format: str = ""
    notes: list[str] = field(default_factory=list, compare=False)

    @property
    def duration_s(self) -> float:
        step = self.times_s[-1] - self.times_s[-2] if len(self.times_s) > 1 else 1.0
        return self.times_s[-1] + step

    def durations_s(self) -> np.ndarray:
        """How long each row's rate holds."""
        edges = np.asarray([*self.times_s, self.duration_s], dtype=float)
        return np.diff(edges)

    def scaled(self, factor: float) -> Trace:
        """The same trace with every rate multiplied by ``factor`` (> 0)."""
        if not factor > 0:
            raise ValueError(f"a trace scale must be > 0, got {factor}")
        rates = tuple(float(r) * factor for r in self.mbps)
        return Trace(self.times_s, rates, self.name, self.source, self.format, list(self.notes))

    def stats(self) -> dict[str, float]:
        """Time-weighted mean and percentiles of the rate (Mbit/s), outage share, duration."""
        rates = np.asarray(self.mbps, dtype=float)
        weights = self.durations_s()
        order = np.argsort(rates, kind="stable")
        cumulative = np.cumsum(weights[order]) / weights.sum()

        def percentile(q: float) -> float:
            return float(rates[order][np.searchsorted(cumulative, q / 100.0, side="left")])

        return {
            "duration_s": float(self.duration_s),
            "rows": float(len(rates)),
            "mean_mbps": float((rates * weights).sum() / weights.sum()),
            "p5_mbps": percentile(5),
            "p50_mbps": percentile(50),
            "p95_mbps": percentile(95),
            "outage_share": float(weights[rates <= OUTAGE_MBPS].sum() / weights.sum()),
        }


#: What a bandwidth trace does after its last row: start again, or keep its last rate.
TraceEnd = Literal["loop", "hold"]


def check_trace(times_s: list[float], mbps: list[float], end: str) -> None:
    """Raise ValueError saying which row is wrong, unless the rows form a usable trace."""
    if end not in get_args(TraceEnd):
        raise ValueError(f"trace end must be {' or '.join(get_args(TraceEnd))}, got {end!r}")
    if not times_s or len(times_s) != len(mbps):
        raise ValueError("a trace needs at least one (time_s, mbps) row")
    if times_s[0] != 0:
        raise ValueError(f"data row 1: the first time_s must be 0, got {times_s[0]}")
    for i, (t, r) in enumerate(zip(times_s, mbps, strict=True)):
        if not math.isfinite(t) or not math.isfinite(r) or r < 0:
            raise ValueError(f"data row {i + 1}: mbps must be a finite number >= 0, got {r}")
        if i and t <= times_s[i - 1]:
            raise ValueError(
                f"data row {i + 1}: time_s must increase, got {t} after {times_s[i - 1]}"
            )
    if end == "hold" and mbps[-1] <= 0:
        raise ValueError("the last row's mbps must be > 0 when the trace holds it forever")
    if max(mbps) <= 0:
        raise ValueError("at least one row's mbps must be > 0")
