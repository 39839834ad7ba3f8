"""Cloud adapters: the learning algorithm the cloud runs on uploaded samples.

An adapter knows nothing of SimPy or time: the cloud process hands it the uploads of one edge
batch (``observe``), then downloads ``norm_state(scope)`` (CPU tensors, on whatever device the
adapter's models compute) to the devices of that scope. The adapter owns all scopes (a device id
for per-device adaptation, ``0`` for one state shared by the fleet) and keeps per scope only the
edge normalization state, its optimizer momentum, a replay buffer and a generator, never a model
copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel
from torch import nn

from simulator.models.norm import get_norm_state
from simulator.registry import Registry, Styled

EdgeNorm = Literal["eval", "batch"]

#: Cloud adapters by name; ``simulator.adaptation`` registers the built-in ones.
ADAPTERS: Registry = Registry("adapter")

__all__ = [
    "ADAPTERS",
    "CLOUD_MEMORY_FORMAT",
    "AdaptStats",
    "CloudAdapter",
    "EdgeNorm",
    "ScopedAdapter",
    "cloud_layout",
    "cpu_copy",
]


#: Memory layout the cloud trains in, per compute device type. On the CPU, contiguous: PyTorch's
#: train-mode BatchNorm in channels-last sums the batch statistics less exactly (one BN layer,
#: relative output error against float64 76-265x the contiguous kernel's at every input offset
#: tried), which made CEMA's BN-affine gradients at the source 2-500x further from float64; over a
#: 30-step run the adapted affine drifted from the contiguous run's 1.7-2.5x as far as a one-
#: rounding-step change of the uploads moves it, as few held-out predictions changed (6 vs 7 of
#: 1,920). Channels-last was 1.3x faster per cloud step (benchmarks/cloud_layout_drift.py;
#: speed.md, section 5). On a GPU, channels-last, as CEMA's released configuration recommends for
#: A100/V100; its drift is not measured here.
CLOUD_MEMORY_FORMAT: dict[str, torch.memory_format] = {
    "cpu": torch.contiguous_format,
    "cuda": torch.channels_last,
}


def cloud_layout(
    images: torch.Tensor, memory_format: torch.memory_format = torch.channels_last
) -> torch.Tensor:
    """Images in the memory layout of the cloud's models (``memory_format`` for 4-D batches; any
    other shape is returned as is)."""
    return images.contiguous(memory_format=memory_format) if images.ndim == 4 else images


def cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A download's tensors: copies on the CPU, whatever device the cloud's models compute on.

    From a GPU, tensors of one dtype travel as one flat copy (one wait for the GPU, not one per
    tensor: ResNet-20's state is 76 tensors).
    """
    tensors = [t.detach() for t in state.values()]
    on_gpu = any(t.device.type != "cpu" for t in tensors)
    if on_gpu and len({(t.dtype, t.device) for t in tensors}) == 1:
        return dict(zip(state, one_transfer(tensors), strict=True))
    return {name: t.to("cpu", copy=True) for name, t in zip(state, tensors, strict=True)}


