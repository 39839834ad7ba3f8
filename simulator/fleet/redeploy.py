"""The cloud that rebuilds whole edge models and redeploys them (TDMR), as a SimPy actor.

The story: uploads arrive and wait in one cloud queue with the rebuilds (:class:`JobQueue`, a SimPy
store served in arrival order); a free worker takes the next job.
An upload is stored by the adapter (with the shift trigger, the foundation model also reads it: a
forward pass of simulated time). After each upload, and every ``tick_s`` of simulated time when the
adapter rebuilds on a schedule, the cloud asks the adapter whether the upload's scope is due for a
rebuild; a due scope gets one rebuild job (never two at once). A rebuild runs the real training when
its service starts and then keeps its worker busy for the simulated time of the counted work
(:class:`~simulator.fleet.cloud_time.CloudTime`: MACs on the cloud profile), so the fleet runs the
old model meanwhile. The new model is then published, and each device of the scope is sent it down
its downlink as real bytes (:mod:`simulator.fleet.model_payload`); only when the whole payload has
arrived does the device decode it, and batches whose computation starts from then on run on the new
model (:meth:`simulator.fleet.device.EdgeDevice.switch_model`). Every rebuild (``update``),
download and switch (``model_switch``) is an event.

Devices that hold the same model version of a scope share one inference executor
(:class:`ModelDeployments`), so a fleet on one model still runs as one batched forward pass.

Like :class:`simulator.fleet.cloud.Cloud`, this module reaches the devices only through
:mod:`simulator.fleet.messages` (:class:`~simulator.fleet.messages.ModelReceiver`) and reports its
own part of summary.json (:meth:`ModelCloud.summary`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import simpy
import torch

from simulator.adaptation.whole_model import WholeModelAdapter
from simulator.fleet.cloud_time import CloudTime
from simulator.fleet.executor import FleetExecutor
from simulator.fleet.messages import ModelReceiver, NormState, UploadMessage
from simulator.fleet.model_payload import decode_model, encode_model
from simulator.fleet.scopes import ScopedPublisher
from simulator.metrics import EventRecorder
from simulator.models.norm import get_norm_state

__all__ = ["JobQueue", "ModelCloud", "ModelDeployments", "stale_model_seconds"]

#: A job of the cloud's queue: ``("upload", message)`` or ``("rebuild", (scope, reason,
#: requested_s))``.
Job = tuple[str, Any]


class ModelDeployments:
    """One inference executor per (scope, model version), built from the weights a device decoded,
    shared by every device running that version; settings copied from the source's executor."""

    def __init__(self, template: torch.nn.Module, runtime: FleetExecutor):
        self.template, self.runtime = template, runtime
        self._built: dict[tuple[object, int], tuple[FleetExecutor, dict[str, torch.Tensor]]] = {}

    def get(
        self, scope: object, version: int, weights: dict[str, torch.Tensor]
    ) -> tuple[FleetExecutor, dict[str, torch.Tensor]]:
        """The executor and normalization state of ``weights`` (version ``version`` of
        ``scope``): built on first use, the same objects after."""
        key = (scope, version)
        if key not in self._built:
            model = copy.deepcopy(self.template)
            model.load_state_dict(weights)
            executor = FleetExecutor(
                model.eval(),
                kind=self.runtime.kind,
                batch_statistics=self.runtime.batch_statistics,
                load=self.runtime.load,
                device=self.runtime.device,
                max_rows=self.runtime.max_rows,
                channels_last=self.runtime.memory_format == torch.channels_last,
            )
            self._built[key] = (executor, get_norm_state(model))
        return self._built[key]

    def executors(self) -> list[FleetExecutor]:
        return [executor for executor, _ in self._built.values()]


