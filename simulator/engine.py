"""One run: Scenario -> SimPy environment -> RunResult (events + summary). Deterministic per seed.

Two clocks never mix here: ``sim_time_s`` is what the fleet experiences (from profiles and links),
``wall_time_s`` is what the simulation cost on this machine.
"""

from __future__ import annotations

import copy
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy
import torch

from policies.routing import ROUTING_POLICIES, OffloadConfig
from policies.selection import SELECTION_POLICIES
from policies.upload import UPLOAD_POLICIES, UploadPolicy
from simulator.adaptation import ADAPTERS, CloudAdapter
from simulator.adaptation.whole_model import WholeModelAdapter
from simulator.compute import describe_device, resolve_device
from simulator.config import Scenario, dump_scenario
from simulator.data.cache import CorruptionCache, default_cache_root
from simulator.data.corruptions import corrupt
from simulator.data.datasets import CorruptedFolder, ImageDataset, create_dataset
from simulator.data.labelled import labelled_target_set
from simulator.data.streams import DeviceStream, build_stream, stream_domains
from simulator.fleet.cloud import Cloud
from simulator.fleet.cloud_time import CloudTime
from simulator.fleet.device import EdgeDevice, NormState
from simulator.fleet.executor import ExecutorKind, FleetExecutor
from simulator.fleet.foundation import FoundationServer
from simulator.fleet.links import FleetNetwork
from simulator.fleet.payload import encoded_sizes
from simulator.fleet.redeploy import ModelCloud, ModelDeployments
from simulator.fleet.selection import DeviceSelector, Member
from simulator.metrics import EventRecorder, summarize, summarize_selection
from simulator.models.flops import count_macs
from simulator.models.norm import get_norm_state
from simulator.models.zoo import create_model, trained_on, weights_status

# Distinct streams of randomness derived from the scenario seed, one per purpose (and per device).
_STREAM, _POLICY, _POLICY_INNER = (
    1,
    2,
    3,
)  # the network's own streams: simulator/fleet/links.py (11-14)

ProgressCallback = Callable[[float, float], None]  # (sim_time_s now, sim_time_s expected at end)


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
    elif batch > segment and samples > segment and len(set(scenario.stream.corruptions)) > 1:
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


_CACHES: dict[Path, CorruptionCache] = {}


def _corruption_cache() -> CorruptionCache:
    """One cache object per root per process, so a set verified (checksummed) once is not
    re-verified by every later run of a sweep in this process (unless its file changed)."""
    root = default_cache_root()
    if root not in _CACHES:
        _CACHES[root] = CorruptionCache(root)
    return _CACHES[root]


def _rng(seed: int, purpose: int, device: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, purpose, device])


