"""An edge device: classify each arriving batch, choose uploads, send them, take state updates."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy
import torch

from policies.routing import ROUTING_POLICIES, RoutingPolicy
from policies.upload import UploadPolicy
from simulator.data.streams import DeviceStream
from simulator.fleet.executor import FleetExecutor
from simulator.fleet.foundation import FoundationServer
from simulator.fleet.messages import Deliver, LatestVersion, NormState, UploadMessage
from simulator.fleet.network import Delivery, Link
from simulator.fleet.selection import DeviceSelector
from simulator.hardware import HardwareProfile
from simulator.metrics import EventRecorder


class EdgeDevice:
    """SimPy actor for one device. ``run()`` reads as the device's day."""

    def __init__(
        self,
        env: simpy.Environment,
        device_id: int,
        stream: DeviceStream,
        labels: np.ndarray,
        executor: FleetExecutor,
        policy: UploadPolicy,
        uplink: Link,
        downlink: Link,
        deliver: Deliver,
        payload_sizes: Callable[[torch.Tensor], np.ndarray],
        header_bytes: int,
        compute_s: Callable[[int], float],
        initial_state: NormState,
        recorder: EventRecorder,
        latest_version: LatestVersion | None = None,
        router: RoutingPolicy | None = None,
        foundation: FoundationServer | None = None,
        answer_bytes_per_sample: int = 4,
        selector: DeviceSelector | None = None,
        report_empty_batches: bool = False,
        hardware: HardwareProfile | None = None,
        profile: str | None = None,
    ):
        self.env, self.id, self.stream, self.labels = env, device_id, stream, labels
        self.executor, self.policy = executor, policy
        self.uplink, self.downlink = uplink, downlink
        self.deliver, self.payload_sizes, self.header_bytes = deliver, payload_sizes, header_bytes
        self.compute_s, self.state, self.recorder = compute_s, initial_state, recorder
        self.latest_version = latest_version
        self.batches_done = 0
        # routing: None answers everything on the edge (edge_only); offloads go to ``foundation``
        self.router, self.foundation = router, foundation
        self.answer_bytes_per_sample = answer_bytes_per_sample
        self._offload_messages = 0
        # model selection: None runs ``executor`` with ``compute_s`` (one model for the fleet)
        self.selector = selector
        # a batch that uploads nothing still sends its header, when the cloud learns from that
        self.report_empty_batches = report_empty_batches
        # the device's hardware profile (``compute_s`` comes from it): its energy in the summary
        self.hardware, self.profile = hardware, profile

    def run(self) -> Generator[simpy.Event, None, None]:
        for b in range(self.stream.num_batches):
            wait_s = self.stream.ready_s(b) - self.env.now
            if wait_s > 0:
                yield self.env.timeout(wait_s)
            rows = self.stream.batch(b)
            # the batch runs with the state held when its computation starts; a download landing
            # mid-computation applies from the next batch on (this fixes the request's inputs at
            # submission, which lets the executor batch it with other devices' requests)
            executor, compute_s, chosen_model = self.executor, 0.0, {}
            if self.selector is None:
                compute_s = self.compute_s(rows.stop - rows.start)
            else:  # which family member runs this batch (a switch starts from its source state)
                plan = self.selector.plan(self.env.now, rows.stop - rows.start)
                if plan.switch_to is not None:
                    self.state = NormState(plan.switch_to, version=self.state.version)
                executor, compute_s = plan.executor, plan.compute_s
                budget_s = np.nan if plan.budget_s is None else plan.budget_s
                chosen_model = dict(
                    model=plan.model, compute_s=compute_s, budget_s=budget_s, fallback=plan.fallback
                )
            state = self.state
            ticket = executor.submit(self.id, state.tensors, source=(self.stream, b))
            yield self.env.timeout(compute_s)
            if self.selector is not None:
                self.selector.measured(compute_s)
            out = ticket.result()
            images = ticket.images
            assert images is not None
            self.policy.context(self.env.now, self.uplink.rate_bps(self.env.now) / 1e6)
            upload = np.asarray(self.policy.select(out.probs, out.entropy), dtype=bool)
            labels = self.labels[self.stream.indices[rows]]
            prediction = out.prediction.numpy()
            domains = self.stream.domains
            ready_s = self.stream.ready_s(b)
            offload = self._route(out.probs, edge_s=self.env.now - ready_s)
            assert self.router is not None
            handle = self.recorder.samples(
                sim_time_s=self.env.now,
                device=self.id,
                batch=b,
                index=self.stream.indices[rows],
                domain=np.array([domains[d].key for d in self.stream.domain_ids[rows]]),
                label=labels,
                prediction=prediction,
                correct=prediction == labels,
                entropy=out.entropy.numpy().astype(np.float32),
                uploaded=upload,
                reason=np.asarray(getattr(self.policy, "last_reasons", np.full(len(upload), ""))),
                version=state.version,
                state_age_s=self.env.now - state.produced_s,
                # staleness: how old the newest samples behind the state are, and how many
                # cloud updates of its scope the device has not received yet
                state_staleness_s=self.env.now - state.samples_s,
                state_lag=(self.latest_version(self.id) if self.latest_version else 0)
                - state.version,
                uncertainty=self.router.last_uncertainty,
                offloaded=offload,
                route=self.router.last_routes,
                threshold=self.router.last_threshold,
                # what the user gets: the edge answer now, or (offloaded) the cloud's, amended later
                delivered_prediction=prediction,
                delivered_correct=prediction == labels,
                latency_s=np.where(offload, np.nan, self.env.now - ready_s),
                **chosen_model,
                **self.stream.sample_columns(rows),
            )
            if offload.any():  # before this batch's upload: the latency-critical message goes first
                offloaded = np.flatnonzero(offload)
                chosen = images[torch.from_numpy(offload)]
                nbytes = self.header_bytes + int(self.payload_sizes(chosen).sum())
                answer = self.offload(b, chosen, nbytes, handle, offloaded, labels, ready_s)
                self.env.process(answer)
            if upload.any():
                chosen = images[torch.from_numpy(upload)]
                nbytes = self.header_bytes + int(self.payload_sizes(chosen).sum())
                self.policy.charge(nbytes, len(chosen))
                self.env.process(self.send(b, chosen, nbytes))
            elif self.report_empty_batches:  # header only; not charged to an upload budget
                self.env.process(self.send(b, images[:0], self.header_bytes))
            self.batches_done += 1

    def send(
        self, batch: int, images: torch.Tensor, nbytes: int
    ) -> Generator[simpy.Event, None, None]:
        """Upload the selected samples of one batch (``nbytes`` with the header) as one message
        (a full queue may drop it)."""
        sent_s = self.env.now
        outcome = yield self.env.process(self.uplink.send(nbytes))
        fields = dict(
            sim_time_s=self.env.now,
            sent_s=sent_s,
            device=self.id,
            batch=batch,
            samples=len(images),
            bytes=nbytes,
        )
        if outcome is not Delivery.DELIVERED:
            self.recorder.message("drop", **fields, reason=str(outcome))
            return
        self.recorder.message("upload", **fields)
        self.deliver(UploadMessage(self.id, batch, images, nbytes, sent_s))

    def _route(self, probs: torch.Tensor, edge_s: float) -> np.ndarray:
        """Ask the routing policy which samples to offload (edge_only when there is none)."""
        if self.router is None:
            self.router = ROUTING_POLICIES.create("edge_only", None, probs.shape[1])
        return np.asarray(self.router.route(probs, self.env.now, edge_s), dtype=bool)

    def offload(
        self,
        batch: int,
        images: torch.Tensor,
        nbytes: int,
        handle: int,
        rows: np.ndarray,
        labels: np.ndarray,
        ready_s: float,
    ) -> Generator[simpy.Event, None, None]:
        """Send samples ``rows`` of a batch to the cloud foundation model and deliver its answers:
        uplink (``nbytes``, images as uploads are encoded), cloud queue and inference, downlink of
        the answer (header + ``answer_bytes_per_sample`` each). If the uplink drops the message,
        the edge answers stand, delivered when the drop is known."""
        assert self.router is not None and self.foundation is not None
        message, sent_s = self._offload_messages, self.env.now
        self._offload_messages += 1
        self.router.offload_sent(message, sent_s)
        outcome = yield self.env.process(self.uplink.send(nbytes))
        fields = dict(sent_s=sent_s, device=self.id, batch=batch, samples=len(images), bytes=nbytes)
        if outcome is not Delivery.DELIVERED:
            self.recorder.message(
                "offload_drop", sim_time_s=self.env.now, **fields, reason=str(outcome)
            )
            self.router.offload_dropped(message, self.env.now)
            self.recorder.amend_samples(handle, rows, latency_s=self.env.now - ready_s)
            return
        self.recorder.message("offload", sim_time_s=self.env.now, **fields)
        predictions, queue_s, compute_s = yield self.env.process(self.foundation.serve(images))
        answer_bytes = self.header_bytes + self.answer_bytes_per_sample * len(images)
        yield self.env.process(self.downlink.send(answer_bytes))
        self.recorder.message(
            "answer",
            sim_time_s=self.env.now,
            **{**fields, "bytes": answer_bytes},
            cloud_queue_s=queue_s,
            cloud_compute_s=compute_s,
        )
        self.router.offload_answered(message, self.env.now)
        answer = predictions.numpy()
        self.recorder.amend_samples(
            handle,
            rows,
            delivered_prediction=answer,
            delivered_correct=answer == labels[rows],
            latency_s=self.env.now - ready_s,
        )

    def energy_summary(self, upload_bytes: int, download_bytes: int) -> dict[str, Any]:
        """With a hardware profile, the device's part of summary.json: its profile, simulated
        compute time, and the energy of compute and radio (empty without a profile).

        Compute energy is the profile's active power over the simulated compute time (with model
        selection, the members' actual compute); radio energy is its marginal energy per byte sent
        and received. Idle power is not charged.
        """
        if self.hardware is None:
            return {}
        if self.selector is not None:
            compute = self.selector.compute_total_s
        else:
            batches = map(self.stream.batch, range(self.stream.num_batches))
            compute = sum(self.compute_s(rows.stop - rows.start) for rows in batches)
        figures = {
            "compute_s": compute,
            "energy_compute_j": self.hardware.compute_j(compute),
            "energy_radio_j": self.hardware.radio_j(upload_bytes, download_bytes),
        }
        figures["energy_j"] = figures["energy_compute_j"] + figures["energy_radio_j"]
        return {"profile": self.profile, **figures}

    def switch_model(self, executor: FleetExecutor, state: NormState) -> bool:
        """A whole new edge model (TDMR, :mod:`simulator.fleet.redeploy`) has fully arrived: batches
        whose computation starts from now on run on it (``executor``, its normalization ``state``);
        one already computing finishes on the old model. Recorded as a ``model_switch`` event;
        False (no switch) when the device already runs this version or a newer one."""
        if state.version <= self.state.version:
            return False
        self.recorder.message(
            "model_switch",
            sim_time_s=self.env.now,
            device=self.id,
            from_version=self.state.version,
            to_version=state.version,
        )
        self.executor, self.state = executor, state
        return True

    def receive(self, state: NormState) -> None:
        """A downloaded state replaces the current one, unless an even newer one arrived first."""
        if state.version > self.state.version:
            self.state = state
