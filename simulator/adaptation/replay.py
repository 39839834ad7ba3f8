"""FIFO replay buffer of uploaded images for the cloud adapter (CEMA's ``history_buffer``).

The released code (chenyaofo/CEMA, ``codebase/core/tta/cema.py``) keeps the last 10,000 uploads and
draws ``random.sample`` (uniform, without replacement) from them. Here images are stored compactly
(uint8 by default: uploads are 8-bit images on the wire anyway) and grow with the content, so an
idle scope costs nothing; sampling uses the caller's ``torch.Generator`` for determinism.
"""

from __future__ import annotations

from typing import Literal

import torch

ReplayDtype = Literal["uint8", "float16"]


class ReplayBuffer:
    """Ring buffer of the last ``capacity`` images (float [0, 1] in, float32 [0, 1] out)."""

    def __init__(self, capacity: int, dtype: ReplayDtype = "uint8"):
        if capacity < 0:
            raise ValueError(f"replay capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.dtype = dtype
        self._items: list[torch.Tensor] = []
        self._next = 0  # slot overwritten next once the buffer is full

    def __len__(self) -> int:
        return len(self._items)

    def _encode(self, image: torch.Tensor) -> torch.Tensor:
        if self.dtype == "uint8":
            return (image * 255.0).round().clamp(0, 255).to(torch.uint8)
        return image.to(torch.float16)

    def _decode(self, stored: torch.Tensor) -> torch.Tensor:
        if self.dtype == "uint8":
            return stored.to(torch.float32) / 255.0
        return stored.to(torch.float32)

    def add(self, images: torch.Tensor) -> None:
        """Append a batch (n, C, H, W); the oldest entries are dropped beyond ``capacity``."""
        if self.capacity == 0:
            return
        for image in self._encode(images.detach().cpu()).unbind(0):
            image = image.clone()  # own storage: do not pin the whole batch in memory
            if len(self._items) < self.capacity:
                self._items.append(image)
            else:
                self._items[self._next] = image
                self._next = (self._next + 1) % self.capacity

    def sample(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """``k`` distinct stored images, uniformly at random, as float32 (k, C, H, W) in [0, 1]."""
        if k > len(self._items):
            raise ValueError(f"cannot sample {k} images from a replay buffer of {len(self._items)}")
        indices = torch.randperm(len(self._items), generator=generator)[:k].tolist()
        return self._decode(torch.stack([self._items[i] for i in indices]))
