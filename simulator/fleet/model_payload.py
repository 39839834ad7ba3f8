"""Whole edge models as they travel down a downlink: real bytes, encoded on the cloud, decoded on the
device (TDMR's redeployments, :mod:`simulator.fleet.redeploy`).

A payload is what ``torch.save`` writes (the zip container a ``.pt`` file is) of a small dict: the
format, the kind, the model version and the version it builds on, and the tensors. Its length is
the download's size; the device rebuilds its model from those bytes and nothing else.

Kinds (:data:`~simulator.adaptation.whole_model.PayloadKind`):

* ``full``: every tensor of the ``state_dict`` as it is (float32 weights, BN statistics, counters);
* ``changed``: only the tensors that differ (any element, exactly) from the ``state_dict`` the device
  holds; the device takes the rest from what it holds, so its model equals the cloud's exactly;
* ``quantized``: every floating tensor of two or more dimensions whose name ends in ``weight`` (the
  conv and linear weights) as integer codes of ``bits`` bits per element, packed (two 4-bit codes a
  byte), with one float32 scale and one uint8 zero point per output channel, from the project's
  GDFQ/ZeroQ weight quantizer (:func:`simulator.models.quant.weight_qparams`: asymmetric, per output
  channel, zero exactly representable); everything else in float32. The device runs the
  dequantized weights ``(code - zero) * scale``: the values a fake-quantized layer computes with.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import torch

from simulator.adaptation.whole_model import PayloadKind
from simulator.models.quant import weight_qparams

__all__ = ["FORMAT", "decode_model", "encode_model", "is_quantized_weight", "payload_kind"]

FORMAT = "fleetsim-model/1"


def is_quantized_weight(name: str, tensor: torch.Tensor) -> bool:
    """Whether a ``quantized`` payload carries ``name`` as integer codes (conv/linear weights)."""
    return name.endswith("weight") and tensor.is_floating_point() and tensor.ndim >= 2


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    flat = codes.reshape(-1).to(torch.uint8)
    if bits == 8:
        return flat.clone()
    if bits != 4:
        raise ValueError(f"quantized payloads take 8 or 4 bits, got {bits}")
    if len(flat) % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    return (flat[0::2] | (flat[1::2] << 4)).clone()


def _unpack(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    if bits == 8:
        return packed[:count]
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=1).reshape(-1)[:count]


def _quantize(weight: torch.Tensor, bits: int) -> dict[str, object]:
    scale, zero = weight_qparams(weight.float(), bits)
    codes = torch.clamp(torch.round(weight.float() / scale) + zero, 0, 2**bits - 1)
    return {
        "codes": _pack(codes, bits),
        "scale": scale.reshape(-1).float().clone(),
        "zero": zero.reshape(-1).to(torch.uint8).clone(),
        "shape": list(weight.shape),
        "bits": bits,
    }


def _dequantize(entry: Mapping[str, object]) -> torch.Tensor:
    shape = list(entry["shape"])  # type: ignore[arg-type]
    count = 1
    for size in shape:
        count *= size
    codes = _unpack(entry["codes"], int(entry["bits"]), count).float()  # type: ignore[arg-type]
    view = (shape[0],) + (1,) * (len(shape) - 1)
    scale = entry["scale"].reshape(view)  # type: ignore[union-attr]
    zero = entry["zero"].float().reshape(view)  # type: ignore[union-attr]
    return (codes.reshape(shape) - zero) * scale


def encode_model(
    weights: Mapping[str, torch.Tensor],
    kind: PayloadKind,
    version: int,
    *,
    held: Mapping[str, torch.Tensor] | None = None,
    held_version: int | None = None,
    bits: int = 8,
) -> bytes:
    """The bytes that carry ``weights`` (a ``state_dict``, version ``version``) to a device.

    ``changed`` needs ``held``, the ``state_dict`` the device will hold when the payload arrives
    (its version ``held_version``), to leave out what is equal; ``quantized`` takes ``bits``."""
    tensors: dict[str, torch.Tensor] = {}
    quantized: dict[str, dict[str, object]] = {}
    if kind == "changed":
        if held is None or held_version is None:
            raise ValueError("a changed-tensors payload needs the state the device holds")
        if set(held) != set(weights):
            raise ValueError("the held state and the new one have different tensors")
        for name, tensor in weights.items():
            if not torch.equal(tensor, held[name]):
                tensors[name] = tensor.detach().cpu().clone()
    elif kind == "quantized":
        for name, tensor in weights.items():
            if is_quantized_weight(name, tensor):
                quantized[name] = _quantize(tensor.detach().cpu(), bits)
            else:
                tensors[name] = tensor.detach().cpu().clone()
    elif kind == "full":
        tensors = {name: t.detach().cpu().clone() for name, t in weights.items()}
    else:
        raise ValueError(f"unknown payload kind {kind!r}; allowed: full, changed, quantized")
    record = {
        "format": FORMAT,
        "kind": kind,
        "version": int(version),
        "base_version": int(held_version) if kind == "changed" else -1,
        "tensors": tensors,
        "quantized": quantized,
    }
    buffer = io.BytesIO()
    torch.save(record, buffer)
    return buffer.getvalue()


def payload_kind(payload: bytes) -> str:
    """The kind of a payload (``full``, ``changed`` or ``quantized``)."""
    return str(torch.load(io.BytesIO(payload), weights_only=True)["kind"])


def decode_model(
    payload: bytes,
    held: Mapping[str, torch.Tensor] | None = None,
    held_version: int | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """The ``state_dict`` and version a device rebuilds from ``payload`` (``held``: what it holds,
    version ``held_version``, needed by a ``changed`` payload, which must build on that version)."""
    record = torch.load(io.BytesIO(payload), weights_only=True)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError("not a fleetsim model payload")
    kind, version = record["kind"], int(record["version"])
    tensors: dict[str, torch.Tensor] = dict(record["tensors"])
    if kind == "changed":
        if held is None or held_version != record["base_version"]:
            raise ValueError(
                f"payload of version {version} builds on version {record['base_version']}, but "
                f"the device holds version {held_version}"
            )
        return {**{k: v.clone() for k, v in held.items()}, **tensors}, version
    for name, entry in record["quantized"].items():
        tensors[name] = _dequantize(entry)
    return tensors, version
