"""Image classification datasets as in-memory uint8 arrays, found by name through ``DATASETS``.

- ``synthetic``: a procedurally generated 10-class 32x32 RGB task (no download, deterministic per
  seed and split). Classes differ by shape and fine structure (stripes, checkerboards, thin rings),
  while colour, position, scale, rotation, background texture and clutter are random, so noise, blur,
  pixelation and JPEG corruptions hurt a clean-trained model the way they do on CIFAR-10-C.
- ``cifar10``: the standard ``cifar-10-batches-py`` pickles (Krizhevsky 2009), or the JPEG-derived
  npz files of the project's shared data folder; downloads the official tarball where a network exists.
  Variant ``embedded``: the first 512 test images, bit-exact, shipped in the package
  (``simulator/data/embedded``, see its ``SOURCE.md``), so the quickstart needs neither.
- ``imagefolder``: ImageNet-style class folders; :class:`CorruptedFolder` serves the pre-corrupted
  copies of its images from an ImageNet-C tree (Hendrycks & Dietterich 2019) per stream domain.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from simulator.registry import Registry

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATASETS",
    "SYNTHETIC_CLASSES",
    "CorruptedFolder",
    "DatasetError",
    "ImageDataset",
    "create_dataset",
    "embedded_cifar10_path",
    "make_synthetic",
]


class DatasetError(Exception):
    """A dataset cannot be provided (missing files, no network, bad arguments); says what to do."""


@dataclass
class ImageDataset:
    """Images as uint8 ``(N, H, W, 3)`` RGB (HWC) with int64 labels ``(N,)``; image folders also
    keep each image's file path relative to the folder (``<class>/<file>``) in ``files``."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    source: str
    files: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray | slice) -> ImageDataset:
        """A view on some of the images (same class names and source)."""
        files = None if self.files is None else np.asarray(self.files, dtype=object)[indices]
        return ImageDataset(
            self.name,
            self.images[indices],
            self.labels[indices],
            self.class_names,
            self.source,
            None if files is None else list(files),
        )


DATASETS: Registry = Registry("dataset")

SPLITS = ("train", "test")


def create_dataset(
    name: str,
    *,
    split: str = "test",
    root: str | Path | None = None,
    variant: str = "auto",
    seed: int = 0,
    size: int | None = None,
) -> ImageDataset:
    """Build dataset ``name`` (see ``DATASETS.names()``); ``size`` keeps only the first images."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if size is not None and size < 1:
        raise DatasetError(f"size must be a positive number of images, got {size}")
    factory = DATASETS.get(name)
    return factory(split=split, root=root, variant=variant, seed=seed, size=size)


# --------------------------------------------------------------------------------------------------
# synthetic

SYNTHETIC_CLASSES = [
    "disc",
    "ring",
    "square",
    "triangle",
    "cross",
    "horizontal_stripes",
    "diagonal_stripes",
    "checkerboard",
    "two_dots",
    "crescent",
]
SYNTHETIC_DEFAULT_SIZE = {"train": 50_000, "test": 10_000}
_SYNTHETIC_CHUNK = 1_000  # images per independently seeded chunk: prefixes are stable across sizes
_SPLIT_STREAM = {"train": 1, "test": 2}
_SIDE = 32


def _class_rotation(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotation in radians; free where it cannot change the class, small for oriented stripes."""
    n = labels.shape[0]
    free = rng.uniform(-np.pi, np.pi, n)
    small = np.deg2rad(rng.uniform(-15.0, 15.0, n))
    diagonal = np.deg2rad(rng.choice([-45.0, 45.0], n)) + small
    theta = np.where(labels == 5, small, free)
    return np.where(labels == 6, diagonal, theta).astype(np.float32)


