"""Counting a model's work: multiply-accumulates of one forward pass, measured with hooks.

Device profiles turn this count into simulated compute time (``macs / effective throughput``), so a
bigger edge model costs more simulated time on the same hardware, and the same model costs less on
faster hardware. Convolutions and linear layers are counted (they are >99 % of a CNN's arithmetic);
normalization, activations and pooling are not.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_macs"]


def count_macs(model: nn.Module, input_shape: tuple[int, int, int] = (3, 32, 32)) -> int:
    """Multiply-accumulates of one image (C, H, W) through ``model`` (conv + linear layers)."""
    total = 0

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        total += output[0].numel() * per_output

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * module.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    held = next(iter([*model.parameters(), *model.buffers()]), None)
    device = held.device if held is not None else torch.device("cpu")
    try:
        with torch.inference_mode():  # on the model's device: a cloud teacher may sit on a GPU
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
