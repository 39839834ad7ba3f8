"""Disk cache of corrupted sets, shared by all runs of a sweep.

A corrupted set (one dataset under one corruption, severity and seed) is deterministic (see
``corruptions.py``), so it is computed once and stored as a memory-mapped ``.npy`` file of uint8
NHWC pixels, with a JSON sidecar recording shape, dtype, a BLAKE2b checksum of the pixel bytes and
the parameters that produced them.

Keys: the dataset's name plus a BLAKE2b hash of its pixels and labels (so two datasets with the same
name but other images never share an entry), the corruption, the severity, and the seed for random
corruptions only (deterministic corruptions give the same pixels for every seed, so all seeds share
one entry).

Safety: an entry is written to temporary files and renamed into place (data first, sidecar last), so
readers never see a half-written entry, and two processes building the same entry both succeed (the
last rename wins; both wrote identical bytes); an advisory file lock makes the second builder wait
for the first and then reuse its entry instead of computing it again. A hit is verified (shape, dtype, checksum) before it is
returned; a corrupt or truncated entry is rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from simulator.data.corruptions import CORRUPTIONS, corrupt, is_random
from simulator.data.datasets import ImageDataset

__all__ = ["CorruptionCache", "default_cache_root", "dataset_fingerprint"]

FORMAT_VERSION = 1
_HASH_BLOCK_BYTES = 64 << 20

ProgressFn = Callable[[int], None]  # called with the number of images just finished


def default_cache_root() -> Path:
    """``$FLEETSIM_CACHE`` if set, else ``~/.cache/fleetsim/corrupted``."""
    env = os.environ.get("FLEETSIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fleetsim" / "corrupted"


def _checksum(array: np.ndarray) -> str:
    """BLAKE2b-128 of an array's bytes (C order), hashed in blocks to bound memory."""
    digest = hashlib.blake2b(digest_size=16)
    flat = array.reshape(-1)
    step = _HASH_BLOCK_BYTES // max(array.itemsize, 1)
    for start in range(0, flat.shape[0], step):
        digest.update(np.ascontiguousarray(flat[start : start + step]).data)
    return digest.hexdigest()