def _shape_masks(labels: np.ndarray, u: np.ndarray, v: np.ndarray, scale: np.ndarray, rng):
    """Foreground masks (n, 32, 32) in the rotated frame; ``u, v`` in pixels, ``scale`` = radius."""
    n = labels.shape[0]
    period = rng.uniform(2.8, 3.6, n).astype(np.float32)[:, None, None]  # stripe period, pixels
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    masks = np.zeros(u.shape, dtype=bool)
    for k in range(len(SYNTHETIC_CLASSES)):
        sel = labels == k
        if sel.any():
            masks[sel] = _class_mask(k, u[sel], v[sel], scale[sel], period[sel], phase[sel])
    return masks


def _class_mask(k: int, u, v, scale, period, phase) -> np.ndarray:
    """Mask of class ``k`` (index into ``SYNTHETIC_CLASSES``) for images that all have that class."""
    s = scale[:, None, None]
    x, y = u / s, v / s  # unit-radius shape coordinates
    r2 = x * x + y * y
    patch = np.maximum(np.abs(x), np.abs(y)) < 0.85
    if k == 0:  # disc
        return r2 < 1.0
    if k == 1:  # ring
        return (r2 < 1.0) & (r2 > 0.72**2)
    if k == 2:  # square
        return patch
    if k == 3:  # equilateral triangle: three half-planes with outward normals 120 degrees apart
        tri = np.ones(u.shape, dtype=bool)
        for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            tri &= x * np.cos(angle) + y * np.sin(angle) < 0.55
        return tri
    if k == 4:  # cross
        ax, ay = np.abs(x), np.abs(y)
        return ((ax < 0.2) & (ay < 1.0)) | ((ay < 0.2) & (ax < 1.0))
    if k == 5:  # fine stripes, horizontal up to the class's small rotation
        return patch & (np.sin(2 * np.pi * v / period + phase) > 0)
    if k == 6:  # fine stripes at +-45 degrees (slightly wider: the pixel grid aliases diagonals)
        return patch & (np.sin(2 * np.pi * v / (1.1 * period) + phase) > 0)
    if k == 7:  # checkerboard
        p = period * 1.25
        return patch & (np.sin(2 * np.pi * u / p + phase) * np.sin(2 * np.pi * v / p) > 0)
    if k == 8:  # two dots
        return ((x - 0.5) ** 2 + y * y < 0.26**2) | ((x + 0.5) ** 2 + y * y < 0.26**2)
    if k == 9:  # crescent
        return (r2 < 1.0) & ((x - 0.5) ** 2 + y * y > 0.82**2)
    raise ValueError(f"no synthetic class {k}")


