"""The ImageNet-C path: image folders with pre-corrupted domain folders, and timm models with their
published weights found offline, on a tiny tree and a fake Hugging Face cache the tests generate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from simulator.adaptation import ADAPTERS
from simulator.config import ScenarioError, scenario_from_dict
from simulator.data.datasets import CorruptedFolder, DatasetError, create_dataset
from simulator.data.loader import BatchLoader
from simulator.engine import run_scenario
from simulator.models.norm import get_norm_state
from simulator.models.zoo import ModelError, create_model, find_timm_weights
from tests.conftest import tiny_scenario_dict

WNIDS = ["n01440764", "n01443537", "n01484850"]  # the first three ImageNet classes
PER_CLASS = 4
SIDE = 64
DOMAINS = [("gaussian_noise", 3), ("gaussian_noise", 5), ("contrast", 3)]
EDGE, TEACHER = "test_efficientnet", "test_vit"  # BatchNormAct2d edge; LayerNorm-only teacher


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (two spin-wait on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _domain_pixels(clean: np.ndarray, corruption: str, severity: int, rng) -> np.ndarray:
    """Stand-ins for ImageNet-C files: visibly different pixels per domain."""
    x = clean.astype(np.float32)
    if corruption == "gaussian_noise":
        x = x + rng.normal(0, 12.0 * severity, x.shape)
    else:
        x = (x - x.mean()) * (1.0 - 0.15 * severity) + x.mean()
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict[str, Path]:
    """``clean/<wnid>/*.JPEG`` and ``imagenet-c/<corruption>/<severity>/<wnid>/*.JPEG``."""
    base = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for label, wnid in enumerate(WNIDS):
        for i in range(PER_CLASS):
            name = f"ILSVRC2012_val_{label * PER_CLASS + i:08d}.JPEG"
            pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
            pixels[:, :, label] = 255 - pixels[:, :, label] // 4  # a class cue the models can see
            (base / "clean" / wnid).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(base / "clean" / wnid / name, quality=90)
            for corruption, severity in DOMAINS:
                folder = base / "imagenet-c" / corruption / str(severity) / wnid
                folder.mkdir(parents=True, exist_ok=True)
                domain = _domain_pixels(pixels, corruption, severity, rng)
                Image.fromarray(domain).save(folder / name, quality=85)
    return {"clean": base / "clean", "corrupted": base / "imagenet-c"}


def _published_weights(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """Weights standing in for timm's: a seeded init with non-trivial BN running statistics."""
    torch.manual_seed(seed)
    net = timm.create_model(arch, num_classes=len(WNIDS))
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    for key, value in state.items():
        if key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn_like(value)
        elif key.endswith("running_var"):
            state[key] = torch.rand_like(value) + 0.5
    return state


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory) -> Path:
    """A Hugging Face hub cache holding weights of two tiny timm models, in the hub's layout."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    for seed, arch in enumerate((EDGE, TEACHER), start=100):
        repo_id = timm.models.get_pretrained_cfg(arch).hf_hub_id  # timm/<arch>.<tag>
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        (repo / "snapshots" / "0123abcd").mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0123abcd")
        save_file(
            _published_weights(arch, seed), repo / "snapshots" / "0123abcd" / "model.safetensors"
        )
    return cache


@pytest.fixture
def offline_cache(hf_cache, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hf_cache


def _direct(arch: str, seed: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The network built by hand from the same weights, and timm's input mean/std for it."""
    net = timm.create_model(arch, num_classes=len(WNIDS))
    net.load_state_dict(_published_weights(arch, seed))
    mean = torch.tensor(net.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(net.pretrained_cfg["std"]).view(1, 3, 1, 1)
    return net.eval(), mean, std


def _scenario(tree: dict[str, Path], **changes) -> dict:
    data = tiny_scenario_dict(
        dataset={
            "name": "imagefolder",
            "root": str(tree["clean"]),
            "corruption_source": "folder",
            "corrupted_root": str(tree["corrupted"]),
        },
        stream={
            "samples_per_device": 24,
            "batch_size": 8,
            "corruptions": ["gaussian_noise", "clean", "contrast"],
            "severity": 3,
            "segment_samples": 8,
            "rate_hz": 8,
        },
        edge={"model": f"timm:{EDGE}", "pretrained": True},
        cloud={
            "teacher": f"timm:{TEACHER}",
            "teacher_pretrained": True,
            "adapter": "cema",
            "cema": {"batch_size": 4, "replay_min": 8, "replay_batch": 4, "replay_only_batch": 8},
        },
        policy={"name": "all"},
    )
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    return data


def _file_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ------------------------------------------------------------------------------------ timm weights


def test_timm_pretrained_weights_come_from_the_hugging_face_cache_offline(offline_cache):
    found, _ = find_timm_weights(EDGE)
    assert found is not None and found.name == "model.safetensors"
    assert str(found).startswith(str(offline_cache))
    model = create_model(f"timm:{EDGE}", num_classes=3, pretrained=True)
    net, mean, std = _direct(EDGE, 100)
    x = torch.rand(4, 3, SIDE, SIDE)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - mean) / std), atol=1e-6)
        random_init = create_model(f"timm:{EDGE}", num_classes=3)  # the default is unchanged
        assert not torch.allclose(random_init(x), model(x), atol=1e-3)
    teacher = create_model(f"timm:{TEACHER}", num_classes=3, pretrained=True)
    assert torch.allclose(teacher[0].std.flatten(), torch.tensor([0.5, 0.5, 0.5]))  # timm's


def test_timm_pretrained_weights_from_a_local_safetensors_or_pth_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))  # the cache must not be needed
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    state = _published_weights(EDGE, 100)
    save_file(state, tmp_path / "edge.safetensors")
    torch.save({"state_dict": state}, tmp_path / "edge.pth")
    net, mean, std = _direct(EDGE, 100)
    x = torch.rand(2, 3, SIDE, SIDE)
    with torch.no_grad():
        expected = net((x - mean) / std)
        for name in ("edge.safetensors", "edge.pth"):
            model = create_model(
                f"timm:{EDGE}", num_classes=3, pretrained=True, checkpoint=tmp_path / name
            )
            assert torch.allclose(model(x), expected, atol=1e-6), name


def test_missing_timm_weights_name_the_places_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as info:
        create_model(f"timm:{EDGE}", num_classes=3, pretrained=True)
    message = str(info.value)
    assert str(tmp_path / "hub" / f"models--timm--{EDGE}.r160_in1k") in message
    assert "HF_HUB_OFFLINE" in message and "edge.checkpoint" in message
    with pytest.raises(ModelError) as info:  # resnet18 has a URL too: torch hub is searched
        create_model("timm:resnet18", num_classes=3, pretrained=True)
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in str(info.value)
    with pytest.raises(ModelError, match="no published weights"):
        create_model(f"timm:{EDGE}.no_such_tag", num_classes=3, pretrained=True)


def test_a_head_of_another_class_count_is_an_error_not_a_silent_reinit(offline_cache):
    with pytest.raises(ModelError, match="do not fit.*with 5 classes.*class count"):
        create_model(f"timm:{EDGE}", num_classes=5, pretrained=True)


def test_cema_adapts_timm_batchnormact_edge_and_a_layernorm_vit_teacher(offline_cache):
    edge = create_model(f"timm:{EDGE}", num_classes=3, pretrained=True)
    teacher = create_model(f"timm:{TEACHER}", num_classes=3, pretrained=True)
    norms = [type(m).__name__ for m in teacher.modules() if "Norm" in type(m).__name__]
    assert "LayerNorm" in norms and not any("Batch" in n for n in norms)
    source = get_norm_state(edge)
    assert any(k.endswith("running_var") for k in source)  # BatchNormAct2d layers are found
    ln_before = [
        m.weight.detach().clone() for m in teacher.modules() if "LayerNorm" in str(type(m))
    ]
    cema = ADAPTERS.get("cema")
    adapter = cema(edge, teacher, cema.Config(batch_size=4), 3, 0)
    stats = adapter.observe(0, torch.rand(8, 3, SIDE, SIDE))
    assert stats.steps == 2 and stats.teacher_steps == 2
    ln_after = [m.weight for m in teacher.modules() if "LayerNorm" in str(type(m))]
    assert any(not torch.equal(a, b) for a, b in zip(ln_before, ln_after, strict=True))
    adapted = adapter.norm_state(0)
    assert adapted.keys() == source.keys()
    assert any(not torch.equal(adapted[k], source[k]) for k in source)


# ----------------------------------------------------------------------- pre-corrupted folders


def test_pre_corrupted_pixels_are_the_files_of_the_same_relative_path(tree):
    dataset = create_dataset("imagefolder", root=tree["clean"], seed=3, size=7)
    assert dataset.class_names == WNIDS and len(dataset.files) == 7
    again = create_dataset("imagefolder", root=tree["clean"], seed=3, size=7)
    assert again.files == dataset.files  # the same subsample for the same seed
    folder = CorruptedFolder(tree["corrupted"], dataset, DOMAINS)
    indices = np.array([6, 0, 3])
    for corruption, severity in DOMAINS:
        pixels = folder.images(corruption, severity, indices)
        for row, i in enumerate(indices):
            rel = dataset.files[i]
            assert rel.split("/")[0] == WNIDS[dataset.labels[i]]
            expected = _file_pixels(tree["corrupted"] / corruption / str(severity) / rel)
            assert np.array_equal(pixels[row], expected)


def test_missing_domain_folders_and_other_class_folders_are_clear_errors(tree, tmp_path):
    dataset = create_dataset("imagefolder", root=tree["clean"], seed=0)
    with pytest.raises(DatasetError) as info:
        CorruptedFolder(tree["corrupted"], dataset, [("gaussian_noise", 2)])
    message = str(info.value)
    assert str(tree["corrupted"] / "gaussian_noise" / "2") in message and "3, 5" in message
    with pytest.raises(DatasetError) as info:
        CorruptedFolder(tree["corrupted"], dataset, [("fog", 3)])
    assert "contrast, gaussian_noise" in str(info.value)

    odd = tmp_path / "odd" / "contrast" / "3"
    for wnid in [*WNIDS[:2], "n99999999"]:
        (odd / wnid).mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"missing \['n01484850'\], extra \['n99999999'\]"):
        CorruptedFolder(tmp_path / "odd", dataset, [("contrast", 3)])
    with pytest.raises(DatasetError, match="corrupted_root"):
        CorruptedFolder(None, dataset, [("contrast", 3)])


def test_folder_source_and_imagefolder_variants_are_validated_with_the_dataset(tree):
    bad = tiny_scenario_dict(dataset={"name": "synthetic", "corruption_source": "folder"})
    with pytest.raises(ScenarioError, match="dataset.corruption_source.*needs dataset.name"):
        scenario_from_dict(bad)
    domain = {"name": "imagefolder", "root": str(tree["corrupted"]), "variant": "contrast/3"}
    assert scenario_from_dict(tiny_scenario_dict(dataset=domain)).dataset.variant == "contrast/3"
    with pytest.raises(ScenarioError, match="dataset.variant = 'contrast/7'"):
        scenario_from_dict(tiny_scenario_dict(dataset={**domain, "variant": "contrast/7"}))
    with pytest.raises(ScenarioError, match="dataset.variant = 'fog/5': not a cifar10 variant"):
        scenario_from_dict(tiny_scenario_dict(dataset={"name": "cifar10", "variant": "fog/5"}))


def test_run_streams_the_folder_files_through_the_pretrained_edge_model(tree, offline_cache):
    scenario = scenario_from_dict(_scenario(tree, cloud__adapter="none", policy__name="none"))
    events = run_scenario(scenario).events
    samples = events[events["kind"] == "sample"]
    assert len(samples) == 2 * 24
    assert set(samples["domain"]) == {"gaussian_noise/3", "clean", "contrast/3"}
    dataset = create_dataset("imagefolder", root=tree["clean"], seed=scenario.seed)
    net, mean, std = _direct(EDGE, 100)
    pixels = []
    for domain, index in zip(samples["domain"], samples["index"].astype(int), strict=True):
        base = tree["clean"] if domain == "clean" else tree["corrupted"] / domain
        pixels.append(_file_pixels(base / dataset.files[index]))
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        expected = net((x - mean) / std).argmax(1).numpy()
    assert np.array_equal(samples["prediction"].astype(int).to_numpy(), expected)


def test_cema_run_with_timm_edge_and_vit_teacher_on_pre_corrupted_folders(tree, offline_cache):
    scenario = scenario_from_dict(_scenario(tree))
    result = run_scenario(scenario)
    summary, events = result.summary, result.events
    assert summary["samples"] == summary["uploaded_samples"] == 2 * 24  # policy "all"
    assert set(summary["per_domain"]) == {"gaussian_noise/3", "clean", "contrast/3"}
    samples = events[events["kind"] == "sample"]
    assert samples["version"].max() > 0  # later batches ran with states adapted in the cloud
    assert (events["kind"] == "download").sum() > 0


def test_batch_loader_reads_folder_files_for_corrupted_domains_only(tree):
    from simulator.data.streams import build_stream

    scenario = scenario_from_dict(_scenario(tree))
    dataset = create_dataset("imagefolder", root=tree["clean"], seed=0)
    folder = CorruptedFolder(tree["corrupted"], dataset, [("gaussian_noise", 3), ("contrast", 3)])
    loader = BatchLoader(dataset, 0, folder=folder)
    stream = build_stream(scenario.stream, 0, len(dataset), np.random.default_rng(0))
    for b in range(stream.num_batches):
        images = loader(stream, b).permute(0, 2, 3, 1).numpy()
        rows = stream.batch(b)
        for k, (i, d) in enumerate(zip(stream.indices[rows], stream.domain_ids[rows], strict=True)):
            domain = stream.domains[int(d)]
            base = tree["clean"] if domain.key == "clean" else tree["corrupted"] / domain.key
            assert np.array_equal(images[k], _file_pixels(base / dataset.files[i]))


def test_cli_run_reports_a_missing_domain_folder_without_a_traceback(tree, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from simulator.cli import app

    path = tmp_path / "imagenet_c.yaml"
    path.write_text(yaml.safe_dump(_scenario(tree, stream__severity=4)))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "gaussian_noise/4" in result.output and "3, 5" in result.output
    assert not (tmp_path / "run").exists()


def test_the_routing_foundation_model_is_the_pretrained_teacher_too(tree, offline_cache):
    from simulator.build import foundation_model

    scenario = scenario_from_dict(_scenario(tree, cloud__adapter="none"))
    model = foundation_model(scenario, None, len(WNIDS))  # no adapter teacher: built for routing
    net, mean, std = _direct(TEACHER, 101)
    x = torch.rand(2, 3, SIDE, SIDE)
    with torch.no_grad():
        assert torch.allclose(model(x), net((x - mean) / std), atol=1e-6)
