"""CEMA cloud adapter (Chen et al., "Towards Robust and Efficient Cloud-Edge Elastic Model
Adaptation via Selective Entropy Distillation", ICLR 2024; official code chenyaofo/CEMA).

Per full cloud batch of ``batch_size`` uploads (FIFO, remainders carried over to the next call):

1. foundation model (teacher), BN in train mode (or batch renormalisation): one SGD step on its
   BN affine (and LayerNorm / GroupNorm affine, which is all a ViT teacher has) with
   ``mean_i exp(E_0 - H_i) H_i`` over *all* samples of the batch (the released code's cloud
   entropy filter is commented out), ``E_0 = e0_factor * ln C`` static;
2. edge model, BN in train mode (or batch renormalisation): one SGD step on its BN affine with
   ``cema_distillation_loss`` over the batch plus ``replay_batch`` replayed uploads once
   ``replay_min`` are stored; the teacher logits come from the teacher *after* its step, without
   gradient.

When a call yields no full batch and more than ``replay_min`` uploads are stored, one replay-only
step on ``replay_only_batch`` replayed uploads (no teacher step). Uploads enter the replay buffer
before the batches are formed, so replayed samples may include the current ones (as released).
A call is one upload message (or the messages ``cloud.gather`` serves together). The released loop
(``CEMA.infer``) runs once per edge batch, so after an edge batch that uploaded nothing it takes a
replay-only step too (``not is_excuted and len(history_buffer) > 256``). A cloud learns of an edge
batch only from a message: with ``replay_after_empty_batch: true`` (the released behaviour) a
device whose batch uploads nothing sends a header-only message, and the cloud takes that
replay-only step; with ``false`` (the default, fleetsim's behaviour before the option) such a
batch sends nothing and adds no step.

How BN normalises, three ways (``edge_norm``). The released code (``codebase/core/tta/cema.py``,
``conf/cema.conf``, ``is_tbr: true``) replaces every BN forward of edge and teacher with batch
renormalisation (``tbr.py``): the pretrained statistics are dropped, running statistics start from
the first batch each model sees and follow each train-mode forward with momentum 0.1, and the
forward's *value* is the input normalised with the running statistics (its gradient flows through
the batch's). Its edge is the cloud's student in eval mode (a copy of it from the tenth test
batch on): it normalises with the statistics the cloud estimated from uploads and replay.
``edge_norm="tbr"`` (with ``teacher_distill_norm="tbr"``) is that, with two differences: the
released student's statistics start from the first *test* batch (the edge's, unfiltered),
fleetsim's from the first cloud batch (uploads), and until its first download fleetsim's edge
normalises with the source model's statistics. ``edge_norm="eval"`` deploys the same kind of
edge (affine + running statistics downloaded) but the cloud's distillation forward uses the
batch's statistics. ``edge_norm="batch"``, the
default, normalises each test batch with its own statistics and downloads the affine only: on
continual CIFAR-10-C (benchmarks/cifar10c.md) it is far more accurate than the running-statistics
edges (13-18 points with 256 samples per corruption, 6 with 1,024), whose statistics come only
from the filtered uploads, mixed with replayed older domains, and arrive a download late, so that
after every shift they describe the previous domain. The teacher's distillation logits use batch
statistics by default (``teacher_distill_norm="batch"``). The released code keeps one edge model
for all devices and updates it with no delay; scopes here may be per device, and every download
crosses the network.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from simulator.adaptation.base import ADAPTERS, AdaptStats, EdgeNorm, ScopedAdapter
from simulator.adaptation.losses import cema_distillation_loss, teacher_entropy_loss
from simulator.adaptation.replay import ReplayBuffer, ReplayDtype
from simulator.models.logit_cache import LogitCache
from simulator.models.norm import configure_norm_adaptation, get_norm_state, set_norm_state


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[list[nn.modules.batchnorm._BatchNorm]]:
    """Whole model in eval mode for the block, which gets its BN layers to reconfigure; every
    module's ``training`` flag is restored afterwards, also on an exception."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield _batch_norms(model)
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _bn_train_mode(
    model: nn.Module, momentum: float | None = None, update_running: bool = True
) -> Iterator[None]:
    """Whole model in eval mode except BN in train mode (batch statistics); restores afterwards.

    ``momentum`` overrides the BN running-statistics momentum; ``update_running=False``
    normalises with batch statistics without touching the running statistics.
    """
    with _eval_mode(model) as norms:
        saved = [(bn, bn.momentum, bn.track_running_stats) for bn in norms]
        try:
            for bn in norms:
                bn.train()
                if momentum is not None:
                    bn.momentum = momentum
                if not update_running:
                    bn.track_running_stats = False
            yield
        finally:
            for bn, bn_momentum, track in saved:
                bn.momentum, bn.track_running_stats = bn_momentum, track