def dataset_fingerprint(dataset: ImageDataset) -> str:
    """Content identity of a dataset: hash of its shape, pixels and labels (16 hex digits)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(repr((dataset.name, dataset.images.shape, str(dataset.images.dtype))).encode())
    digest.update(_checksum(dataset.images).encode())
    digest.update(np.ascontiguousarray(dataset.labels, dtype=np.int64).data)
    return digest.hexdigest()


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    """Advisory exclusive lock (``flock``) on ``<entry>.lock`` while an entry is built.

    Only saves duplicate work: correctness never depends on it (writes are atomic renames), so
    where ``fcntl`` is missing (Windows) building proceeds unlocked.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class CorruptionCache:
    """Corrupted sets on disk: ``get(dataset, corruption, severity, seed)`` -> NHWC uint8 memmap.

    ``chunk_images`` (images of 32x32 per chunk, fewer for larger images: same pixel count) bounds
    the memory used while building; ``progress`` shows a rich progress bar
    on stderr while an entry is built (when no ``on_progress`` callback is passed to ``get``).
    """

    def __init__(
        self, root: str | Path | None = None, *, chunk_images: int = 256, progress: bool = False
    ):
        self.root = Path(root) if root is not None else default_cache_root()
        self.chunk_images = chunk_images
        self.progress = progress
        self._fingerprints: dict[int, tuple[ImageDataset, str]] = {}
        self._verified: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime_ns) seen valid

    # ---- keys and paths ----------------------------------------------------------------------

    def fingerprint(self, dataset: ImageDataset) -> str:
        """``dataset_fingerprint``, memoised per dataset object (hashing is O(pixels))."""
        cached = self._fingerprints.get(id(dataset))
        if cached is not None and cached[0] is dataset:
            return cached[1]
        fingerprint = dataset_fingerprint(dataset)
        self._fingerprints[id(dataset)] = (dataset, fingerprint)
        return fingerprint

    def path(self, dataset: ImageDataset, corruption: str, severity: int, seed: int) -> Path:
        """Where the entry's ``.npy`` lives (its sidecar is the same path with ``.json``)."""
        CORRUPTIONS.get(corruption)  # unknown names fail here, listing the valid ones
        if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
            raise ValueError(f"corruption severity must be an integer 1-5, got {severity!r}")
        seed_part = f"seed{seed}" if is_random(corruption) else "seed-any"
        folder = self.root / f"{dataset.name}-{self.fingerprint(dataset)}"
        return folder / f"{corruption}-s{severity}-{seed_part}.npy"

    # ---- lookup --------------------------------------------------------------------------------

    def get(
        self,
        dataset: ImageDataset,
        corruption: str,
        severity: int,
        seed: int,
        *,
        on_progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """The whole dataset corrupted, as a read-only uint8 (N, H, W, 3) memmap; built if missing."""
        path = self.path(dataset, corruption, severity, seed)
        expected_shape = tuple(dataset.images.shape)
        hit = self._load_verified(path, expected_shape)
        if hit is not None:
            if on_progress is not None:
                on_progress(len(dataset))
            return hit
        with _build_lock(path):  # concurrent builders of one entry wait, then hit
            hit = self._load_verified(path, expected_shape)
            if hit is None:
                if path.exists() or path.with_suffix(".json").exists():
                    warnings.warn(
                        f"corruption cache entry {path} failed verification (shape, format or "
                        "checksum: damaged, truncated or from another version); rebuilding it",
                        stacklevel=2,
                    )
                self._build(path, dataset, corruption, severity, seed, on_progress)
                hit = self._load_verified(path, expected_shape)
            elif on_progress is not None:
                on_progress(len(dataset))
        if hit is None:  # pragma: no cover - only if another writer corrupts it meanwhile
            raise RuntimeError(f"corruption cache entry {path} failed verification after build")
        return hit

    def contains(self, dataset: ImageDataset, corruption: str, severity: int, seed: int) -> bool:
        """Whether a verified entry exists (a corrupt one counts as missing)."""
        path = self.path(dataset, corruption, severity, seed)
        return self._load_verified(path, tuple(dataset.images.shape)) is not None

    def _load_verified(self, path: Path, expected_shape: tuple[int, ...]) -> np.ndarray | None:
        sidecar = path.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text())
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            stat = path.stat()
        except (OSError, ValueError, EOFError):  # missing, truncated, or garbage header
            return None
        if (
            meta.get("format") != FORMAT_VERSION
            or tuple(meta.get("shape", ())) != expected_shape
            or tuple(array.shape) != expected_shape
            or array.dtype != np.uint8
            or meta.get("dtype") != "uint8"
        ):
            return None
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._verified.get(path) != stamp:
            if _checksum(array) != meta.get("checksum"):
                return None
            self._verified[path] = stamp
        return array

    # ---- build ---------------------------------------------------------------------------------

    def _build(
        self,
        path: Path,
        dataset: ImageDataset,
        corruption: str,
        severity: int,
        seed: int,
        on_progress: ProgressFn | None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._verified.pop(path, None)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        sidecar_tmp = tmp.with_suffix(".json.tmp")
        try:
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=tuple(dataset.images.shape)
            )
            self._fill(out, dataset, corruption, severity, seed, on_progress)
            out.flush()
            meta = {
                "format": FORMAT_VERSION,
                "shape": list(out.shape),
                "dtype": "uint8",
                "layout": "NHWC",
                "checksum": _checksum(out),
                "checksum_algorithm": "blake2b-128",
                "dataset": dataset.name,
                "dataset_source": dataset.source,
                "dataset_fingerprint": self.fingerprint(dataset),
                "corruption": corruption,
                "severity": severity,
                "seed": seed if is_random(corruption) else None,
            }
            del out
            sidecar_tmp.write_text(json.dumps(meta, indent=2) + "\n")
            os.replace(tmp, path)  # data first: a sidecar never points at missing pixels
            os.replace(sidecar_tmp, path.with_suffix(".json"))
        finally:
            tmp.unlink(missing_ok=True)
            sidecar_tmp.unlink(missing_ok=True)

    def _fill(
        self,
        out: np.ndarray,
        dataset: ImageDataset,
        corruption: str,
        severity: int,
        seed: int,
        on_progress: ProgressFn | None,
    ) -> None:
        n = out.shape[0]
        if on_progress is None and self.progress:
            from rich.console import Console
            from rich.progress import Progress

            with Progress(console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task(f"{corruption} s{severity}", total=n)
                self._fill(
                    out,
                    dataset,
                    corruption,
                    severity,
                    seed,
                    lambda k: bar.advance(task, k),
                )
            return
        height, width = out.shape[1:3]
        chunk = max(1, min(self.chunk_images, self.chunk_images * 32 * 32 // (height * width)))
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            clean = torch.from_numpy(np.ascontiguousarray(dataset.images[start:stop]))
            corrupted = corrupt(
                clean.permute(0, 3, 1, 2).contiguous(),
                corruption,
                severity,
                seed=seed,
                indices=torch.arange(start, stop),
            )
            out[start:stop] = corrupted.permute(0, 2, 3, 1).numpy()
            if on_progress is not None:
                on_progress(stop - start)
