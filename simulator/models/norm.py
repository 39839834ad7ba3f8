"""Normalization state: the BatchNorm parameters the cloud adapts and sends down to the edge.

CEMA (and Tent, EATA) adapt only the BN affine parameters (gamma, beta); the edge runs BN in eval
mode, so what a device needs is the affine pair plus the running statistics of every BN layer. This
module reads, writes and sizes that state, and provides the test-time BN-statistics mode used by the
BN-adaptation baseline (Schneider et al. 2020; Nado et al. 2020).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "NORM_STATE_FIELDS",
    "configure_norm_adaptation",
    "get_norm_state",
    "norm_affine_parameters",
    "norm_layers",
    "norm_state_nbytes",
    "set_norm_state",
    "use_batch_statistics",
]

NORM_STATE_FIELDS = ("weight", "bias", "running_mean", "running_var")


def norm_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """All BatchNorm layers of ``model`` with their qualified names, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)]


def get_norm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached clones of every BN layer's ``weight``, ``bias``, ``running_mean``, ``running_var``."""
    state: dict[str, torch.Tensor] = {}
    for name, layer in norm_layers(model):
        for field in NORM_STATE_FIELDS:
            tensor = getattr(layer, field)
            if tensor is not None:
                state[f"{name}.{field}"] = tensor.detach().clone()
    return state


def set_norm_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's BN layers in place; the keys must match exactly."""
    targets: dict[str, torch.Tensor] = {}
    for name, layer in norm_layers(model):
        for field in NORM_STATE_FIELDS:
            tensor = getattr(layer, field)
            if tensor is not None:
                targets[f"{name}.{field}"] = tensor
    missing, unexpected = sorted(set(targets) - set(state)), sorted(set(state) - set(targets))
    if missing or unexpected:
        raise KeyError(
            f"norm state does not fit the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
            f", unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    with torch.no_grad():
        for key, target in targets.items():
            value = state[key]
            if value.shape != target.shape:
                raise ValueError(
                    f"norm state {key}: shape {tuple(value.shape)}, model has {tuple(target.shape)}"
                )
            target.copy_(value)


def norm_state_nbytes(state: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> int:
    """Bytes of ``state`` when sent as ``dtype``: sum of numel times that dtype's element size."""
    item = torch.empty((), dtype=dtype).element_size()
    return sum(t.numel() for t in state.values()) * item


def norm_affine_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The BN affine parameters (gamma and beta of every layer that has them)."""
    params: list[nn.Parameter] = []
    for _, layer in norm_layers(model):
        if layer.weight is not None:
            params.append(layer.weight)
        if layer.bias is not None:
            params.append(layer.bias)
    return params


def configure_norm_adaptation(model: nn.Module, layer_norm: bool = False) -> list[nn.Parameter]:
    """Freeze everything but the BN affine parameters (Tent, Wang et al. 2021); return those.

    ``layer_norm=True`` adds the affine parameters of LayerNorm and GroupNorm layers, which is how
    Tent/EATA/CEMA adapt ViTs and other BN-free models (e.g. a timm ViT foundation model).
    """
    model.requires_grad_(False)
    params = norm_affine_parameters(model)
    if layer_norm:
        for layer in model.modules():
            if isinstance(layer, nn.LayerNorm | nn.GroupNorm):
                params += [p for p in (layer.weight, layer.bias) if p is not None]
    if not params:
        kinds = "BatchNorm, LayerNorm or GroupNorm" if layer_norm else "BatchNorm"
        raise ValueError(
            f"{type(model).__name__} has no {kinds} layers with affine parameters to adapt"
        )
    for param in params:
        param.requires_grad_(True)
    return params


@contextlib.contextmanager
def use_batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """BN layers normalise with the current batch's mean and variance, leaving the stored running
    statistics (and the BN ``training`` flags, ``momentum``) untouched; all restored on exit."""
    saved = [
        (layer, layer.training, layer.track_running_stats, layer.running_mean, layer.running_var)
        for _, layer in norm_layers(model)
    ]
    try:
        for layer, *_ in saved:
            # with no running buffers, F.batch_norm uses batch statistics even in eval mode
            layer.track_running_stats = False
            layer.running_mean = None
            layer.running_var = None
        yield model
    finally:
        for layer, training, track, mean, var in saved:
            layer.training = training
            layer.track_running_stats = track
            layer.running_mean = mean
            layer.running_var = var
