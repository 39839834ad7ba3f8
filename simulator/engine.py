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

from simulator.adaptation import ADAPTERS
from simulator.build import Fleet, ProgressCallback, build_fleet
from simulator.compute import describe_device, resolve_device
from simulator.config import Scenario
from simulator.fleet.executor import ExecutorKind
from simulator.metrics import merge_selection, summarize, summarize_energy, summarize_selection
from simulator.models.zoo import trained_on, weights_status

__all__ = ["RunResult", "collect_summary", "run_scenario", "scenario_warnings"]


@dataclass
class RunResult:
    scenario: Scenario
    events: pd.DataFrame
    summary: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


#: Below this many images per edge batch, normalising with the batch's own statistics costs
#: accuracy (benchmarks/cifar10c.md, "Edge batch size under batch statistics").
MIN_BATCH_FOR_STATISTICS = 16


def scenario_warnings(scenario: Scenario) -> list[str]:
    """What in a valid scenario is likely a mistake, one sentence each (empty: nothing): shown by
    ``fleetsim validate`` and ``run`` and kept in the run's summary.json (``warnings``)."""
    found: list[str] = []
    batch, samples = scenario.stream.batch_size, scenario.stream.samples_per_device
    segment = scenario.stream.segment_samples
    if batch > samples:
        found.append(
            f"stream.batch_size {batch} is larger than stream.samples_per_device {samples}: "
            f"each device classifies one batch of {samples}"
        )
    elif (
        batch > segment
        and samples > segment
        and len(set(scenario.stream.corruptions)) > 1
        and scenario.stream.schedule != "mixed"  # mixed draws each sample's domain: no segments
    ):
        found.append(
            f"stream.batch_size {batch} is larger than stream.segment_samples {segment}: every "
            "batch mixes images of two or more domains"
        )
    network = scenario.network
    if network.latency.dist == "empirical" and "latency_ms" in network.model_fields_set:
        found.append(
            f"network.latency_ms {network.latency_ms} is not used: latency.dist empirical draws "
            f"each latency from the measured RTTs ({network.latency.samples})"
        )
    adapter = ADAPTERS.get(scenario.cloud.adapter)
    data = scenario.dataset.name
    models = [("edge.model", scenario.edge.model, scenario.edge.checkpoint)]
    answers = adapter.needs_teacher or scenario.routing.plugin.offloads
    if answers and scenario.cloud.teacher is not None:
        models.append(("cloud.teacher", scenario.cloud.teacher, scenario.cloud.teacher_checkpoint))
    for key, name, checkpoint in models:
        if checkpoint is not None:
            continue
        origin = trained_on(name)
        if origin is not None and origin != data:
            found.append(
                f"{key} {name} was trained on {origin}, but dataset.name is {data}: its "
                f"predictions will be near chance (pick a {data} model, fleetsim list models)"
            )
        where = weights_status(name)
        if where.startswith("missing"):
            found.append(f"{key} {name}: its weights are not on this machine ({where})")
    if adapter.edge_norm_for(scenario.cloud.params()) != "batch":
        return found
    last = samples % batch  # a stream's last batch is short unless batches divide it
    if batch >= MIN_BATCH_FOR_STATISTICS and 0 < last < MIN_BATCH_FOR_STATISTICS:
        found.append(
            f"stream.samples_per_device {samples} with stream.batch_size {batch} leaves each "
            f"device a last batch of {last} image{'s' if last > 1 else ''}, which the edge "
            f"normalises with its own statistics (cloud.adapter {scenario.cloud.adapter!r}); "
            f"a multiple of {batch} avoids it"
        )
    if batch < MIN_BATCH_FOR_STATISTICS:
        how = (
            f"set cloud.{scenario.cloud.adapter}.edge_norm: eval, or raise stream.batch_size"
            if "edge_norm" in adapter.Config.model_fields  # the adapter lets the edge choose
            else "raise stream.batch_size"
        )
        found.append(
            f"stream.batch_size {batch}: with cloud.adapter {scenario.cloud.adapter!r} the edge "
            f"normalises each batch with its own statistics, which are noisy below "
            f"{MIN_BATCH_FOR_STATISTICS} images (CIFAR-10-C, ResNet-20: BN adaptation's mean "
            f"error is 81 % at batches of 1, 42 % at 4, 28 % at 32, against 47 % unadapted); {how}"
        )
    return found


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
