"""A link's own bandwidth over simulated time: a constant, or a trace replayed from a CSV file.

Both are piecewise-constant rate functions with the same two questions: the rate in force at time t
(``rate_mbps``) and when it next changes (``next_change_s``). A transfer spanning a change is then
integrated exactly, one constant piece at a time (see :class:`simulator.fleet.network.Link`).

Trace files are CSV with a header ``time_s,mbps``: row i's rate holds from ``time_s[i]`` until
``time_s[i+1]``. Traces are regularly sampled logs, so the last row lasts as long as the step before it
and the trace covers ``time_s[-1] + (time_s[-1] - time_s[-2])`` seconds (one row: a constant). After its
end a trace either ``loop``s (starts again at its first row) or ``hold``s its last rate. An
``offset_s`` starts the replay that far into the trace (devices need not fade in lock-step).
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path

from simulator.traces.model import TraceEnd, check_trace

# Rate changes closer than this to "now" count as already passed, so floating-point round-off in
# ``now + (t_change - now)`` can never leave a link waiting for a change that is a femtosecond away.
TIME_TOLERANCE_S = 1e-9


class ConstantRate:
    """A link whose bandwidth never changes."""

    def __init__(self, mbps: float):
        if not (mbps > 0 and math.isfinite(mbps)):
            raise ValueError(f"bandwidth must be > 0 Mbit/s, got {mbps}")
        self.mbps = float(mbps)

    def rate_mbps(self, t_s: float) -> float:
        return self.mbps

    def next_change_s(self, t_s: float) -> float:
        return math.inf

    def mean_mbps(self) -> float:
        return self.mbps


class BandwidthTrace:
    """A piecewise-constant bandwidth replayed from ``(time_s, mbps)`` rows."""

    def __init__(
        self,
        times_s: list[float],
        mbps: list[float],
        end: TraceEnd = "loop",
        offset_s: float = 0.0,
        source: str = "",
    ):
        check_trace(times_s, mbps, end)
        if not (offset_s >= 0 and math.isfinite(offset_s)):
            raise ValueError(f"trace offset must be >= 0 s, got {offset_s}")
        self.times_s = [float(t) for t in times_s]
        self.mbps = [float(r) for r in mbps]
        self.end = end
        self.offset_s = float(offset_s)
        self.source = source
        step = self.times_s[-1] - self.times_s[-2] if len(self.times_s) > 1 else 1.0
        self.duration_s = self.times_s[-1] + step

    @classmethod
    def from_csv(
        cls, path: str | Path, end: TraceEnd = "loop", offset_s: float = 0.0
    ) -> BandwidthTrace:
        times_s, mbps = read_trace_csv(path)
        return cls(times_s, mbps, end=end, offset_s=offset_s, source=str(path))

    def _locate(self, t_s: float) -> tuple[float, int]:
        """(start of the current trace period in link time, row index in force) at link time t."""
        u = t_s + self.offset_s
        base = 0.0
        if u + TIME_TOLERANCE_S >= self.duration_s:
            if self.end == "hold":
                return 0.0, len(self.times_s) - 1
            periods = math.floor((u + TIME_TOLERANCE_S) / self.duration_s)
            base = periods * self.duration_s
            u -= base
        row = bisect.bisect_right(self.times_s, u + TIME_TOLERANCE_S) - 1
        return base - self.offset_s, max(row, 0)

    def rate_mbps(self, t_s: float) -> float:
        return self.mbps[self._locate(t_s)[1]]

    def next_change_s(self, t_s: float) -> float:
        """Link time of the next row boundary after ``t_s`` (inf when holding the last rate)."""
        start, row = self._locate(t_s)
        if row + 1 < len(self.times_s):
            return start + self.times_s[row + 1]
        if self.end == "hold":
            return math.inf
        return start + self.duration_s

    def mean_mbps(self) -> float:
        """Time-averaged rate over one pass of the trace."""
        edges = [*self.times_s, self.duration_s]
        total = sum(r * (edges[i + 1] - edges[i]) for i, r in enumerate(self.mbps))
        return total / self.duration_s


def read_trace_csv(path: str | Path) -> tuple[list[float], list[float]]:
    """``(times_s, mbps)`` of a CSV trace with header ``time_s,mbps`` (see
    :mod:`simulator.traces.readers`; TraceError names the file and line)."""
    from simulator.traces.readers import read_csv_trace

    trace = read_csv_trace(Path(path).expanduser())
    return list(trace.times_s), list(trace.mbps)
