"""The cloud adapter: k workers turn uploads into normalization-state updates sent back down.

Each upload message is served by one worker: the adapter's real computation runs when service starts,
the worker is then busy for ``steps x ms_per_step`` of simulated time, and the new state travels down
the uploading device's downlink. A device is sent the state of its scope only when it is newer than
the version it holds (so a message that triggers no step still refreshes a device whose shared scope
moved on through other devices' uploads).
"""

from __future__ import annotations

from collections.abc import Generator

import simpy
import torch

from simulator.adaptation import CloudAdapter
from simulator.fleet.device import EdgeDevice, NormState, UploadMessage
from simulator.metrics import EventRecorder
from simulator.models.norm import norm_state_nbytes


class Cloud:
    """SimPy actor for the cloud adapter shared by the fleet."""

    def __init__(
        self,
        env: simpy.Environment,
        adapter: CloudAdapter,
        devices: dict[int, EdgeDevice],
        workers: int,
        ms_per_step: float,
        per_device_scope: bool,
        state_dtype: torch.dtype,
        header_bytes: int,
        recorder: EventRecorder,
    ):
        self.env, self.adapter, self.devices = env, adapter, devices
        self.workers = simpy.Resource(env, capacity=workers)
        self.step_s = ms_per_step / 1000.0
        self.per_device_scope = per_device_scope
        self.state_dtype, self.header_bytes = state_dtype, header_bytes
        self.recorder = recorder
        self.busy_s = 0.0
        self._produced_s: dict[object, float] = {}

    def scope(self, device: int) -> int:
        return device if self.per_device_scope else 0

    def deliver(self, message: UploadMessage) -> None:
        """Called when an upload has arrived; serves it in its own process."""
        self.env.process(self.serve(message))

    def serve(self, message: UploadMessage) -> Generator[simpy.Event, None, None]:
        scope = self.scope(message.device)
        with self.workers.request() as worker:
            yield worker
            started_s = self.env.now
            stats = self.adapter.observe(scope, message.images.float().div_(255.0))
            if stats.steps:
                yield self.env.timeout(stats.steps * self.step_s)
                self.busy_s += stats.steps * self.step_s
                self._produced_s[scope] = self.env.now
                self.recorder.message(
                    "update",
                    sim_time_s=self.env.now,
                    device=message.device,
                    scope=scope,
                    steps=stats.steps,
                    samples=stats.samples,
                    version=self.adapter.version(scope),
                    queue_s=started_s - message.sent_s,
                )
        version = self.adapter.version(scope)
        device = self.devices[message.device]
        if version <= device.state.version:
            return
        tensors = {
            k: v.to(self.state_dtype) if v.is_floating_point() else v
            for k, v in self.adapter.norm_state(scope).items()
        }
        nbytes = self.header_bytes + norm_state_nbytes(tensors, self.state_dtype)
        state = NormState(
            tensors={k: v.float() for k, v in tensors.items()},
            version=version,
            produced_s=self._produced_s[scope],
        )
        yield self.env.process(device.downlink.send(nbytes))
        self.recorder.message(
            "download",
            sim_time_s=self.env.now,
            device=message.device,
            bytes=nbytes,
            version=version,
        )
        device.receive(state)
