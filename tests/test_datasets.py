"""Datasets: the procedural synthetic set and CIFAR-10 (pickles, shared npz files, download)."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from simulator.data import datasets
from simulator.data.datasets import (
    CIFAR10_CLASSES,
    SYNTHETIC_CLASSES,
    DatasetError,
    ImageDataset,
    create_dataset,
)
from simulator.registry import UnknownNameError
from tests.conftest import SHARED_CIFAR, needs_shared

needs_shared_cifar = needs_shared(
    SHARED_CIFAR / "test_exact_prefix.npz",
    SHARED_CIFAR / "test_jpeg.npz",
    SHARED_CIFAR / "train_jpeg_bytes.npz",
)


# ---------------------------------------------------------------- synthetic


def test_synthetic_has_the_contract_shapes_types_and_balanced_classes():
    ds = create_dataset("synthetic", size=2000)
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape == (2000, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (2000,) and ds.labels.dtype == np.int64
    assert ds.class_names == SYNTHETIC_CLASSES and ds.num_classes == 10 and len(ds) == 2000
    assert np.bincount(ds.labels, minlength=10).tolist() == [200] * 10
    assert 40 < ds.images.std() < 90  # varied colours, not a blank canvas
    assert "synthetic" in ds.source


def test_synthetic_default_sizes_follow_the_split():
    assert len(create_dataset("synthetic")) == 10_000


def test_synthetic_is_deterministic_per_seed_and_split():
    a = create_dataset("synthetic", size=300, seed=3)
    b = create_dataset("synthetic", size=300, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    other_seed = create_dataset("synthetic", size=300, seed=4)
    train = create_dataset("synthetic", split="train", size=300, seed=3)
    assert not np.array_equal(a.images, other_seed.images)
    assert not np.array_equal(a.images, train.images)


def test_synthetic_size_keeps_a_prefix_of_the_larger_set():
    small = create_dataset("synthetic", size=1500)
    large = create_dataset("synthetic", size=2500)
    assert np.array_equal(small.images, large.images[:1500])
    assert np.array_equal(small.labels, large.labels[:1500])


def test_synthetic_train_split_generates_a_large_balanced_set():
    # (its generation speed is a benchmark matter, not asserted here)
    ds = create_dataset("synthetic", split="train", size=20_000)
    assert len(ds) == 20_000 and ds.images.shape == (20_000, 32, 32, 3)
    assert ds.images.dtype == np.uint8
    counts = np.bincount(ds.labels, minlength=10)
    assert counts.min() >= 1_800 and counts.max() <= 2_200


def test_synthetic_classes_are_not_separable_by_colour_alone():
    ds = create_dataset("synthetic", size=2000)
    mean_rgb = ds.images.reshape(len(ds), -1, 3).mean(1)
    per_class = np.stack([mean_rgb[ds.labels == k].mean(0) for k in range(10)])
    assert np.ptp(per_class, axis=0).max() < 20  # class mean colours within 20 grey levels


def test_unknown_dataset_split_and_variant_are_rejected_with_allowed_values():
    with pytest.raises(UnknownNameError, match="allowed: .*cifar10.*synthetic"):
        create_dataset("mnist")
    with pytest.raises(DatasetError, match="allowed: train, test"):
        create_dataset("synthetic", split="val")
    with pytest.raises(DatasetError, match="allowed: auto, standard, exact_prefix, jpeg"):
        create_dataset("cifar10", variant="png")


# ---------------------------------------------------------------- cifar10: shared npz files


@needs_shared_cifar
def test_cifar10_exact_prefix_is_bit_exact():
    ds = create_dataset("cifar10", root=SHARED_CIFAR, variant="exact_prefix")
    assert ds.images.shape == (1017, 32, 32, 3) and ds.class_names == CIFAR10_CLASSES
    assert hashlib.md5(ds.images.tobytes()).hexdigest() == "0c4c38dfa836385de34b32047bf21481"
    assert ds.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


@needs_shared_cifar
def test_cifar10_auto_falls_back_to_jpeg_and_says_so():
    ds = create_dataset("cifar10", root=SHARED_CIFAR, size=500)
    assert ds.images.shape == (500, 32, 32, 3) and "JPEG-derived" in ds.source
    assert ds.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


@needs_shared_cifar
def test_cifar10_jpeg_train_bytes_decode_to_images():
    ds = create_dataset("cifar10", root=SHARED_CIFAR, split="train", variant="jpeg", size=64)
    assert ds.images.shape == (64, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and 20 < ds.images.mean() < 235


# ---------------------------------------------------------------- cifar10: standard pickles


def _write_pickles(folder: Path, per_batch: int = 6) -> dict[str, np.ndarray]:
    """A miniature cifar-10-batches-py folder; returns the HWC images of the test batch."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
        hwc = rng.integers(0, 256, (per_batch, 32, 32, 3), dtype=np.uint8)
        data = hwc.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # stored CHW, row-major
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle)
        written[name] = hwc
    return written