def _renormalise(
    bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, momentum: float, update: bool, init: bool
) -> torch.Tensor:
    """Batch renormalisation (TBR) of one BN layer, as the released CEMA code's BN forward.

    The output's value is ``x`` normalised with the layer's running statistics (what an eval-mode
    edge computes); its gradient flows through the batch statistics, as in train-mode BN. With
    ``update`` the running statistics then move ``momentum`` towards the batch's (unbiased
    variance); with ``init`` they are first set to the batch's.
    """
    assert bn.running_mean is not None and bn.running_var is not None
    dims = [0, *range(2, x.ndim)]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    var, mean = torch.var_mean(x, dim=dims, correction=0)
    count = x.numel() // x.shape[1]
    with torch.no_grad():
        unbiased = var.detach() * (count / max(count - 1, 1))
        if init:
            bn.running_mean.copy_(mean.detach())
            bn.running_var.copy_(unbiased)
        inv_running_std = (bn.running_var + bn.eps).rsqrt()
        shift = (mean.detach() - bn.running_mean) * inv_running_std
    std = (var + bn.eps).sqrt()
    scale = std.detach() * inv_running_std
    out = (x - mean.view(shape)) / std.view(shape) * scale.view(shape) + shift.view(shape)
    if update:
        with torch.no_grad():
            bn.running_mean.add_(mean.detach() - bn.running_mean, alpha=momentum)
            bn.running_var.add_(unbiased - bn.running_var, alpha=momentum)
    if bn.affine:
        out = out * bn.weight.view(shape) + bn.bias.view(shape)
    return out


@contextmanager
def _batch_renorm_mode(
    model: nn.Module, momentum: float | None = None, update: bool = True, init: bool = False
) -> Iterator[None]:
    """Whole model in eval mode, every BN layer forwarding with batch renormalisation
    (:func:`_renormalise`; ``momentum`` None keeps each layer's own); restored afterwards."""
    with _eval_mode(model) as norms:
        patched: list[nn.Module] = []
        try:
            for bn in norms:
                layer_momentum = bn.momentum if momentum is None else momentum
                if layer_momentum is None:  # cumulative-average BN: the released code's 0.1
                    layer_momentum = 0.1

                def forward(
                    x: torch.Tensor,
                    bn: nn.modules.batchnorm._BatchNorm = bn,
                    layer_momentum: float = layer_momentum,
                ) -> torch.Tensor:
                    return _renormalise(bn, x, layer_momentum, update, init)

                bn.forward = forward  # type: ignore[method-assign]
                patched.append(bn)
            yield
        finally:
            for bn in patched:
                del bn.forward


def _scope_key(scope: Hashable) -> int:
    """A stable non-negative integer for a scope (``hash`` of str is salted per process)."""
    if isinstance(scope, (int, np.integer)) and not isinstance(scope, bool) and scope >= 0:
        return int(scope)
    return zlib.crc32(repr(scope).encode())


@dataclass
class _ScopeState:
    """Everything one scope owns: edge norm state, SGD momentum, replay, carry-over, generator."""

    norm: dict[str, torch.Tensor]
    generator: torch.Generator
    replay: ReplayBuffer
    momentum: list[torch.Tensor | None] = field(default_factory=list)
    pending: torch.Tensor | None = None  # uploads not yet in a full cloud batch (float32, CPU)
    version: int = 0


