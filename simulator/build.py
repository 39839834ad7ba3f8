"""Scenario -> Fleet: the SimPy environment with every actor of one run built and wired together.

Each builder makes one part from the scenario (the dataset, the models, the cloud adapter, the edge
inference executor, the cloud's step time, the model selectors, the cloud (for an adapter that ships
whole models, TDMR, the cloud that redeploys them), the foundation model, the devices with their
streams, links and policies); :func:`build_fleet` calls them in the order the run's randomness
expects (models draw from torch's global generator seeded from the scenario seed, so the order is
part of the result). :class:`Fleet` then runs the environment.

Randomness: every draw comes from a generator seeded from the scenario seed and a purpose (and the
device), so adding a consumer never shifts another's draws.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy
import torch

from policies.routing import ROUTING_POLICIES, OffloadConfig
from policies.selection import SELECTION_POLICIES
from policies.upload import UPLOAD_POLICIES, UploadPolicy
from simulator.adaptation import ADAPTERS, CloudAdapter
from simulator.adaptation.whole_model import WholeModelAdapter
from simulator.config import Scenario
from simulator.data.datasets import CorruptedFolder, ImageDataset, create_dataset
from simulator.data.labelled import labelled_target_set
from simulator.data.loader import BatchLoader, corruption_cache
from simulator.data.streams import DeviceStream, build_stream, stream_domains
from simulator.fleet.cloud import Cloud
from simulator.fleet.cloud_time import CloudTime
from simulator.fleet.device import EdgeDevice
from simulator.fleet.executor import ExecutorKind, FleetExecutor
from simulator.fleet.foundation import FoundationServer
from simulator.fleet.links import FleetNetwork
from simulator.fleet.messages import NormState
from simulator.fleet.payload import encoded_sizes
from simulator.fleet.redeploy import ModelCloud, ModelDeployments
from simulator.fleet.selection import DeviceSelector, Member
from simulator.metrics import EventRecorder
from simulator.models.flops import count_macs
from simulator.models.norm import get_norm_state
from simulator.models.zoo import create_model

__all__ = ["Fleet", "build_device_stream", "build_fleet"]

# Distinct streams of randomness derived from the scenario seed, one per purpose (and per device);
# the network's own streams: simulator/fleet/links.py (11-14). STREAM_LABELS: label shift, apart
# from STREAM so that switching it on changes no domain or arrival.
STREAM, POLICY, POLICY_INNER, STREAM_LABELS = 1, 2, 3, 4

ProgressCallback = Callable[[float, float], None]  # (sim_time_s now, sim_time_s expected at end)


def seeded_rng(seed: int, purpose: int, device: int = 0) -> np.random.Generator:
    """The generator of one purpose (and device) of a run seeded ``seed``."""
    return np.random.default_rng([seed, purpose, device])


def build_device_stream(scenario: Scenario, device: int, labels: np.ndarray) -> DeviceStream:
    """Device ``device``'s stream in a run of ``scenario`` over a dataset with these labels (the
    run's, and ``fleetsim data stream``'s picture of it)."""
    return build_stream(
        scenario.stream,
        device,
        len(labels),
        seeded_rng(scenario.seed, STREAM, device),
        labels=labels,
        label_rng=seeded_rng(scenario.seed, STREAM_LABELS, device),
    )


@dataclass
class Fleet:
    """One run's actors in one SimPy environment, ready to run.

    ``edge_macs`` is the edge model's MACs per image when devices have hardware profiles (0
    otherwise); ``resolved`` the choices the cloud adapter made from the rest of the scenario
    (``cloud.<adapter>.<key>`` -> value, e.g. an ``auto`` made concrete); ``end_s`` the last
    arrival of any device's stream.
    """

    scenario: Scenario
    env: simpy.Environment
    recorder: EventRecorder
    dataset: ImageDataset
    adapter: CloudAdapter
    executor: FleetExecutor
    cloud: Cloud | ModelCloud
    network: FleetNetwork
    devices: dict[int, EdgeDevice]
    selectors: dict[int, DeviceSelector]
    foundation: FoundationServer | None
    edge_macs: int
    resolved: dict[str, Any]
    end_s: float

    def run(self, progress: ProgressCallback | None = None) -> None:
        """Simulate until every stream has ended and nothing is in flight any more, reporting
        simulated time to ``progress`` in 100 steps up to the last arrival."""
        ticks = 100
        for k in range(1, ticks + 1):
            self.env.run(until=self.end_s * k / ticks)
            if progress:
                progress(self.env.now, self.end_s)
        self.env.run()  # uploads and downloads still in flight after the last arrival
        if progress:
            progress(self.env.now, self.env.now)

    def executors(self) -> list[FleetExecutor]:
        """Every executor that ran edge batches (with model selection, each member's; with whole
        models shipped, each shipped model's)."""
        found = {id(self.executor): self.executor}
        if self.selectors:
            members = self.selectors[0].members.values()
            found = {id(m.executor): m.executor for m in members} | found
        if isinstance(self.cloud, ModelCloud):
            found |= {id(e): e for e in self.cloud.deployments.executors()}
        return list(found.values())


def build_fleet(
    scenario: Scenario,
    executor: ExecutorKind = "batched",
    compute: torch.device | None = None,
    max_rows: int | None = None,
) -> Fleet:
    """Every actor of a run of ``scenario``, wired together in a new environment (see
    :func:`simulator.engine.run_scenario` for ``executor``, ``compute`` and ``max_rows``)."""
    compute = compute if compute is not None else torch.device("cpu")
    torch.manual_seed(scenario.seed)
    dataset, folder = build_dataset(scenario)
    num_classes = dataset.num_classes
    edge_model, teacher = build_models(scenario, num_classes, compute)
    source_state = get_norm_state(edge_model)
    adapter, resolved = build_adapter(scenario, edge_model, teacher, num_classes, compute)
    env, recorder = simpy.Environment(), EventRecorder()
    loader = BatchLoader(
        dataset, scenario.seed, corruption_cache() if scenario.dataset.cache else None, folder
    )
    runtime = FleetExecutor(
        edge_model,
        kind=executor,
        batch_statistics=adapter.edge_norm == "batch",
        load=loader.many,  # type: ignore[arg-type]
        device=compute,
        max_rows=max_rows,
    )
    image_shape = (3, *dataset.images.shape[1:3])
    edge_macs = count_macs(edge_model, image_shape) if scenario.edge.profile is not None else 0
    cloud_time = build_cloud_time(scenario, edge_model, teacher, edge_macs, image_shape)
    selectors: dict[int, DeviceSelector] = {}
    if scenario.selection.active:  # per-device model choice (policies/selection)
        selectors = build_selectors(
            scenario, edge_model, runtime, recorder, num_classes, image_shape
        )
    devices: dict[int, EdgeDevice] = {}
    cloud = build_cloud(scenario, env, adapter, devices, cloud_time, recorder, edge_model, runtime)
    network = FleetNetwork(env, scenario.network, scenario.seed)
    foundation = build_foundation(scenario, env, teacher, num_classes, compute)
    end_s = build_devices(
        scenario,
        env,
        devices,
        dataset=dataset,
        source_state=source_state,
        runtime=runtime,
        cloud=cloud,
        network=network,
        foundation=foundation,
        selectors=selectors,
        recorder=recorder,
        edge_macs=edge_macs,
        report_empty=UPLOAD_POLICIES.get(scenario.policy.name).uploads
        and type(adapter).hears_empty_batches(adapter.config),
    )
    if isinstance(cloud, ModelCloud):  # rebuilds on a schedule: the clock runs to the last arrival
        cloud.start(until_s=end_s)
    return Fleet(
        scenario,
        env,
        recorder,
        dataset,
        adapter,
        runtime,
        cloud,
        network,
        devices,
        selectors,
        foundation,
        edge_macs,
        resolved,
        end_s,
    )


def build_dataset(scenario: Scenario) -> tuple[ImageDataset, CorruptedFolder | None]:
    """The dataset, and an ImageNet-C tree's pre-corrupted files where the scenario reads them."""
    config = scenario.dataset
    dataset = create_dataset(
        config.name,
        split=config.split,
        root=config.root,
        variant=config.variant,
        seed=scenario.seed,
        size=config.size,
    )
    folder = None
    if config.corruption_source == "folder":  # the pre-corrupted files of an ImageNet-C tree
        domains = [(d.corruption, d.severity) for d in stream_domains(scenario.stream)]
        folder = CorruptedFolder(config.corrupted_root, dataset, domains)
    return dataset, folder


def _teacher(scenario: Scenario, num_classes: int) -> torch.nn.Module:
    assert scenario.cloud.teacher is not None
    return create_model(
        scenario.cloud.teacher,
        num_classes=num_classes,
        checkpoint=scenario.cloud.teacher_checkpoint,
        pretrained=scenario.cloud.teacher_pretrained,
    )


def build_models(
    scenario: Scenario, num_classes: int, compute: torch.device
) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The edge model (on the CPU: executors move it) and, for an adapter that learns from one,
    the cloud teacher on ``compute``."""
    edge_model = create_model(
        scenario.edge.model,
        num_classes=num_classes,
        checkpoint=scenario.edge.checkpoint,
        pretrained=scenario.edge.pretrained,
    )
    if not scenario.cloud.plugin.needs_teacher:
        return edge_model, None
    if scenario.cloud.teacher is None:
        raise ValueError(f"adapter {scenario.cloud.adapter!r} needs cloud.teacher")
    return edge_model, _teacher(scenario, num_classes).to(compute)


def build_adapter(
    scenario: Scenario,
    edge_model: torch.nn.Module,
    teacher: torch.nn.Module | None,
    num_classes: int,
    compute: torch.device,
) -> tuple[CloudAdapter, dict[str, Any]]:
    """The cloud adapter on its own copy of the edge model, with the parameters it settles from
    the upload policy in use, and those settled choices (``cloud.<adapter>.<key>`` -> value)."""
    adapter_cls = ADAPTERS.get(scenario.cloud.adapter)
    picker = scenario.policy.name  # the policy choosing uploads (a budget's inner one)
    if scenario.policy.plugin.wraps_inner_policy:
        picker = scenario.policy.params().inner  # type: ignore[attr-defined]
    given = scenario.cloud.params()
    params = adapter_cls.for_upload_policy(given, picker)
    before = given.model_dump() if given is not None else {}
    resolved = {
        f"cloud.{scenario.cloud.adapter}.{key}": value
        for key, value in (params.model_dump() if params is not None else {}).items()
        if key in before and before[key] != value
    }
    seed = scenario.seed
    adapter = adapter_cls(copy.deepcopy(edge_model).to(compute), teacher, params, num_classes, seed)
    return adapter, resolved


def build_cloud_time(
    scenario: Scenario,
    edge_model: torch.nn.Module,
    teacher: torch.nn.Module | None,
    edge_macs: int,
    image_shape: tuple[int, int, int],
) -> CloudTime:
    """A cloud step's simulated time: ``cloud.ms_per_step``, or the counted MACs of the teacher
    and the edge model on ``cloud.profile``."""
    cloud = scenario.cloud
    if cloud.ms_per_step is not None:
        return CloudTime(ms_per_step=cloud.ms_per_step)
    return CloudTime(
        profile=cloud.hardware(),
        profile_name=cloud.profile,
        teacher_macs=count_macs(teacher, image_shape) if teacher is not None else 0,
        edge_macs=edge_macs or count_macs(edge_model, image_shape),
    )


def build_cloud(
    scenario: Scenario,
    env: simpy.Environment,
    adapter: CloudAdapter,
    devices: dict[int, EdgeDevice],
    step_time: CloudTime,
    recorder: EventRecorder,
    edge_model: torch.nn.Module,
    runtime: FleetExecutor,
) -> Cloud | ModelCloud:
    """The cloud's adaptation workers and queue (``devices`` is filled afterwards): for an adapter
    that ships whole models, the cloud that redeploys them (:func:`build_model_cloud`)."""
    if isinstance(adapter, WholeModelAdapter):
        return build_model_cloud(
            scenario, env, adapter, devices, step_time, recorder, edge_model, runtime
        )
    cloud = scenario.cloud
    return Cloud(
        env,
        adapter,
        devices,
        workers=cloud.workers,
        step_time=step_time,
        per_device_scope=cloud.scope == "per_device",
        state_dtype=getattr(torch, cloud.state_dtype),
        header_bytes=scenario.network.header_bytes,
        recorder=recorder,
        schedule=cloud.schedule,
        gather=cloud.gather,
        payload=cloud.downlink_payload,
        tolerance=cloud.delta_tolerance,
        affine_only=adapter.edge_norm == "batch",
    )


def build_model_cloud(
    scenario: Scenario,
    env: simpy.Environment,
    adapter: WholeModelAdapter,
    devices: dict[int, EdgeDevice],
    step_time: CloudTime,
    recorder: EventRecorder,
    edge_model: torch.nn.Module,
    runtime: FleetExecutor,
) -> ModelCloud:
    """The cloud of an adapter that ships whole models (TDMR), holding the labelled target set the
    adapter asks for; shipped models run on copies of ``edge_model`` with ``runtime``'s settings.
    The normalization-state options of the cloud section do not apply to it (README, TDMR)."""
    cloud = scenario.cloud  # config.py refuses a delta payload for whole models
    per_domain = adapter.labelled_per_domain()
    if per_domain:
        adapter.hold_labelled(*labelled_target_set(scenario, per_domain))
    return ModelCloud(
        env,
        adapter,
        devices,
        workers=cloud.workers,
        step_time=step_time,
        per_device_scope=cloud.scope == "per_device",
        header_bytes=scenario.network.header_bytes,
        recorder=recorder,
        deployments=ModelDeployments(edge_model, runtime),
        source_weights={k: v.detach().clone() for k, v in edge_model.state_dict().items()},
    )


def foundation_model(
    scenario: Scenario, teacher: torch.nn.Module | None, num_classes: int
) -> torch.nn.Module:
    """The model answering offloaded samples: the adapter's teacher when it has one (an adapting
    teacher answers with its current state, as the cloud would serve it), else ``cloud.teacher``
    frozen, loaded for routing alone (the scenario validation ensures one is named)."""
    if teacher is not None:
        return teacher
    return _teacher(scenario, num_classes).eval().requires_grad_(False)


def build_foundation(
    scenario: Scenario,
    env: simpy.Environment,
    teacher: torch.nn.Module | None,
    num_classes: int,
    compute: torch.device,
) -> FoundationServer | None:
    """The cloud foundation model answering offloaded samples, for a routing policy that
    offloads (None otherwise)."""
    if not scenario.routing.plugin.offloads:
        return None
    routing = scenario.routing.params()
    assert isinstance(routing, OffloadConfig)
    return FoundationServer(
        env,
        foundation_model(scenario, teacher, num_classes).to(compute),
        workers=routing.cloud_workers,
        ms_per_request=routing.cloud_ms_per_request,
        ms_per_sample=routing.cloud_ms_per_sample,
    )


def edge_compute_s(scenario: Scenario, device: int, macs: int) -> Callable[[int], float]:
    """Simulated seconds for ``device`` to classify ``n`` images of a model of ``macs`` MACs per
    image: from its hardware profile, else ``edge.ms_per_batch + n * edge.ms_per_sample``."""
    edge = scenario.edge
    hardware = edge.hardware(device)
    if hardware is not None:
        return lambda n: hardware.compute_s(n, macs)
    return lambda n: (edge.ms_per_batch + edge.ms_per_sample * n) / 1000.0


def build_upload_policy(scenario: Scenario, device: int, num_classes: int) -> UploadPolicy:
    """Device ``device``'s upload policy, with the inner policy of one that wraps another
    (``budget``), each drawing from its own generator."""
    seed, section = scenario.seed, scenario.policy
    policy = section.plugin(section.params(), num_classes, seeded_rng(seed, POLICY, device))
    inner = getattr(policy.config, "inner", None)
    if inner is not None:  # a policy wrapping another one (budget)
        rng = seeded_rng(seed, POLICY_INNER, device)
        policy.bind_inner(UPLOAD_POLICIES.get(inner)(section.params(inner), num_classes, rng))
    return policy


def build_selectors(
    scenario: Scenario,
    edge_model: torch.nn.Module,
    runtime: FleetExecutor,
    recorder: EventRecorder,
    num_classes: int,
    input_shape: tuple[int, int, int],
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
                kind=runtime.kind,
                batch_statistics=runtime.batch_statistics,
                load=runtime.load,
                device=runtime.device,
                max_rows=runtime.max_rows,
            )
        macs = count_macs(model, input_shape) if edge.profile is not None else 0
        members[name] = (member_runtime, get_norm_state(model), macs)
    selectors = {}
    for d in range(scenario.fleet.devices):
        profile = edge.profile_name(d)
        selectors[d] = DeviceSelector(
            d,
            policy_cls(sel.params(), edge.model),
            {
                name: Member(name, ex, state, edge_compute_s(scenario, d, macs))
                for name, (ex, state, macs) in members.items()
            },
            budget_s=lambda now, d=d, p=profile: sel.budget_s(d, p, now),
            slowdown=lambda now, d=d, p=profile: sel.slowdown_factor(d, p, now),
            batch_size=scenario.stream.batch_size,
            record=recorder.message,
        )
    return selectors


def build_devices(
    scenario: Scenario,
    env: simpy.Environment,
    devices: dict[int, EdgeDevice],
    *,
    dataset: ImageDataset,
    source_state: dict[str, torch.Tensor],
    runtime: FleetExecutor,
    cloud: Cloud | ModelCloud,
    network: FleetNetwork,
    foundation: FoundationServer | None,
    selectors: dict[int, DeviceSelector],
    recorder: EventRecorder,
    edge_macs: int,
    report_empty: bool,
) -> float:
    """Every device with its stream, links, policies and source state, started as a process of
    ``env`` and put in ``devices``; returns the last arrival of any stream (simulated s)."""
    net, edge = scenario.network, scenario.edge
    num_classes = dataset.num_classes
    routing = scenario.routing.params()

    def payload_sizes(images: torch.Tensor) -> np.ndarray:
        return encoded_sizes(images.permute(0, 2, 3, 1).numpy(), net.encoding, net.jpeg_quality)

    end_s = 0.0
    for d in range(scenario.fleet.devices):
        stream = build_device_stream(scenario, d, dataset.labels)
        end_s = max(end_s, float(stream.arrival_s[-1]))
        devices[d] = EdgeDevice(
            env,
            d,
            stream,
            labels=dataset.labels,
            executor=runtime,
            policy=build_upload_policy(scenario, d, num_classes),
            uplink=network.uplink(d),
            downlink=network.downlink(d),
            deliver=cloud.deliver,
            payload_sizes=payload_sizes,
            header_bytes=net.header_bytes,
            compute_s=edge_compute_s(scenario, d, edge_macs),
            initial_state=NormState(source_state, version=0),
            recorder=recorder,
            latest_version=cloud.latest_version,
            selector=selectors.get(d),
            router=ROUTING_POLICIES.get(scenario.routing.name)(routing, num_classes),
            foundation=foundation,
            answer_bytes_per_sample=getattr(routing, "answer_bytes_per_sample", 4),
            report_empty_batches=report_empty,
            hardware=edge.hardware(d),
            profile=edge.profile_name(d),
        )
        env.process(devices[d].run())
    return end_s
