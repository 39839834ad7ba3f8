"""The disk cache of corrupted sets: round trip, verification, rebuild, and engine integration."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
import torch

from simulator.data.cache import CorruptionCache, default_cache_root
from simulator.data.corruptions import corrupt
from simulator.data.datasets import create_dataset
from simulator.data.loader import BatchLoader
from simulator.data.streams import DeviceStream, Domain
from simulator.registry import UnknownNameError


@pytest.fixture(scope="module")
def dataset():
    return create_dataset("synthetic", size=40, seed=3)


def _on_the_fly(dataset, name: str, severity: int, seed: int) -> np.ndarray:
    images = torch.from_numpy(dataset.images).permute(0, 3, 1, 2).contiguous()
    out = corrupt(images, name, severity, seed=seed, indices=torch.arange(len(dataset)))
    return out.permute(0, 2, 3, 1).numpy()


def test_cache_round_trip_equals_on_the_fly_and_hits_without_rebuilding(tmp_path, dataset):
    cache = CorruptionCache(tmp_path, chunk_images=16)  # chunks of 16 over 40 images: 3 chunks
    built = cache.get(dataset, "gaussian_noise", 3, seed=7)
    assert isinstance(built, np.memmap) and built.dtype == np.uint8
    assert built.shape == dataset.images.shape
    np.testing.assert_array_equal(built, _on_the_fly(dataset, "gaussian_noise", 3, 7))

    path = cache.path(dataset, "gaussian_noise", 3, 7)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["shape"] == list(dataset.images.shape) and meta["seed"] == 7
    mtime = path.stat().st_mtime_ns
    again = CorruptionCache(tmp_path).get(dataset, "gaussian_noise", 3, seed=7)  # fresh process
    assert path.stat().st_mtime_ns == mtime  # a verified hit, not a rebuild
    np.testing.assert_array_equal(again, built)
    assert not list(path.parent.glob("*.tmp"))  # no temporaries left behind


def test_deterministic_corruption_shares_one_entry_across_seeds(tmp_path, dataset):
    cache = CorruptionCache(tmp_path)
    assert cache.path(dataset, "contrast", 2, 0) == cache.path(dataset, "contrast", 2, 9)
    assert cache.path(dataset, "shot_noise", 2, 0) != cache.path(dataset, "shot_noise", 2, 9)


def test_other_images_with_the_same_name_get_another_entry(tmp_path, dataset):
    cache = CorruptionCache(tmp_path)
    other = create_dataset("synthetic", size=40, seed=4)
    assert cache.path(dataset, "contrast", 2, 0) != cache.path(other, "contrast", 2, 0)


def test_corrupted_bytes_are_detected_and_rebuilt(tmp_path, dataset):
    cache = CorruptionCache(tmp_path)
    expected = np.array(cache.get(dataset, "contrast", 4, seed=0))
    path = cache.path(dataset, "contrast", 4, 0)
    with open(path, "r+b") as f:  # flip bytes in the pixel payload, keep the size
        f.seek(os.path.getsize(path) - 100)
        f.write(bytes(255 - b for b in f.read(50)))
    fresh = CorruptionCache(tmp_path)
    assert not fresh.contains(dataset, "contrast", 4, 0)
    with pytest.warns(UserWarning, match="failed verification.*rebuilding"):
        rebuilt = fresh.get(dataset, "contrast", 4, seed=0)
    np.testing.assert_array_equal(rebuilt, expected)
    assert fresh.contains(dataset, "contrast", 4, 0)


def test_truncated_file_and_missing_sidecar_are_rebuilt(tmp_path, dataset):
    cache = CorruptionCache(tmp_path)
    expected = np.array(cache.get(dataset, "pixelate", 5, seed=0))
    path = cache.path(dataset, "pixelate", 5, 0)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    damages = [
        lambda: None,  # the truncation above
        lambda: path.with_suffix(".json").unlink(),
        lambda: path.with_suffix(".json").write_text("{not json"),
    ]
    for damage in damages:
        damage()
        with pytest.warns(UserWarning, match="failed verification"):
            rebuilt = CorruptionCache(tmp_path).get(dataset, "pixelate", 5, 0)
        np.testing.assert_array_equal(rebuilt, expected)


def test_two_writers_of_one_entry_both_succeed_by_atomic_rename(tmp_path, dataset):
    """Two caches (as two processes) build the same entry; the later rename replaces the first."""
    first, second = CorruptionCache(tmp_path), CorruptionCache(tmp_path)
    a = first.get(dataset, "impulse_noise", 1, seed=2)  # reader holds a memmap of the first file
    path = first.path(dataset, "impulse_noise", 1, 2)
    second._build(path, dataset, "impulse_noise", 1, 2, None)  # the other process's build
    np.testing.assert_array_equal(a, second.get(dataset, "impulse_noise", 1, seed=2))
    assert sorted(p.name for p in path.parent.iterdir() if p.suffix != ".lock") == [
        "impulse_noise-s1-seed2.json",
        "impulse_noise-s1-seed2.npy",
    ]


def test_concurrent_builders_of_one_entry_build_it_once(tmp_path, dataset, monkeypatch):
    builds = []
    real_build = CorruptionCache._build

    def counting_build(self, *args, **kwargs):
        builds.append(1)
        time.sleep(0.2)  # hold the lock while the other builder arrives
        return real_build(self, *args, **kwargs)

    monkeypatch.setattr(CorruptionCache, "_build", counting_build)
    results = [None, None]

    def build(slot: int) -> None:
        results[slot] = np.array(CorruptionCache(tmp_path).get(dataset, "spatter", 3, seed=1))

    threads = [threading.Thread(target=build, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    np.testing.assert_array_equal(results[0], results[1])


def test_bad_keys_are_refused(tmp_path, dataset):
    cache = CorruptionCache(tmp_path)
    with pytest.raises(UnknownNameError, match="allowed: .*gaussian_noise"):
        cache.get(dataset, "gaussian_nois", 1, seed=0)
    with pytest.raises(ValueError, match="1-5"):
        cache.get(dataset, "contrast", 6, seed=0)


def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path))
    assert default_cache_root() == tmp_path
    monkeypatch.delenv("FLEETSIM_CACHE")
    assert default_cache_root().parts[-3:] == (".cache", "fleetsim", "corrupted")


def test_batch_loader_with_cache_gives_on_the_fly_pixels(tmp_path, dataset):
    domains = [Domain("clean", 0), Domain("shot_noise", 5), Domain("fog", 2)]
    n = 24
    rng = np.random.default_rng(0)
    stream = DeviceStream(
        device=0,
        indices=rng.permutation(len(dataset))[:n].astype(np.int64),
        domain_ids=np.repeat(np.arange(3), n // 3).astype(np.int16),
        domains=domains,
        arrival_s=np.arange(n, dtype=np.float64),
        batch_size=12,
    )
    plain, cached = BatchLoader(dataset, seed=5), BatchLoader(dataset, 5, CorruptionCache(tmp_path))
    for b in range(2):
        torch.testing.assert_close(cached(stream, b), plain(stream, b), rtol=0, atol=0)
