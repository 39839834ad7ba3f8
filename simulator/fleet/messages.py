"""What travels between the devices and the cloud, apart from who sends it: upload messages up,
normalization states (or whole models) down, and the callbacks through which each side reaches the
other.

The device module and the cloud modules both import this one and neither imports the other: the
engine's builders hand the cloud its devices as :class:`StateReceiver` (a cloud that ships whole
models, :mod:`simulator.fleet.redeploy`: :class:`ModelReceiver`) and the devices the cloud's
``deliver`` and ``latest_version`` callbacks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

if TYPE_CHECKING:
    from simulator.fleet.executor import FleetExecutor
    from simulator.fleet.network import Link

__all__ = [
    "Deliver",
    "LatestVersion",
    "ModelReceiver",
    "NormState",
    "StateReceiver",
    "UploadMessage",
]


@dataclass
class UploadMessage:
    """Samples of one edge batch, delivered to the cloud."""

    device: int
    batch: int
    images: torch.Tensor  # uint8 (n,3,H,W)
    nbytes: int
    sent_s: float


@dataclass
class NormState:
    """A normalization state as held by a device: tensors, version, when it was produced, and
    when the newest samples it learnt from were taken (``samples_s``; NaN for the source)."""

    tensors: dict[str, torch.Tensor]
    version: int = 0
    produced_s: float = float("nan")
    samples_s: float = float("nan")


#: The cloud's door for uploads: called when an upload message has arrived there.
Deliver = Callable[[UploadMessage], None]
#: The version of the newest finished state of a device's scope now (device id -> version).
LatestVersion = Callable[[int], int]


class StateReceiver(Protocol):
    """A device as the cloud sees it: the state it holds, its downlink, and where a downloaded
    state goes."""

    state: NormState
    downlink: Link

    def receive(self, state: NormState) -> None: ...


class ModelReceiver(Protocol):
    """A device as a cloud that ships whole models sees it: its downlink, and where a model that
    has fully arrived goes (the executor that runs it, its normalization state; False when the
    device already runs that version or a newer one)."""

    downlink: Link

    def switch_model(self, executor: FleetExecutor, state: NormState) -> bool: ...
