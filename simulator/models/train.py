"""Training of the zoo's own models (``synthetic_edge``, ``synthetic_teacher``) on CPU.

``train_classifier`` is plain mini-batch SGD (Nesterov momentum, weight decay, one-cycle learning
rate, Smith & Topin 2019) with on-the-fly augmentation:

- ``"none"``: the images as they are;
- ``"standard"``: random 4-pixel shifts (reflect padding) and horizontal flips;
- ``"corruption"``: standard, then about 70% of each batch corrupted by one of gaussian noise,
  gaussian blur, contrast reduction, pixelation or a JPEG-like 8x8 DCT quantisation at a random
  strength (in the spirit of AugMix-style robustness training, Hendrycks et al. 2020), which makes
  the cloud teacher far more robust to the CIFAR-10-C style shifts than the clean-trained edge model.

Training is deterministic for a seed: ``torch.manual_seed``, one seeded generator for batches and
augmentation, a fixed thread count and ``torch.use_deterministic_algorithms``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simulator.data.datasets import ImageDataset, create_dataset

__all__ = [
    "AUGMENTATIONS",
    "ZOO_RECIPES",
    "augment_batch",
    "build_zoo",
    "evaluate",
    "train_classifier",
]

AUGMENTATIONS = ("none", "standard", "corruption", "augmix")
TRAIN_THREADS = 2

# name -> training recipe. The synthetic models train from scratch in about 8 minutes together on 2
# otherwise idle CPU cores; ``resnet56-augmix`` fine-tunes the pretrained CIFAR ResNet-56 (``init``)
# on the 50,000 JPEG-derived CIFAR-10 training images (see ../shared/data/cifar10/SOURCE.md) for
# about 20 minutes on 2 idle CPU cores (81 when other jobs shared them; minutes on a GPU). ``data`` is (dataset, variant).
ZOO_RECIPES: dict[str, dict] = {
    "synthetic_edge": {"epochs": 3, "batch_size": 128, "lr": 0.2, "augment": "standard"},
    "synthetic_teacher": {"epochs": 3, "batch_size": 128, "lr": 0.2, "augment": "corruption"},
    "resnet56-augmix": {
        "epochs": 4,
        "batch_size": 128,
        "lr": 0.03,
        "augment": "augmix",
        "channels_last": True,
        "init": "resnet56",
        "data": ("cifar10", "jpeg"),
    },
}
REPORT_CORRUPTIONS = ("gaussian_noise", "gaussian_blur", "contrast", "pixelate", "jpeg_compression")


@contextlib.contextmanager
def _deterministic(threads: int) -> Iterator[None]:
    """Fixed thread count and deterministic kernels for the duration; restored afterwards."""
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC numpy -> uint8 NCHW tensor (contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def _shift_flip(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (reflect padding) and random horizontal flip."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=gen)
    rows = dy + torch.arange(h)  # (n, h)
    cols = dx + torch.arange(w)  # (n, w)
    flip = torch.rand(n, generator=gen) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """1-D gaussian blur with reflect boundaries as an (n, n) matrix: blur(x) = M x M^T."""
    radius = min(n - 1, max(1, math.ceil(2.5 * sigma)))
    offsets = torch.arange(-radius, radius + 1)
    weights = torch.exp(-0.5 * (offsets.float() / sigma) ** 2)
    weights = weights / weights.sum()
    src = torch.arange(n)[:, None] + offsets[None, :]
    src = torch.where(src < 0, -src, src)
    src = torch.where(src >= n, 2 * (n - 1) - src, src)
    m = torch.zeros(n, n)
    m.scatter_add_(1, src, weights.expand(n, -1).contiguous())
    return m


def _pixelate_matrix(n: int, factor: float) -> torch.Tensor:
    """Box-average down to ``round(n * factor)`` cells, then nearest upsampling, as a matrix."""
    cells = max(2, round(n * factor))
    cell_of = (torch.arange(n) * cells) // n  # nearest-neighbour cell of each output pixel
    members = cell_of[None, :] == cell_of[:, None]
    return members.float() / members.sum(1, keepdim=True)


def _separable(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply the same 1-D linear operator along rows and columns of NCHW (square) images."""
    return m @ x @ m.T


def _dct_matrix(n: int = 8) -> torch.Tensor:
    """Orthonormal DCT-II matrix D; the 2-D DCT of a block B is D B D^T."""
    k = torch.arange(n, dtype=torch.float32)[:, None]
    i = torch.arange(n, dtype=torch.float32)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


# JPEG luminance quantisation table (ITU-T T.81, Annex K.1), in grey levels
_JPEG_TABLE = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)


