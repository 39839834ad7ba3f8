"""The first command's scenario (scenarios/quickstart.yaml) and what it ships: the embedded CIFAR-10
test sample and the akamaster ResNet-20 weights, found without ../shared, the cache or a network."""

import fnmatch
import hashlib
import urllib.request

import numpy as np
import pytest
import torch

from simulator.config import load_scenario
from simulator.data import datasets
from simulator.data.datasets import DatasetError, create_dataset, embedded_cifar10_path
from simulator.models import zoo
from simulator.models.zoo import create_model, weights_dir, weights_status
from tests.conftest import REPO, SHARED_CIFAR, needs_shared

QUICKSTART = REPO / "scenarios" / "quickstart.yaml"
SHARED_EXACT = SHARED_CIFAR / "test_exact_prefix.npz"

# simulator/data/embedded/SOURCE.md
EMBEDDED_X_MD5 = "7d8bc235c1912e44de22342559a2ca4e"
EMBEDDED_Y_MD5 = "cc708752d1839c557bb87809a0ef3d92"
EMBEDDED_PER_CLASS = [57, 41, 51, 49, 44, 50, 56, 48, 57, 59]
# shared/models/cifar10/SOURCE.md and the akamaster file name (sha256 prefix 12fca82f)
RESNET20_FILE = "resnet20-12fca82f.th"
RESNET20_MD5 = "1f38c81cdebd6bcce9b03d082161a36c"


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No shared folders, empty caches and environment, and any download attempt fails the test."""
    monkeypatch.chdir(tmp_path)  # ../shared from the working directory does not exist
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for key in ("FLEETSIM_MODELS", "FLEETSIM_CIFAR10", "FLEETSIM_CACHE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(zoo, "_search_dirs", lambda: [tmp_path / "shared", tmp_path / "cache"])
    monkeypatch.setattr(datasets, "cifar10_roots", lambda root=None: [tmp_path / "shared"])

    def no_network(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(datasets, "download_cifar10", no_network)
    return tmp_path


def test_embedded_cifar10_sample_matches_its_provenance(offline):
    ds = create_dataset("cifar10", variant="embedded")
    assert ds.images.shape == (512, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (512,) and ds.labels.dtype == np.int64
    assert hashlib.md5(ds.images.tobytes()).hexdigest() == EMBEDDED_X_MD5
    assert hashlib.md5(ds.labels.astype("<i8").tobytes()).hexdigest() == EMBEDDED_Y_MD5
    assert np.bincount(ds.labels, minlength=10).tolist() == EMBEDDED_PER_CLASS
    assert ds.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]  # the test set's known start
    with np.load(embedded_cifar10_path()) as npz:
        assert npz["idx"].tolist() == list(range(512))
    assert "embedded" in ds.source and "Krizhevsky" in ds.source
    assert create_dataset("cifar10", variant="embedded", size=100).images.shape[0] == 100


@needs_shared(SHARED_EXACT)
def test_embedded_sample_is_the_first_512_bit_exact_test_images():
    with np.load(SHARED_EXACT) as npz:
        x, y = npz["x"][:512], npz["y"][:512]
    ds = create_dataset("cifar10", variant="embedded")
    assert np.array_equal(ds.images, x) and np.array_equal(ds.labels, y)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "train"}, "only for split 'test'"),
        ({"size": 513}, "has 512 images; size 513.*allowed: 1 to 512"),
        ({"root": "/somewhere"}, "dataset.root .*does not apply"),
    ],
)
def test_embedded_variant_refuses_what_it_cannot_serve(kwargs, message):
    with pytest.raises(DatasetError, match=message):
        create_dataset("cifar10", variant="embedded", **kwargs)


def test_shipped_resnet20_is_the_akamaster_file_with_its_licence():
    path = weights_dir() / RESNET20_FILE
    data = path.read_bytes()
    assert hashlib.md5(data).hexdigest() == RESNET20_MD5
    assert hashlib.sha256(data).hexdigest().startswith("12fca82f")
    licence = (weights_dir() / "LICENSE-akamaster.txt").read_text()
    assert "Copyright (c) 2018, Yerlan Idelbayev" in licence and "Redistribution" in licence


def test_resnet20_loads_from_the_package_offline_and_classifies_the_embedded_images(offline):
    assert weights_status("resnet20") == "shipped"
    model = create_model("resnet20")
    ds = create_dataset("cifar10", variant="embedded")
    x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        accuracy = (model(x).argmax(1).numpy() == ds.labels).mean()
    # 91.64 % on the 1,017 exact images (shared SOURCE.md); 467 of these first 512 (91.21 %),
    # within two images (float rounding of a near tie may differ between machines)
    assert accuracy == pytest.approx(467 / 512, abs=2 / 512)


def test_fleetsim_models_still_overrides_the_shipped_file(tmp_path, monkeypatch):
    state = torch.load(weights_dir() / RESNET20_FILE, map_location="cpu")
    state["state_dict"]["module.linear.bias"] = torch.full((10,), 5.0)
    torch.save(state, tmp_path / RESNET20_FILE)
    monkeypatch.setenv("FLEETSIM_MODELS", str(tmp_path))
    assert torch.equal(create_model("resnet20").net.linear.bias, torch.full((10,), 5.0))
    assert weights_status("resnet20") == f"found in {tmp_path}"


def test_quickstart_data_and_models_resolve_offline(offline):
    scenario = load_scenario(QUICKSTART)
    assert scenario.dataset.name == "cifar10" and scenario.dataset.variant == "embedded"
    assert scenario.edge.model == "resnet20" and scenario.cloud.teacher == "resnet56-augmix"
    assert scenario.cloud.adapter == "cema" and scenario.policy.name == "cema"
    ds = create_dataset(
        scenario.dataset.name,
        split=scenario.dataset.split,
        root=scenario.dataset.root,
        variant=scenario.dataset.variant,
        size=scenario.dataset.size,
    )
    # every device sees each image at most once
    assert len(ds) >= scenario.stream.samples_per_device
    for name in (scenario.edge.model, scenario.cloud.teacher):
        assert weights_status(name) == "shipped"
        create_model(name)


def test_a_wheel_carries_the_embedded_files():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]
    shipped = {
        "simulator.models": [
            weights_dir() / RESNET20_FILE,
            weights_dir() / "LICENSE-akamaster.txt",
            weights_dir() / "resnet56-augmix.pt",
        ],
        "simulator.data": [embedded_cifar10_path(), embedded_cifar10_path().parent / "SOURCE.md"],
    }
    for package, files in shipped.items():
        base = REPO.joinpath(*package.split("."))
        for file in files:
            assert file.is_file()
            relative = file.relative_to(base).as_posix()
            assert any(fnmatch.fnmatch(relative, g) for g in package_data[package]), relative