class BatchLoader:
    """Images of one edge batch: dataset pixels, corrupted per sample domain (uint8 NCHW).

    With a ``CorruptionCache``, corrupted pixels are read from its memory-mapped sets (built once,
    shared by a sweep's runs) instead of being computed per batch; the pixels are identical. With
    a ``CorruptedFolder``, they are the pre-corrupted files of an ImageNet-C tree instead.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        seed: int,
        cache: CorruptionCache | None = None,
        folder: CorruptedFolder | None = None,
    ):
        self.dataset = dataset
        self.images = torch.from_numpy(dataset.images).permute(0, 3, 1, 2)
        self.seed = seed
        self.cache = cache
        self.folder = folder
        self._sets: dict[tuple[str, int], np.ndarray] = {}  # verified once per run, then reused

    def __call__(self, stream: DeviceStream, b: int) -> torch.Tensor:
        return self.many([(stream, b)])[0]

    def many(self, batches: Sequence[tuple[DeviceStream, int]]) -> list[torch.Tensor]:
        """The images of several (stream, batch) pairs; each domain corrupted in one call."""
        rows = [stream.batch(b) for stream, b in batches]
        indices = np.concatenate([s.indices[r] for (s, _), r in zip(batches, rows, strict=True)])
        keys = [
            (d.corruption, d.severity)
            for (s, _), r in zip(batches, rows, strict=True)
            for d in (s.domains[int(i)] for i in s.domain_ids[r])
        ]
        index_t = torch.from_numpy(indices)
        images = self.images[index_t].contiguous()
        by_domain: dict[tuple[str, int], list[int]] = {}
        for row, key in enumerate(keys):
            if key[0] != "clean":
                by_domain.setdefault(key, []).append(row)
        for (corruption, severity), members in by_domain.items():
            mask = torch.tensor(members, dtype=torch.long)
            if self.folder is not None:
                files = self.folder.images(corruption, severity, indices[members])
                images[mask] = torch.from_numpy(files).permute(0, 3, 1, 2)
            elif self.cache is not None:
                corrupted = self._sets.get((corruption, severity))
                if corrupted is None:
                    corrupted = self.cache.get(self.dataset, corruption, severity, self.seed)
                    self._sets[(corruption, severity)] = corrupted
                images[mask] = torch.from_numpy(corrupted[indices[members]]).permute(0, 3, 1, 2)
            else:
                images[mask] = corrupt(
                    images[mask], corruption, severity, seed=self.seed, indices=index_t[mask]
                )
        return list(images.split([r.stop - r.start for r in rows]))


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
    seed = scenario.seed
    torch.manual_seed(seed)
    ds_cfg = scenario.dataset
    dataset = create_dataset(
        ds_cfg.name,
        split=ds_cfg.split,
        root=ds_cfg.root,
        variant=ds_cfg.variant,
        seed=seed,
        size=ds_cfg.size,
    )
    num_classes = dataset.num_classes
    folder = None
    if ds_cfg.corruption_source == "folder":  # the pre-corrupted files of an ImageNet-C tree
        domains = [(d.corruption, d.severity) for d in stream_domains(scenario.stream)]
        folder = CorruptedFolder(ds_cfg.corrupted_root, dataset, domains)

    adapter_cls = ADAPTERS.get(scenario.cloud.adapter)
    edge_model = create_model(
        scenario.edge.model,
        num_classes=num_classes,
        checkpoint=scenario.edge.checkpoint,
        pretrained=scenario.edge.pretrained,
    )
    teacher = None
    if adapter_cls.needs_teacher:
        if scenario.cloud.teacher is None:
            raise ValueError(f"adapter {scenario.cloud.adapter!r} needs cloud.teacher")
        teacher = create_model(
            scenario.cloud.teacher,
            num_classes=num_classes,
            checkpoint=scenario.cloud.teacher_checkpoint,
            pretrained=scenario.cloud.teacher_pretrained,
        ).to(compute)
    source_state = get_norm_state(edge_model)
    picker = scenario.policy.name  # the policy choosing uploads (a budget's inner one)
    if scenario.policy.plugin.wraps_inner_policy:
        picker = scenario.policy.params().inner  # type: ignore[attr-defined]
    given = scenario.cloud.params()
    params = adapter_cls.for_upload_policy(given, picker)
    before = given.model_dump() if given is not None else {}
    resolved = {  # choices the adapter made from the rest of the scenario (e.g. an ``auto``)
        f"cloud.{scenario.cloud.adapter}.{key}": value
        for key, value in (params.model_dump() if params is not None else {}).items()
        if key in before and before[key] != value
    }
    adapter = adapter_cls(copy.deepcopy(edge_model).to(compute), teacher, params, num_classes, seed)
    env = simpy.Environment()
    recorder = EventRecorder()
    net = scenario.network
    loader = BatchLoader(dataset, seed, _corruption_cache() if ds_cfg.cache else None, folder)
    runtime = FleetExecutor(
        edge_model,
        kind=executor,
        batch_statistics=adapter.edge_norm == "batch",
        load=loader.many,  # type: ignore[arg-type]
        device=compute,
        max_rows=max_rows,
    )
    policy_cls = UPLOAD_POLICIES.get(scenario.policy.name)
    edge = scenario.edge

    height, width = dataset.images.shape[1:3]
    macs = count_macs(edge_model, (3, height, width)) if edge.profile is not None else 0

    def compute_fn(d: int) -> Callable[[int], float]:
        """Simulated seconds for device ``d`` to classify ``n`` images (profile or fixed ms)."""
        hardware = edge.hardware(d)
        if hardware is not None:
            return lambda n: hardware.compute_s(n, macs)
        return lambda n: (edge.ms_per_batch + edge.ms_per_sample * n) / 1000.0

    def payload_sizes(images: torch.Tensor) -> np.ndarray:
        return encoded_sizes(images.permute(0, 2, 3, 1).numpy(), net.encoding, net.jpeg_quality)

    def make_policy(d: int) -> UploadPolicy:
        policy = policy_cls(scenario.policy.params(), num_classes, _rng(seed, _POLICY, d))
        inner = getattr(policy.config, "inner", None)
        if inner is not None:  # a policy wrapping another one (budget)
            inner_cls = UPLOAD_POLICIES.get(inner)
            rng = _rng(seed, _POLICY_INNER, d)
            policy.bind_inner(inner_cls(scenario.policy.params(inner), num_classes, rng))
        return policy

    if scenario.cloud.ms_per_step is not None:
        cloud_time = CloudTime(ms_per_step=scenario.cloud.ms_per_step)
    else:
        shape = (3, height, width)
        cloud_time = CloudTime(
            profile=scenario.cloud.hardware(),
            profile_name=scenario.cloud.profile,
            teacher_macs=count_macs(teacher, shape) if teacher is not None else 0,
            edge_macs=macs or count_macs(edge_model, shape),
        )

    selectors: dict[int, DeviceSelector] = {}
    if scenario.selection.active:  # per-device model choice (policies/selection)
        selectors = _selectors(
            scenario, edge_model, runtime, recorder, num_classes, (3, height, width), executor
        )
    devices: dict[int, EdgeDevice] = {}
    cloud: Cloud | ModelCloud
    if adapter_cls.ships_models:  # TDMR: whole edge models rebuilt and redeployed (fleet/redeploy)
        cloud = _model_cloud(
            scenario, env, adapter, devices, cloud_time, recorder, edge_model, runtime
        )
    else:
        cloud = Cloud(
            env,
            adapter,
            devices,
            workers=scenario.cloud.workers,
            step_time=cloud_time,
            per_device_scope=scenario.cloud.scope == "per_device",
            state_dtype=getattr(torch, scenario.cloud.state_dtype),
            header_bytes=net.header_bytes,
            recorder=recorder,
            schedule=scenario.cloud.schedule,
            gather=scenario.cloud.gather,
            payload=scenario.cloud.downlink_payload,
            tolerance=scenario.cloud.delta_tolerance,
            affine_only=adapter.edge_norm == "batch",
        )
    network = FleetNetwork(env, net, seed)
    routing_cls = ROUTING_POLICIES.get(scenario.routing.name)
    routing = scenario.routing.params()
    foundation = None
    if routing_cls.offloads:  # offloaded samples are answered by the cloud foundation model
        assert isinstance(routing, OffloadConfig)
        foundation = FoundationServer(
            env,
            _foundation_model(scenario, teacher, num_classes).to(compute),
            workers=routing.cloud_workers,
            ms_per_request=routing.cloud_ms_per_request,
            ms_per_sample=routing.cloud_ms_per_sample,
        )
    report_empty = policy_cls.uploads and adapter_cls.hears_empty_batches(params)
    end_s = 0.0
    for d in range(scenario.fleet.devices):
        stream = build_stream(scenario.stream, d, len(dataset), _rng(seed, _STREAM, d))
        end_s = max(end_s, float(stream.arrival_s[-1]))
        devices[d] = EdgeDevice(
            env,
            d,
            stream,
            labels=dataset.labels,
            executor=runtime,
            policy=make_policy(d),
            uplink=network.uplink(d),
            downlink=network.downlink(d),
            deliver=cloud.deliver,
            payload_sizes=payload_sizes,
            header_bytes=net.header_bytes,
            compute_s=compute_fn(d),
            initial_state=NormState(source_state, version=0),
            recorder=recorder,
            latest_version=cloud.latest_version,
            selector=selectors.get(d),
            router=routing_cls(routing, num_classes),
            foundation=foundation,
            answer_bytes_per_sample=getattr(routing, "answer_bytes_per_sample", 4),
            report_empty_batches=report_empty,
        )
        env.process(devices[d].run())

    if isinstance(cloud, ModelCloud):
        cloud.start(until_s=end_s)
    loop_start = time.perf_counter()
    ticks = 100
    for k in range(1, ticks + 1):
        env.run(until=end_s * k / ticks)
        if progress:
            progress(env.now, end_s)
    env.run()  # uploads and downloads still in flight after the last arrival
    if progress:
        progress(env.now, env.now)

    loop_s = time.perf_counter() - loop_start
    events = recorder.frame()
    summary = summarize(events)
    summary.update(
        scenario=scenario.name,
        seed=seed,
        devices=scenario.fleet.devices,
        policy=scenario.policy.name,
        adapter=scenario.cloud.adapter,
        dataset=dataset.source,
        sim_time_s=float(env.now),
        cloud_busy_s=cloud.busy_s,
        cloud_utilization=cloud.busy_s / (scenario.cloud.workers * env.now) if env.now else 0.0,
        cloud_profile=cloud_time.describe(),
        cloud_compute_s=float(sum(cloud.compute_s)),
        cloud_update_ms_mean=1000.0 * float(np.mean(cloud.compute_s)) if cloud.compute_s else None,
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
    if resolved:
        summary["resolved"] = resolved
    summary.update(adapter.summary_figures())
    if isinstance(cloud, ModelCloud):  # model downloads, rebuilds, versions, time on stale models
        _merge_model_shipping(summary, cloud.summary_figures(events))
    for row in summary["per_device"]:
        row.update(network.device_summary(row["device"], env.now))
    _add_energy(summary, scenario, devices, macs)
    if selectors:
        groups = {d: str(edge.profile_name(d)) for d in devices}
        _merge_selection(summary, summarize_selection(events, groups))
    if foundation is not None:
        summary.update(
            foundation_busy_s=foundation.busy_s,
            foundation_utilization=(
                foundation.busy_s / (foundation.workers * env.now) if env.now else 0.0
            ),
        )
    extra = {
        "executor": {
            "kind": executor,
            "max_rows": runtime.max_rows,
            "forward_passes": runtime.forward_passes,
            "rows": runtime.rows_run,
        },
        "setup_s": loop_start - wall_start,  # data, models, adapter, streams
        "loop_s": loop_s,  # the simulation itself (SimPy, inference, cloud, network)
    }
    if isinstance(cloud, ModelCloud):  # every shipped model's executor ran edge batches too
        built = cloud.deployments.executors()
        extra["executor"]["forward_passes"] += sum(e.forward_passes for e in built)
        extra["executor"]["rows"] += sum(e.rows_run for e in built)
    if selectors:  # every member's executor ran edge batches, not only edge.model's
        runs = {id(m.executor): m.executor for m in selectors[0].members.values()}
        runs[id(runtime)] = runtime
        extra["executor"]["forward_passes"] = sum(e.forward_passes for e in runs.values())
        extra["executor"]["rows"] = sum(e.rows_run for e in runs.values())
    return RunResult(scenario, events, summary, extra)


def _model_cloud(
    scenario: Scenario,
    env: simpy.Environment,
    adapter: CloudAdapter,
    devices: dict[int, EdgeDevice],
    cloud_time: CloudTime,
    recorder: EventRecorder,
    edge_model: torch.nn.Module,
    runtime: FleetExecutor,
) -> ModelCloud:
    """The cloud of an adapter that ships whole models (TDMR), with the labelled target set it
    asks for. Normalization-state options of the cloud section do not apply to it."""
    assert isinstance(adapter, WholeModelAdapter)
    if scenario.cloud.downlink_payload != "full":
        raise ValueError(
            f"cloud.downlink_payload {scenario.cloud.downlink_payload!r} is for normalization "
            f"states; cloud.adapter {scenario.cloud.adapter!r} ships whole models: set "
            f"cloud.{scenario.cloud.adapter}.ship (full, changed, quantized) instead"
        )
    per_domain = adapter.labelled_per_domain()
    if per_domain:
        adapter.hold_labelled(*labelled_target_set(scenario, per_domain))
    source_weights = {k: v.detach().clone() for k, v in edge_model.state_dict().items()}
    return ModelCloud(
        env,
        adapter,
        devices,
        workers=scenario.cloud.workers,
        step_time=cloud_time,
        per_device_scope=scenario.cloud.scope == "per_device",
        header_bytes=scenario.network.header_bytes,
        recorder=recorder,
        deployments=ModelDeployments(edge_model, runtime),
        source_weights=source_weights,
    )


def _merge_model_shipping(summary: dict[str, Any], figures: dict[str, Any]) -> None:
    """Model-shipping figures into the summary: headline keys and per device."""
    per_device = figures.pop("per_device")
    summary.update(figures)
    for row in summary["per_device"]:
        row.update(per_device.get(row["device"], {}))


def _foundation_model(
    scenario: Scenario, teacher: torch.nn.Module | None, num_classes: int
) -> torch.nn.Module:
    """The model answering offloaded samples: the adapter's teacher when it has one (an adapting
    teacher answers with its current state, as the cloud would serve it), else ``cloud.teacher``
    frozen, loaded for routing alone (the scenario validation ensures one is named)."""
    if teacher is not None:
        return teacher
    assert scenario.cloud.teacher is not None
    model = create_model(
        scenario.cloud.teacher,
        num_classes=num_classes,
        checkpoint=scenario.cloud.teacher_checkpoint,
        pretrained=scenario.cloud.teacher_pretrained,
    )
    return model.eval().requires_grad_(False)


def _add_energy(
    summary: dict[str, Any], scenario: Scenario, devices: dict[int, EdgeDevice], macs: int
) -> None:
    """Per device with a hardware profile: compute time, and energy of compute and radio.

    Compute energy is the profile's active power over the device's simulated compute time; radio
    energy is its marginal energy per byte sent and received. Idle power is not charged.
    """
    edge = scenario.edge
    if edge.profile is None:
        return
    totals = {"compute_s": 0.0, "energy_compute_j": 0.0, "energy_radio_j": 0.0}
    per_profile: dict[str, dict[str, float]] = {}
    for row in summary["per_device"]:
        d = row["device"]
        hardware = edge.hardware(d)
        assert hardware is not None
        stream = devices[d].stream
        sizes = [s.stop - s.start for s in map(stream.batch, range(stream.num_batches))]
        selector = devices[d].selector  # with model selection: the members' actual compute
        compute = (
            selector.compute_total_s
            if selector is not None
            else sum(hardware.compute_s(n, macs) for n in sizes)
        )
        figures = {
            "compute_s": compute,
            "energy_compute_j": hardware.compute_j(compute),
            "energy_radio_j": hardware.radio_j(row["upload_bytes"], row["download_bytes"]),
        }
        figures["energy_j"] = figures["energy_compute_j"] + figures["energy_radio_j"]
        row.update(profile=edge.profile_name(d), **figures)
        group = per_profile.setdefault(
            str(edge.profile_name(d)), {"devices": 0, "samples": 0, "correct": 0.0, "energy_j": 0.0}
        )
        group["devices"] += 1
        group["samples"] += row["samples"]
        group["correct"] += row["accuracy"] * row["samples"]
        group["energy_j"] += figures["energy_j"]
        for key in totals:
            totals[key] += figures[key]
    energy = totals["energy_compute_j"] + totals["energy_radio_j"]
    summary.update(
        edge_macs_per_image=macs,
        energy_j=energy,
        energy_compute_j=totals["energy_compute_j"],
        energy_radio_j=totals["energy_radio_j"],
        energy_per_inference_j=energy / max(summary["samples"], 1),
        per_profile={
            name: {
                "devices": g["devices"],
                "samples": g["samples"],
                "accuracy": g["correct"] / max(g["samples"], 1),
                "energy_j": g["energy_j"],
                "energy_per_inference_j": g["energy_j"] / max(g["samples"], 1),
            }
            for name, g in sorted(per_profile.items())
        },
    )


def _selectors(
    scenario: Scenario,
    edge_model: torch.nn.Module,
    runtime: FleetExecutor,
    recorder: EventRecorder,
    num_classes: int,
    input_shape: tuple[int, int, int],
    executor: ExecutorKind,
) -> dict[int, DeviceSelector]:
    """One :class:`DeviceSelector` per device over the selection policy's candidate models.

    Every candidate gets one executor shared by the fleet (``edge.model`` keeps ``runtime``), so a
    device's memory stays its normalization state; latency comes from each candidate's counted MACs
    on the device's profile (or the fixed ms of ``edge`` for one model without a profile).
    """
    sel, edge = scenario.selection, scenario.edge
    policy_cls = SELECTION_POLICIES.get(sel.name)
    members: dict[str, tuple[FleetExecutor, dict[str, torch.Tensor], int]] = {}
    for name in policy_cls.candidates(sel.params(), edge.model):
        if name == edge.model:
            model, member_runtime = edge_model, runtime
        else:
            model = create_model(name, num_classes=num_classes)
            member_runtime = FleetExecutor(
                model,
                kind=executor,
                batch_statistics=runtime.batch_statistics,
                load=runtime.load,
                device=runtime.device,
                max_rows=runtime.max_rows,
            )
        macs = count_macs(model, input_shape) if edge.profile is not None else 0
        members[name] = (member_runtime, get_norm_state(model), macs)

    def nominal(d: int, macs: int) -> Callable[[int], float]:
        hardware = edge.hardware(d)
        if hardware is not None:
            return lambda n: hardware.compute_s(n, macs)
        return lambda n: (edge.ms_per_batch + edge.ms_per_sample * n) / 1000.0

    selectors = {}
    for d in range(scenario.fleet.devices):
        profile = edge.profile_name(d)
        selectors[d] = DeviceSelector(
            d,
            policy_cls(sel.params(), edge.model),
            {
                name: Member(name, ex, state, nominal(d, macs))
                for name, (ex, state, macs) in members.items()
            },
            budget_s=lambda now, d=d, p=profile: sel.budget_s(d, p, now),
            slowdown=lambda now, d=d, p=profile: sel.slowdown_factor(d, p, now),
            batch_size=scenario.stream.batch_size,
            record=recorder.message,
        )
    return selectors


def _merge_selection(summary: dict[str, Any], selection: dict[str, Any]) -> None:
    """Selection figures into the summary: headline keys, per profile and per device."""
    per_profile = selection.pop("per_profile")
    per_device = selection.pop("per_device")
    summary.update(selection)
    groups = summary.setdefault("per_profile", {})
    for name, figures in per_profile.items():
        groups.setdefault(name, {}).update(figures)
    for row in summary["per_device"]:
        row.update(per_device.get(row["device"], {}))


#: What a run folder holds; anything else in a folder given as ``--out`` means it is not a run
#: folder, and a run never replaces it. ``figures/`` and ``report/`` are what ``fleetsim plot`` and
#: ``report`` write into a single run's folder by default: they go with it.
RUN_FILES = frozenset({"config.yaml", "events.parquet", "summary.json", "figures", "report"})
#: A sweep's run folders also hold this (their config hash); only the sweep replaces them.
SWEEP_RUN_FILE = "run.json"


class OutputError(ValueError):
    """An output folder that cannot or must not be written (checked before any simulating)."""


def _probe(folder: Path, what: str, path: str | Path) -> None:
    """Make and remove a folder in ``folder``: the real test of writing there (permissions alone
    miss read-only filesystems and /proc)."""
    try:
        os.rmdir(make_staging_dir(".fleetsim-probe-", folder))
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot write in {folder} ({exc.strerror})") from None


def _existing_folder(start: Path, what: str, path: str | Path) -> Path:
    """The nearest existing ancestor of ``start`` (itself included), which must be a folder."""
    ancestor = start
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{what} {path}: {ancestor} is a file, so no folder can be made under it")
    return ancestor


def check_writable(path: str | Path, what: str = "--out") -> Path:
    """``path`` (a folder written *into*, e.g. a sweep's) as an absolute path, after checking it is
    not a file and that this process can write in it or its nearest existing ancestor (raises
    :class:`OutputError`)."""
    out = Path(os.path.abspath(path))
    if out.exists() and not out.is_dir():
        raise OutputError(f"{what} {path}: is a file, not a folder")
    _probe(_existing_folder(out, what, path), what, path)
    return out


def check_run_dir(out_dir: str | Path, what: str = "--out", *, sweep_run: bool = False) -> Path:
    """Check, before a run, that ``out_dir`` can take it and returns it absolute: not a file, a
    symbolic link, the working directory or above it; new, empty or a run folder (a run replaces
    its folder whole: it is written next to it, then renamed, so its parent must be writable). A
    sweep's run folder (with ``run.json``) is replaced only by its sweep (``sweep_run``)."""
    out = Path(os.path.abspath(out_dir))
    if out.is_symlink():
        raise OutputError(f"{what} {out_dir}: is a symbolic link; give the folder it points to")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{what} {out_dir}: is a file, not a folder")
    cwd = Path.cwd().resolve()
    if out.exists() and (out.resolve() == cwd or out.resolve() in cwd.parents):
        raise OutputError(
            f"{what} {out_dir}: is the working directory or above it, which a run would replace"
        )
    if out.is_dir():
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
        allowed = RUN_FILES | ({SWEEP_RUN_FILE} if sweep_run else set())
        others = [name for name in names if name.rstrip("/") not in allowed]
        if others == [SWEEP_RUN_FILE]:
            raise OutputError(
                f"{what} {out_dir}: is a run of a sweep (it holds {SWEEP_RUN_FILE}), which only "
                "`fleetsim sweep` replaces; give a new or empty folder"
            )
        if others:
            shown = ", ".join(others[:4]) + (
                f" and {len(others) - 4} more" if len(others) > 4 else ""
            )
            raise OutputError(
                f"{what} {out_dir}: holds {shown}, which a fleetsim run folder does not; a run "
                "replaces its folder whole, so give a new or empty folder (or an earlier run's)"
            )
    _probe(_existing_folder(out.parent, what, out_dir), what, out_dir)
    return out


def make_staging_dir(prefix: str, parent: Path) -> Path:
    """A new hidden folder in ``parent`` with the permissions of a plain ``mkdir`` (``mkdtemp``
    makes it private, and a run folder renamed from it would stay unreadable to the group)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=0o777)  # the umask applies, as for any folder
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free name for a staging folder {prefix}* in {parent}")


def replace_dir(source: Path, target: Path) -> None:
    """Put folder ``source`` at ``target`` by renames, replacing any folder already there."""
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


def write_run(result: RunResult, out_dir: str | Path) -> Path:
    """Write config.yaml, events.parquet and summary.json atomically into ``out_dir``.

    Everything goes to a temporary sibling folder first, which then replaces ``out_dir`` by rename,
    so an interrupted write never leaves a half-written run folder behind. ``out_dir`` must be new,
    empty or an earlier run's folder (:func:`check_run_dir`); returns it as an absolute path.
    """
    import json

    out_dir = check_run_dir(out_dir, "run folder")  # again: it may have changed since the start
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_staging_dir(f".{out_dir.name}.tmp-", out_dir.parent)
    try:
        (tmp / "config.yaml").write_text(dump_scenario(result.scenario))
        result.events.to_parquet(tmp / "events.parquet", index=False)
        (tmp / "summary.json").write_text(json.dumps(result.summary, indent=2) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
