"""Links: FIFO serialisation at a (possibly time-varying, possibly shared) rate, then a latency.

A message of N bytes on a link of B Mbit/s occupies the link for N*8 / (B*1e6) seconds (bits over bits
per second: dividing bytes by Mbit/s is a classic units trap) and arrives one latency later.
Serialisation is exclusive (one message on the wire at a time, in arrival order); propagation is
pipelined, so the next message may start serialising while the previous one is still in flight.

What a link may add to that (each optional; without them a link is exactly the fixed-rate one above):

- **Latency distribution** (:class:`Latency`): constant, normal (clipped at 0) or lognormal, one draw
  per message. Delivery stays in order on a link, as over TCP: a message that draws a short latency
  waits for the one ahead of it (arrival = max(own arrival, previous arrival)).
- **Bandwidth trace** (:mod:`simulator.fleet.bandwidth`) and **outages** (:mod:`simulator.fleet.outages`):
  the link's own rate becomes a piecewise-constant function of time, 0 while it is down. A message
  already on the wire when an outage starts pauses and resumes where it stopped (nothing is lost).
- **Shared capacity** (:class:`SharedCapacity`): the links of many devices feed one cloud ingress (or
  are fed by one egress) of limited capacity, shared max-min fairly among the messages on the wire,
  each capped by its own link's rate. This is an event-driven fluid model: whenever a transfer starts
  or ends, or a link's own rate changes, the shares are recomputed and the next completion is
  rescheduled.
- **Bounded send queue**: at most ``max_queue`` messages wait for the wire behind the one being sent;
  a message arriving at a full queue, or still waiting ``queue_timeout_s`` after it was handed to the
  link, is dropped and :meth:`Link.send` returns why. A message on the wire is never dropped.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from enum import StrEnum
from typing import Protocol, get_args

import numpy as np
import simpy

from simulator.config import LatencyDist
from simulator.fleet.bandwidth import TIME_TOLERANCE_S, ConstantRate


def serialization_time_s(nbytes: int, bandwidth_mbps: float) -> float:
    """Seconds to put ``nbytes`` on a wire of ``bandwidth_mbps`` megabits per second."""
    return nbytes * 8.0 / (bandwidth_mbps * 1e6)


def transfer_time_s(nbytes: int, bandwidth_mbps: float, latency_s: float) -> float:
    """Seconds from the first bit sent to the last bit received, on an idle link."""
    return serialization_time_s(nbytes, bandwidth_mbps) + latency_s


class Delivery(StrEnum):
    """What became of a message handed to :meth:`Link.send`."""

    DELIVERED = "delivered"
    QUEUE_FULL = "queue_full"
    TIMEOUT = "timeout"


class RateSchedule(Protocol):
    """A link's own bandwidth over time, piecewise constant (see :mod:`simulator.fleet.bandwidth`)."""

    def rate_mbps(self, t_s: float) -> float: ...

    def next_change_s(self, t_s: float) -> float: ...


class Outages(Protocol):
    """When a link is down (see :mod:`simulator.fleet.outages`)."""

    def is_down(self, t_s: float) -> bool: ...

    def next_change_s(self, t_s: float) -> float: ...

    def down_s(self, until_s: float) -> float: ...


class Latency:
    """One-way latency per message: ``mean_s`` with standard deviation ``jitter_s``.

    ``normal`` draws N(mean, jitter) clipped at 0 (clipping raises the mean a little when the jitter is
    comparable to the mean); ``lognormal`` draws a lognormal with exactly that mean and standard
    deviation (sigma^2 = ln(1 + (jitter/mean)^2), mu = ln(mean) - sigma^2/2): always positive, with the
    long right tail of measured network delays. ``empirical`` draws one of ``samples_s`` (measured
    one-way latencies, e.g. half of each measured RTT) uniformly; its mean is theirs. ``constant``
    (or zero jitter) never draws.
    """

    def __init__(
        self,
        mean_s: float,
        jitter_s: float = 0.0,
        dist: LatencyDist = "constant",
        rng: np.random.Generator | None = None,
        samples_s: np.ndarray | None = None,
    ):
        if dist not in get_args(LatencyDist):
            allowed = ", ".join(get_args(LatencyDist))
            raise ValueError(f"unknown latency dist {dist!r}; allowed: {allowed}")
        if dist == "empirical":
            if samples_s is None or len(samples_s) == 0 or rng is None:
                raise ValueError("an empirical latency needs samples and a random generator")
            samples_s = np.asarray(samples_s, dtype=float)
            if not (np.all(np.isfinite(samples_s)) and samples_s.min() >= 0):
                raise ValueError("empirical latency samples must be finite and >= 0 s")
            mean_s, jitter_s = float(samples_s.mean()), float(samples_s.std())
        elif samples_s is not None:
            raise ValueError(f"latency samples need dist empirical (dist is {dist})")
        if not (mean_s >= 0 and math.isfinite(mean_s)):
            raise ValueError(f"latency must be >= 0 s, got {mean_s}")
        if not (jitter_s >= 0 and math.isfinite(jitter_s)):
            raise ValueError(f"latency jitter must be >= 0 s, got {jitter_s}")
        if dist == "constant" and jitter_s > 0:
            raise ValueError("a constant latency has no jitter; use dist normal or lognormal")
        if dist == "lognormal" and jitter_s > 0 and mean_s <= 0:
            raise ValueError("a lognormal latency needs a mean > 0")
        if dist != "constant" and jitter_s > 0 and rng is None:
            raise ValueError(f"a {dist} latency needs a random generator")
        self.mean_s, self.jitter_s, self.dist, self.rng = float(mean_s), float(jitter_s), dist, rng
        self.samples_s = samples_s
        if dist == "lognormal" and jitter_s > 0:
            self._sigma = math.sqrt(math.log1p((jitter_s / mean_s) ** 2))
            self._mu = math.log(mean_s) - self._sigma**2 / 2

    def draw(self) -> float:
        """Seconds of one message's propagation (>= 0)."""
        if self.samples_s is not None:
            assert self.rng is not None
            return float(self.samples_s[self.rng.integers(len(self.samples_s))])
        if self.jitter_s == 0 or self.rng is None:
            return self.mean_s
        if self.dist == "normal":
            return max(0.0, float(self.rng.normal(self.mean_s, self.jitter_s)))
        return float(self.rng.lognormal(self._mu, self._sigma))