def _jpeg_like(x: torch.Tensor, table_scale: float) -> torch.Tensor:
    """Quantise 8x8 DCT blocks with the JPEG table times ``table_scale`` (larger = lower quality).

    The blocking and ringing of JPEG without the colour conversion and entropy coding; the 2-D
    DCT is one (64, 64) matrix kron(D, D) applied to the flattened blocks."""
    n, c, h, w = x.shape
    d = _dct_matrix(8)
    dct2 = torch.kron(d, d)
    q = (_JPEG_TABLE * table_scale / 255.0).reshape(64)
    blocks = x.reshape(n, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(-1, 64)
    coeff = (blocks - 0.5) @ dct2.T
    coeff = torch.round(coeff / q) * q
    blocks = coeff @ dct2 + 0.5
    return blocks.reshape(n, c, h // 8, w // 8, 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(n, c, h, w)


def _corrupt_mix(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Corrupt about 70% of the batch, one corruption type per image, random strength."""
    n = x.shape[0]
    kind = torch.randint(0, 7, (n,), generator=gen)  # 0, 1: clean; 2..6: corruptions
    out = x.clone()

    def uniform(lo: float, hi: float, size: int = 1) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(size, generator=gen)

    sel = kind == 2  # gaussian noise, std up to 0.3 (CIFAR-10-C severity 5 is 0.10)
    if sel.any():
        sigma = uniform(0.02, 0.3, int(sel.sum())).view(-1, 1, 1, 1)
        noise = torch.randn(out[sel].shape, generator=gen)
        out[sel] = out[sel] + sigma * noise
    sel = kind == 3  # gaussian blur
    if sel.any():
        out[sel] = _separable(out[sel], _blur_matrix(x.shape[-1], float(uniform(0.4, 1.6))))
    sel = kind == 4  # contrast towards the image mean
    if sel.any():
        c = uniform(0.08, 0.7, int(sel.sum())).view(-1, 1, 1, 1)
        mean = out[sel].mean(dim=(1, 2, 3), keepdim=True)
        out[sel] = (out[sel] - mean) * c + mean
    sel = kind == 5  # pixelate
    if sel.any():
        out[sel] = _separable(out[sel], _pixelate_matrix(x.shape[-1], float(uniform(0.3, 0.8))))
    sel = kind == 6  # JPEG-like block quantisation
    if sel.any():
        out[sel] = _jpeg_like(out[sel], float(uniform(0.5, 4.0)))
    return out.clamp_(0.0, 1.0)


# AugMix's operations (Hendrycks et al., ICLR 2020): those that do not overlap with the test
# corruptions (no contrast, brightness, colour, sharpness, noise, blur). Each takes float NCHW images in
# [0, 1] and a per-image strength in (0, 1] (``level``), and returns the same shape.
def _autocontrast(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(1e-8), x)


def _equalize(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    as_uint8 = (x * 255.0).round_().to(torch.uint8)
    return TF.equalize(as_uint8).float().div_(255.0)


def _posterize(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    bits = (4 - (level * 4).floor().clamp(0, 3)).to(torch.int32)  # 4 .. 1 bits kept
    mask = (255 - (2 ** (8 - bits) - 1)).to(torch.uint8).view(-1, 1, 1, 1)
    as_uint8 = (x * 255.0).round_().to(torch.uint8)
    return (as_uint8 & mask).float().div_(255.0)


def _solarize(x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    threshold = (1.0 - level).view(-1, 1, 1, 1)
    return torch.where(x >= threshold, 1.0 - x, x)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Per-image 2x3 affine maps in normalized coordinates, bilinear, zero (black) fill."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _signed(level: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    sign = torch.where(torch.rand(level.shape, generator=gen) < 0.5, -1.0, 1.0)
    return level * sign


def _eye_theta(n: int) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).repeat(n, 1, 1)


def _rotate(x: torch.Tensor, level: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    angle = torch.deg2rad(_signed(level * 30.0, gen))
    theta = _eye_theta(len(x))
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle), torch.cos(angle)
    return _affine(x, theta)


def _shear(x: torch.Tensor, level: torch.Tensor, gen: torch.Generator, axis: int) -> torch.Tensor:
    theta = _eye_theta(len(x))
    theta[:, axis, 1 - axis] = _signed(level * 0.3, gen)
    return _affine(x, theta)


def _translate(
    x: torch.Tensor, level: torch.Tensor, gen: torch.Generator, axis: int
) -> torch.Tensor:
    theta = _eye_theta(len(x))
    theta[:, axis, 2] = _signed(level * (2.0 / 3.0), gen)  # up to a third of the image side
    return _affine(x, theta)


_AUGMIX_OPS = (
    lambda x, lv, g: _autocontrast(x, lv),
    lambda x, lv, g: _equalize(x, lv),
    lambda x, lv, g: _posterize(x, lv),
    lambda x, lv, g: _solarize(x, lv),
    _rotate,
    lambda x, lv, g: _shear(x, lv, g, axis=0),
    lambda x, lv, g: _shear(x, lv, g, axis=1),
    lambda x, lv, g: _translate(x, lv, g, axis=0),
    lambda x, lv, g: _translate(x, lv, g, axis=1),
)
AUGMIX_WIDTH, AUGMIX_MAX_DEPTH, AUGMIX_SEVERITY = 3, 3, 3  # AugMix's CIFAR defaults


def _exponential(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Exponential(1) = Gamma(1, 1) draws from ``gen``: normalised, they give AugMix's
    Dirichlet(1, ..., 1) and Beta(1, 1) mixing weights (its default alpha = 1)."""
    return -torch.log1p(-torch.rand(shape, generator=gen))


def _augmix(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """AugMix-style mixing of each image: ``AUGMIX_WIDTH`` chains of 1..``AUGMIX_MAX_DEPTH`` random
    operations, combined with Dirichlet(1) weights, then blended with the original image by
    Beta(1, 1), AugMix's default alpha. Strengths are uniform up to ``AUGMIX_SEVERITY``/10 of each
    op's range, as in AugMix. The Jensen-Shannon consistency loss of the paper is not used (it
    triples the compute)."""
    n = len(x)
    weights = _exponential((AUGMIX_WIDTH, n), gen)
    weights = weights / weights.sum(0, keepdim=True)  # Dirichlet(1, ..., 1) per image
    g1, g2 = _exponential((n,), gen), _exponential((n,), gen)
    blend = (g1 / (g1 + g2)).view(-1, 1, 1, 1)  # Beta(1, 1)
    mixed = torch.zeros_like(x)
    for chain in range(AUGMIX_WIDTH):
        out = x.clone()
        depth = torch.randint(1, AUGMIX_MAX_DEPTH + 1, (n,), generator=gen)
        for step in range(AUGMIX_MAX_DEPTH):
            op = torch.randint(0, len(_AUGMIX_OPS), (n,), generator=gen)
            level = torch.rand(n, generator=gen) * (AUGMIX_SEVERITY / 10.0) + 0.01
            active = depth > step
            for k, fn in enumerate(_AUGMIX_OPS):
                sel = (op == k) & active
                if sel.any():
                    out[sel] = fn(out[sel], level[sel], gen).clamp_(0.0, 1.0)
        mixed += weights[chain].view(-1, 1, 1, 1) * out
    return (1.0 - blend) * x + blend * mixed


def augment_batch(x: torch.Tensor, augment: str, gen: torch.Generator) -> torch.Tensor:
    """Apply augmentation ``augment`` (one of ``AUGMENTATIONS``) to float NCHW in [0, 1]."""
    if augment == "none":
        return x
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}; allowed: {', '.join(AUGMENTATIONS)}")
    x = _shift_flip(x, gen)
    if augment == "corruption":
        return _corrupt_mix(x, gen)
    if augment == "augmix":
        return _augmix(x, gen)
    return x


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=not enabled,
    )


def train_classifier(
    model: nn.Module,
    dataset: ImageDataset,
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.1,
    augment: str = "standard",
    seed: int = 0,
    progress: bool = True,
    weight_decay: float = 5e-4,
    threads: int = TRAIN_THREADS,
    channels_last: bool = False,
) -> dict[str, float]:
    """Train ``model`` (input in [0, 1]) with cross-entropy; returns loss, accuracy and wall time.

    SGD with Nesterov momentum 0.9 and a one-cycle learning-rate schedule peaking at ``lr``.
    ``channels_last`` trains in NHWC memory layout: about 4x faster for the CIFAR ResNets on this
    project's 2-core CPU machine (ResNet-56: 39 -> 171 images/s), numerically a different order of
    summation, so recipes that had shipped weights without it keep it off.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}; allowed: {', '.join(AUGMENTATIONS)}")
    start = time.perf_counter()
    images, labels = _to_tensor(dataset.images), torch.from_numpy(dataset.labels)
    steps_per_epoch = math.ceil(len(dataset) / batch_size)
    with _deterministic(threads):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        decay = [p for n, p in model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
        optimizer = torch.optim.SGD(
            [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay}],
            lr=lr,
            momentum=0.9,
            nesterov=True,
        )
        total_steps = epochs * steps_per_epoch
        # one-cycle needs a rising and a falling phase of at least one step each
        warmup = min(0.75, max(0.25, 2.5 / total_steps))
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=max(total_steps, 2), pct_start=warmup
        )
        if channels_last:
            model.to(memory_format=torch.channels_last)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        with _progress(progress) as bar:
            task = bar.add_task(f"train {augment}", total=epochs * steps_per_epoch, info="")
            for epoch in range(epochs):
                order = torch.randperm(len(dataset), generator=gen)
                loss_sum, correct, seen = 0.0, 0, 0
                for step in range(steps_per_epoch):
                    idx = order[step * batch_size : (step + 1) * batch_size]
                    x = augment_batch(images[idx].float().div_(255.0), augment, gen)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    y = labels[idx]
                    logits = model(x)
                    loss = F.cross_entropy(logits, y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step()
                    loss_sum += float(loss.detach()) * len(y)
                    correct += int((logits.argmax(1) == y).sum())
                    seen += len(y)
                    info = (
                        f"epoch {epoch + 1}/{epochs} loss {loss_sum / seen:.3f} "
                        f"acc {correct / seen:.3f}"
                    )
                    bar.update(task, advance=1, info=info)
                if progress:
                    bar.console.log(f"{augment}: {info}")
        model.to(memory_format=torch.contiguous_format)
        model.eval()
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_accuracy": correct / max(seen, 1),
        "train_wall_s": time.perf_counter() - start,
    }


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    batch_size: int = 500,
) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on uint8 images, NHWC numpy or NCHW tensor."""
    if isinstance(images, np.ndarray):
        images = _to_tensor(images)
    labels = torch.as_tensor(labels)
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        x = images[i : i + batch_size].float().div_(255.0)
        correct += int((model(x).argmax(1) == labels[i : i + batch_size]).sum())
    return correct / max(len(labels), 1)


def corruption_accuracy(
    model: nn.Module,
    dataset: ImageDataset,
    corruptions: tuple[str, ...] = REPORT_CORRUPTIONS,
    severities: tuple[int, ...] = (3, 5),
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy under the simulator's CIFAR-10-C corruptions: ``{"<name>@<severity>": acc}``."""
    from simulator.data.corruptions import corrupt

    images = _to_tensor(dataset.images)
    indices = torch.arange(len(dataset))
    return {
        f"{name}@{severity}": evaluate(
            model, corrupt(images, name, severity, seed=seed, indices=indices), dataset.labels
        )
        for name in corruptions
        for severity in severities
    }


def _recipe_data(recipe: dict, split: str, seed: int, size: int | None) -> ImageDataset:
    name, variant = recipe.get("data", ("synthetic", "auto"))
    if split == "test" and name == "cifar10":  # the bit-exact images (JPEG-derived: ~10 lower)
        variant = "exact_prefix"
    return create_dataset(name, split=split, variant=variant, seed=seed, size=size)


SYNTHETIC_ZOO = ("synthetic_edge", "synthetic_teacher")


def build_zoo(
    out_dir: Path,
    names: list[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    *,
    train_size: int | None = None,
    test_size: int | None = None,
    epochs: int | None = None,
) -> dict[str, dict]:
    """Train zoo models by their ``ZOO_RECIPES`` and write ``<out_dir>/<name>.pt`` (bare-network
    state_dict). ``names`` defaults to the two synthetic models (minutes); ``resnet56-augmix``
    (about 20 minutes on 2 idle CPU cores) is built only when named.

    Returns per model: clean test accuracy (synthetic test split; for CIFAR-10 recipes the bit-exact
    first 1,017 test images), parameter count, training wall time and the recipe used.
    ``train_size``, ``test_size`` and ``epochs`` shrink the work (smoke tests)."""
    from simulator.models.zoo import create_model

    names = list(SYNTHETIC_ZOO) if names is None else names
    unknown = [n for n in names if n not in ZOO_RECIPES]
    if unknown:
        raise ValueError(f"cannot build {unknown}; buildable: {', '.join(ZOO_RECIPES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for name in names:
        recipe = dict(ZOO_RECIPES[name])
        if epochs is not None:
            recipe["epochs"] = epochs
        train_set = _recipe_data(recipe, "train", seed, train_size)
        test_set = _recipe_data(recipe, "test", seed, test_size)
        torch.manual_seed(seed)  # the initial weights; torch's default seed differs per process
        init = recipe.pop("init", None)
        recipe.pop("data", None)
        model = (
            create_model(init, pretrained=True) if init else create_model(name, pretrained=False)
        )
        stats = train_classifier(model, train_set, seed=seed, progress=progress, **recipe)
        path = out_dir / f"{name}.pt"
        tmp = path.with_suffix(".pt.tmp")
        torch.save(model.net.state_dict(), tmp)
        tmp.replace(path)
        with _deterministic(TRAIN_THREADS):
            clean = evaluate(model, test_set.images, test_set.labels)
        results[name] = {
            "clean_accuracy": clean,
            "params": sum(p.numel() for p in model.parameters()),
            "path": str(path),
            "recipe": dict(recipe, init=init, seed=seed, train_size=len(train_set)),
            **stats,
        }
    return results
