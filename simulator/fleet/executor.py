"""The fleet-batched inference executor: many devices' edge batches in one forward pass.

The edge model is frozen except its normalization state, and a BatchNorm layer in eval mode is a
per-channel affine map ``y = x * scale + shift`` with ``scale = w / sqrt(running_var + eps)`` and
``shift = b - running_mean * scale``. Nothing else in the network mixes rows of a batch, so the edge
batches of many devices, each with its own normalization state, can run as *one* forward pass in
which every BN layer applies each row's own ``scale`` and ``shift`` (:class:`RowNorm`). With test-batch
statistics (``batch_statistics=True``, the BN-adaptation, Tent and EATA edges) each request's rows
are normalised with that request's own mean and variance, exactly as if it ran alone.

When requests run (the simulation side, see :class:`~simulator.fleet.device.EdgeDevice`): a device
submits its batch when it *starts* computing, with the normalization state it holds at that moment,
and collects the result when the simulated compute time is over. A request's inputs are therefore
fixed from submission, and nothing needs its output before it is due, so the executor waits: the
first :meth:`Ticket.result` call, made at the earliest simulated moment any pending result is due,
runs *every* pending request in one pass (the latest moment that is still exact). Results equal those
of running each request on its own (``executor="serial"``; tested bit for bit, whole-run summaries
included), because every operation in the forward pass computes each row independently of the
others: the only batch-size dependence found, CPU kernels for passes of one or two images, is
avoided by padding tiny passes to four rows (copies, discarded).

Memory per device is its normalization vectors (a flat ``scale``/``shift`` table, rebuilt only when
the device's state object changes), never a model copy.

On an accelerator (``device="cuda"``, see :mod:`simulator.compute`) the executor keeps its own copy
of the model and the state tables there, sends each pass's images as uint8, and returns outputs on
the CPU. Bit-exactness between passes of different sizes is a property of the CPU kernels measured
here; on a GPU, batched and serial agree to float tolerance (kernels may be chosen per batch size).

Three executors, chosen per run (``fleetsim run --executor``):

* ``batched`` (default): all pending requests of the fleet, in passes of up to ``max_rows`` rows
  (on the CPU 128 by default: on the 2-core x86 machine of benchmarks/speed.md, ResNet-20 at 32x32
  runs fastest per image at 64-128 rows and slows down beyond, 1,400 vs 600 images/s at 64 vs
  1,024; see ``DEFAULT_MAX_ROWS`` for a GPU);
* ``serial``: the same row-wise kernels, one request per pass (the exactness reference);
* ``naive``: the per-device loop a straightforward simulator would run: load the device's state
  into the model's BN layers, run its batch alone (eval-mode BN arithmetic, so logits agree with
  the others to float tolerance, not bit for bit).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from simulator.adaptation.losses import softmax_entropy
from simulator.models.logit_cache import MIN_EXACT_ROWS
from simulator.models.norm import norm_layers, set_norm_state, use_batch_statistics

ExecutorKind = Literal["batched", "serial", "naive"]
EXECUTORS: tuple[str, ...] = get_args(ExecutorKind)
#: Rows per forward pass when ``max_rows`` is not given, per device type. CPU: measured (module
#: docstring). GPU: a GPU's images/s keep rising far beyond a fleet's pending rows, so passes take
#: everything pending up to 4,096 rows; not yet measured on a GPU (benchmarks/gpu_check.py does).
DEFAULT_MAX_ROWS: dict[str, int] = {"cpu": 128, "cuda": 4096}

__all__ = [
    "DEFAULT_MAX_ROWS",
    "EXECUTORS",
    "EdgeOutput",
    "ExecutorKind",
    "FleetExecutor",
    "RowNorm",
    "Ticket",
]


@dataclass
class EdgeOutput:
    probs: torch.Tensor  # (B, C) softmax
    entropy: torch.Tensor  # (B,) natural-log entropy
    prediction: torch.Tensor  # (B,) argmax
    logits: torch.Tensor  # (B, C)


def _outputs(logits: torch.Tensor) -> EdgeOutput:
    return EdgeOutput(logits.softmax(dim=1), softmax_entropy(logits), logits.argmax(dim=1), logits)


class RowNorm(nn.Module):
    """Stands in for one BatchNorm layer: each row normalised with its own device's state.

    Before each forward the executor sets ``scale``/``shift`` (B, C) views (eval statistics) or
    ``groups`` (per-request row ranges, batch statistics) on every ``RowNorm`` of the model.
    Activation and dropout modules that some BatchNorm subclasses carry (timm's ``BatchNormAct2d``)
    are applied after the affine map, as those subclasses do.
    """

    def __init__(self, bn: _BatchNorm, offset: int):
        super().__init__()
        self.num_features, self.eps, self.offset = bn.num_features, bn.eps, offset
        self.has_running = bn.running_mean is not None
        self.post = nn.Sequential(
            *(
                m
                for m in (getattr(bn, "drop", None), getattr(bn, "act", None))
                if isinstance(m, nn.Module)
            )
        )
        self.scale: torch.Tensor | None = None
        self.shift: torch.Tensor | None = None
        self.groups: list[tuple[int, int]] | None = None
        self.weight: torch.Tensor | None = None  # (B, C) per-row affine for batch statistics
        self.bias: torch.Tensor | None = None

    def _expand(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return t.reshape(t.shape + (1,) * (ndim - 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups is None:
            assert self.scale is not None and self.shift is not None
            scale, shift = self.scale, self.shift
        else:
            assert self.weight is not None and self.bias is not None
            dims = [0] + list(range(2, x.ndim))
            scales, shifts = [], []
            for start, stop in self.groups:
                part = x[start:stop]
                var, mean = torch.var_mean(part, dim=dims, correction=0)
                inv = torch.rsqrt(var + self.eps)
                group_scale = self.weight[start] * inv
                group_shift = self.bias[start] - mean * group_scale
                scales.append(group_scale.expand(stop - start, -1))
                shifts.append(group_shift.expand(stop - start, -1))
            scale, shift = torch.cat(scales), torch.cat(shifts)
        # one fused kernel (a fused multiply-add where the CPU has one): 1.4-2.4x faster than a
        # multiply and an add, and still computed row by row (benchmarks/speed.md, kernels)
        y = torch.addcmul(self._expand(shift, x.ndim), x, self._expand(scale, x.ndim))
        return self.post(y)


@dataclass
class _Request:
    key: Hashable
    state: Mapping[str, torch.Tensor]
    source: object
    images: torch.Tensor | None
    ticket: Ticket


class Ticket:
    """A submitted request; ``result()`` is due once the device's simulated compute is over."""

    def __init__(self, executor: FleetExecutor):
        self._executor = executor
        self._output: EdgeOutput | None = None
        self.images: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return self._output is not None

    def result(self) -> EdgeOutput:
        """The edge output; runs every pending request of the fleet first if not done yet."""
        if self._output is None:
            self._executor.flush()
        assert self._output is not None
        return self._output


class FleetExecutor:
    """Runs edge inference requests of all devices on one frozen model (see module docstring).

    ``submit(key, state, images=... | source=...)`` queues one device's batch with that device's
    normalization ``state``: uint8 NCHW ``images``, or an opaque ``source`` that the ``load``
    callable turns into images when the batch runs (``load`` gets every pending source at once, so
    loading and corruption run batched across the fleet too). ``key`` identifies the device (its
    state table is cached per key). ``flush()`` runs everything pending.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        kind: ExecutorKind = "batched",
        batch_statistics: bool = False,
        max_rows: int | None = None,
        channels_last: bool = True,
        load: Callable[[Sequence[object]], list[torch.Tensor]] | None = None,
        device: torch.device | str = "cpu",
    ):
        if kind not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}; got {kind!r}")
        self.device = torch.device(device)
        if max_rows is None:
            max_rows = DEFAULT_MAX_ROWS.get(self.device.type, DEFAULT_MAX_ROWS["cuda"])
        if max_rows < 2:
            raise ValueError(f"max_rows must be >= 2, got {max_rows}")
        self.kind, self.batch_statistics, self.max_rows = kind, batch_statistics, max_rows
        self.load = load
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if self.device.type != "cpu" and kind == "naive":  # the caller's model stays where it is
            model = copy.deepcopy(model).to(self.device)
        self.model = model.eval()  # run by the naive executor; the others copy it into row_model
        self.model.requires_grad_(False)
        self._loaded: object = None  # the state dict last copied into ``self.model`` (naive)
        self._pending: list[_Request] = []
        # per device key: (the state object, its table on ``self.device``)
        self._tables: dict[Hashable, tuple[Mapping[str, torch.Tensor], torch.Tensor]] = {}
        self.forward_passes = 0
        self.rows_run = 0
        if kind != "naive":
            self._build_row_model(model)

    # -- the row-wise model --------------------------------------------------------------------
    def _build_row_model(self, model: nn.Module) -> None:
        self.row_model = copy.deepcopy(model).eval()
        self.row_model.requires_grad_(False)
        self._norms: list[tuple[str, RowNorm]] = []
        offset = 0
        for name, bn in norm_layers(self.row_model):
            if bn.running_mean is None and not self.batch_statistics:
                raise ValueError(
                    f"BN layer {name!r} keeps no running statistics: eval-mode rows need them "
                    "(use the naive executor)"
                )
            row = RowNorm(bn, offset)
            offset += bn.num_features
            parent = (
                self.row_model.get_submodule(name.rpartition(".")[0])
                if "." in name
                else (self.row_model)
            )
            setattr(parent, name.rpartition(".")[2], row)
            self._norms.append((name, row))
        self._width = offset
        self.row_model = self.row_model.to(self.device, memory_format=self.memory_format)

    def _table(self, key: Hashable, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Flat (2, total channels) table of one state: eval ``scale``/``shift``, or BN ``weight``/
        ``bias`` under batch statistics. Cached per device key until its state object changes."""
        cached = self._tables.get(key)
        if cached is not None and cached[0] is state:
            return cached[1]
        table = torch.empty(2, self._width)
        for name, row in self._norms:
            c, o = row.num_features, row.offset
            w = state.get(f"{name}.weight")
            b = state.get(f"{name}.bias")
            w = torch.ones(c) if w is None else w.float()
            b = torch.zeros(c) if b is None else b.float()
            if self.batch_statistics:
                table[0, o : o + c], table[1, o : o + c] = w, b
            else:
                scale = w * torch.rsqrt(state[f"{name}.running_var"].float() + row.eps)
                table[0, o : o + c] = scale
                table[1, o : o + c] = b - state[f"{name}.running_mean"].float() * scale
        table = table.to(self.device)
        self._tables[key] = (state, table)
        return table

    def _forward_rows(self, requests: list[_Request]) -> None:
        images = [r.images for r in requests]
        sizes = [len(x) for x in images]  # type: ignore[arg-type]
        # uint8 to the device (4x fewer bytes than float), then the same float ops there
        x = torch.cat(images).to(self.device).float().div_(255.0)  # type: ignore[arg-type]
        real = len(x)
        pad = max(
            0, MIN_EXACT_ROWS - real
        )  # tiny passes take other CPU kernels: pad them with copies
        if pad:
            x = torch.cat([x, x[:1].expand(pad, -1, -1, -1)])
        x = x.contiguous(memory_format=self.memory_format)
        tables = torch.stack([self._table(r.key, r.state) for r in requests])  # (R, 2, W)
        owner = torch.repeat_interleave(torch.arange(len(requests)), torch.tensor(sizes))
        if pad:
            owner = torch.cat([owner, owner[:1].expand(pad)])
        rows = tables.index_select(0, owner.to(self.device))  # (B, 2, W)
        groups = None
        if self.batch_statistics:
            bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
            groups = [(bounds[i], bounds[i + 1]) for i in range(len(sizes))]
            if pad:
                groups.append((real, real + pad))  # the copies form their own group
        for _, norm in self._norms:
            view = rows[:, :, norm.offset : norm.offset + norm.num_features]
            if groups is None:
                norm.scale, norm.shift, norm.groups = view[:, 0], view[:, 1], None
            else:
                norm.weight, norm.bias, norm.groups = view[:, 0], view[:, 1], groups
        with torch.inference_mode():
            logits = self.row_model(x)[:real].cpu()  # results live on the CPU
        out = _outputs(logits)  # row-wise ops: the same per row in any batch
        self.forward_passes += 1
        self.rows_run += real
        fields = (out.probs, out.entropy, out.prediction, out.logits)
        parts = zip(*(t.split(sizes) for t in fields), strict=True)
        for r, (probs, entropy, prediction, row_logits) in zip(requests, parts, strict=True):
            r.ticket._output = EdgeOutput(probs, entropy, prediction, row_logits)

    def _forward_naive(self, request: _Request) -> None:
        if request.state is not self._loaded:
            set_norm_state(self.model, request.state)
            self._loaded = request.state
        x = request.images.to(self.device).float().div_(255.0)  # type: ignore[union-attr]
        with torch.inference_mode():
            if self.batch_statistics:
                with use_batch_statistics(self.model):
                    logits = self.model(x)
            else:
                logits = self.model(x)
        self.forward_passes += 1
        self.rows_run += len(x)
        request.ticket._output = _outputs(logits.cpu())

    # -- requests ------------------------------------------------------------------------------
    def submit(
        self,
        key: Hashable,
        state: Mapping[str, torch.Tensor],
        *,
        images: torch.Tensor | None = None,
        source: object = None,
    ) -> Ticket:
        """Queue one batch (``images`` uint8 NCHW, or a ``source`` for ``load`` at run time)."""
        if (images is None) == (source is None):
            raise ValueError("submit needs exactly one of images= or source=")
        if source is not None and self.load is None:
            raise ValueError("submit(source=...) needs an executor built with load=")
        ticket = Ticket(self)
        self._pending.append(_Request(key, state, source, images, ticket))
        if self.kind != "batched":
            self.flush()
        return ticket

    def flush(self) -> None:
        """Run every pending request (in submission order), as few forward passes as fit."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        loaders = [r for r in pending if r.images is None]
        if loaders:
            assert self.load is not None
            loaded = self.load([r.source for r in loaders])
            for r, images in zip(loaders, loaded, strict=True):
                r.images = images
        for r in pending:
            r.ticket.images = r.images
        if self.kind == "naive":
            for r in pending:
                self._forward_naive(r)
            return
        if self.kind == "serial":
            for r in pending:
                self._forward_rows([r])
            return
        chunk: list[_Request] = []
        rows = 0
        for r in pending:
            n = len(r.images)  # type: ignore[arg-type]
            if chunk and rows + n > self.max_rows:
                self._forward_rows(chunk)
                chunk, rows = [], 0
            chunk.append(r)
            rows += n
        self._forward_rows(chunk)

    def infer(
        self, images: torch.Tensor, state: Mapping[str, torch.Tensor], key: Hashable = None
    ) -> EdgeOutput:
        """Classify one uint8 NCHW batch right away (flushing anything pending with it)."""
        return self.submit(key, state, images=images).result()
