"""The cloud adapter: k workers turn uploads into normalization-state updates sent back down.

Arriving upload messages wait in one cloud queue (:class:`UploadQueue`, a SimPy store). Each of
``workers`` worker processes repeatedly takes the next message by the scheduling policy, plus up
to ``gather - 1`` more queued messages of the same scope (batch formation across devices), runs
the adapter's real computation on their samples when service starts, and is then busy for the
simulated time of that work (:class:`simulator.fleet.cloud_time.CloudTime`: from the counted MACs
on a cloud hardware profile, or ``steps x ms_per_step``). Every device whose messages were served
is sent its scope's state down its downlink if that state is newer than the version it holds (so
a message that triggers no step still refreshes a device whose shared scope moved on through
other devices' uploads).

Scheduling policies (``cloud.schedule``):

* ``fifo``: in order of arrival at the cloud;
* ``round_robin``: devices take turns (the next device id after the last one served that has a
  message waiting; its oldest arrival first), so a chatty device cannot starve the others;
* ``oldest_first``: the message whose samples were taken earliest (upload start), whatever its
  arrival order: a slow link's old samples are not served after fresher ones.

The queue is recorded as ``queue`` events (length and busy workers at each change), and each state
carries the capture time of the newest samples it learnt from, so devices can report how stale the
state they use is.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from typing import Any, get_args

import numpy as np
import simpy
import torch

from simulator.adaptation import CloudAdapter
from simulator.config import CloudSchedule, DownlinkPayload
from simulator.fleet.cloud_time import CloudTime
from simulator.fleet.messages import NormState, StateReceiver, UploadMessage
from simulator.fleet.scopes import ScopedPublisher
from simulator.metrics import EventRecorder
from simulator.models.norm import norm_state_nbytes

AFFINE_FIELDS = (".weight", ".bias")


class Cloud(ScopedPublisher):
    """SimPy actor for the cloud adapter shared by the fleet."""

    def __init__(
        self,
        env: simpy.Environment,
        adapter: CloudAdapter,
        devices: Mapping[int, StateReceiver],
        workers: int,
        step_time: CloudTime,
        per_device_scope: bool,
        state_dtype: torch.dtype,
        header_bytes: int,
        recorder: EventRecorder,
        schedule: CloudSchedule = "fifo",
        gather: int = 1,
        payload: DownlinkPayload = "full",
        tolerance: float = 0.0,
        affine_only: bool = False,
    ):
        if schedule not in get_args(CloudSchedule):
            schedules = ", ".join(get_args(CloudSchedule))
            raise ValueError(f"schedule must be one of {schedules}; got {schedule!r}")
        if workers < 1 or gather < 1:
            raise ValueError(f"workers and gather must be >= 1, got {workers} and {gather}")
        if payload not in get_args(DownlinkPayload):
            payloads = " or ".join(get_args(DownlinkPayload))
            raise ValueError(f"payload must be {payloads}; got {payload!r}")
        self.payload, self.tolerance = payload, tolerance
        # edges that normalise with their own test-batch statistics (bn_stats, Tent, EATA, CEMA
        # with edge_norm=batch) never use running statistics: only the affine is downloaded
        self.affine_only = affine_only
        self._sent: dict[int, NormState] = {}  # delta: what each device holds once downloads land
        self.env, self.adapter, self.devices = env, adapter, devices
        self.workers, self.schedule, self.gather = workers, schedule, gather
        self.step_time = step_time
        self.compute_s: list[float] = []  # simulated seconds of each update's steps
        self.per_device_scope = per_device_scope
        self.state_dtype, self.header_bytes = state_dtype, header_bytes
        self.recorder = recorder
        self.busy_s = 0.0
        self.busy_workers = 0
        self.uploads = UploadQueue(env, schedule, gather, self.scope, taken=self._taken)
        # per scope, the newest state whose simulated compute is over: (version, tensors,
        # produced_s, samples_s). With several workers the adapter may already hold a newer state
        # that another worker is still "computing"; devices never receive it before it is done.
        self._init_published()
        for _ in range(workers):
            env.process(self._worker())

    def summary(self, until_s: float) -> dict[str, Any]:
        """The cloud's part of summary.json: how busy its workers were, what a step cost (the
        profile or fixed time behind it, the simulated compute of the updates)."""
        return {
            "cloud_busy_s": self.busy_s,
            "cloud_utilization": self.busy_s / (self.workers * until_s) if until_s else 0.0,
            "cloud_profile": self.step_time.describe(),
            "cloud_compute_s": float(sum(self.compute_s)),
            "cloud_update_ms_mean": (
                1000.0 * float(np.mean(self.compute_s)) if self.compute_s else None
            ),
        }

    def deliver(self, message: UploadMessage) -> None:
        """Called when an upload has arrived: it joins the queue, which hands it to an idle
        worker if there is one."""
        self.uploads.put(message)
        self._record_queue()

    def _taken(self) -> None:
        """A worker has taken messages from the queue: it is busy from now on."""
        self.busy_workers += 1
        self._record_queue()

    def _record_queue(self) -> None:
        self.recorder.message(
            "queue",
            sim_time_s=self.env.now,
            queue=len(self.uploads.items),
            busy=self.busy_workers,
        )

    # -- service -------------------------------------------------------------------------------
    def _worker(self) -> Generator[simpy.Event, None, None]:
        while True:
            messages: list[UploadMessage] = yield self.uploads.get()
            started_s = self.env.now
            scope = self.scope(messages[0].device)
            images = torch.cat([m.images for m in messages]).float().div_(255.0)
            stats = self.adapter.observe(scope, images)
            if stats.steps:
                version, tensors = self.adapter.version(scope), self.adapter.norm_state(scope)
                compute_s = self.step_time(stats)
                yield self.env.timeout(compute_s)
                self.busy_s += compute_s
                self.compute_s.append(compute_s)
                newest = max(m.sent_s for m in messages)
                published = self._published.get(scope)
                if published is None or version > published[0]:
                    samples_s = newest if published is None else max(published[3], newest)
                    self._published[scope] = (version, tensors, self.env.now, samples_s)
                self.recorder.message(
                    "update",
                    sim_time_s=self.env.now,
                    device=messages[0].device,
                    scope=scope,
                    steps=stats.steps,
                    samples=stats.samples,
                    version=version,
                    queue_s=started_s - messages[0].sent_s,  # of the first (scheduled) message
                    messages=len(messages),
                    compute_s=compute_s,
                )
            self.busy_workers -= 1
            self._record_queue()
            for device in dict.fromkeys(m.device for m in messages):
                self.env.process(self._download(device, scope))

    def _download(self, device_id: int, scope: int) -> Generator[simpy.Event, None, None]:
        if scope not in self._published:
            return
        version, cloud_state, produced_s, samples_s = self._published[scope]
        device = self.devices[device_id]
        if self.affine_only:
            cloud_state = {k: v for k, v in cloud_state.items() if k.endswith(AFFINE_FIELDS)}
        if self.payload == "delta":
            base = self._sent.get(device_id, device.state)
            if version <= base.version:
                return
            tensors, nbytes = delta_payload(
                base.tensors, cloud_state, self.state_dtype, self.tolerance
            )
        else:
            if version <= device.state.version:
                return
            tensors = {
                k: v.to(self.state_dtype).float() if v.is_floating_point() else v
                for k, v in cloud_state.items()
            }
            nbytes = norm_state_nbytes(tensors, self.state_dtype)
        if self.affine_only:  # the device keeps its own (unused) running statistics
            tensors = {**device.state.tensors, **tensors}
        nbytes += self.header_bytes
        state = NormState(
            tensors=tensors, version=version, produced_s=produced_s, samples_s=samples_s
        )
        if self.payload == "delta":
            self._sent[device_id] = state
        yield self.env.process(device.downlink.send(nbytes))
        self.recorder.message(
            "download",
            sim_time_s=self.env.now,
            device=device_id,
            bytes=nbytes,
            version=version,
        )
        device.receive(state)


class UploadQueue(simpy.Store):
    """Uploads waiting at the cloud: a SimPy store whose ``get`` hands a free worker the next
    message by the schedule plus up to ``gather - 1`` more queued messages of its scope (a list).

    Workers wait in the store's own queue of get requests, first come first served; ``taken`` is
    called as a worker takes its messages (the cloud counts it busy from that moment).
    """

    def __init__(
        self,
        env: simpy.Environment,
        schedule: CloudSchedule,
        gather: int,
        scope: Callable[[int], int],
        taken: Callable[[], None],
    ):
        super().__init__(env)
        self.schedule, self.gather, self.scope, self.taken = schedule, gather, scope, taken
        self.items: list[tuple[int, UploadMessage]] = []  # (arrival no., message)
        self._arrivals = 0
        self._last_device = -1

    def _do_put(self, event: simpy.resources.store.StorePut) -> bool | None:
        self.items.append((self._arrivals, event.item))
        self._arrivals += 1
        event.succeed()
        return None

    def _do_get(self, event: simpy.resources.store.StoreGet) -> bool | None:
        if self.items:
            event.succeed(self._take())
            self.taken()
        return True

    def _order_key(self, item: tuple[int, UploadMessage]) -> tuple:
        arrival, message = item
        if self.schedule == "oldest_first":
            return (message.sent_s, arrival)
        if self.schedule == "round_robin":
            turn = (message.device - self._last_device - 1) % (1 << 30)
            return (turn, arrival)
        return (arrival,)

    def _take(self) -> list[UploadMessage]:
        """The next message by the schedule, plus up to ``gather - 1`` more of its scope."""
        ordered = sorted(self.items, key=self._order_key)
        first = ordered[0]
        scope = self.scope(first[1].device)
        chosen = [first]
        for item in ordered[1:]:
            if len(chosen) >= self.gather:
                break
            if self.scope(item[1].device) == scope:
                chosen.append(item)
        taken = {id(item) for item in chosen}
        self.items = [item for item in self.items if id(item) not in taken]
        self._last_device = first[1].device
        return [message for _, message in chosen]


def delta_payload(
    held: dict[str, torch.Tensor],
    new: dict[str, torch.Tensor],
    dtype: torch.dtype,
    tolerance: float = 0.0,
) -> tuple[dict[str, torch.Tensor], int]:
    """The state a device reconstructs from a delta against ``held``, and the delta's bytes.

    Per tensor, the difference ``new - held`` is sent in ``dtype``; entries whose difference rounds
    to zero, or is at most ``tolerance`` in magnitude, are left out (the device keeps its value; the
    cloud deltas against what the device really holds, so a skipped change is sent once it grows
    beyond the tolerance: the device never drifts further than that). A tensor goes sparse (4-byte index + value per changed entry) when that is
    smaller than dense (every value). The device adds the received difference to what it holds, so
    its state is ``held + delta`` (in fp16, the difference's rounding, not the state's, is lost).
    """
    item = torch.empty((), dtype=dtype).element_size()
    out: dict[str, torch.Tensor] = {}
    nbytes = 0
    for key, value in new.items():
        if not value.is_floating_point():
            out[key] = value
            nbytes += value.numel() * value.element_size()
            continue
        diff = (value.float() - held[key].float()).to(dtype)
        if tolerance > 0:
            diff = torch.where(diff.float().abs() <= tolerance, torch.zeros_like(diff), diff)
        changed = int(torch.count_nonzero(diff))
        nbytes += min(changed * (item + 4), diff.numel() * item)
        out[key] = held[key].float() + diff.float()
    return out, nbytes
