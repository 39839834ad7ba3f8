"""One run: Scenario -> SimPy environment -> RunResult (events + summary). Deterministic per seed.

Two clocks never mix here: ``sim_time_s`` is what the fleet experiences (from profiles and links),
``wall_time_s`` is what the simulation cost on this machine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from simulator.build import Fleet, ProgressCallback, build_fleet
from simulator.checks import scenario_warnings
from simulator.compute import describe_device, resolve_device
from simulator.config import Scenario
from simulator.fleet.executor import ExecutorKind
from simulator.metrics import merge_selection, summarize, summarize_energy, summarize_selection

__all__ = ["RunResult", "collect_summary", "run_scenario"]


@dataclass
class RunResult:
    scenario: Scenario
    events: pd.DataFrame
    summary: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def run_scenario(
    scenario: Scenario,
    progress: ProgressCallback | None = None,
    executor: ExecutorKind = "batched",
    device: str | torch.device = "cpu",
    max_rows: int | None = None,
) -> RunResult:
    """Simulate the whole fleet and return its events and summary.

    ``executor`` picks how edge inference runs (see :mod:`simulator.fleet.executor`): ``batched``
    (the fleet's pending batches in one forward pass), ``serial`` (one batch per pass, the same
    numbers) or ``naive`` (per-device state loading, equal to float tolerance). A speed choice.
    ``device`` (cpu | cuda | cuda:N | auto, see :mod:`simulator.compute`) is where the edge
    passes, the cloud adapter and the foundation model compute; another speed choice, equal to the
    CPU's numbers to float rounding. ``max_rows`` caps the rows of one batched edge pass (default
    per device type, :data:`~simulator.fleet.executor.DEFAULT_MAX_ROWS`); it changes no number on
    the CPU, and on a GPU moves them within float rounding (kernels may be chosen by pass size).
    """
    compute = resolve_device(device)  # before any work: a device the machine lacks fails first
    wall_start = time.perf_counter()
    fleet = build_fleet(scenario, executor, compute, max_rows)
    loop_start = time.perf_counter()
    fleet.run(progress)
    loop_s = time.perf_counter() - loop_start
    events = fleet.recorder.frame()
    summary = collect_summary(fleet, events, compute, wall_start)
    executors = fleet.executors()
    extra = {
        "executor": {
            "kind": executor,
            "max_rows": fleet.executor.max_rows,
            "forward_passes": sum(e.forward_passes for e in executors),
            "rows": sum(e.rows_run for e in executors),
        },
        "setup_s": loop_start - wall_start,  # data, models, adapter, streams
        "loop_s": loop_s,  # the simulation itself (SimPy, inference, cloud, network)
    }
    return RunResult(scenario, events, summary, extra)


def collect_summary(
    fleet: Fleet, events: pd.DataFrame, compute: torch.device, wall_start: float
) -> dict[str, Any]:
    """summary.json: the events' figures, then what each actor reports of itself (the cloud, the
    adapter, each device's links and energy, the model selectors, the foundation model)."""
    scenario, now = fleet.scenario, fleet.env.now
    summary = summarize(events)
    summary.update(
        scenario=scenario.name,
        seed=scenario.seed,
        devices=scenario.fleet.devices,
        policy=scenario.policy.name,
        adapter=scenario.cloud.adapter,
        dataset=fleet.dataset.source,
        sim_time_s=float(now),
        **fleet.cloud.summary(now),
        routing=scenario.routing.name,
        compute_device=describe_device(compute),
        # CPU kernels sum in thread-sized chunks: the last digits of the cloud's updates, and so
        # of later entropies, depend on the thread count (predictions rarely)
        torch_threads=torch.get_num_threads(),
        wall_time_s=time.perf_counter() - wall_start,
    )
    warnings = scenario_warnings(scenario)
    if warnings:
        summary["warnings"] = warnings
    if fleet.resolved:
        summary["resolved"] = fleet.resolved
    summary.update(fleet.adapter.summary_figures())
    rows = summary["per_device"]
    for row in rows:
        row.update(fleet.network.device_summary(row["device"], now))
    if scenario.edge.profile is not None:
        for row in rows:
            device = fleet.devices[row["device"]]
            row.update(device.energy_summary(row["upload_bytes"], row["download_bytes"]))
        summary.update(summarize_energy(rows, summary["samples"], fleet.edge_macs))
    if fleet.selectors:
        groups = {d: str(device.profile) for d, device in fleet.devices.items()}
        merge_selection(summary, summarize_selection(events, groups))
    if fleet.foundation is not None:
        summary.update(fleet.foundation.summary(now))
    return summary
