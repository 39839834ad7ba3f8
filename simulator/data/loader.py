"""The images of edge batches: dataset pixels, corrupted per sample domain (uint8 NCHW).

A device's stream names, per batch, which dataset images it sees and in which domain; the loader
turns that into pixels: from the disk cache of corrupted sets, from an ImageNet-C tree's files, or
by corrupting on the fly (the same pixels each way).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from simulator.data.cache import CorruptionCache, default_cache_root
from simulator.data.corruptions import corrupt
from simulator.data.datasets import CorruptedFolder, ImageDataset
from simulator.data.streams import DeviceStream

__all__ = ["BatchLoader", "corruption_cache"]

_CACHES: dict[Path, CorruptionCache] = {}


def corruption_cache() -> CorruptionCache:
    """One cache object per root per process, so a set verified (checksummed) once is not
    re-verified by every later run of a sweep in this process (unless its file changed)."""
    root = default_cache_root()
    if root not in _CACHES:
        _CACHES[root] = CorruptionCache(root)
    return _CACHES[root]


class BatchLoader:
    """Images of one edge batch: dataset pixels, corrupted per sample domain (uint8 NCHW).

    With a ``CorruptionCache``, corrupted pixels are read from its memory-mapped sets (built once,
    shared by a sweep's runs) instead of being computed per batch; the pixels are identical. With
    a ``CorruptedFolder``, they are the pre-corrupted files of an ImageNet-C tree instead.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        seed: int,
        cache: CorruptionCache | None = None,
        folder: CorruptedFolder | None = None,
    ):
        self.dataset = dataset
        self.images = torch.from_numpy(dataset.images).permute(0, 3, 1, 2)
        self.seed = seed
        self.cache = cache
        self.folder = folder
        self._sets: dict[tuple[str, int], np.ndarray] = {}  # verified once per run, then reused

    def __call__(self, stream: DeviceStream, b: int) -> torch.Tensor:
        return self.many([(stream, b)])[0]

    def many(self, batches: Sequence[tuple[DeviceStream, int]]) -> list[torch.Tensor]:
        """The images of several (stream, batch) pairs; each domain corrupted in one call."""
        rows = [stream.batch(b) for stream, b in batches]
        indices = np.concatenate([s.indices[r] for (s, _), r in zip(batches, rows, strict=True)])
        keys = [
            (d.corruption, d.severity)
            for (s, _), r in zip(batches, rows, strict=True)
            for d in (s.domains[int(i)] for i in s.domain_ids[r])
        ]
        index_t = torch.from_numpy(indices)
        images = self.images[index_t].contiguous()
        by_domain: dict[tuple[str, int], list[int]] = {}
        for row, key in enumerate(keys):
            if key[0] != "clean":
                by_domain.setdefault(key, []).append(row)
        for (corruption, severity), members in by_domain.items():
            mask = torch.tensor(members, dtype=torch.long)
            if self.folder is not None:
                files = self.folder.images(corruption, severity, indices[members])
                images[mask] = torch.from_numpy(files).permute(0, 3, 1, 2)
            elif self.cache is not None:
                corrupted = self._sets.get((corruption, severity))
                if corrupted is None:
                    corrupted = self.cache.get(self.dataset, corruption, severity, self.seed)
                    self._sets[(corruption, severity)] = corrupted
                images[mask] = torch.from_numpy(corrupted[indices[members]]).permute(0, 3, 1, 2)
            else:
                images[mask] = corrupt(
                    images[mask], corruption, severity, seed=self.seed, indices=index_t[mask]
                )
        return list(images.split([r.stop - r.start for r in rows]))