def max_min_fair(caps_bps: list[float], capacity_bps: float) -> list[float]:
    """Max-min fair rates of flows with individual caps sharing ``capacity_bps`` (water-filling).

    Flows are served in increasing order of cap: each gets its cap if that is below an equal share of
    what is left, else every remaining flow gets that equal share.
    """
    rates = [0.0] * len(caps_bps)
    left, remaining = capacity_bps, len(caps_bps)
    for i in sorted(range(len(caps_bps)), key=lambda j: caps_bps[j]):
        share = left / remaining
        rates[i] = min(caps_bps[i], share)
        left -= rates[i]
        remaining -= 1
    return rates


class _Transfer:
    """One message on the wire, as a fluid: bits left, current rate, and its completion event."""

    __slots__ = ("link", "bits_left", "rate_bps", "done")

    def __init__(self, link: Link, bits: float, done: simpy.Event):
        self.link, self.bits_left, self.rate_bps, self.done = link, bits, 0.0, done

    def finished(self) -> bool:
        return self.bits_left <= 1e-6 or (
            self.rate_bps > 0 and self.bits_left / self.rate_bps <= TIME_TOLERANCE_S
        )


class SharedCapacity:
    """Capacity shared max-min fairly by the transfers of many links (e.g. the cloud ingress).

    ``capacity_mbps=None`` means unlimited: every transfer then runs at its own link's rate, which is
    how a single link with a trace or outages is simulated exactly.
    """

    def __init__(self, env: simpy.Environment, capacity_mbps: float | None = None):
        if capacity_mbps is not None and not capacity_mbps > 0:
            raise ValueError(f"shared capacity must be > 0 Mbit/s, got {capacity_mbps}")
        self.env = env
        self.capacity_mbps = capacity_mbps
        self._capacity_bps = math.inf if capacity_mbps is None else capacity_mbps * 1e6
        self._transfers: list[_Transfer] = []
        self._updated_s = env.now
        self._wake: simpy.Event | None = None
        self.bits_carried = 0.0
        env.process(self._run())

    def transmit(self, link: Link, nbytes: int) -> simpy.Event:
        """Start putting ``nbytes`` on the wire of ``link``; the event fires when the last bit is sent."""
        transfer = _Transfer(link, nbytes * 8.0, self.env.event())
        self._transfers.append(transfer)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()
        return transfer.done

    @property
    def active(self) -> int:
        """Transfers on the wire now."""
        return len(self._transfers)

    def _run(self) -> Generator[simpy.Event, None, None]:
        while True:
            self._advance()
            self._share()
            self._wake = self.env.event()
            wait_s = self._next_event_in_s()
            if math.isinf(wait_s):
                yield self._wake
            else:
                yield self._wake | self.env.timeout(wait_s)

    def _advance(self) -> None:
        """Count the bits sent at the current rates since the last update; finish what is done."""
        elapsed_s = self.env.now - self._updated_s
        self._updated_s = self.env.now
        still: list[_Transfer] = []
        for t in self._transfers:
            sent = t.rate_bps * elapsed_s
            t.bits_left -= sent
            self.bits_carried += sent
            if t.finished():
                t.done.succeed()
            else:
                still.append(t)
        self._transfers = still

    def _share(self) -> None:
        now = self.env.now
        caps = [t.link.rate_bps(now) for t in self._transfers]
        for t, rate in zip(self._transfers, max_min_fair(caps, self._capacity_bps), strict=True):
            t.rate_bps = rate

    def _next_event_in_s(self) -> float:
        """Seconds to the next completion or change of any active link's own rate."""
        now = self.env.now
        wait_s = math.inf
        for t in self._transfers:
            if t.rate_bps > 0:
                wait_s = min(wait_s, t.bits_left / t.rate_bps)
            wait_s = min(wait_s, t.link.next_change_s(now) - now)
        return max(wait_s, 0.0)


