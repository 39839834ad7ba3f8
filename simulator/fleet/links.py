"""The fleet's network as a scenario describes it: every device's uplink and downlink, and the cloud's
shared ingress and egress.

Randomness: latency draws and outage switching of each link come from their own generators, derived
from the scenario seed as ``default_rng([seed, purpose, device])`` (the engine's scheme) with the
purposes below, so adding outages never changes the latencies drawn, and vice versa.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import simpy

from simulator.config import NetworkConfig, per_device_value
from simulator.fleet.bandwidth import BandwidthTrace, ConstantRate
from simulator.fleet.network import Latency, Link, SharedCapacity
from simulator.fleet.outages import GilbertElliott
from simulator.traces import resolve_rtt, resolve_trace

# Purposes of the network's random streams (the engine's own purposes are small integers).
UPLINK_LATENCY, DOWNLINK_LATENCY, UPLINK_OUTAGE, DOWNLINK_OUTAGE = 11, 12, 13, 14


def _per_device_path(value: Path | list[Path] | None, device: int) -> Path | None:
    if isinstance(value, list):
        return value[device % len(value)]
    return value


class FleetNetwork:
    """Builds the links of each device from ``network``; keeps them for the run summary."""

    def __init__(self, env: simpy.Environment, config: NetworkConfig, seed: int):
        self.env, self.config, self.seed = env, config, seed
        self.ingress = (
            SharedCapacity(env, config.cloud_ingress_mbps) if config.cloud_ingress_mbps else None
        )
        self.egress = (
            SharedCapacity(env, config.cloud_egress_mbps) if config.cloud_egress_mbps else None
        )
        self.uplinks: dict[int, Link] = {}
        self.downlinks: dict[int, Link] = {}

    def _rng(self, purpose: int, device: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, purpose, device])

    def _bandwidth(
        self,
        mbps: float | list[float],
        trace: Path | list[Path] | None,
        device: int,
        scale: float,
    ) -> ConstantRate | BandwidthTrace:
        """The device's rate: a constant or a trace (shipped name or file), times ``scale``."""
        path = _per_device_path(trace, device)
        if path is None:
            return ConstantRate(per_device_value(mbps, device) * scale)
        rows = resolve_trace(path, self.config.trace_format)
        offset_s = per_device_value(self.config.trace_offset_s, device)
        return BandwidthTrace(
            list(rows.times_s),
            [r * scale for r in rows.mbps],
            end=self.config.trace_end,
            offset_s=offset_s,
            source=str(path),
        )

    def _latency(self, device: int, uplink: bool) -> Latency:
        net = self.config
        rng = self._rng(UPLINK_LATENCY if uplink else DOWNLINK_LATENCY, device)
        rtt = net.latency.rtt_name(device)
        if net.latency.dist == "empirical" and rtt is not None:
            return Latency(0.0, 0.0, "empirical", rng, samples_s=resolve_rtt(rtt) / 2000.0)
        jitter_s = per_device_value(net.latency.jitter_ms, device) / 1000.0
        return Latency(
            per_device_value(net.latency_ms, device) / 1000.0,
            jitter_s,
            net.latency.dist,
            rng if jitter_s > 0 else None,
        )

    def _link(self, device: int, uplink: bool) -> Link:
        net = self.config
        latency = self._latency(device, uplink)
        outages = None
        if net.outage is not None and (uplink or net.outage.downlink):
            outages = GilbertElliott(
                per_device_value(net.outage.mean_good_s, device),
                per_device_value(net.outage.mean_bad_s, device),
                self._rng(UPLINK_OUTAGE if uplink else DOWNLINK_OUTAGE, device),
            )
        if uplink:
            bandwidth = self._bandwidth(net.uplink_mbps, net.uplink_trace, device, net.uplink_scale)
            return Link(
                self.env,
                bandwidth,
                latency,
                outages=outages,
                shared=self.ingress,
                max_queue=net.queue.max_messages,
                queue_timeout_s=net.queue.timeout_s,
            )
        bandwidth = self._bandwidth(
            net.downlink_mbps, net.downlink_trace, device, net.downlink_scale
        )
        return Link(self.env, bandwidth, latency, outages=outages, shared=self.egress)

    def uplink(self, device: int) -> Link:
        """The device's uplink (its send queue bounded as ``network.queue`` says)."""
        self.uplinks[device] = link = self._link(device, uplink=True)
        return link

    def downlink(self, device: int) -> Link:
        """The device's downlink (never drops: state updates wait out outages)."""
        self.downlinks[device] = link = self._link(device, uplink=False)
        return link

    def device_summary(self, device: int, until_s: float) -> dict[str, Any]:
        """Per-device link figures for summary.json: mean own rates and time spent down."""
        row: dict[str, Any] = {}
        for name, link in (("uplink", self.uplinks[device]), ("downlink", self.downlinks[device])):
            row[f"{name}_mbps"] = link.bandwidth.mean_mbps()
            row[f"{name}_outage_s"] = link.outages.down_s(until_s) if link.outages else 0.0
        return row
