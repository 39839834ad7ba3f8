"""Cloud adapters: CEMA losses, carry-over, replay, scopes, shared teacher; baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

import simulator.adaptation.cema as cema_module
from simulator.adaptation import ADAPTERS, AdaptStats
from simulator.adaptation.base import CLOUD_MEMORY_FORMAT
from simulator.adaptation.cema import CemaAdapter, _batch_renorm_mode, _renormalise
from simulator.adaptation.losses import (
    cema_distillation_loss,
    softmax_entropy,
    teacher_entropy_loss,
)
from simulator.adaptation.replay import ReplayBuffer

C = 5
E0 = 0.4 * math.log(C)


def tiny_model(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, C),
    ).eval()


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def make_cema(seed: int = 0, **config: object) -> CemaAdapter:
    cfg = CemaAdapter.Config.model_validate(config)
    return ADAPTERS.create("cema", tiny_model(4, 1), tiny_model(8, 2), cfg, C, seed)


def bn_keys(model: nn.Module) -> set[str]:
    return {
        f"{name}.{key}"
        for name, module in model.named_modules()
        if isinstance(module, nn.BatchNorm2d)
        for key in ("weight", "bias", "running_mean", "running_var")
    }


# -- losses ---------------------------------------------------------------------------------
def hand_entropy(p: list[float]) -> float:
    return -sum(x * math.log(x) for x in p)


def softmax_row(z: list[float]) -> list[float]:
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_softmax_entropy_matches_hand_computation() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]])
    expected = [hand_entropy(softmax_row(row)) for row in logits.tolist()]
    torch.testing.assert_close(softmax_entropy(logits), torch.tensor(expected))
    assert expected[1] == pytest.approx(math.log(3))


def test_distillation_loss_matches_hand_computation_on_2x3_logits() -> None:
    student = [[1.0, 2.0, 0.5], [0.3, -1.0, 0.8]]
    teacher = [[0.2, 1.5, -0.5], [2.0, 0.1, 0.4]]
    e0 = 0.4 * math.log(3)
    ent_terms, kl_terms, ce_terms = [], [], []
    for s, t in zip(student, teacher, strict=True):
        ps, pt = softmax_row(s), softmax_row(t)
        hs, ht = hand_entropy(ps), hand_entropy(pt)
        ws, wt = math.exp(e0 - hs), math.exp(e0 - ht)
        ent_terms.append(ws * hs)
        kl_terms.append(wt * sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True)))
        ce_terms.append(wt * -math.log(ps[pt.index(max(pt))]))
    expected = 3 * np.mean(ent_terms) + 3 * np.mean(kl_terms) + 1 * np.mean(ce_terms)
    loss = cema_distillation_loss(torch.tensor(student), torch.tensor(teacher), e0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_teacher_entropy_loss_matches_hand_computation() -> None:
    logits = [[1.0, 2.0, 0.5], [0.3, -1.0, 0.8]]
    e0 = 0.4 * math.log(3)
    hs = [hand_entropy(softmax_row(row)) for row in logits]
    expected = np.mean([math.exp(e0 - h) * h for h in hs])
    assert teacher_entropy_loss(torch.tensor(logits), e0).item() == pytest.approx(expected)


def test_distillation_weights_are_detached() -> None:
    student = torch.tensor([[1.0, 2.0, 0.5]], requires_grad=True)
    loss = cema_distillation_loss(
        student, torch.tensor([[0.2, 1.5, -0.5]]), 0.4, kl_weight=0, ce_weight=0, entropy_weight=1
    )
    loss.backward()
    h = softmax_entropy(student.detach().requires_grad_())
    probe = student.detach().clone().requires_grad_()
    (math.exp(0.4 - h.item()) * softmax_entropy(probe)).sum().backward()
    torch.testing.assert_close(student.grad, probe.grad)


# -- replay buffer --------------------------------------------------------------------------
def test_replay_buffer_keeps_last_capacity_and_samples_without_replacement() -> None:
    buffer = ReplayBuffer(capacity=5)
    batch = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1) / 255.0
    buffer.add(batch)
    assert len(buffer) == 5
    drawn = buffer.sample(5, torch.Generator().manual_seed(0)).flatten() * 255.0
    assert sorted(drawn.round().tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0]
    with pytest.raises(ValueError):
        buffer.sample(6, torch.Generator())


# -- CEMA adapter ---------------------------------------------------------------------------
def test_cema_carries_over_uploads_until_a_full_cloud_batch() -> None:
    adapter = make_cema()
    assert adapter.observe(1, images(20, 0)) == AdaptStats(0, 0, 0, None)
    stats = adapter.observe(1, images(20, 1))
    assert (stats.steps, stats.teacher_steps, stats.samples) == (1, 1, 32)
    assert stats.loss is not None and math.isfinite(stats.loss)
    assert adapter.pending(1) == 8 and adapter.version(1) == 1
    stats = adapter.observe(1, images(70, 2))  # 8 + 70 = two batches, 14 carried
    assert (stats.steps, stats.teacher_steps, adapter.pending(1)) == (2, 2, 14)


def test_cema_replays_once_enough_are_stored_and_steps_on_replay_only_without_a_batch() -> None:
    adapter = make_cema(replay_min=40, replay_batch=16, replay_only_batch=24, replay_capacity=100)
    stats = adapter.observe(0, images(40, 0))  # 40 stored >= 40: 32 new + 16 replayed
    assert (stats.steps, stats.samples, adapter.pending(0)) == (1, 48, 8)
    stats = adapter.observe(0, images(0, 1))  # no batch, 40 stored, not > 40
    assert stats.steps == 0
    stats = adapter.observe(0, images(4, 2))  # no batch, 44 stored > 40: replay-only step
    assert (stats.steps, stats.samples, stats.teacher_steps) == (1, 24, 0)
    assert adapter.replay_size(0) == 44 and adapter.version(0) == 2


def test_cema_default_replay_waits_for_256_stored_uploads() -> None:
    adapter = make_cema()
    stats = adapter.observe(0, images(250, 0))
    assert (stats.steps, stats.samples) == (7, 7 * 32)
    stats = adapter.observe(0, images(10, 1))  # 260 stored: 26 carried + 10 = one batch + replay
    assert (stats.steps, stats.samples) == (1, 32 + 96)
    stats = adapter.observe(0, images(1, 2))  # 261 > 256 and no full batch: replay-only on 128
    assert (stats.steps, stats.samples, stats.teacher_steps) == (1, 128, 0)


def test_cema_norm_state_changes_only_bn_tensors_and_edge_module_is_restored() -> None:
    adapter = make_cema()
    source = adapter.norm_state(3)
    edge_before = {k: v.clone() for k, v in adapter.edge_model.state_dict().items()}
    adapter.observe(3, images(32, 0))
    state = adapter.norm_state(3)
    assert set(state) == bn_keys(adapter.edge_model) == set(source)
    for key in state:
        assert not torch.equal(state[key], source[key]), key
    for key, value in adapter.edge_model.state_dict().items():  # one module, back to source
        if not key.endswith("num_batches_tracked"):
            torch.testing.assert_close(value, edge_before[key])


def test_cema_edge_running_stats_start_from_first_cloud_batch() -> None:
    adapter = make_cema()
    batch = images(32, 0)
    adapter.observe(0, batch)
    with torch.no_grad():
        features = adapter.edge_model[0](batch)
    state = adapter.norm_state(0)
    torch.testing.assert_close(state["1.running_mean"], features.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(
        state["1.running_var"], features.transpose(0, 1).flatten(1).var(dim=1, unbiased=True)
    )


def test_batch_renormalisation_forwards_with_running_stats_and_backpropagates_through_batch():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, 1.5, -1.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
        bn.running_mean.copy_(torch.tensor([0.2, -0.1, 1.0]))
        bn.running_var.copy_(torch.tensor([0.5, 2.0, 1.5]))
    x = (torch.randn(6, 3, 4, 4) * 2 + 1).requires_grad_(True)
    old_mean, old_var = bn.running_mean.clone(), bn.running_var.clone()
    out = _renormalise(bn, x, momentum=0.1, update=True, init=False)
    # value: what an eval-mode edge with the (old) running statistics computes
    expected = F.batch_norm(x, old_mean, old_var, bn.weight, bn.bias, training=False)
    torch.testing.assert_close(out, expected)
    # running statistics moved 0.1 towards the batch's (unbiased variance)
    flat = x.detach().transpose(0, 1).flatten(1)
    torch.testing.assert_close(bn.running_mean, 0.9 * old_mean + 0.1 * flat.mean(dim=1))
    torch.testing.assert_close(bn.running_var, 0.9 * old_var + 0.1 * flat.var(dim=1))
    # gradient: train-mode BN's, each channel scaled by batch std / running std
    upstream = torch.randn_like(out)
    (grad_renorm,) = torch.autograd.grad((out * upstream).sum(), x)
    scale = (flat.var(dim=1, unbiased=False) + bn.eps).sqrt() / (old_var + bn.eps).sqrt()
    train = F.batch_norm(x, None, None, bn.weight.detach() * scale, None, training=True)
    (grad_train,) = torch.autograd.grad((train * upstream).sum(), x)
    torch.testing.assert_close(grad_renorm, grad_train)
    # init: statistics start from the batch's, so the value is the batch normalised by them
    fresh = nn.BatchNorm2d(3)
    out = _renormalise(fresh, x.detach(), momentum=0.1, update=False, init=True)
    torch.testing.assert_close(fresh.running_mean, flat.mean(dim=1))
    torch.testing.assert_close(fresh.running_var, flat.var(dim=1))
    torch.testing.assert_close(
        out, F.batch_norm(x.detach(), flat.mean(dim=1), flat.var(dim=1), training=False)
    )


def test_batch_renorm_mode_patches_every_bn_and_restores_the_model() -> None:
    model = tiny_model(4, 1).train()  # flags must come back as they were, train mode included
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = images(16, 0)
    with _batch_renorm_mode(model, update=False):
        assert "forward" in vars(model[1]) and not model.training and not model[1].training
        renormed = model(batch)
    assert "forward" not in vars(model[1]) and model.training and model[1].training
    with torch.no_grad():
        torch.testing.assert_close(renormed, model.eval()(batch))  # update=False: eval values
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    model.train()
    with pytest.raises(RuntimeError), _batch_renorm_mode(model):
        raise RuntimeError("a failing step")
    assert "forward" not in vars(model[1]) and model[1].training


def test_cema_tbr_edge_deploys_running_stats_fitted_under_renormalisation() -> None:
    tbr = make_cema(edge_norm="tbr", teacher_distill_norm="tbr")
    assert tbr.edge_norm == "eval"  # the edge normalises with the downloaded running statistics
    teacher_mean = tbr.teacher[1].running_mean.clone()
    batch = images(32, 0)
    assert tbr.observe(0, batch).steps == 1
    with torch.no_grad():
        features = tbr.edge_model[0](batch)
        teacher_features = tbr.teacher[0](batch)
    state = tbr.norm_state(0)
    # first cloud batch: running statistics start from it (edge and teacher), as released
    torch.testing.assert_close(state["1.running_mean"], features.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(tbr.teacher[1].running_mean, teacher_features.mean(dim=(0, 2, 3)))
    assert not torch.equal(tbr.teacher[1].running_mean, teacher_mean)
    # the affine differs from the one fitted with train-mode BN forwards (edge_norm eval)
    plain = make_cema(edge_norm="eval", teacher_distill_norm="tbr")
    plain.observe(0, batch)
    plain.observe(0, images(32, 1))
    tbr.observe(0, images(32, 1))
    assert not torch.allclose(tbr.norm_state(0)["1.weight"], plain.norm_state(0)["1.weight"])
    assert "forward" not in vars(tbr.edge_model[1]) and "forward" not in vars(tbr.teacher[1])


def test_cema_tbr_statistics_follow_each_step_with_the_configured_momentum() -> None:
    tbr = make_cema(edge_norm="tbr", teacher_distill_norm="tbr", bn_momentum=0.25)
    tbr.observe(0, images(32, 0))
    edge_mean = tbr.norm_state(0)["1.running_mean"].clone()
    teacher_mean = tbr.teacher[1].running_mean.clone()
    second = images(32, 1) * 2.0 + 0.5  # a shifted batch, so the statistics must move
    # what each model's first layer sees (its conv is frozen: only BN affine adapts)
    with torch.no_grad():
        edge_batch_mean = tbr.edge_model[0](second).mean(dim=(0, 2, 3))
        teacher_batch_mean = tbr.teacher[0](second).mean(dim=(0, 2, 3))
    tbr.observe(0, second)
    # edge: 0.25 of the way (bn_momentum), not re-initialised; teacher: its own momentum, 0.1
    torch.testing.assert_close(
        tbr.norm_state(0)["1.running_mean"], 0.75 * edge_mean + 0.25 * edge_batch_mean
    )
    torch.testing.assert_close(
        tbr.teacher[1].running_mean, 0.9 * teacher_mean + 0.1 * teacher_batch_mean
    )


def test_cema_tbr_teacher_distils_with_its_running_statistics() -> None:
    tbr = make_cema(edge_norm="tbr", teacher_distill_norm="tbr")
    tbr.observe(0, images(32, 0))
    batch = images(32, 5) * 3.0  # far from the statistics: batch and running BN differ
    with torch.no_grad():
        expected = tbr.teacher(tbr.layout(batch))  # eval mode: running statistics
    torch.testing.assert_close(tbr._teacher_logits(batch), expected)
    with cema_module._bn_train_mode(tbr.teacher, update_running=False), torch.no_grad():
        assert not torch.allclose(tbr.teacher(tbr.layout(batch)), expected)


def test_cema_scopes_are_independent() -> None:
    adapter = make_cema(adapt_teacher=False)
    adapter.observe(1, images(32, 0))
    assert adapter.version(1) == 1 and adapter.version(2) == 0
    for key, value in adapter.norm_state(2).items():
        assert not torch.equal(value, adapter.norm_state(1)[key])
    adapter.observe(2, images(32, 0))  # same uploads from the source state: same result
    for key, value in adapter.norm_state(2).items():
        torch.testing.assert_close(value, adapter.norm_state(1)[key], rtol=0, atol=0)
    adapter.observe(1, images(32, 1))  # scope 1's momentum and state do not touch scope 2
    assert adapter.version(1) == 2 and adapter.version(2) == 1
    fresh = make_cema(adapt_teacher=False)
    fresh.observe(7, images(32, 0))
    fresh.observe(7, images(32, 1))
    for key, value in adapter.norm_state(1).items():
        torch.testing.assert_close(value, fresh.norm_state(7)[key])


def test_cema_teacher_is_shared_by_all_scopes() -> None:
    teacher = tiny_model(8, 2)
    adapter = CemaAdapter(tiny_model(4, 1), teacher, None, C, seed=0)
    assert adapter.teacher is teacher
    weight0 = teacher[1].weight.detach().clone()
    assert adapter.observe(1, images(32, 0)).teacher_steps == 1
    weight1 = teacher[1].weight.detach().clone()
    assert adapter.observe(2, images(32, 1)).teacher_steps == 1
    assert not torch.equal(weight0, weight1)
    assert not torch.equal(weight1, teacher[1].weight)
    assert not teacher.training and not teacher[0].weight.requires_grad


def test_cloud_models_train_contiguous_on_the_cpu_and_channels_last_by_choice_agrees() -> None:
    contiguous = make_cema()
    assert contiguous.memory_format == torch.contiguous_format  # CLOUD_MEMORY_FORMAT["cpu"]
    assert {"cpu": torch.contiguous_format, "cuda": torch.channels_last} == CLOUD_MEMORY_FORMAT
    for model in (contiguous.edge_model, contiguous.teacher):
        assert model[0].weight.is_contiguous()
        assert not model[0].weight.is_contiguous(memory_format=torch.channels_last)
    in_channels_last = type("CemaChannelsLast", (CemaAdapter,), {})
    in_channels_last.memory_format_override = torch.channels_last
    cfg = CemaAdapter.Config()
    adapter = in_channels_last(tiny_model(4, 1), tiny_model(8, 2), cfg, C, 0)
    assert adapter.memory_format == torch.channels_last
    for model in (adapter.edge_model, adapter.teacher):
        assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    for batch in range(3):
        adapter.observe(0, images(32, batch))
        contiguous.observe(0, images(32, batch))
    for key, value in adapter.norm_state(0).items():
        torch.testing.assert_close(value, contiguous.norm_state(0)[key], rtol=1e-4, atol=1e-5)


def test_cema_frozen_teacher_does_not_change() -> None:
    adapter = make_cema(adapt_teacher=False)
    before = {k: v.clone() for k, v in adapter.teacher.state_dict().items()}
    assert adapter.observe(0, images(32, 0)).teacher_steps == 0
    for key, value in adapter.teacher.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_cema_is_deterministic_per_seed() -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        adapter = make_cema(seed, replay_min=32, replay_batch=16, replay_capacity=64)
        for i in range(4):
            adapter.observe(5, images(24, i))
        return adapter.norm_state(5)

    first, again, other = run(0), run(0), run(1)
    for key in first:
        assert torch.equal(first[key], again[key])
    assert any(not torch.equal(first[key], other[key]) for key in first)


def test_cema_accepts_inference_tensors_from_the_edge() -> None:
    adapter = make_cema()
    with torch.inference_mode():
        uploads = images(32, 0) * 1.0
        stats = adapter.observe(0, uploads)
    assert stats.steps == 1


def test_cema_requires_a_teacher_and_validates_config() -> None:
    with pytest.raises(ValueError, match="teacher"):
        CemaAdapter(tiny_model(4, 1), None, None, C, seed=0)
    with pytest.raises(ValidationError):
        CemaAdapter.Config.model_validate({"batch_size": 0})
    with pytest.raises(ValidationError):
        CemaAdapter.Config.model_validate({"lr": 0.1})
    with pytest.raises(ValidationError):
        CemaAdapter.Config.model_validate({"replay_min": 500, "replay_capacity": 100})


# -- baselines ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "edge_norm"), [("none", "eval"), ("bn_stats", "batch")])
def test_source_and_bn_stats_adapters_do_no_cloud_work(name: str, edge_norm: str) -> None:
    edge = tiny_model(4, 1)
    source = {k: v.clone() for k, v in edge.state_dict().items()}
    adapter = ADAPTERS.create(name, edge, None, None, C, 0)
    assert adapter.edge_norm == edge_norm and not adapter.needs_teacher
    assert adapter.observe(0, images(64, 0)) == AdaptStats()
    assert adapter.version(0) == 0
    assert set(adapter.norm_state(0)) == bn_keys(edge)
    for key, value in adapter.norm_state(0).items():
        torch.testing.assert_close(value, source[key])


def test_adapter_registry_lists_builtins() -> None:
    assert {"none", "bn_stats", "cema"} <= set(ADAPTERS.names())
    assert ADAPTERS.get("cema").needs_teacher
