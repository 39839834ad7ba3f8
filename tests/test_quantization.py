"""Fake quantization and data-free GDFQ: low-bit weights, BN statistics matching, the zoo names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from simulator.cli import app
from simulator.models.cifar_resnet import cifar_resnet
from simulator.models.gdfq import GDFQConfig, build_quantized, gdfq_quantize, train_generator
from simulator.models.norm import configure_norm_adaptation, get_norm_state, set_norm_state
from simulator.models.quant import (
    ActivationQuantizer,
    QuantConv2d,
    QuantLinear,
    calibrate_activations,
    fake_quantize,
    model_nbytes,
    observe_activations,
    quantize_model,
    quantized_layers,
    random_noise_images,
)
from simulator.models.zoo import ModelError, create_model, model_info

runner = CliRunner()
TINY = GDFQConfig(
    latent_dim=8,
    generator_width=8,
    batch_size=8,
    generator_iters=4,
    calibration_batches=2,
    distill_iters=3,
    threads=1,  # tiny layers: a second thread only adds synchronisation on busy cores
)


def _tiny_teacher(seed: int = 0) -> nn.Module:
    """A 4-class ResNet-8 of width 4 whose BN running statistics come from shifted noise."""
    torch.manual_seed(seed)
    net = cifar_resnet(8, num_classes=4, width=4)
    net.train()
    with torch.no_grad():
        for i in range(3):
            net(torch.randn(16, 3, 16, 16) * 1.5 + 0.3 * i)
    return net.eval()


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantized_weights_take_at_most_2_pow_bits_distinct_values_per_channel(bits: int):
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Conv2d(3, 6, 3), nn.Linear(6, 5)), bits, bits)
    for _, layer in quantized_layers(model):
        w = layer.quantized_weight().detach().reshape(layer.weight.shape[0], -1)
        counts = [len(torch.unique(row)) for row in w]
        assert max(counts) <= 2**bits
        assert min(counts) >= min(2**bits // 2, w.shape[1] // 2)  # the levels are actually used
        assert torch.all(w.min(1).values <= 0) and torch.all(w.max(1).values >= 0)
        step = float(layer.weight.detach().abs().max()) / (
            2**bits - 1
        )  # half a step, range <= 2 max|w|
        assert torch.allclose(w, layer.weight.reshape(w.shape), atol=step)


def test_fake_quantize_rounds_to_the_grid_and_passes_gradients_straight_through():
    x = torch.tensor([-1.0, -0.26, 0.0, 0.24, 0.76, 5.0], requires_grad=True)
    y = fake_quantize(x, torch.tensor(0.5), torch.tensor(2.0), bits=2)  # grid -1, -0.5, 0, 0.5
    assert y.tolist() == [-1.0, -0.5, 0.0, 0.0, 0.5, 0.5]
    y.sum().backward()
    assert x.grad is not None and x.grad.tolist() == [1.0] * 6


def test_quantized_model_output_stays_within_the_expected_error_of_float():
    model = create_model("synthetic_edge")
    images = random_noise_images(32, seed=1) * 0.5 + 0.25
    with torch.no_grad():
        ref = model(images)
    errors = {}
    for bits in (8, 4):
        q = calibrate_activations(quantize_model(model, bits, bits), [images])
        with torch.no_grad():
            out = q(images)
        errors[bits] = float((out - ref).norm() / ref.norm())
        assert type(q.net.bn1) is nn.BatchNorm2d  # BN stays unfolded and in float
    assert errors[8] < 0.03  # 255 levels: a few tenths of a percent per layer
    assert 2 * errors[8] < errors[4] < 0.6
    uncalibrated = quantize_model(model, 8, 8)  # activation ranges unknown: only weights rounded
    with torch.no_grad():
        assert float((uncalibrated(images) - ref).norm() / ref.norm()) < 0.03


def test_first_layer_input_stays_float_and_later_inputs_are_quantized():
    q = quantize_model(cifar_resnet(8, width=4), 4, 4)
    layers = quantized_layers(q)
    assert layers[0][0] == "conv1" and layers[0][1].act_quant is None
    assert all(layer.act_quant is not None for _, layer in layers[1:])
    assert isinstance(layers[-1][1], QuantLinear) and isinstance(layers[0][1], QuantConv2d)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(q, 4, 4)
    with pytest.raises(ValueError, match="from 2 to 16"):
        quantize_model(cifar_resnet(8, width=4), 1, 4)


def test_gdfq_generator_bns_loss_falls_during_training():
    teacher = _tiny_teacher()
    config = GDFQConfig(
        latent_dim=16, generator_width=16, batch_size=16, generator_iters=20, threads=1
    )
    _, history = train_generator(teacher, num_classes=4, config=config, image_size=16)
    bns = history["bns"]
    assert len(bns) == 20 and len(history["ce"]) == 20
    assert sum(bns[-5:]) / 5 < 0.8 * bns[0]  # 0.45 -> about 0.33
    assert not any(p.requires_grad is False for p in teacher.parameters())  # restored


def test_gdfq_is_deterministic_per_seed_and_leaves_the_float_model_alone():
    teacher = _tiny_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    first, report = gdfq_quantize(teacher, 4, 4, num_classes=4, config=TINY, image_size=16)
    second, _ = gdfq_quantize(teacher, 4, 4, num_classes=4, config=TINY, image_size=16)
    other, _ = gdfq_quantize(
        teacher,
        4,
        4,
        num_classes=4,
        config=GDFQConfig(**{**TINY.__dict__, "seed": 1}),
        image_size=16,
    )
    a, b, c = first.state_dict(), second.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert set(report["distillation"]) == {"loss", "agreement"}
    assert all(not p.requires_grad for p in first.parameters())


def test_quantized_model_norm_state_round_trips_and_cema_adapts_bn_through_fake_quant():
    model = create_model("synthetic_edge")
    q = calibrate_activations(quantize_model(model, 4, 4), [random_noise_images(16, seed=0)])
    state = get_norm_state(q)
    assert state.keys() == get_norm_state(model).keys()
    shifted = {k: v + 0.1 if k.endswith("bias") else v for k, v in state.items()}
    set_norm_state(q, shifted)
    assert all(torch.equal(v, shifted[k]) for k, v in get_norm_state(q).items())
    params = configure_norm_adaptation(q)
    assert {id(p) for p in params} == {id(p) for p in q.parameters() if p.requires_grad}
    q.train()
    ranges = [
        (m.act_quant.x_min.clone(), m.act_quant.x_max.clone())
        for _, m in quantized_layers(q)
        if m.act_quant is not None
    ]
    q(random_noise_images(8, seed=2)).logsumexp(1).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    after = [
        (m.act_quant.x_min, m.act_quant.x_max)
        for _, m in quantized_layers(q)
        if m.act_quant is not None
    ]
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(ranges, after, strict=True)
    )


def test_build_quantized_checkpoint_loads_by_zoo_name(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FLEETSIM_MODELS", str(tmp_path))
    name = "synthetic_edge-w8a8-minmax"
    with pytest.raises(ModelError, match="fleetsim zoo quantize --model synthetic_edge"):
        create_model(name)
    quantized, report = build_quantized("synthetic_edge", 8, "minmax", tmp_path, noise_images=32)
    assert report["path"] == str(tmp_path / f"{name}.pt")
    loaded = create_model(name)
    x = random_noise_images(4, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(x), quantized(x))
    info = model_info("resnet20-w4a4-gdfq")
    fp32 = model_info("resnet20")
    assert info["params"] == fp32["params"] == 269_722
    assert fp32["size_bytes"] / 8 < info["size_bytes"] < fp32["size_bytes"] / 6
    assert model_nbytes(loaded) < model_nbytes(create_model("synthetic_edge")) / 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bits", "3"], "bits must be one of 8, 4, got 3"),
        (["--bits", "4", "--method", "kmeans"], "unknown method 'kmeans'; allowed: gdfq, minmax"),
        (["--bits", "4", "--model", "resnet56"], "cannot quantize 'resnet56'"),
        (["--bits", "4", "--distill-iters", "0", "--batch-size", "0"], "batch_size must be >= 1"),
    ],
)
def test_cli_quantize_rejects_bad_bits_method_and_model(args: list[str], message: str, tmp_path):
    result = runner.invoke(app, ["zoo", "quantize", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert not list(tmp_path.iterdir())


def test_the_calibrated_flag_follows_observation_reset_and_loaded_state():
    torch.manual_seed(0)
    x = torch.randn(8, 4) * 3
    q = ActivationQuantizer(2)
    assert torch.equal(q(x), x)  # uncalibrated: passes through (and remembers that)
    calibrated = ActivationQuantizer(2)
    calibrated_model = nn.Sequential(calibrated)
    with observe_activations(calibrated_model, "minmax"):
        calibrated_model(x)
    assert not torch.equal(calibrated(x), x)
    q.load_state_dict(calibrated.state_dict())  # a checkpoint loaded after the first pass
    assert torch.equal(q(x), calibrated(x))
    with observe_activations(nn.Sequential(q), "minmax", reset=True):
        pass  # reset, nothing observed
    assert torch.equal(q(x), x)