class Link:
    """One direction of one device's connection (uplink or downlink).

    ``bandwidth`` is a rate in Mbit/s or a schedule (a trace); ``latency`` seconds or a :class:`Latency`.
    """

    def __init__(
        self,
        env: simpy.Environment,
        bandwidth: float | RateSchedule,
        latency: float | Latency,
        *,
        outages: Outages | None = None,
        shared: SharedCapacity | None = None,
        max_queue: int | None = None,
        queue_timeout_s: float | None = None,
    ):
        if isinstance(bandwidth, int | float):
            if bandwidth <= 0:
                raise ValueError(f"bandwidth must be > 0 Mbit/s, got {bandwidth}")
            bandwidth = ConstantRate(bandwidth)
        if not isinstance(latency, Latency):
            latency = Latency(latency)
        if max_queue is not None and max_queue < 0:
            raise ValueError(f"queue size must be >= 0 messages, got {max_queue}")
        if queue_timeout_s is not None and not queue_timeout_s > 0:
            raise ValueError(f"queue timeout must be > 0 s, got {queue_timeout_s}")
        self.env = env
        self.bandwidth, self.latency, self.outages = bandwidth, latency, outages
        self.max_queue, self.queue_timeout_s = max_queue, queue_timeout_s
        # A fixed-rate link with no outages and no shared capacity serialises with one timeout;
        # anything time-varying goes through a fluid transfer (a private, unlimited one if unshared).
        fixed = isinstance(bandwidth, ConstantRate) and outages is None and shared is None
        self.shared = None if fixed else (shared or SharedCapacity(env))
        self._wire = simpy.Resource(env, capacity=1)
        self._last_arrival_s = -math.inf
        self._arrival: simpy.Event | None = None
        self.bytes_sent = 0
        self.messages_sent = 0
        self.bytes_dropped = 0
        self.messages_dropped = 0

    @property
    def bandwidth_mbps(self) -> float:
        """The link's own rate now (without outages or sharing)."""
        return self.bandwidth.rate_mbps(self.env.now)

    @property
    def latency_s(self) -> float:
        return self.latency.mean_s

    @property
    def queued(self) -> int:
        """Messages waiting for the wire (not counting the one on it)."""
        return len(self._wire.queue)

    def rate_bps(self, t_s: float) -> float:
        """The link's own rate at ``t_s`` in bit/s: its bandwidth, or 0 while it is down."""
        if self.outages is not None and self.outages.is_down(t_s):
            return 0.0
        return self.bandwidth.rate_mbps(t_s) * 1e6

    def next_change_s(self, t_s: float) -> float:
        """When :meth:`rate_bps` may next change."""
        change = self.bandwidth.next_change_s(t_s)
        if self.outages is not None:
            change = min(change, self.outages.next_change_s(t_s))
        return change

    def send(self, nbytes: int) -> Generator[simpy.Event, None, Delivery]:
        """Process: queue for the wire, serialise, propagate; returns what became of the message."""
        busy = self._wire.count > 0
        if self.max_queue is not None and busy and len(self._wire.queue) >= self.max_queue:
            return self._drop(nbytes, Delivery.QUEUE_FULL)
        with self._wire.request() as turn:
            if self.queue_timeout_s is None:
                yield turn
            else:
                yield turn | self.env.timeout(self.queue_timeout_s)
                if not turn.triggered:
                    return self._drop(nbytes, Delivery.TIMEOUT)
            if self.shared is None:
                yield self.env.timeout(serialization_time_s(nbytes, self.bandwidth.mbps))
            else:
                yield self.shared.transmit(self, nbytes)
        self.bytes_sent += nbytes
        self.messages_sent += 1
        latency_s = self.latency.draw()
        if self._arrival is None or self.env.now + latency_s >= self._last_arrival_s:
            self._last_arrival_s = self.env.now + latency_s
            self._arrival = self.env.timeout(latency_s)
        # else in-order delivery: arrive with the message ahead (its event, so at the same instant)
        yield self._arrival
        return Delivery.DELIVERED

    def _drop(self, nbytes: int, why: Delivery) -> Delivery:
        self.bytes_dropped += nbytes
        self.messages_dropped += 1
        return why
