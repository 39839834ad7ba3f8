"""Fake-quantized (simulated low-bit) models: uniform asymmetric quantization in float, in torch.

The scheme follows GDFQ (Xu et al., "Generative Low-bitwidth Data Free Quantization", ECCV 2020)
and ZeroQ, whose quantizer it uses:

- weights of every ``Conv2d``/``Linear``: asymmetric, one (scale, zero point) per output channel
  from that channel's current min and max, ``2**w_bits`` levels;
- activations: asymmetric, one range per tensor, at the input of every conv/linear layer except
  the first (whose input is the normalised image, kept in float as GDFQ does); the range is
  observed on calibration data, either the plain min and max over all batches (``"minmax"``) or
  GDFQ's bias-corrected exponential moving average of each batch's min and max (``"ema"``, 0.9);
- rounding has a straight-through gradient (Bengio et al. 2013), so the quantized model can be
  fine-tuned (distillation in ``simulator.models.gdfq``) and its BN affine parameters adapted.

BatchNorm is *not* folded into the convolutions: the BN layers stay real ``nn.BatchNorm2d``
modules in float, so ``simulator.models.norm`` (CEMA, Tent, BN adaptation) reads and writes the
normalization state of a quantized edge model exactly as of a float one. The quantized layers
subclass ``nn.Conv2d``/``nn.Linear`` and keep the float ``weight``/``bias`` parameter names, so a
float checkpoint loads into a quantized model and vice versa (plus the activation-range buffers).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ActivationQuantizer",
    "QuantConv2d",
    "QuantLinear",
    "QUANT_BITS",
    "QUANT_METHODS",
    "WEIGHT_BITS_ALLOWED",
    "calibrate_activations",
    "fake_quantize",
    "model_nbytes",
    "observe_activations",
    "quantize_model",
    "quantized_layers",
    "random_noise_images",
    "weight_qparams",
]

WEIGHT_BITS_ALLOWED = range(2, 17)
QUANT_BITS = (8, 4)  # bit widths with zoo names (``<model>-w8a8-<method>``, ``-w4a4-``)
QUANT_METHODS = ("gdfq", "minmax")  # data-free GDFQ; min-max calibration on random noise
Observer = Literal["minmax", "ema"]


def _check_bits(bits: int, what: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in WEIGHT_BITS_ALLOWED:
        raise ValueError(f"{what} must be an integer from 2 to 16, got {bits!r}")
    return bits


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int
) -> torch.Tensor:
    """``(clamp(round(x / scale) + z, 0, 2**bits - 1) - z) * scale`` with a straight-through
    gradient: the forward pass sees the quantized value, the backward pass the identity."""
    levels = 2**bits - 1
    q = torch.clamp(torch.round(x / scale) + zero_point, 0, levels)
    x_q = (q - zero_point) * scale
    return x + (x_q - x).detach()


def _asymmetric_qparams(
    x_min: torch.Tensor, x_max: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point mapping ``[x_min, x_max]`` (widened to hold 0) onto
    ``0 .. 2**bits - 1``; zero is then exactly representable (zero padding stays zero)."""
    x_min = torch.clamp(x_min, max=0.0)
    x_max = torch.clamp(x_max, min=0.0)
    scale = torch.clamp((x_max - x_min) / (2**bits - 1), min=1e-8)
    zero_point = torch.round(-x_min / scale)
    return scale, zero_point


