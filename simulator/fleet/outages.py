"""When a link is down: a Gilbert-Elliott two-state process, or fixed windows.

Gilbert-Elliott (Gilbert 1960, Elliott 1963) models a channel as a two-state Markov chain, *good* and
*bad*. Here it runs in continuous simulated time: the link stays good for an exponentially distributed
time of mean ``mean_good_s`` (it leaves the good state with rate 1/mean_good_s per second), then bad for
an exponential time of mean ``mean_bad_s``, and so on; the long-run fraction of time down is
``mean_bad_s / (mean_good_s + mean_bad_s)``. In the bad state the link carries nothing. Every link
starts good at t = 0.

The switching times are drawn lazily, in time order, from the link's own generator, so a link's
outages do not depend on the traffic it carries (the same seed gives the same outages whatever the
upload policy sends). Both classes answer the same questions as a bandwidth schedule: the state at t and
when it next changes.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from simulator.fleet.bandwidth import TIME_TOLERANCE_S


class OutageWindows:
    """Outages at fixed ``[(start_s, end_s), ...]`` windows (sorted, disjoint)."""

    def __init__(self, windows: list[tuple[float, float]]):
        self._changes: list[float] = []
        for start, end in windows:
            if not 0 <= start < end or (self._changes and start <= self._changes[-1]):
                raise ValueError(f"outage windows must be sorted, disjoint, start < end: {windows}")
            self._changes += [float(start), float(end)]

    def _ensure(self, t_s: float) -> None:
        """Make the known switching times reach past ``t_s`` (nothing to draw for fixed windows)."""

    def _index(self, t_s: float) -> int:
        self._ensure(t_s)
        return bisect.bisect_right(self._changes, t_s + TIME_TOLERANCE_S)

    def is_down(self, t_s: float) -> bool:
        """Whether the link carries nothing at ``t_s`` (changes flip the state, starting good)."""
        return self._index(t_s) % 2 == 1

    def next_change_s(self, t_s: float) -> float:
        k = self._index(t_s)
        return self._changes[k] if k < len(self._changes) else math.inf

    def down_s(self, until_s: float) -> float:
        """Total time down in ``[0, until_s]``."""
        self._ensure(until_s)
        total = 0.0
        for k in range(0, len(self._changes), 2):
            start = self._changes[k]
            if start >= until_s:
                break
            end = self._changes[k + 1] if k + 1 < len(self._changes) else math.inf
            total += min(end, until_s) - start
        return total


class GilbertElliott(OutageWindows):
    """Exponential good/bad sojourns of means ``mean_good_s`` and ``mean_bad_s``, drawn from ``rng``."""

    def __init__(self, mean_good_s: float, mean_bad_s: float, rng: np.random.Generator):
        if not (mean_good_s > 0 and mean_bad_s > 0):
            raise ValueError(
                f"mean sojourn times must be > 0 s, got good {mean_good_s}, bad {mean_bad_s}"
            )
        super().__init__([])
        self.mean_good_s, self.mean_bad_s = float(mean_good_s), float(mean_bad_s)
        self._rng = rng

    def _ensure(self, t_s: float) -> None:
        while not self._changes or self._changes[-1] <= t_s + TIME_TOLERANCE_S:
            last = self._changes[-1] if self._changes else 0.0
            mean = self.mean_good_s if len(self._changes) % 2 == 0 else self.mean_bad_s
            self._changes.append(last + float(self._rng.exponential(mean)))
