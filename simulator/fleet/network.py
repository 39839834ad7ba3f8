"""Point-to-point links: FIFO serialisation at a bandwidth, then a propagation latency.

A message of N bytes on a link of B Mbit/s occupies the link for N*8 / (B*1e6) seconds (bits over bits
per second: dividing bytes by Mbit/s is a classic units trap) and arrives ``latency_s`` later.
Serialisation is exclusive (one message on the wire at a time, in arrival order); propagation is
pipelined, so the next message may start serialising while the previous one is still in flight.
"""

from __future__ import annotations

from collections.abc import Generator

import simpy


def serialization_time_s(nbytes: int, bandwidth_mbps: float) -> float:
    """Seconds to put ``nbytes`` on a wire of ``bandwidth_mbps`` megabits per second."""
    return nbytes * 8.0 / (bandwidth_mbps * 1e6)


def transfer_time_s(nbytes: int, bandwidth_mbps: float, latency_s: float) -> float:
    """Seconds from the first bit sent to the last bit received, on an idle link."""
    return serialization_time_s(nbytes, bandwidth_mbps) + latency_s


class Link:
    """One direction of one device's connection (uplink or downlink)."""

    def __init__(self, env: simpy.Environment, bandwidth_mbps: float, latency_s: float):
        if bandwidth_mbps <= 0:
            raise ValueError(f"bandwidth must be > 0 Mbit/s, got {bandwidth_mbps}")
        if latency_s < 0:
            raise ValueError(f"latency must be >= 0 s, got {latency_s}")
        self.env = env
        self.bandwidth_mbps = bandwidth_mbps
        self.latency_s = latency_s
        self._wire = simpy.Resource(env, capacity=1)
        self.bytes_sent = 0
        self.messages_sent = 0

    def send(self, nbytes: int) -> Generator[simpy.Event, None, None]:
        """Process: wait for the wire, serialise, propagate. Ends when the message is delivered."""
        with self._wire.request() as turn:
            yield turn
            yield self.env.timeout(serialization_time_s(nbytes, self.bandwidth_mbps))
        self.bytes_sent += nbytes
        self.messages_sent += 1
        yield self.env.timeout(self.latency_s)