def test_cifar10_reads_standard_pickles_from_the_folder_or_its_parent(tmp_path):
    written = _write_pickles(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        test = create_dataset("cifar10", root=root)
        assert np.array_equal(test.images, written["test_batch"])
        assert "standard" in test.source
    train = create_dataset("cifar10", root=tmp_path, split="train", variant="standard")
    assert len(train) == 30 and np.array_equal(train.images[6:12], written["data_batch_2"])


def test_cifar10_root_comes_from_the_environment_variable(tmp_path, monkeypatch):
    written = _write_pickles(tmp_path / "env" / "cifar-10-batches-py")
    monkeypatch.setenv("FLEETSIM_CIFAR10", str(tmp_path / "env"))
    ds = create_dataset("cifar10", variant="standard", size=4)
    assert np.array_equal(ds.images, written["test_batch"][:4])


# ---------------------------------------------------------------- cifar10: download (no network)


def _tiny_tarball(tmp_path: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    written = _write_pickles(tmp_path / "src" / "cifar-10-batches-py", per_batch=3)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return buffer.getvalue(), written


class _FakeResponse(io.BytesIO):
    def __init__(self, payload: bytes):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload))}


def test_cifar10_downloads_verifies_and_unpacks_the_tarball(tmp_path, monkeypatch, capsys):
    payload, written = _tiny_tarball(tmp_path)
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(datasets, "CIFAR10_MD5", hashlib.md5(payload).hexdigest())
    cache = tmp_path / "cache"
    ds = create_dataset("cifar10", root=cache, variant="standard")
    assert requested == [datasets.CIFAR10_URL]
    assert np.array_equal(ds.images, written["test_batch"])
    assert (cache / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not list(cache.glob("*.tar.gz")) and not list(cache.glob("*.part"))
    assert "downloading CIFAR-10" in capsys.readouterr().err


def test_cifar10_download_with_wrong_md5_is_rejected(tmp_path, monkeypatch):
    payload, _ = _tiny_tarball(tmp_path)
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: _FakeResponse(payload))
    with pytest.raises(DatasetError, match="wrong md5"):
        create_dataset("cifar10", root=tmp_path / "cache", variant="standard")


def test_cifar10_without_network_says_exactly_what_to_do(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetError) as info:
        create_dataset("cifar10", root=tmp_path / "cache", variant="standard")
    message = str(info.value)
    assert "cifar-10-batches-py" in message and "FLEETSIM_CIFAR10" in message
    assert "dataset.root" in message and str(tmp_path / "cache") in message


# ---------------------------------------------------------------- image folders


def _write_folder(root: Path, sizes: dict[str, tuple[int, int]], per_class: int = 3) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, (w, h) in sizes.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_imagefolder_reads_class_folders_in_a_seeded_order(tmp_path):
    _write_folder(tmp_path / "test", {"cat": (32, 32), "dog": (32, 32)})
    ds = create_dataset("imagefolder", root=tmp_path, size=4, seed=1)
    assert ds.class_names == ["cat", "dog"] and ds.images.shape == (4, 32, 32, 3)
    again = create_dataset("imagefolder", root=tmp_path, size=4, seed=1)
    assert np.array_equal(ds.images, again.images) and np.array_equal(ds.labels, again.labels)


def test_imagefolder_reads_the_imagenet_c_layout_and_crops_mixed_sizes(tmp_path):
    _write_folder(tmp_path / "fog" / "5", {"a": (300, 260), "b": (256, 320)}, per_class=1)
    ds = create_dataset("imagefolder", root=tmp_path, variant="fog/5")
    assert ds.images.shape == (2, 224, 224, 3) and sorted(ds.labels.tolist()) == [0, 1]
    with pytest.raises(DatasetError, match="needs a root"):
        create_dataset("imagefolder")