class ModelCloud(ScopedPublisher):
    """SimPy actor: stores uploads, rebuilds each scope's edge model when due, ships it whole."""

    def __init__(
        self,
        env: simpy.Environment,
        adapter: WholeModelAdapter,
        devices: Mapping[int, ModelReceiver],
        *,
        workers: int,
        step_time: CloudTime,
        per_device_scope: bool,
        header_bytes: int,
        recorder: EventRecorder,
        deployments: ModelDeployments,
        source_weights: dict[str, torch.Tensor],
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.env, self.adapter, self.devices = env, adapter, devices
        self.workers, self.step_time = workers, step_time
        self.per_device_scope, self.header_bytes = per_device_scope, header_bytes
        self.recorder, self.deployments = recorder, deployments
        self.shipping = adapter.shipping()
        self.busy_s = 0.0
        self.busy_workers = 0
        self.compute_s: list[float] = []  # simulated seconds of each rebuild
        self.jobs = JobQueue(env, taken=self._taken)
        self._rebuilding: set[object] = set()  # scopes with a rebuild queued or running
        self._newest_sample_s: dict[object, float] = {}
        # per scope, the newest published model: (version, weights, produced_s, samples_s)
        self._init_published()
        # per device, what it holds (a device's own storage): version and weights
        self._held: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}
        self._sent: dict[int, tuple[int, dict[str, torch.Tensor]]] = {}  # what it will hold
        self._source = source_weights
        self._payloads: dict[tuple[object, int, int], bytes] = {}
        for _ in range(workers):
            env.process(self._worker())

    def start(self, until_s: float) -> None:
        """Ask about scheduled rebuilds every ``tick_s`` until the last sample has arrived."""
        tick_s = self.adapter.tick_s()
        if tick_s is not None:
            self.env.process(self._clock(tick_s, until_s))

    def deliver(self, message: UploadMessage) -> None:
        """Called when an upload has arrived: it joins the queue, which hands it to a free worker
        if there is one."""
        self._enqueue(("upload", message))

    # -- the queue ---------------------------------------------------------------------------------
    def _enqueue(self, job: Job) -> None:
        """A job joins the queue, which hands it to a free worker if there is one."""
        self.jobs.put(job)
        self._record_queue()

    def _taken(self) -> None:
        """A worker has taken a job from the queue: it is busy from now on."""
        self.busy_workers += 1
        self._record_queue()

    def _record_queue(self) -> None:
        self.recorder.message(
            "queue", sim_time_s=self.env.now, queue=len(self.jobs.items), busy=self.busy_workers
        )

    def _consider(self, scope: object) -> None:
        """Queue a rebuild of ``scope`` if the adapter says it is due and none is pending."""
        if scope in self._rebuilding:
            return
        reason = self.adapter.rebuild_reason(scope, self.env.now)
        if reason is not None:
            self._rebuilding.add(scope)
            self._enqueue(("rebuild", (scope, reason, self.env.now)))

    def _clock(self, tick_s: float, until_s: float) -> Generator[simpy.Event, None, None]:
        while self.env.now + tick_s <= until_s:
            yield self.env.timeout(tick_s)
            for scope in sorted(self._newest_sample_s, key=repr):
                self._consider(scope)

    # -- service -----------------------------------------------------------------------------------
    def _worker(self) -> Generator[simpy.Event, None, None]:
        while True:
            kind, job = yield self.jobs.get()
            if kind == "upload":
                yield from self._ingest(job)
            else:
                yield from self._rebuild(*job)
            self.busy_workers -= 1
            self._record_queue()

    def _ingest(self, message: UploadMessage) -> Generator[simpy.Event, None, None]:
        scope = self.scope(message.device)
        images = message.images.float().div_(255.0)
        stats = self.adapter.observe(scope, images)
        self._newest_sample_s[scope] = max(
            self._newest_sample_s.get(scope, -np.inf), message.sent_s
        )
        if stats.steps:  # the foundation model read the uploads (shift trigger)
            busy_s = self.step_time(stats)
            yield self.env.timeout(busy_s)
            self.busy_s += busy_s
        self._consider(scope)

    def _rebuild(
        self, scope: object, reason: str, requested_s: float
    ) -> Generator[simpy.Event, None, None]:
        started_s = self.env.now
        samples_s = self._newest_sample_s.get(scope, float("nan"))
        stats = self.adapter.rebuild(scope, started_s, reason)
        version, weights = self.adapter.version(scope), self.adapter.model_state(scope)
        compute_s = self.step_time(stats)
        yield self.env.timeout(compute_s)
        self.busy_s += compute_s
        self.compute_s.append(compute_s)
        self._published[scope] = (version, weights, self.env.now, samples_s)
        self.recorder.message(
            "update",
            sim_time_s=self.env.now,
            scope=scope,
            steps=stats.steps,
            samples=stats.samples,
            version=version,
            reason=reason,
            started_s=started_s,
            queue_s=started_s - requested_s,  # waiting behind other jobs for a free worker
            compute_s=compute_s,
            loss=stats.loss,
        )
        self._rebuilding.discard(scope)
        for device in sorted(self.devices):
            if self.scope(device) == scope:
                self.env.process(self._ship(device, scope, version))
        self._consider(scope)  # uploads that came in during the rebuild may make it due again

    # -- shipping ----------------------------------------------------------------------------------
    def _payload(
        self, scope: object, version: int, weights: dict[str, torch.Tensor], device: int
    ) -> bytes:
        held_version, held = self._sent.get(device, (0, self._source))
        base = held_version if self.shipping.kind == "changed" else -1
        key = (scope, version, base)
        if key not in self._payloads:
            self._payloads[key] = encode_model(
                weights,
                self.shipping.kind,
                version,
                held=held,
                held_version=held_version,
                bits=self.shipping.bits,
            )
        return self._payloads[key]

    def _ship(
        self, device_id: int, scope: object, version: int
    ) -> Generator[simpy.Event, None, None]:
        _, weights, produced_s, samples_s = self._published[scope]
        payload = self._payload(scope, version, weights, device_id)
        self._sent[device_id] = (version, weights)
        nbytes = len(payload) + self.header_bytes
        device = self.devices[device_id]
        yield self.env.process(device.downlink.send(nbytes))
        self.recorder.message(
            "download",
            sim_time_s=self.env.now,
            device=device_id,
            bytes=nbytes,
            payload_bytes=len(payload),
            version=version,
            payload=self.shipping.kind,
        )
        # the device decodes what it received: nothing of the cloud's own objects crosses
        held_version, held = self._held.get(device_id, (0, self._source))
        decoded, decoded_version = decode_model(payload, held, held_version)
        self._held[device_id] = (decoded_version, decoded)
        executor, norm = self.deployments.get(scope, decoded_version, decoded)
        state = NormState(norm, version=decoded_version, produced_s=produced_s, samples_s=samples_s)
        device.switch_model(executor, state)

    # -- the summary -------------------------------------------------------------------------------
    def summary(self, until_s: float) -> dict[str, Any]:
        """The cloud's part of summary.json, as :meth:`simulator.fleet.cloud.Cloud.summary` gives
        it (busy time, utilization, step cost), and what shipping whole models adds: rebuilds, the
        payload, model downloads and their bytes, switches, the newest version per scope, and the
        time devices ran a model older than the newest finished one (from the run's events so
        far; per device in ``model_version_per_device`` and ``stale_model_s_per_device``)."""
        events = self.recorder.frame()
        downloads = events[events["kind"] == "download"]
        switches = events[events["kind"] == "model_switch"]
        samples = events[events["kind"] == "sample"]
        stale = stale_model_seconds(events, self.scope)
        lag = samples["state_lag"].to_numpy(dtype=float) if len(samples) else np.zeros(0)
        rebuild_ms = 1000.0 * float(np.mean(self.compute_s)) if self.compute_s else None
        return {
            "cloud_busy_s": self.busy_s,
            "cloud_utilization": self.busy_s / (self.workers * until_s) if until_s else 0.0,
            "cloud_profile": self.step_time.describe(),
            "cloud_compute_s": float(sum(self.compute_s)),
            "cloud_update_ms_mean": rebuild_ms,
            "rebuilds": len(self.compute_s),
            "model_payload": self.shipping.kind
            + (f"-w{self.shipping.bits}" if self.shipping.kind == "quantized" else ""),
            "model_downloads": int(len(downloads)),
            "model_download_bytes": int(downloads["bytes"].sum()) if len(downloads) else 0,
            "redeploy_switches": int(len(switches)),
            "model_versions": {
                str(scope): int(version) for scope, (version, *_) in sorted(self._published.items())
            },
            "model_version_per_device": {
                str(device): int(self._held.get(device, (0, None))[0])
                for device in sorted(self.devices)
            },
            "stale_model_s": float(sum(stale.values())),
            "stale_model_s_per_device": {
                str(device): float(stale.get(device, 0.0)) for device in sorted(self.devices)
            },
            "stale_model_sample_fraction": float((lag > 0).mean()) if len(lag) else 0.0,
            "rebuild_compute_s": float(sum(self.compute_s)),
            "rebuild_ms_mean": rebuild_ms,
        }


