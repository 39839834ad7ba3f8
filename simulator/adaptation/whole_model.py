"""Adapters that rebuild whole edge models on the cloud and ship them (TDMR), instead of streaming
normalization states (CEMA, Tent, EATA).

What the fleet needs from such an adapter, apart from :class:`~simulator.adaptation.base.CloudAdapter`'s
``observe`` (take in one message's uploads) and ``version``: when a scope's model is due for a
rebuild (``rebuild_reason``, asked after every upload and on the clock of ``tick_s``), the rebuild
itself (``rebuild``: real training, its counted work returned for the cloud's simulated time), the
weights of the scope's newest model (``model_state``) and how it is to be shipped (``shipping``).
The SimPy side (queue, simulated time, downlinks, the switch on the device) is
:class:`simulator.fleet.redeploy.ModelCloud`; this interface knows nothing of SimPy.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from simulator.adaptation.base import AdaptStats, CloudAdapter

__all__ = ["ModelShipping", "PayloadKind", "WholeModelAdapter"]

#: What a rebuilt model travels as: every tensor (``full``), only the tensors that differ from what
#: the device holds (``changed``), or conv/linear weights quantized per output channel
#: (``quantized``, W8 or W4, everything else in float32).
PayloadKind = Literal["full", "changed", "quantized"]


@dataclass(frozen=True)
class ModelShipping:
    """How a scope's rebuilt model goes down the downlink."""

    kind: PayloadKind = "full"
    bits: int = 8  # weight bits of a ``quantized`` payload


class WholeModelAdapter(CloudAdapter):
    """A cloud adapter whose product is a whole edge model per scope (see module docstring)."""

    ships_models: ClassVar[bool] = True

    @abstractmethod
    def rebuild_reason(self, scope: Hashable, now_s: float) -> str | None:
        """Why ``scope``'s model should be rebuilt now (``"uploads"``, ``"schedule"``, ``"shift"``,
        ...), or None while it should not. ``now_s`` is simulated time."""

    @abstractmethod
    def rebuild(self, scope: Hashable, now_s: float, reason: str = "requested") -> AdaptStats:
        """Rebuild ``scope``'s edge model from what it holds now (``reason``: what triggered it,
        for the record); its version goes up by one."""

    @abstractmethod
    def model_state(self, scope: Hashable) -> dict[str, torch.Tensor]:
        """CPU copies of the full ``state_dict`` of ``scope``'s newest edge model (the source
        model's before any rebuild)."""

    @abstractmethod
    def shipping(self) -> ModelShipping:
        """How rebuilt models are shipped."""

    def tick_s(self) -> float | None:
        """Simulated seconds between the cloud's questions to ``rebuild_reason`` without any new
        upload (a rebuild on a schedule); None: it asks only when uploads arrive."""
        return None

    def hold_labelled(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Keep a small labelled target set on the cloud (uint8 NCHW images, int64 labels)."""
        raise NotImplementedError(f"{type(self).__name__} takes no labelled target set")

    def labelled_per_domain(self) -> int:
        """Labelled target images per stream domain the adapter wants on the cloud (0: none)."""
        return 0
