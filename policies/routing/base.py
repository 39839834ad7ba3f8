"""Routing policies: which samples a device answers itself and which it offloads to the cloud.

A policy sees the edge model's softmax probabilities of one batch and plain numbers of time (the
simulated clock, the batch's edge latency, when its offload messages were sent and answered); it
knows nothing of SimPy or the network. One instance per device (policies keep state).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from simulator.registry import Registry, Styled

#: Per-sample route codes written to ``last_routes`` (the ``route`` column of sample events).
EDGE = "edge"  # answered on the device: confident enough (or the policy never offloads)
SLO_LIMITED = "slo_limited"  # uncertain, but the latency objective left no room to offload it
CLOUD = "cloud"  # offloaded: the cloud foundation model answers
PROBE = "probe"  # offloaded to measure the network again after a long silence
ROUTES = (EDGE, SLO_LIMITED, CLOUD, PROBE)

#: Routing policies by name; ``policies.routing`` registers the built-in ones.
ROUTING_POLICIES: Registry = Registry("routing policy")


class OffloadConfig(BaseModel):
    """Parameters every offloading policy carries: the cloud's foundation-model inference service
    (its own worker pool, see :class:`~simulator.fleet.cloud.FoundationServer`) and the answer's
    size on the downlink."""

    model_config = ConfigDict(extra="forbid")

    cloud_workers: int = Field(
        1, gt=0, description="cloud inference workers of the foundation model (own pool)"
    )
    cloud_ms_per_request: float = Field(
        5.0, ge=0, description="simulated fixed cost of one foundation-model request, ms"
    )
    cloud_ms_per_sample: float = Field(
        2.0, ge=0, description="simulated foundation-model inference time per image, ms"
    )
    answer_bytes_per_sample: int = Field(
        4, gt=0, description="answer payload per sample on the downlink (int32 class index)"
    )


def margin_uncertainty(probs: torch.Tensor) -> torch.Tensor:
    """EdgeFM's uncertainty ``u(x) = 1 - (p1 - p2)``: one minus the margin between the top-1 and
    top-2 softmax probabilities, per row of ``probs`` (B, C); in [0, 1], 1 for a tie."""
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"expected probabilities (B, C) with C >= 2, got {tuple(probs.shape)}")
    top = probs.detach().float().topk(2, dim=1).values
    return 1.0 - (top[:, 0] - top[:, 1])


class RoutingPolicy(Styled, ABC):
    """Base of all routing policies (registered in ``ROUTING_POLICIES``).

    ``route`` returns a bool mask (True = offload to the cloud) and sets ``last_routes`` (one code
    of ``ROUTES`` per sample), ``last_uncertainty`` and ``last_threshold``. The device reports what
    became of each offload message (``offload_sent``, ``offload_answered``, ``offload_dropped``),
    which is all a policy learns about the network.
    """

    Config: ClassVar[type[BaseModel]]
    #: True if the policy may offload: the run then needs the cloud foundation model server, and
    #: its ``Config`` is an :class:`OffloadConfig`.
    offloads: ClassVar[bool] = False

    def __init__(self, config: BaseModel | None, num_classes: int):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.config = config if config is not None else self.Config()
        self.num_classes = num_classes
        self.last_routes: np.ndarray = np.empty(0, dtype=object)
        self.last_uncertainty: np.ndarray = np.empty(0, dtype=np.float32)
        self.last_threshold = float("nan")

    @abstractmethod
    def route(self, probs: torch.Tensor, now_s: float, edge_s: float) -> np.ndarray:
        """Bool mask (B,) of samples to offload, from softmax ``probs`` (B, C) of one batch whose
        edge answer took ``edge_s`` seconds (from batch ready to edge result), at time ``now_s``."""

    def offload_sent(self, message: int, now_s: float) -> None:
        """An offload message (id ``message``) was handed to the uplink at ``now_s``."""
        return None

    def offload_answered(self, message: int, now_s: float) -> None:
        """The cloud's answer to ``message`` arrived on the device at ``now_s``."""
        return None

    def offload_dropped(self, message: int, now_s: float) -> None:
        """The uplink dropped ``message`` (full queue or timeout); known at ``now_s``."""
        return None