def _synthetic_chunk(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Render one chunk of images for the given labels; float32 work, uint8 out."""
    n = labels.shape[0]
    f32 = np.float32
    grid = np.arange(_SIDE, dtype=f32) + 0.5
    gy, gx = np.meshgrid(grid, grid, indexing="ij")  # (32, 32) pixel centres

    scale = rng.uniform(7.0, 12.0, n).astype(f32)
    margin = 0.75 * scale
    cx = rng.uniform(margin, _SIDE - margin).astype(f32)
    cy = rng.uniform(margin, _SIDE - margin).astype(f32)
    theta = _class_rotation(labels, rng)
    dx = gx[None] - cx[:, None, None]
    dy = gy[None] - cy[:, None, None]
    cos_t, sin_t = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u = cos_t * dx + sin_t * dy
    v = -sin_t * dx + cos_t * dy
    mask = _shape_masks(labels, u, v, scale, rng)

    # colours: background anywhere, foreground offset in brightness so the shape stays visible
    bg = rng.uniform(0.1, 0.9, (n, 3)).astype(f32)
    sign = np.where(bg.mean(1) > 0.5, -1.0, 1.0).astype(f32)[:, None]
    fg = bg + sign * rng.uniform(0.22, 0.5, (n, 1)).astype(f32) + rng.uniform(-0.2, 0.2, (n, 3))
    fg = np.clip(fg, 0.0, 1.0).astype(f32)

    # background texture: a linear gradient plus a slow wave (period >= 12 px, unlike the stripes)
    grad = rng.uniform(-0.12, 0.12, (n, 2)).astype(f32)
    texture = (grad[:, 0, None, None] * (gx - 16) + grad[:, 1, None, None] * (gy - 16)) / 16
    wave_dir = rng.uniform(0, 2 * np.pi, n).astype(f32)[:, None, None]
    wave_period = rng.uniform(12.0, 24.0, n).astype(f32)[:, None, None]
    wave_phase = rng.uniform(0, 2 * np.pi, n).astype(f32)[:, None, None]
    along = np.cos(wave_dir) * gx + np.sin(wave_dir) * gy
    texture = texture + 0.07 * np.sin(2 * np.pi * along / wave_period + wave_phase)
    img = bg[:, None, None, :] + texture[..., None]

    # clutter: a thin random line segment of its own colour, in about half of the images
    has_line = rng.random(n) < 0.5
    p0 = rng.uniform(0, _SIDE, (n, 2)).astype(f32)
    ang = rng.uniform(0, np.pi, n).astype(f32)
    length = rng.uniform(8.0, 20.0, n).astype(f32)
    dirx, diry = np.cos(ang)[:, None, None], np.sin(ang)[:, None, None]
    px, py = gx[None] - p0[:, 0, None, None], gy[None] - p0[:, 1, None, None]
    t = np.clip(px * dirx + py * diry, 0, length[:, None, None])
    dist = np.hypot(px - t * dirx, py - t * diry)
    line = (dist < 0.7) & has_line[:, None, None]
    line_colour = rng.uniform(0, 1, (n, 3)).astype(f32)
    img[line] = np.broadcast_to(line_colour[:, None, None, :], img.shape)[line]

    shading = (
        1.0 + 0.15 * (u / scale[:, None, None]) * rng.uniform(-1, 1, n).astype(f32)[:, None, None]
    )
    fg_img = np.clip(fg[:, None, None, :] * shading[..., None], 0, 1)
    img[mask] = fg_img[mask]
    img += 0.07 * (rng.random(img.shape, dtype=f32) - 0.5)  # sensor noise, std 0.02
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def make_synthetic(size: int, *, split: str = "test", seed: int = 0) -> ImageDataset:
    """Generate ``size`` synthetic images; chunk ``i`` is seeded by ``(seed, split, i)`` so any
    prefix of a larger set equals the smaller set, and train/test never share a random stream."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    images = np.empty((size, _SIDE, _SIDE, 3), dtype=np.uint8)
    labels = np.empty(size, dtype=np.int64)
    for start in range(0, size, _SYNTHETIC_CHUNK):
        rng = np.random.default_rng([seed, _SPLIT_STREAM[split], start // _SYNTHETIC_CHUNK])
        chunk_labels = rng.permutation(np.arange(_SYNTHETIC_CHUNK) % len(SYNTHETIC_CLASSES))
        stop = min(size, start + _SYNTHETIC_CHUNK)
        # render the whole chunk even when only part is kept, so every prefix is reproducible
        images[start:stop] = _synthetic_chunk(chunk_labels, rng)[: stop - start]
        labels[start:stop] = chunk_labels[: stop - start]
    return ImageDataset(
        name="synthetic",
        images=images,
        labels=labels,
        class_names=list(SYNTHETIC_CLASSES),
        source=f"synthetic (procedural, split={split}, seed={seed})",
    )


#: The variants of a dataset that has no others (synthetic; imagefolder, besides its
#: ``<corruption>/<severity>`` folders).
PlainVariant = Literal["auto", "standard"]
PLAIN_VARIANTS: tuple[str, ...] = get_args(PlainVariant)


@DATASETS.register("synthetic")
def synthetic_dataset(
    *, split: str, root: str | Path | None, variant: str, seed: int, size: int | None
) -> ImageDataset:
    """Procedural 10-class 32x32 shapes and textures; no download, deterministic per seed."""
    if variant not in PLAIN_VARIANTS:
        raise DatasetError(f"dataset 'synthetic' has no variant {variant!r}; allowed: auto")
    return make_synthetic(size or SYNTHETIC_DEFAULT_SIZE[split], split=split, seed=seed)


# --------------------------------------------------------------------------------------------------
# CIFAR-10

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
Cifar10Variant = Literal["auto", "standard", "exact_prefix", "jpeg", "embedded"]
CIFAR10_VARIANTS: tuple[str, ...] = get_args(Cifar10Variant)
#: The datasets whose variants are a fixed list, with that list.
DATASET_VARIANTS: dict[str, tuple[str, ...]] = {
    "synthetic": PLAIN_VARIANTS,
    "cifar10": CIFAR10_VARIANTS,
}
EMBEDDED_CIFAR10_FILE = "cifar10_test_exact_512.npz"
EMBEDDED_CIFAR10_SIZE = 512
_PICKLE_DIR = "cifar-10-batches-py"
_NPZ_FILES = {
    ("test", "exact_prefix"): "test_exact_prefix.npz",
    ("test", "jpeg"): "test_jpeg.npz",
    ("train", "jpeg"): "train_jpeg_bytes.npz",
}


def embedded_cifar10_path() -> Path:
    """The CIFAR-10 test sample shipped in the package: test images 0..511, bit-exact
    (``simulator/data/embedded/SOURCE.md``; Krizhevsky 2009)."""
    return Path(__file__).resolve().parent / "embedded" / EMBEDDED_CIFAR10_FILE


def _embedded_cifar10(split: str, root: str | Path | None, size: int | None) -> ImageDataset:
    if split != "test":
        raise DatasetError("cifar10 variant 'embedded' exists only for split 'test'")
    if root is not None:
        raise DatasetError(
            "cifar10 variant 'embedded' reads the file shipped in the package; dataset.root "
            f"({root}) does not apply: drop it, or choose variant auto, standard, exact_prefix "
            "or jpeg"
        )
    if size is not None and size > EMBEDDED_CIFAR10_SIZE:
        raise DatasetError(
            f"cifar10 variant 'embedded' has {EMBEDDED_CIFAR10_SIZE} images; size {size} is more "
            "(allowed: 1 to 512, or null for all)"
        )
    path = embedded_cifar10_path()
    if not path.is_file():
        raise DatasetError(
            f"the embedded CIFAR-10 sample {path} is missing from this installation; reinstall "
            "fleetsim (it ships as package data)"
        )
    images, labels = _read_npz(path, size)
    return ImageDataset(
        name="cifar10",
        images=np.ascontiguousarray(images),
        labels=np.ascontiguousarray(labels),
        class_names=list(CIFAR10_CLASSES),
        source=f"{path} (embedded: bit-exact CIFAR-10 test images 0..{len(labels) - 1}, "
        "Krizhevsky 2009)",
    )


def default_cifar10_cache() -> Path:
    return Path.home() / ".cache" / "fleetsim" / "cifar10"


def cifar10_roots(root: str | Path | None = None) -> list[Path]:
    """Folders searched in order: ``root``, ``$FLEETSIM_CIFAR10``, the shared developer folder
    (``../shared/data/cifar10`` from the cwd and from the repository root), the cache."""
    if root is not None:
        return [Path(root).expanduser()]
    candidates: list[Path] = []
    if os.environ.get("FLEETSIM_CIFAR10"):
        candidates.append(Path(os.environ["FLEETSIM_CIFAR10"]).expanduser())
    repo_root = Path(__file__).resolve().parents[2]
    for base in (Path.cwd(), repo_root):
        candidates.append((base / ".." / "shared" / "data" / "cifar10").resolve())
    candidates.append(default_cifar10_cache())
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def _pickle_folder(root: Path) -> Path | None:
    for folder in (root / _PICKLE_DIR, root):
        if (folder / "test_batch").is_file() and (folder / "data_batch_1").is_file():
            return folder
    return None


def _read_pickles(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    files = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    images, labels = [], []
    for file in files:
        with open(folder / file, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        images.append(data.transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def _read_npz(path: Path, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as npz:
        if "offsets" in npz:  # JPEG files concatenated; decode only what is asked for
            from PIL import Image

            offsets, data, labels = npz["offsets"], npz["data"], npz["y"].astype(np.int64)
            count = len(labels) if size is None else min(size, len(labels))
            images = np.empty((count, 32, 32, 3), dtype=np.uint8)
            for i in range(count):
                blob = data[offsets[i] : offsets[i + 1]].tobytes()
                images[i] = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))
            return images, labels[:count]
        return npz["x"][:size], npz["y"][:size].astype(np.int64)


def _locate_cifar10(roots: list[Path], split: str, variant: str) -> tuple[str, Path] | None:
    """First (kind, path) that serves the split and variant, kind being 'standard' or an npz."""
    for root in roots:
        if variant in ("auto", "standard"):
            folder = _pickle_folder(root)
            if folder is not None:
                return "standard", folder
        if variant == "standard":
            continue
        wanted = "jpeg" if variant == "auto" else variant
        npz = _NPZ_FILES.get((split, wanted))
        if npz is not None and (root / npz).is_file():
            return wanted, root / npz
    return None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_cifar10(cache: Path, *, url: str | None = None, md5: str | None = None) -> Path:
    """Download and unpack the official python-pickle tarball into ``cache``; verifies its md5."""
    url, md5 = url or CIFAR10_URL, md5 or CIFAR10_MD5
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / "cifar-10-python.tar.gz"
    partial = archive.with_suffix(".part")
    print(f"fleetsim: downloading CIFAR-10 (170 MB) from {url} to {cache}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, last_pct = 0, -10
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                done += len(block)
                pct = int(100 * done / total) if total else 0
                if total and pct >= last_pct + 10:
                    print(f"  {pct:3d}% ({done / 1e6:.0f} MB)", file=sys.stderr)
                    last_pct = pct
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DatasetError(_cifar10_missing_message(cache, f"download failed: {exc}")) from exc
    if _md5(partial) != md5:
        partial.unlink(missing_ok=True)
        raise DatasetError(f"downloaded {url} has the wrong md5 (expected {md5}); try again")
    partial.replace(archive)
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(_PICKLE_DIR)]
        try:
            tar.extractall(cache, members=members, filter="data")
        except TypeError:  # Python without extraction filters (before 3.11.4)
            tar.extractall(cache, members=members)
    archive.unlink()
    return cache / _PICKLE_DIR


def _cifar10_missing_message(cache: Path, reason: str) -> str:
    return (
        f"CIFAR-10 not found and could not be downloaded ({reason}). Either place the "
        f"'{_PICKLE_DIR}' folder (from {CIFAR10_URL}) in {cache}, or set the environment variable "
        "FLEETSIM_CIFAR10 to the folder that holds it, or set the scenario key dataset.root to it."
    )


@DATASETS.register("cifar10")
def cifar10_dataset(
    *, split: str, root: str | Path | None, variant: str, seed: int, size: int | None
) -> ImageDataset:
    """CIFAR-10 (Krizhevsky 2009): standard pickles, or the shared JPEG-derived/exact npz files."""
    del seed  # the data is fixed; the argument exists for a uniform factory signature
    if variant not in CIFAR10_VARIANTS:
        raise DatasetError(
            f"unknown cifar10 variant {variant!r}; allowed: {', '.join(CIFAR10_VARIANTS)}"
        )
    if variant == "exact_prefix" and split == "train":
        raise DatasetError("cifar10 variant 'exact_prefix' exists only for split 'test'")
    if variant == "embedded":
        return _embedded_cifar10(split, root, size)
    roots = cifar10_roots(root)
    found = _locate_cifar10(roots, split, variant)
    if found is None and variant in ("auto", "standard"):
        cache = roots[0] if root is not None else default_cifar10_cache()
        download_cifar10(cache)
        found = _locate_cifar10([cache], split, variant)
    if found is None:
        searched = ", ".join(str(p) for p in roots)
        raise DatasetError(
            f"cifar10 variant {variant!r} ({split}) not found in: {searched}. Place the files "
            "there, set FLEETSIM_CIFAR10, or set the scenario key dataset.root (variant "
            "'embedded' needs no files: 512 bit-exact test images ship with fleetsim)."
        )
    kind, path = found
    if kind == "standard":
        images, labels = _read_pickles(path, split)
        images, labels = images[:size], labels[:size]
        source = f"{path} (standard python pickles, {split})"
    else:
        images, labels = _read_npz(path, size)
        note = "bit-exact first 1,017 test images" if kind == "exact_prefix" else "JPEG-derived"
        source = f"{path} ({note}, {split})"
    return ImageDataset(
        name="cifar10",
        images=np.ascontiguousarray(images),
        labels=np.ascontiguousarray(labels),
        class_names=list(CIFAR10_CLASSES),
        source=source,
    )


# --------------------------------------------------------------------------------------------------
# image folders (ImageNet style, ImageNet-C layout too)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _load_image(path: Path, side: int | None) -> np.ndarray:
    """RGB uint8; with ``side``: shorter side resized to ``side * 8 / 7``, then a centre crop
    of ``side`` (the usual ImageNet evaluation transform, 256 -> 224)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if side is not None:
            short = round(side * 8 / 7)
            w, h = image.size
            scale = short / min(w, h)
            image = image.resize((max(short, round(w * scale)), max(short, round(h * scale))))
            w, h = image.size
            left, top = (w - side) // 2, (h - side) // 2
            image = image.crop((left, top, left + side, top + side))
        return np.asarray(image, dtype=np.uint8)


@DATASETS.register("imagefolder")
def imagefolder_dataset(
    *, split: str, root: str | Path | None, variant: str, seed: int, size: int | None
) -> ImageDataset:
    """ImageNet-style ``root/[split/]<class>/*.jpg``; ``variant`` = ``<corruption>/<severity>``
    reads the ImageNet-C layout ``root/<corruption>/<severity>/<class>/*``. Files are taken in a
    seeded random order (so ``size`` keeps a class-mixed subset); mixed image sizes are resized
    and centre-cropped to 224 (ImageNet evaluation transform)."""
    if root is None and os.environ.get("FLEETSIM_IMAGENET"):
        root = os.environ["FLEETSIM_IMAGENET"]
    if root is None:
        raise DatasetError(
            "dataset 'imagefolder' needs a root folder (scenario key dataset.root, or the "
            "environment variable FLEETSIM_IMAGENET)"
        )
    base = Path(root).expanduser()
    if variant not in PLAIN_VARIANTS:
        base = base / variant
    elif (base / split).is_dir():
        base = base / split
    if not base.is_dir():
        raise DatasetError(f"image folder {base} does not exist (root={root}, variant={variant!r})")
    classes = _class_folders(base)
    files = [
        (path, label)
        for label, folder in enumerate(classes)
        for path in sorted(folder.rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class folders under {base}")
    order = np.random.default_rng(seed).permutation(len(files))[:size]
    chosen = [files[i] for i in order]
    first = _load_image(chosen[0][0], None)
    same_size = all(_image_size(path) == first.shape[1::-1] for path, _ in chosen)
    side = None if same_size else 224
    images = np.stack([_load_image(path, side) for path, _ in chosen])
    labels = np.array([label for _, label in chosen], dtype=np.int64)
    return ImageDataset(
        name="imagefolder",
        images=images,
        labels=labels,
        class_names=[folder.name for folder in classes],
        source=f"{base} (image folder, {len(files)} files, seed {seed} order)",
        files=[path.relative_to(base).as_posix() for path, _ in chosen],
    )


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


class CorruptedFolder:
    """Pre-corrupted copies of an image-folder dataset's images, read from an ImageNet-C tree
    ``<root>/<corruption>/<severity>/<class>/<file>`` (Hendrycks & Dietterich 2019) instead of
    corrupting them on the fly.

    Dataset image ``i`` (file ``<class>/<file>`` of the clean folder) is the file of the same
    relative path in every domain folder, so a ``size`` subsample and a stream's seeded order draw
    the same images in every domain. Every domain folder must hold the clean folder's class
    folders (same set, same sorted order, so labels mean the same) and every chosen file; this is
    checked when the folder is opened. Files whose size differs from the dataset's images get the
    evaluation transform (resize, centre crop) to that size; the ImageNet-C files (224x224) need
    none against clean ImageNet validation images, which are brought to 224 too.
    """

    ENV = "FLEETSIM_IMAGENET_C"

    def __init__(
        self, root: str | Path | None, dataset: ImageDataset, domains: list[tuple[str, int]]
    ):
        if root is None and os.environ.get(self.ENV):
            root = os.environ[self.ENV]
        if root is None:
            raise DatasetError(
                "pre-corrupted images need their folder: set the scenario key "
                f"dataset.corrupted_root or the environment variable {self.ENV}"
            )
        if dataset.files is None:
            raise DatasetError(
                f"pre-corrupted folders pair files by path, so they need an image-folder dataset "
                f"(dataset.name imagefolder), not {dataset.name!r}"
            )
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"pre-corrupted folder {self.root} does not exist")
        self.dataset = dataset
        self.side = dataset.images.shape[1:3]
        self.folders: dict[tuple[str, int], Path] = {}
        for corruption, severity in dict.fromkeys(domains):
            if corruption != "clean":
                self.folders[(corruption, severity)] = self._check(corruption, severity)

    def _check(self, corruption: str, severity: int) -> Path:
        """The domain's folder, after checking its class folders and the chosen files."""
        folder = self.root / corruption / str(severity)
        if not folder.is_dir():
            there = self.root / corruption if (self.root / corruption).is_dir() else self.root
            found = sorted(p.name for p in there.iterdir() if p.is_dir())
            what = "severities" if there != self.root else "corruptions"
            raise DatasetError(
                f"pre-corrupted domain {corruption}/{severity}: folder {folder} does not exist; "
                f"{what} in {there}: {', '.join(found) or 'none'}"
            )
        classes = [p.name for p in _class_folders(folder)]
        if classes != self.dataset.class_names:
            clean = self.dataset.class_names
            missing = sorted(set(clean) - set(classes))
            extra = sorted(set(classes) - set(clean))
            raise DatasetError(
                f"class folders of {folder} differ from the clean folder's ({len(classes)} vs "
                f"{len(clean)}): missing {missing[:5]}, extra {extra[:5]}; every domain needs "
                "the same class folders so that labels mean the same"
            )
        absent = [f for f in self.dataset.files or [] if not (folder / f).is_file()]
        if absent:
            raise DatasetError(
                f"{len(absent)} of the dataset's images have no pre-corrupted copy in {folder}, "
                f"e.g. {', '.join(absent[:3])}"
            )
        return folder

    def images(self, corruption: str, severity: int, indices: np.ndarray) -> np.ndarray:
        """uint8 ``(n, H, W, 3)``: the pre-corrupted files of dataset images ``indices``."""
        folder = self.folders.get((corruption, severity))
        if folder is None:
            raise DatasetError(f"domain {corruption}/{severity} was not opened from {self.root}")
        assert self.dataset.files is not None
        height, width = self.side
        out = np.empty((len(indices), height, width, 3), dtype=np.uint8)
        for row, index in enumerate(np.asarray(indices).tolist()):
            path = folder / self.dataset.files[index]
            pixels = _load_image(path, None)
            if pixels.shape[:2] != (height, width):
                if height != width:
                    raise DatasetError(
                        f"{path} is {pixels.shape[1]}x{pixels.shape[0]}, the dataset's images "
                        f"are {width}x{height}; cannot bring it to that size"
                    )
                pixels = _load_image(path, height)
            out[row] = pixels
        return out