def weight_qparams(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel scale and zero point, shaped to broadcast against ``weight``."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    scale, zero_point = _asymmetric_qparams(flat.min(1).values, flat.max(1).values, bits)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return scale.view(shape), zero_point.view(shape)


class ActivationQuantizer(nn.Module):
    """Per-tensor asymmetric fake-quantization of an activation with an observed range.

    Until a range has been observed (``calibrated`` is False) it passes its input through, so a
    freshly built quantized architecture runs like the float one. ``observing`` is a plain flag,
    independent of ``train()``/``eval()``: adaptation in BN train mode never moves the range."""

    def __init__(self, bits: int, ema_decay: float = 0.9):
        super().__init__()
        self.bits = _check_bits(bits, "activation bits")
        self.ema_decay = ema_decay
        self.observing: Observer | None = None
        self.register_buffer("x_min", torch.zeros(()))
        self.register_buffer("x_max", torch.zeros(()))
        self.register_buffer("calibrated", torch.tensor(False))
        self.register_buffer("ema_steps", torch.zeros(()))
        self.register_buffer("ema_min", torch.zeros(()))
        self.register_buffer("ema_max", torch.zeros(()))
        # ``calibrated`` mirrored as a Python bool (None: read the buffer again): reading a buffer
        # on a GPU waits for the GPU, once per layer and pass otherwise
        self._calibrated_flag: bool | None = None

    def is_calibrated(self) -> bool:
        if self._calibrated_flag is None:
            self._calibrated_flag = bool(self.calibrated)
        return self._calibrated_flag

    def set_calibrated(self, value: bool) -> None:
        self.calibrated.fill_(value)
        self._calibrated_flag = value

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._calibrated_flag = None

    def extra_repr(self) -> str:
        return f"bits={self.bits}, range=[{float(self.x_min):.4g}, {float(self.x_max):.4g}]"

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.min(), x.max()
        if self.observing == "minmax":
            if self.is_calibrated():
                lo, hi = torch.minimum(lo, self.x_min), torch.maximum(hi, self.x_max)
            self.x_min.copy_(lo)
            self.x_max.copy_(hi)
        else:  # "ema": bias-corrected moving average of the batch extremes (GDFQ / ZeroQ)
            d = self.ema_decay
            self.ema_steps += 1
            self.ema_min.mul_(d).add_((1 - d) * lo)
            self.ema_max.mul_(d).add_((1 - d) * hi)
            correction = 1 - d ** float(self.ema_steps)
            self.x_min.copy_(self.ema_min / correction)
            self.x_max.copy_(self.ema_max / correction)
        self.set_calibrated(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing is not None:
            self._observe(x)
        if not self.is_calibrated():
            return x
        scale, zero_point = _asymmetric_qparams(self.x_min, self.x_max, self.bits)
        return fake_quantize(x, scale, zero_point, self.bits)


class _QuantWeightMixin:
    weight: nn.Parameter
    w_bits: int
    act_quant: ActivationQuantizer | None

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the low-bit layer uses it (at most ``2**w_bits`` values per channel)."""
        scale, zero_point = weight_qparams(self.weight, self.w_bits)
        return fake_quantize(self.weight, scale, zero_point, self.w_bits)

    def _quant_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.act_quant is None else self.act_quant(x)


class QuantConv2d(_QuantWeightMixin, nn.Conv2d):
    """``nn.Conv2d`` with per-output-channel fake-quantized weights and (optionally) a
    per-tensor fake-quantized input."""

    def __init__(self, *args, w_bits: int = 8, a_bits: int | None = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.w_bits = _check_bits(w_bits, "weight bits")
        self.act_quant = None if a_bits is None else ActivationQuantizer(a_bits)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, w_bits: int, a_bits: int | None) -> QuantConv2d:
        """A quantized copy of ``conv`` (same hyper-parameters, copied weights)."""
        q = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            w_bits=w_bits,
            a_bits=a_bits,
        )
        q.load_state_dict(conv.state_dict(), strict=False)
        return q.train(conv.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, w_bits={self.w_bits}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._quant_input(x), self.quantized_weight(), self.bias)


class QuantLinear(_QuantWeightMixin, nn.Linear):
    """``nn.Linear`` with per-output-row fake-quantized weights and a fake-quantized input."""

    def __init__(self, *args, w_bits: int = 8, a_bits: int | None = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.w_bits = _check_bits(w_bits, "weight bits")
        self.act_quant = None if a_bits is None else ActivationQuantizer(a_bits)

    @classmethod
    def from_float(cls, linear: nn.Linear, w_bits: int, a_bits: int | None) -> QuantLinear:
        """A quantized copy of ``linear``."""
        q = cls(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            w_bits=w_bits,
            a_bits=a_bits,
        )
        q.load_state_dict(linear.state_dict(), strict=False)
        return q.train(linear.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, w_bits={self.w_bits}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._quant_input(x), self.quantized_weight(), self.bias)


def quantize_model(
    model: nn.Module, w_bits: int, a_bits: int, *, quantize_first_input: bool = False
) -> nn.Module:
    """A copy of ``model`` whose conv/linear layers are fake-quantized (BN layers untouched).

    Weights get ``w_bits`` per output channel; the input of every conv/linear layer but the
    first (``quantize_first_input=False``) gets ``a_bits`` per tensor once its range has been
    observed (``calibrate_activations`` or ``observe_activations``)."""
    _check_bits(w_bits, "weight bits")
    _check_bits(a_bits, "activation bits")
    model = copy.deepcopy(model)
    first = True
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, QuantConv2d | QuantLinear):
                raise ValueError("model is already quantized")
            if type(child) is nn.Conv2d or type(child) is nn.Linear:
                act_bits = None if first and not quantize_first_input else a_bits
                cls = QuantConv2d if isinstance(child, nn.Conv2d) else QuantLinear
                setattr(parent, child_name, cls.from_float(child, w_bits, act_bits))
                first = False
    return model


def quantized_layers(model: nn.Module) -> list[tuple[str, QuantConv2d | QuantLinear]]:
    """The fake-quantized conv/linear layers of ``model`` with their names, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantConv2d | QuantLinear)]


