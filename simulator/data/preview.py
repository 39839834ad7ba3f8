"""A figure of every corruption x severity on a few images (``fleetsim data preview``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from simulator.data.corruptions import corrupt

_GAP_PX = 2  # white gap between the images of one cell


def _resize(images_nchw: torch.Tensor, size_px: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of a uint8 batch to ``size_px`` x ``size_px``."""
    if tuple(images_nchw.shape[-2:]) == (size_px, size_px):
        return images_nchw
    x = F.interpolate(images_nchw.float(), size=(size_px, size_px), mode="bilinear", antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def _strip(images_nchw: torch.Tensor) -> np.ndarray:
    """The batch side by side as one HWC image, separated by white gaps."""
    n, _, h, w = images_nchw.shape
    strip = np.full((h, n * w + (n - 1) * _GAP_PX, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images_nchw.permute(0, 2, 3, 1).numpy()):
        x0 = i * (w + _GAP_PX)
        strip[:, x0 : x0 + w] = image
    return strip


def preview_figure(
    images_nhwc: np.ndarray,
    corruptions: list[str],
    severities: list[int],
    *,
    size_px: int = 32,
    seed: int = 0,
) -> Figure:
    """Rows: corruptions; columns: clean, then each severity; each cell shows all the images."""
    clean = _resize(
        torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2), size_px
    )
    indices = torch.arange(clean.shape[0])
    columns = ["clean"] + [f"severity {s}" for s in severities]
    clean_strip = _strip(clean)
    cell_h_in = 0.9
    cell_w_in = cell_h_in * clean_strip.shape[1] / clean_strip.shape[0]
    left_in, top_in, gap_in = 1.4, 0.3, 0.06
    width_in = left_in + len(columns) * (cell_w_in + gap_in)
    height_in = top_in + len(corruptions) * (cell_h_in + gap_in)
    figure = Figure(figsize=(width_in, height_in))
    axes = figure.subplots(len(corruptions), len(columns), squeeze=False)
    figure.subplots_adjust(
        left=left_in / width_in,
        right=1 - gap_in / width_in,
        top=1 - top_in / height_in,
        bottom=gap_in / height_in,
        wspace=gap_in / cell_w_in,
        hspace=gap_in / cell_h_in,
    )
    for row, name in enumerate(corruptions):
        strips = [clean_strip] + [
            _strip(corrupt(clean, name, s, seed=seed, indices=indices)) for s in severities
        ]
        for col, strip in enumerate(strips):
            ax = axes[row, col]
            ax.imshow(strip, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(columns[col], fontsize=9)
            if col == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    return figure
