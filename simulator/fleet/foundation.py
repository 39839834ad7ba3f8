"""The cloud foundation model answering offloaded samples (EdgeFM routing): a resource of its own,
apart from the adaptation workers of :mod:`simulator.fleet.cloud`, which devices call directly."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import simpy
import torch

from simulator.models.logit_cache import forward_rows


class FoundationServer:
    """The cloud foundation model answering offloaded samples (EdgeFM routing).

    A pool of ``workers`` inference workers of its own, FIFO, apart from the adaptation workers
    (``cloud.workers``): answers are latency-critical and must not wait behind adaptation steps,
    and adaptation keeps its own accounting (``cloud_busy_s``). A request of ``n`` images occupies a
    worker for ``ms_per_request + n * ms_per_sample`` of simulated time; the real forward pass
    runs when service starts, in eval mode, on ``model`` as it is at that moment. The engine passes
    the adapter's own teacher when the adapter has one (an adapting teacher, e.g. CEMA's, answers
    with its current BN state), else the frozen ``cloud.teacher``.
    """

    def __init__(
        self,
        env: simpy.Environment,
        model: torch.nn.Module,
        workers: int,
        ms_per_request: float,
        ms_per_sample: float,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if ms_per_request < 0 or ms_per_sample < 0:
            raise ValueError(
                f"inference times must be >= 0 ms, got {ms_per_request} and {ms_per_sample}"
            )
        self.env, self.model = env, model
        self.request_s, self.sample_s = ms_per_request / 1000.0, ms_per_sample / 1000.0
        self.workers = workers
        self._pool = simpy.Resource(env, capacity=workers)
        self.busy_s = 0.0
        self.requests = 0
        self.samples = 0

    def summary(self, until_s: float) -> dict[str, Any]:
        """The foundation model's part of summary.json: its workers' busy time and utilization."""
        return {
            "foundation_busy_s": self.busy_s,
            "foundation_utilization": (self.busy_s / (self.workers * until_s) if until_s else 0.0),
        }

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class predictions of the model (eval mode) for uint8 images (n, 3, H, W)."""
        modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
            with torch.inference_mode():
                logits = forward_rows(self.model, images.to(device).float().div_(255.0))
        finally:
            for module, training in modes:
                module.training = training
        return logits.argmax(dim=1).cpu()

    def serve(
        self, images: torch.Tensor
    ) -> Generator[simpy.Event, None, tuple[torch.Tensor, float, float]]:
        """Process: wait for a worker, infer; returns (predictions, queue_s, compute_s)."""
        arrived_s = self.env.now
        with self._pool.request() as turn:
            yield turn
            queue_s = self.env.now - arrived_s
            predictions = self.predict(images)
            compute_s = self.request_s + self.sample_s * len(images)
            yield self.env.timeout(compute_s)
        self.busy_s += compute_s
        self.requests += 1
        self.samples += len(images)
        return predictions, queue_s, compute_s