class JobQueue(simpy.Store):
    """Uploads and rebuilds waiting at a model-shipping cloud: a SimPy store whose ``get`` hands a
    free worker the oldest job (arrival order; workers wait in the store's own queue of get
    requests, first come first served). ``taken`` is called as a worker takes its job (the cloud
    counts it busy from that moment)."""

    def __init__(self, env: simpy.Environment, taken: Callable[[], None]):
        super().__init__(env)
        self.taken = taken
        self.items: list[Job] = []

    def _do_get(self, event: simpy.resources.store.StoreGet) -> bool | None:
        if self.items:
            event.succeed(self.items.pop(0))
            self.taken()
        return True  # serve every waiting worker while jobs are queued


def stale_model_seconds(
    events: pd.DataFrame, scope_of: Callable[[int], object]
) -> dict[int, float]:
    """Per device, the simulated seconds during which a newer model of its scope had finished
    rebuilding than the one it ran, from its first to its last classified batch.

    From the events: ``update`` rows (when each version of a scope was published), ``model_switch``
    rows (when each device started running a version) and ``sample`` rows (each device's active
    span). A version published at ``t_p`` makes a device stale from ``t_p`` until it switches to
    that version or a newer one."""
    samples = events[events["kind"] == "sample"]
    if not len(samples):
        return {}
    updates = events[events["kind"] == "update"]
    switches = events[events["kind"] == "model_switch"]
    out: dict[int, float] = {}
    for device, rows in samples.groupby("device", sort=True):
        device = int(device)
        start_s, end_s = float(rows["sim_time_s"].min()), float(rows["sim_time_s"].max())
        scope = scope_of(device)
        mine = updates[updates["scope"] == scope] if len(updates) else updates
        # times at which the latest published version and the running version change
        points: list[tuple[float, int, int]] = []
        for t, v in zip(mine.get("sim_time_s", []), mine.get("version", []), strict=True):
            points.append((float(t), 0, int(v)))
        if len(switches):
            own = switches[switches["device"] == device]
            for t, v in zip(own["sim_time_s"], own["to_version"], strict=True):
                points.append((float(t), 1, int(v)))
        points.sort()
        published = running = 0
        stale_s, last_t = 0.0, start_s
        for t, what, v in points:
            lo, hi = max(last_t, start_s), min(t, end_s)
            if hi > lo and published > running:
                stale_s += hi - lo
            last_t = max(last_t, t)
            if what == 0:
                published = max(published, v)
            else:
                running = max(running, v)
        if end_s > last_t and published > running:
            stale_s += end_s - max(last_t, start_s)
        out[device] = stale_s
    return out