class observe_activations:  # noqa: N801 - used as a context manager, like torch.no_grad
    """Within the block, every activation quantizer of ``model`` records the ranges it sees
    (``"minmax"`` or ``"ema"``); on exit the ranges are frozen."""

    def __init__(self, model: nn.Module, observer: Observer = "minmax", *, reset: bool = True):
        if observer not in get_args(Observer):
            allowed = " or ".join(repr(o) for o in get_args(Observer))
            raise ValueError(f"observer must be {allowed}, got {observer!r}")
        self.quantizers = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
        self.observer: Observer = observer
        self.reset = reset

    def __enter__(self) -> list[ActivationQuantizer]:
        for q in self.quantizers:
            if self.reset:
                for buf in (q.x_min, q.x_max, q.ema_steps, q.ema_min, q.ema_max):
                    buf.zero_()
                q.set_calibrated(False)
            q.observing = self.observer
        return self.quantizers

    def __exit__(self, *exc: object) -> None:
        for q in self.quantizers:
            q.observing = None


@torch.no_grad()
def calibrate_activations(
    model: nn.Module, batches: Iterable[torch.Tensor], observer: Observer = "minmax"
) -> nn.Module:
    """Set every activation range of ``model`` from a forward pass (eval mode) over ``batches``
    (float NCHW in the model's input space); returns ``model``."""
    was_training = model.training
    model.eval()
    seen = 0
    with observe_activations(model, observer):
        for x in batches:
            model(x)
            seen += 1
    if seen == 0:
        raise ValueError("calibrate_activations needs at least one batch")
    return model.train(was_training)


def random_noise_images(
    n: int, *, size: int = 32, channels: int = 3, seed: int = 0
) -> torch.Tensor:
    """``n`` images of i.i.d. uniform [0, 1] pixels: the data-free naive calibration set."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, size, size, generator=gen)


def model_nbytes(model: nn.Module) -> int:
    """Bytes to store ``model`` for inference: each fake-quantized weight at its bit width plus a
    float32 scale and an 8-bit zero point per output channel (and float32 activation ranges);
    everything else (biases, BN parameters and statistics) at its own dtype size."""
    total_bits = 0
    quantized_weights: set[int] = set()
    for _, layer in quantized_layers(model):
        quantized_weights.add(id(layer.weight))
        total_bits += layer.weight.numel() * layer.w_bits + layer.weight.shape[0] * (32 + 8)
        if layer.act_quant is not None:
            total_bits += 2 * 32
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in quantized_weights:
            continue
        total_bits += tensor.numel() * tensor.element_size() * 8
    for q in model.modules():  # activation-range bookkeeping buffers are not stored for inference
        if isinstance(q, ActivationQuantizer):
            total_bits -= sum(b.numel() * b.element_size() * 8 for b in q.buffers())
    return (total_bits + 7) // 8