@ADAPTERS.register("cema")
class CemaAdapter(ScopedAdapter):
    """CEMA: teacher entropy step, then replay-based entropy distillation into the edge BN."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        batch_size: int = Field(32, gt=0, description="Uploads per cloud batch (FIFO, carry-over).")
        lr_teacher: float = Field(
            2.5e-4, gt=0, description="SGD learning rate of the foundation model's BN affine."
        )
        lr_edge: float = Field(2.5e-3, gt=0, description="SGD learning rate of the edge BN affine.")
        momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum of both optimizers.")
        e0_factor: float = Field(
            0.4, gt=0, le=1, description="E_0 = e0_factor * ln(C) in the weights exp(E_0 - H)."
        )
        entropy_weight: float = Field(3.0, ge=0, description="Weight of the student entropy term.")
        kl_weight: float = Field(3.0, ge=0, description="Weight of the KL(teacher||student) term.")
        ce_weight: float = Field(1.0, ge=0, description="Weight of the pseudo-label CE term.")
        replay_capacity: int = Field(
            10_000, ge=0, description="Replay buffer size (last uploads kept; 0 disables replay)."
        )
        replay_batch: int = Field(
            96, ge=0, description="Replayed uploads added to each cloud batch's edge step."
        )
        replay_min: int = Field(
            256, ge=0, description="Stored uploads needed before replay is used."
        )
        replay_only_batch: int = Field(
            128,
            ge=0,
            description="Replay-only edge step size when a call forms no full batch (0 disables).",
        )
        replay_dtype: ReplayDtype = Field("uint8", description="Storage type of replayed images.")
        replay_after_empty_batch: bool = Field(
            False,
            description="An edge batch that uploads nothing sends a header-only message and the "
            "cloud takes a replay-only step for it, as the released code does (true); false: "
            "no message, no step.",
        )
        adapt_teacher: bool = Field(
            True, description="Adapt the foundation model by entropy minimisation on uploads."
        )
        bn_momentum: float = Field(
            0.1, gt=0, le=1, description="Momentum of the edge BN running statistics."
        )
        init_stats_from_first_batch: bool = Field(
            True, description="Edge running statistics start from the first cloud batch's."
        )
        edge_norm: Literal["eval", "batch", "tbr"] = Field(
            "batch",
            description=(
                "How the edge normalises: batch = each test batch's own statistics with the "
                "downloaded affine (only the affine is downloaded); eval = running statistics "
                "the cloud estimates from the uploads and downloads with the affine, its "
                "distillation steps in train-mode BN; tbr = the same edge, but the cloud's steps "
                "use batch renormalisation (forward with the running statistics, gradient "
                "through the batch's), as the released CEMA code (is_tbr: true). See "
                "benchmarks/cifar10c.md for how the three compare."
            ),
        )
        teacher_distill_norm: Literal["batch", "running", "tbr"] = Field(
            "batch",
            description=(
                "Teacher BN: batch = distillation logits with the batch's statistics; running = "
                "with its running statistics (updated by its train-mode entropy steps); tbr = "
                "entropy steps with batch renormalisation (running statistics initialised from "
                "the first cloud batch) and logits with the running statistics, as released. "
                "With a frozen teacher (adapt_teacher false) running and tbr are the same: the "
                "pretrained statistics, logits cached."
            ),
        )
        teacher_logit_cache: bool = Field(
            True,
            description="With a frozen teacher (adapt_teacher false) and running statistics, keep "
            "its logits per image on disk ($FLEETSIM_CACHE/logits), shared by a sweep's runs.",
        )

        @model_validator(mode="after")
        def _replay_sizes_fit(self) -> CemaAdapter.Config:
            if self.replay_capacity and self.replay_min > self.replay_capacity:
                raise ValueError(
                    f"replay_min ({self.replay_min}) exceeds replay_capacity "
                    f"({self.replay_capacity}): replay would never start"
                )
            return self

    needs_teacher = True
    edge_norm = "batch"

    @classmethod
    def hears_empty_batches(cls, config: BaseModel | None) -> bool:
        cfg = cls.config_or_default(config)
        return cfg.replay_after_empty_batch

    @classmethod
    def edge_norm_for(cls, config: BaseModel | None) -> EdgeNorm:
        # per run, not per class; a tbr edge deploys running statistics like an eval one
        cfg = cls.config_or_default(config)
        return "batch" if cfg.edge_norm == "batch" else "eval"

    def __init__(
        self,
        edge_model: nn.Module,
        teacher: nn.Module | None,
        config: BaseModel | None,
        num_classes: int,
        seed: int,
    ):
        super().__init__(edge_model, teacher, config, num_classes, seed)
        cfg: CemaAdapter.Config = self.config  # type: ignore[assignment]
        self.edge_norm = self.edge_norm_for(cfg)  # type: ignore[misc]
        self._teacher_renorm_started = False
        self.e0 = cfg.e0_factor * math.log(num_classes)
        self._edge_params = configure_norm_adaptation(edge_model)
        self._edge_optimizer = torch.optim.SGD(
            self._edge_params, lr=cfg.lr_edge, momentum=cfg.momentum
        )
        assert teacher is not None
        if cfg.adapt_teacher:
            self._teacher_optimizer: torch.optim.Optimizer | None = torch.optim.SGD(
                configure_norm_adaptation(teacher, layer_norm=True),
                lr=cfg.lr_teacher,
                momentum=cfg.momentum,
            )
        else:
            teacher.requires_grad_(False)
            self._teacher_optimizer = None
        teacher.eval()
        self._scopes: dict[Hashable, _ScopeState] = {}
        # a frozen teacher with running statistics maps each image to fixed logits: cacheable
        self.teacher_logits_cache: LogitCache | None = None
        if not cfg.adapt_teacher and cfg.teacher_distill_norm != "batch":
            # on disk only for a CPU teacher: there a cached row equals a fresh one bit for bit
            # whatever the pass size; GPU kernels may round by batch size, so a GPU run keeps its
            # logits for itself (repeatable per seed, not shared across a sweep)
            on_cpu = self._device(teacher).type == "cpu"
            self.teacher_logits_cache = LogitCache(
                teacher, name="teacher", persist=cfg.teacher_logit_cache and on_cpu
            )

    # -- scopes ------------------------------------------------------------------------------
    def _scope(self, scope: Hashable) -> _ScopeState:
        if scope not in self._scopes:
            sequence = np.random.SeedSequence([self.seed, _scope_key(scope)])
            generator = torch.Generator().manual_seed(int(sequence.generate_state(1, np.uint64)[0]))
            cfg: CemaAdapter.Config = self.config  # type: ignore[assignment]
            self._scopes[scope] = _ScopeState(
                norm={k: v.clone() for k, v in self._source_state.items()},
                generator=generator,
                replay=ReplayBuffer(cfg.replay_capacity, cfg.replay_dtype),
                momentum=[None] * len(self._edge_params),
            )
        return self._scopes[scope]

    def replay_size(self, scope: Hashable) -> int:
        """Uploads currently stored in ``scope``'s replay buffer."""
        return len(self._scopes[scope].replay) if scope in self._scopes else 0

    # -- learning ----------------------------------------------------------------------------
    def observe(self, scope: Hashable, images: torch.Tensor) -> AdaptStats:
        """Queue one edge batch's uploads; run every full cloud batch (or one replay-only step)."""
        if images.ndim != 4:
            raise ValueError(f"expected uploads as (n, C, H, W), got shape {tuple(images.shape)}")
        cfg: CemaAdapter.Config = self.config  # type: ignore[assignment]
        with torch.inference_mode(False), torch.enable_grad():
            images = images.detach().to(device="cpu", dtype=torch.float32).clone()
            state = self._scope(scope)
            state.replay.add(images)
            state.pending = images if state.pending is None else torch.cat([state.pending, images])

            losses: list[float] = []
            samples = teacher_steps = teacher_images = 0
            self._load(state)
            try:
                while len(state.pending) >= cfg.batch_size:
                    batch = state.pending[: cfg.batch_size]
                    state.pending = state.pending[cfg.batch_size :]
                    if self._teacher_optimizer is not None:
                        self._teacher_step(batch)
                        teacher_steps += 1
                        teacher_images += len(batch)
                    stored = len(state.replay)
                    if cfg.replay_batch and stored >= max(cfg.replay_min, cfg.replay_batch):
                        replayed = state.replay.sample(cfg.replay_batch, state.generator)
                        batch = torch.cat([batch, replayed])
                    losses.append(self._edge_step(state, batch))
                    samples += len(batch)
                stored = len(state.replay)
                replay_only = cfg.replay_only_batch and not losses
                if replay_only and stored > cfg.replay_min and stored >= cfg.replay_only_batch:
                    batch = state.replay.sample(cfg.replay_only_batch, state.generator)
                    losses.append(self._edge_step(state, batch))
                    samples += len(batch)
            finally:
                self._unload(state, updated=bool(losses))
        loss = float(np.mean(losses)) if losses else None
        # work: the teacher's steps (forward + backward), its distillation logits for every edge
        # step's images (forward), and the edge steps (forward + backward)
        return AdaptStats(
            steps=len(losses),
            samples=samples,
            teacher_steps=teacher_steps,
            loss=loss,
            teacher_forward=teacher_images + samples,
            teacher_backward=teacher_images,
            edge_forward=samples,
            edge_backward=samples,
        )

    def _load(self, state: _ScopeState) -> None:
        """Put the scope's norm state and SGD momentum into the one edge module and optimizer."""
        set_norm_state(self.edge_model, state.norm)
        self._edge_optimizer.state.clear()
        for param, buffer in zip(self._edge_params, state.momentum, strict=True):
            if buffer is not None:
                self._edge_optimizer.state[param] = {"momentum_buffer": buffer}

    def _unload(self, state: _ScopeState, updated: bool) -> None:
        """Read the scope's state back and leave the edge module in its source state."""
        if updated:
            state.norm = get_norm_state(self.edge_model)
            state.momentum = [
                self._edge_optimizer.state.get(param, {}).get("momentum_buffer")
                for param in self._edge_params
            ]
        self._edge_optimizer.state.clear()
        set_norm_state(self.edge_model, self._source_state)

    def _device(self, model: nn.Module) -> torch.device:
        return next(model.parameters()).device

    def _teacher_step(self, images: torch.Tensor) -> None:
        """One entropy-minimisation SGD step of the foundation model (BN train mode)."""
        assert self.teacher is not None and self._teacher_optimizer is not None
        cfg: CemaAdapter.Config = self.config  # type: ignore[assignment]
        if cfg.teacher_distill_norm == "tbr":
            norm = _batch_renorm_mode(self.teacher, init=not self._teacher_renorm_started)
            self._teacher_renorm_started = True
        else:
            norm = _bn_train_mode(self.teacher)
        with norm:
            logits = self.teacher(self.layout(images.to(self._device(self.teacher))))
            loss = teacher_entropy_loss(logits, self.e0)
            self._teacher_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._teacher_optimizer.step()

    @torch.no_grad()
    def _teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        assert self.teacher is not None
        cfg: CemaAdapter.Config = self.config  # type: ignore[assignment]
        if self.teacher_logits_cache is not None:
            return self.teacher_logits_cache(images)
        images = self.layout(images.to(self._device(self.teacher)))
        if cfg.teacher_distill_norm == "batch":
            with _bn_train_mode(self.teacher, update_running=False):
                return self.teacher(images)
        return self.teacher(images)

    def _edge_step(self, state: _ScopeState, images: torch.Tensor) -> float:
        """One distillation SGD step of the edge BN affine; BN running stats update (train mode)."""
        cfg: CemaAdapter.Config = self.config  # type: ignore[assignment]
        teacher_logits = self._teacher_logits(images)
        first = state.version == 0 and cfg.init_stats_from_first_batch
        if cfg.edge_norm == "tbr":
            norm = _batch_renorm_mode(self.edge_model, momentum=cfg.bn_momentum, init=first)
        else:
            norm = _bn_train_mode(self.edge_model, momentum=1.0 if first else cfg.bn_momentum)
        with norm:
            student_logits = self.edge_model(self.layout(images.to(self._device(self.edge_model))))
            loss = cema_distillation_loss(
                student_logits,
                teacher_logits.to(student_logits.device),
                self.e0,
                entropy_weight=cfg.entropy_weight,
                kl_weight=cfg.kl_weight,
                ce_weight=cfg.ce_weight,
            )
            self._edge_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._edge_optimizer.step()
        state.version += 1
        return float(loss.item())
