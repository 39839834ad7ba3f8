"""Tent on the cloud (Wang et al., "Tent: Fully Test-Time Adaptation by Entropy Minimization",
ICLR 2021; official code DequanWang/tent), run without a teacher over the uploaded samples.

Per full cloud batch of ``batch_size`` uploads (FIFO, remainders carried over to the next call):
one optimizer step on the edge model's BN affine (gamma, beta) minimising the mean softmax entropy
``mean_i H_i``, ``H = -sum_c p_c ln p_c``, with every BN layer normalising by the batch's own
statistics (Tent's forward: ``track_running_stats = False``, running statistics dropped).

Defaults are the official CIFAR-10-C setting (``cfgs/tent.yaml`` over ``conf.py``): Adam with
``lr = 1e-3``, ``betas = (0.9, 0.999)``, no weight decay, one step per batch, test batch size 200;
SGD is a choice: plain momentum 0.9 by default, as the Tent baselines of the released EATA
(``main.py``) and CEMA code run it; ``nesterov: true`` is Tent's own ``conf.py`` choice (momentum 0.9,
Nesterov, no dampening). ImageNet-C (EATA's ``main.py`` Tent branch): SGD, ``lr = 2.5e-4``, momentum
0.9, batch 64; set them for 1,000 classes.

``edge_norm = "batch"``: Tent never uses running statistics; train and test forwards both
normalise with the current batch (the paper's "test-time normalization" plus learned affine), so
the edge combines the downloaded affine with the statistics of its own test batch. The download
carries the adapted affine plus the *source* running statistics, which Tent leaves untouched; with
``edge_norm = "batch"`` that state fully defines the edge model.

Per scope the adapter keeps only the edge BN tensors, the optimizer's per-parameter state and the
uploads carried over; one edge module and one optimizer serve all scopes (loaded on ``observe``).
Tent draws no random numbers, so runs are deterministic.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from simulator.adaptation.base import ADAPTERS, AdaptStats, ScopedAdapter
from simulator.adaptation.losses import softmax_entropy
from simulator.models.norm import (
    configure_norm_adaptation,
    get_norm_state,
    set_norm_state,
    use_batch_statistics,
)

__all__ = ["EntropyAdapter", "EntropyScope", "Optimizer", "TentAdapter"]

#: The update rule of the BN affine (Tent's and EATA's choice).
Optimizer = Literal["adam", "sgd"]


@dataclass
class EntropyScope:
    """What one scope owns: edge BN tensors, optimizer state per parameter, carried uploads."""

    norm: dict[str, torch.Tensor]
    optimizer_state: list[dict[str, torch.Tensor]] = field(default_factory=list)
    pending: torch.Tensor | None = None  # uploads not yet in a full cloud batch (float32, CPU)
    version: int = 0


class EntropyAdapter(ScopedAdapter):
    """Base of teacher-free entropy minimisation on the edge BN affine (Tent, EATA).

    Subclasses define ``_loss`` (``None``: no step on this batch) and may extend the scope.
    """

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        batch_size: int = Field(
            200, gt=0, description="Uploads per cloud batch (FIFO, carry-over)."
        )
        optimizer: Optimizer = Field(
            "adam", description="Update rule of the BN affine: Adam or SGD with momentum."
        )
        lr: float = Field(1e-3, gt=0, description="Learning rate of the BN affine.")
        momentum: float = Field(
            0.9, ge=0, lt=1, description="SGD momentum, or Adam's beta1 (beta2 is 0.999)."
        )

    needs_teacher = False
    edge_norm = "batch"

    def __init__(
        self,
        edge_model: nn.Module,
        teacher: nn.Module | None,
        config: BaseModel | None,
        num_classes: int,
        seed: int,
    ):
        super().__init__(edge_model, teacher, config, num_classes, seed)
        cfg = self.config
        self._params = configure_norm_adaptation(edge_model)
        if not self._params:
            raise ValueError(f"{type(self).__name__} needs BN layers with affine parameters")
        self._param_names = _parameter_names(edge_model, self._params)
        if cfg.optimizer == "adam":  # type: ignore[attr-defined]
            self._optimizer: torch.optim.Optimizer = torch.optim.Adam(
                self._params,
                lr=cfg.lr,  # type: ignore[attr-defined]
                betas=(cfg.momentum, 0.999),  # type: ignore[attr-defined]
            )
        else:
            self._optimizer = torch.optim.SGD(
                self._params,
                lr=cfg.lr,  # type: ignore[attr-defined]
                momentum=cfg.momentum,  # type: ignore[attr-defined]
                nesterov=getattr(cfg, "nesterov", False) and cfg.momentum > 0,  # type: ignore[attr-defined]
            )
        edge_model.eval()
        self._scopes: dict[Hashable, EntropyScope] = {}
        self._forward = self._backward = 0  # images through the edge model in this observe call

    # -- scopes ------------------------------------------------------------------------------
    def _new_scope(self) -> EntropyScope:
        return EntropyScope(norm={k: v.clone() for k, v in self._source_state.items()})

    def _scope(self, scope: Hashable) -> EntropyScope:
        if scope not in self._scopes:
            self._scopes[scope] = self._new_scope()
        return self._scopes[scope]

    # -- learning ----------------------------------------------------------------------------
    def _step_per_call(self) -> bool:
        """True: one step per ``observe`` call on all its uploads (an edge batch's), no carry-over;
        False: one step per full cloud batch of ``batch_size``."""
        return False

    def observe(self, scope: Hashable, images: torch.Tensor) -> AdaptStats:
        """Queue one edge batch's uploads and take one step per full cloud batch (or, where the
        adapter steps per call, one step on them all)."""
        if images.ndim != 4:
            raise ValueError(f"expected uploads as (n, C, H, W), got shape {tuple(images.shape)}")
        batch_size: int = self.config.batch_size  # type: ignore[attr-defined]
        per_call = self._step_per_call()
        self._forward = self._backward = 0
        with torch.inference_mode(False), torch.enable_grad():
            images = images.detach().to(device="cpu", dtype=torch.float32).clone()
            state = self._scope(scope)
            state.pending = images if state.pending is None else torch.cat([state.pending, images])
            losses: list[float] = []
            samples = 0
            self._load(state)
            try:
                while len(state.pending) >= (1 if per_call else batch_size):
                    take = len(state.pending) if per_call else batch_size
                    batch = state.pending[:take]
                    state.pending = state.pending[take:]
                    loss = self._step(state, batch)
                    if loss is not None:
                        losses.append(loss)
                        samples += len(batch)
            finally:
                self._unload(state, updated=bool(losses))
        loss_mean = float(np.mean(losses)) if losses else None
        return AdaptStats(
            steps=len(losses),
            samples=samples,
            loss=loss_mean,
            edge_forward=self._forward,
            edge_backward=self._backward,
        )

    def _loss(self, state: EntropyScope, logits: torch.Tensor) -> torch.Tensor | None:
        """Tent: mean softmax entropy of the whole batch."""
        return softmax_entropy(logits).mean()

    def _step(self, state: EntropyScope, images: torch.Tensor) -> float | None:
        """Forward with batch statistics, then one optimizer step on the BN affine."""
        device = next(self.edge_model.parameters()).device
        with use_batch_statistics(self.edge_model):
            logits = self.edge_model(self.layout(images.to(device)))
        self._forward += len(images)
        loss = self._loss(state, logits)
        if loss is None:
            return None
        self._backward += len(images)
        self._optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._optimizer.step()
        state.version += 1
        return float(loss.item())

    def _load(self, state: EntropyScope) -> None:
        """Put the scope's BN tensors and optimizer state into the one module and optimizer."""
        set_norm_state(self.edge_model, state.norm)
        self._optimizer.state.clear()
        for param, saved in zip(self._params, state.optimizer_state, strict=False):
            if saved:
                self._optimizer.state[param] = saved

    def _unload(self, state: EntropyScope, updated: bool) -> None:
        """Read the scope's state back and leave the module in its source state."""
        if updated:
            state.norm = get_norm_state(self.edge_model)
            state.optimizer_state = [dict(self._optimizer.state.get(p, {})) for p in self._params]
        self._optimizer.state.clear()
        self._optimizer.zero_grad(set_to_none=True)
        set_norm_state(self.edge_model, self._source_state)


def _parameter_names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    """Qualified names of ``params`` in ``model`` (same order)."""
    by_id = {id(p): name for name, p in model.named_parameters()}
    return [by_id[id(p)] for p in params]


@ADAPTERS.register("tent")
class TentAdapter(EntropyAdapter):
    """Tent: one entropy-minimisation step on the edge BN affine per cloud batch, no teacher."""

    method_names = {"all": "Tent"}
    rank = 2

    class Config(EntropyAdapter.Config):
        model_config = ConfigDict(extra="forbid")

        nesterov: bool = Field(
            False,
            description="Nesterov momentum for optimizer sgd: false as the Tent baselines of the "
            "released EATA and CEMA code (plain momentum SGD); true as Tent's own conf.py.",
        )
