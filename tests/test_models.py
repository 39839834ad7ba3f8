"""Model zoo: CIFAR ResNets with the akamaster weights, shipped synthetic models, timm, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simulator.data.datasets import create_dataset
from simulator.models import zoo
from simulator.models.cifar_resnet import cifar_resnet
from simulator.models.norm import norm_layers
from simulator.models.train import augment_batch, build_zoo, evaluate, train_classifier
from simulator.models.zoo import (
    ModelError,
    Normalize,
    check_model_name,
    create_model,
    list_models,
    model_info,
)
from tests.conftest import SHARED_CIFAR, SHARED_MODELS, needs_shared

CIFAR_NPZ = SHARED_CIFAR
CIFAR_MODELS = SHARED_MODELS
needs_cifar_data_and_models = needs_shared(
    CIFAR_NPZ / "test_jpeg.npz", CIFAR_MODELS / "resnet56-4bfd9763.th"
)


def _npz(name: str, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    with np.load(CIFAR_NPZ / name) as data:
        return data["x"][:size], data["y"][:size]


# ---------------------------------------------------------------- architecture


@pytest.mark.parametrize(("depth", "params"), [(20, 269_722), (32, 464_154), (56, 853_018)])
def test_cifar_resnet_has_the_papers_parameter_counts(depth, params):
    net = cifar_resnet(depth)
    assert sum(p.numel() for p in net.parameters()) == params
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_cifar_resnet_rejects_depths_that_are_not_6n_plus_2():
    with pytest.raises(ValueError, match="6n\\+2"):
        cifar_resnet(18)


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    block = cifar_resnet(8, width=4).layer2[0]
    x = torch.randn(1, 4, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (1, 8, 4, 4)
    assert torch.equal(out[:, 2:6], x[:, :, ::2, ::2])
    assert not out[:, :2].any() and not out[:, 6:].any()
    assert not list(block.shortcut.parameters())


# ---------------------------------------------------------------- names


def test_list_models_has_the_cifar_family_and_the_synthetic_pair():
    assert {"resnet20", "resnet32", "resnet44", "resnet56"} <= set(list_models())
    assert {"synthetic_edge", "synthetic_teacher"} <= set(list_models())


def test_check_model_name_accepts_known_timm_names_and_lists_allowed_names():
    check_model_name("resnet20")
    check_model_name("timm:resnet18")
    with pytest.raises(ModelError, match="allowed: .*resnet20.*synthetic_edge"):
        check_model_name("resnet21")
    with pytest.raises(ModelError, match="unknown timm model 'not_a_net'"):
        check_model_name("timm:not_a_net")


def test_model_info_describes_dataset_params_and_weights():
    info = model_info("resnet20")
    assert info["dataset"] == "cifar10" and info["params"] == 269_722
    assert "akamaster" in info["description"] and "resnet20-12fca82f.th" in info["weights"]
    assert model_info("synthetic_edge")["dataset"] == "synthetic"


# ---------------------------------------------------------------- CIFAR-10 pretrained


@needs_cifar_data_and_models
@pytest.mark.parametrize(
    ("name", "exact", "jpeg"), [("resnet20", 0.9164, 0.8073), ("resnet56", 0.9272, 0.8289)]
)
def test_pretrained_cifar_resnets_match_the_reference_figures(name, exact, jpeg):
    # references from shared/data/cifar10/SOURCE.md (independent numpy forward pass): the
    # bit-exact first 1,017 test images, and the JPEG-derived pixels of the same 1,017 images
    # (resnet20 81.03% / resnet56 83.20% on all 10,000 JPEG-derived images)
    model = create_model(name)
    assert not model.training and isinstance(model[0], Normalize)
    x, y = _npz("test_exact_prefix.npz")
    assert evaluate(model, x, y) == pytest.approx(exact, abs=0.003)
    x, y = _npz("test_jpeg.npz", size=1017)
    assert evaluate(model, x, y) == pytest.approx(jpeg, abs=0.003)


@needs_cifar_data_and_models
def test_shipped_cifar_teacher_is_clean_accurate_and_far_more_corruption_robust():
    # figures of simulator/models/weights/README.md (fleetsim zoo build --name resnet56-augmix)
    from simulator.data.corruptions import corrupt

    teacher, resnet56 = create_model("resnet56-augmix"), create_model("resnet56")
    x, y = _npz("test_exact_prefix.npz")
    assert evaluate(teacher, x, y) == pytest.approx(0.9194, abs=0.003)
    images = torch.from_numpy(x[:256]).permute(0, 3, 1, 2).contiguous()
    noisy = corrupt(images, "gaussian_noise", 5, seed=0, indices=torch.arange(256))
    assert evaluate(teacher, noisy, y[:256]) > evaluate(resnet56, noisy, y[:256]) + 0.3


@needs_cifar_data_and_models
def test_weights_come_from_fleetsim_models_before_shared_folders(tmp_path, monkeypatch):
    state = torch.load(CIFAR_MODELS / "resnet20-12fca82f.th", map_location="cpu")
    state["state_dict"]["module.linear.bias"] = torch.full((10,), 5.0)
    torch.save(state, tmp_path / "resnet20-12fca82f.th")
    monkeypatch.setenv("FLEETSIM_MODELS", str(tmp_path))
    model = create_model("resnet20")
    assert torch.equal(model.net.linear.bias, torch.full((10,), 5.0))


def test_missing_weights_without_network_raise_a_clear_model_error(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "_search_dirs", lambda: [tmp_path / "a", tmp_path / "cache"])

    def offline(url, dst, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ModelError, match="resnet32-d509ac18.th.*FLEETSIM_MODELS"):
        create_model("resnet32")


def test_missing_weights_are_downloaded_to_the_cache_with_a_hash_check(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "_search_dirs", lambda: [tmp_path / "cache"])
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        torch.save({"state_dict": cifar_resnet(44).state_dict()}, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    create_model("resnet44")
    assert calls == [(zoo.AKAMASTER_URL + "resnet44-014dd654.th", "014dd654")]
    assert (tmp_path / "cache" / "resnet44-014dd654.th").is_file()


# ---------------------------------------------------------------- checkpoints and timm


def test_checkpoint_overrides_weights_in_any_layout(tmp_path):
    source = create_model("resnet20", pretrained=False)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(x)
    layouts = {
        "wrapped.pt": source.state_dict(),
        "bare.pt": source.net.state_dict(),
        "dp.th": {"state_dict": {f"module.{k}": v for k, v in source.net.state_dict().items()}},
    }
    for file, state in layouts.items():
        torch.save(state, tmp_path / file)
        model = create_model("resnet20", checkpoint=tmp_path / file)
        with torch.no_grad():
            assert torch.equal(model(x), expected), file


def test_checkpoint_that_does_not_fit_is_a_model_error(tmp_path):
    torch.save(cifar_resnet(8).state_dict(), tmp_path / "r8.pt")
    with pytest.raises(ModelError, match="does not fit"):
        create_model("resnet20", checkpoint=tmp_path / "r8.pt")


def test_timm_models_are_wrapped_with_imagenet_normalisation_and_load_checkpoints(tmp_path):
    model = create_model("timm:test_resnet", num_classes=7)
    assert isinstance(model[0], Normalize) and not model.training
    assert torch.allclose(model[0].mean.flatten(), torch.tensor(zoo.IMAGENET_MEAN))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    assert expected.shape == (2, 7)
    torch.save({"state_dict": model.net.state_dict()}, tmp_path / "t.pth")
    reloaded = create_model("timm:test_resnet", num_classes=7, checkpoint=tmp_path / "t.pth")
    with torch.no_grad():
        assert torch.equal(reloaded(x), expected)


# ---------------------------------------------------------------- shipped synthetic models


@pytest.fixture(scope="module")
def synthetic_test():
    return create_dataset("synthetic", size=2000)


def test_synthetic_models_ship_and_are_accurate_on_clean_data(synthetic_test):
    for name in ("synthetic_edge", "synthetic_teacher"):
        model = create_model(name)
        assert isinstance(model[0], Normalize) and len(norm_layers(model)) > 0
        assert evaluate(model, synthetic_test.images, synthetic_test.labels) > 0.9, name


def test_edge_model_degrades_under_noise_and_teacher_is_more_robust(synthetic_test):
    from simulator.data.corruptions import corrupt

    images = torch.from_numpy(synthetic_test.images[:1000]).permute(0, 3, 1, 2).contiguous()
    labels = synthetic_test.labels[:1000]
    noisy = corrupt(images, "gaussian_noise", 5, seed=0, indices=torch.arange(1000))
    edge, teacher = create_model("synthetic_edge"), create_model("synthetic_teacher")
    edge_clean, edge_noisy = evaluate(edge, images, labels), evaluate(edge, noisy, labels)
    teacher_noisy = evaluate(teacher, noisy, labels)
    assert edge_clean - edge_noisy > 0.15
    assert teacher_noisy - edge_noisy > 0.10


# ---------------------------------------------------------------- training


def test_augmentations_keep_shape_and_range():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 32, 32)
    for augment in ("none", "standard", "corruption", "augmix"):
        out = augment_batch(x, augment, gen)
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(augment_batch(x, "corruption", gen), x)
    with pytest.raises(ValueError, match="allowed: none, standard, corruption, augmix"):
        augment_batch(x, "mixup", gen)


def test_augmix_ops_are_exact_where_they_have_a_closed_form_and_seeded():
    from simulator.models.train import _AUGMIX_OPS, _augmix

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32)
    full = torch.ones(8)
    autocontrast, _, posterize, solarize = (op(x, full, gen) for op in _AUGMIX_OPS[:4])
    assert torch.allclose(autocontrast.amin(dim=(2, 3)), torch.zeros(8, 3))
    assert torch.allclose(autocontrast.amax(dim=(2, 3)), torch.ones(8, 3))
    assert len(torch.unique(posterize)) <= 2  # level 1: one bit kept
    assert torch.equal(solarize, torch.where(x >= 0.0, 1 - x, x))  # level 1: threshold 0
    mild = _AUGMIX_OPS[3](x, torch.full((8,), 0.1), gen)
    assert torch.equal(mild[x < 0.9], x[x < 0.9]) and torch.equal(mild[x >= 0.9], 1 - x[x >= 0.9])
    # the mix stays a convex combination of the image and its augmented chains, and is seeded
    a = _augmix(x, torch.Generator().manual_seed(5))
    b = _augmix(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, x) and a.min() >= 0 and a.max() <= 1


def test_train_classifier_is_deterministic_for_a_seed():
    data = create_dataset("synthetic", split="train", size=256)
    weights = []
    for _ in range(2):
        torch.manual_seed(123)  # the model's init; training itself reseeds
        model = create_model("synthetic_edge", pretrained=False)
        stats = train_classifier(
            model, data, epochs=1, batch_size=64, augment="corruption", progress=False
        )
        weights.append(torch.cat([p.flatten() for p in model.state_dict().values()]))
        assert stats["train_wall_s"] > 0 and not model.training
    assert torch.equal(weights[0], weights[1])


def test_build_zoo_writes_loadable_state_dicts(tmp_path):
    results = build_zoo(
        tmp_path, ["synthetic_edge"], train_size=256, test_size=500, epochs=1, progress=False
    )
    edge = results["synthetic_edge"]
    fresh = create_model("synthetic_edge", pretrained=False)
    assert edge["params"] == sum(p.numel() for p in fresh.parameters())
    assert 0.0 <= edge["clean_accuracy"] <= 1.0 and edge["recipe"]["train_size"] == 256
    create_model("synthetic_edge", checkpoint=tmp_path / "synthetic_edge.pt")
    with pytest.raises(ValueError, match="buildable"):
        build_zoo(tmp_path, ["resnet20"])


def test_zoo_list_says_where_each_models_weights_are(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from simulator.cli import app
    from simulator.models.zoo import weights_status

    monkeypatch.setenv("HOME", str(tmp_path))  # an empty cache: nothing built here
    monkeypatch.delenv("FLEETSIM_MODELS", raising=False)
    assert weights_status("synthetic_edge") == "shipped"
    assert weights_status("synthetic_edge-w4a4-gdfq") == (
        "missing: fleetsim zoo quantize --model synthetic_edge --bits 4 --method gdfq"
    )
    from simulator.checks import scenario_warnings
    from simulator.config import scenario_from_dict
    from tests.conftest import tiny_scenario_dict

    quantized = scenario_from_dict(tiny_scenario_dict(edge__model="synthetic_edge-w4a4-gdfq"))
    assert any("its weights are not on this machine" in w for w in scenario_warnings(quantized))
    built = tmp_path / ".cache" / "fleetsim" / "models" / "synthetic_edge-w4a4-gdfq.pt"
    built.parent.mkdir(parents=True)
    built.write_bytes(b"x")
    assert weights_status("synthetic_edge-w4a4-gdfq") == f"found in {built.parent}"
    assert not any("weights" in w for w in scenario_warnings(quantized))
    result = CliRunner().invoke(app, ["zoo", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "shipped" in result.output and "found in" in result.output