def one_transfer(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """CPU copies of same-dtype ``tensors`` (shapes kept) made by one flat device-to-host copy."""
    flat = torch.cat([t.reshape(-1) for t in tensors]).cpu()
    parts = flat.split([t.numel() for t in tensors])
    return [part.view(t.shape).clone() for part, t in zip(parts, tensors, strict=True)]


@dataclass(frozen=True)
class AdaptStats:
    """What one ``observe`` call did.

    ``steps``: edge-model optimisation steps; ``samples``: images through those steps' training
    forward passes (new + replayed); ``teacher_steps``: foundation-model steps; ``loss``: mean edge
    loss over the steps (``None`` without a step). The work counts, in images, are what the cloud's
    compute time is made of (:func:`simulator.hardware.step_macs`): forward passes of the teacher
    and of the edge model, and backward passes through them.
    """

    steps: int = 0
    samples: int = 0
    teacher_steps: int = 0
    loss: float | None = None
    teacher_forward: int = 0
    teacher_backward: int = 0
    edge_forward: int = 0
    edge_backward: int = 0


class CloudAdapter(Styled, ABC):
    """Base of all cloud adaptation algorithms (registered in ``ADAPTERS``).

    ``edge_norm`` tells the edge how to normalise: ``"eval"`` uses the downloaded running
    statistics, ``"batch"`` each test batch's own statistics (the BN-adaptation baseline).
    """

    Config: ClassVar[type[BaseModel]]
    needs_teacher: ClassVar[bool] = False
    edge_norm: ClassVar[EdgeNorm] = "eval"
    #: False for an adapter whose cloud never changes the edge state it sends down (the source
    #: model, BN adaptation on the edge): it works for devices that run different models.
    adapts_edge_state: ClassVar[bool] = True
    #: True for an adapter that rebuilds whole edge models and ships them (TDMR,
    #: :class:`simulator.adaptation.whole_model.WholeModelAdapter`) instead of normalization states:
    #: the fleet serves it with :class:`simulator.fleet.redeploy.ModelCloud`.
    ships_models: ClassVar[bool] = False
    #: Memory layout of the cloud's models and batches; None: by compute device
    #: (:data:`CLOUD_MEMORY_FORMAT`). A subclass may fix one (benchmarks/cloud_layout_drift.py).
    memory_format_override: ClassVar[torch.memory_format | None] = None

    @classmethod
    def config_or_default(cls, config: BaseModel | None) -> Any:
        """``config`` when it is this adapter's ``Config``, else the defaults (for class-level
        questions asked before an adapter exists, such as :meth:`edge_norm_for`)."""
        return config if isinstance(config, cls.Config) else cls.Config()

    def __init__(
        self,
        edge_model: nn.Module,
        teacher: nn.Module | None,
        config: BaseModel | None,
        num_classes: int,
        seed: int,
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if self.needs_teacher and teacher is None:
            raise ValueError(f"adapter {type(self).__name__} needs a teacher (foundation) model")
        held = next(iter([*edge_model.parameters(), *edge_model.buffers()]), torch.empty(0))
        self.memory_format = self.memory_format_override or CLOUD_MEMORY_FORMAT.get(
            held.device.type, torch.contiguous_format
        )
        # weights in ``memory_format``; models without 4-D weights are unchanged
        self.edge_model = edge_model.to(memory_format=self.memory_format)
        self.teacher = teacher.to(memory_format=self.memory_format) if teacher is not None else None
        self.config = config if config is not None else self.Config()
        self.num_classes = num_classes
        self.seed = seed
        self._source_state = get_norm_state(edge_model)  # what devices hold before any update

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        """A batch in the layout of the cloud's models (:attr:`memory_format`)."""
        return cloud_layout(images, self.memory_format)

    @classmethod
    def edge_norm_for(cls, config: BaseModel | None) -> EdgeNorm:
        """How the edge normalises under ``config`` (known before the adapter is built)."""
        return cls.edge_norm

    @classmethod
    def hears_empty_batches(cls, config: BaseModel | None) -> bool:
        """Whether devices tell the cloud of an edge batch that uploads nothing (a header-only
        message), because the adapter under ``config`` learns from it (CEMA's replay-only
        step); no by default."""
        return False

    @classmethod
    def for_upload_policy(cls, config: BaseModel | None, policy: str) -> BaseModel | None:
        """``config`` with the choices that depend on how devices pick their uploads resolved
        (``policy``: the upload policy that picks them; inside ``budget``, its inner policy)."""
        return config

    def summary_figures(self) -> dict[str, int | float]:
        """Adapter-specific totals of the run for summary.json (e.g. how many uploads a filter
        on the cloud kept); none by default."""
        return {}

    @abstractmethod
    def observe(self, scope: Hashable, images: torch.Tensor) -> AdaptStats:
        """Learn from the uploads (n, 3, H, W) float in [0, 1] of one edge batch of one device."""

    @abstractmethod
    def norm_state(self, scope: Hashable) -> dict[str, torch.Tensor]:
        """The BN affine + running statistics that devices of ``scope`` download now."""

    @abstractmethod
    def version(self, scope: Hashable) -> int:
        """Number of updates of ``scope``'s edge state so far (0 = the source model)."""


class ScopedAdapter(CloudAdapter):
    """An adapter keeping one record per scope in ``self._scopes``, each with the scope's edge
    ``norm`` state, its ``version`` (steps so far) and its ``pending`` uploads (carried over to the
    next full cloud batch, or None); scopes without a record hold the source state."""

    _scopes: dict[Hashable, Any]

    def norm_state(self, scope: Hashable) -> dict[str, torch.Tensor]:
        """The BN affine + running statistics of ``scope`` (the source state before updates)."""
        state = self._scopes[scope].norm if scope in self._scopes else self._source_state
        return cpu_copy(state)

    def version(self, scope: Hashable) -> int:
        """Edge optimisation steps taken for ``scope``."""
        return self._scopes[scope].version if scope in self._scopes else 0

    def pending(self, scope: Hashable) -> int:
        """Uploads of ``scope`` carried over, waiting for a full cloud batch."""
        state = self._scopes.get(scope)
        return 0 if state is None or state.pending is None else len(state.pending)
