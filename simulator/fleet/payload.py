"""Real payload sizes: uploaded images are encoded as configured and their bytes counted."""

from __future__ import annotations

import io
from typing import get_args

import numpy as np
from PIL import Image

from simulator.config import Encoding


def encoded_sizes(images: np.ndarray, encoding: Encoding, jpeg_quality: int = 90) -> np.ndarray:
    """Bytes of each image (uint8 NHWC) once encoded as ``raw``, ``jpeg`` (at a quality) or ``png``."""
    n = len(images)
    if encoding == "raw":
        return np.full(n, int(np.prod(images.shape[1:])), dtype=np.int64)
    sizes = np.empty(n, dtype=np.int64)
    for i in range(n):
        buffer = io.BytesIO()
        image = Image.fromarray(np.ascontiguousarray(images[i]))
        if encoding == "jpeg":
            image.save(buffer, format="JPEG", quality=jpeg_quality)
        elif encoding == "png":
            image.save(buffer, format="PNG")
        else:
            allowed = ", ".join(get_args(Encoding))
            raise ValueError(f"unknown encoding {encoding!r}; allowed: {allowed}")
        sizes[i] = buffer.tell()
    return sizes
