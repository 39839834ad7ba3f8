"""The baselines as released (Tent, EATA and CEMA official code): hand-computed steps."""

from __future__ import annotations

import math

import pytest
import torch

from simulator.adaptation import ADAPTERS
from simulator.adaptation.losses import softmax_entropy
from simulator.config import scenario_from_dict
from simulator.engine import run_scenario
from simulator.models.norm import use_batch_statistics
from tests.conftest import tiny_scenario_dict
from tests.test_tent_eata import C, images
from tests.test_tent_eata import tiny_model as net

E0 = 0.4 * math.log(C)
AFFINE = ("1.weight", "1.bias")


def make(name: str, logit_scale: float = 1.0, **config: object):
    cls = ADAPTERS.get(name)
    return ADAPTERS.create(name, net(1, logit_scale), None, cls.Config.model_validate(config), C, 0)


def gradient(
    affine: list[torch.Tensor], x: torch.Tensor, loss_of, logit_scale: float = 1.0
) -> list[torch.Tensor]:
    """d loss / d (BN weight, bias) at ``affine``, BN on the batch's statistics."""
    model = net(1, logit_scale)
    with torch.no_grad():
        model[1].weight.copy_(affine[0])
        model[1].bias.copy_(affine[1])
    with use_batch_statistics(model):
        loss = loss_of(model(x))
    return list(torch.autograd.grad(loss, [model[1].weight, model[1].bias]))


def tent_loss(logits: torch.Tensor) -> torch.Tensor:
    return softmax_entropy(logits).mean()


def affine_of(adapter) -> list[torch.Tensor]:
    state = adapter.norm_state(0)
    return [state[k] for k in AFFINE]


@pytest.mark.parametrize("nesterov", [False, True])
def test_tent_sgd_steps_as_hand_computed_momentum_plain_by_default(nesterov: bool) -> None:
    lr, m = 0.5, 0.9
    options = {"nesterov": True} if nesterov else {}
    tent = make("tent", optimizer="sgd", lr=lr, batch_size=16, **options)
    x0, x1 = images(16, 0), images(16, 1)
    theta0 = [net(1)[1].weight.detach().clone(), net(1)[1].bias.detach().clone()]
    g0 = gradient(theta0, x0, tent_loss)
    tent.observe(0, x0)
    # step 1: buffer = g0; plain: theta - lr g0; Nesterov: theta - lr (g0 + m g0)
    step = [g * (1 + m) if nesterov else g for g in g0]
    theta1 = [t - lr * s for t, s in zip(theta0, step, strict=True)]
    for got, want in zip(affine_of(tent), theta1, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    g1 = gradient(theta1, x1, tent_loss)
    tent.observe(0, x1)
    # step 2: buffer = m g0 + g1; plain: theta - lr buffer; Nesterov: theta - lr (g1 + m buffer)
    buffer = [m * a + b for a, b in zip(g0, g1, strict=True)]
    step = [b + m * buf if nesterov else buf for b, buf in zip(g1, buffer, strict=True)]
    theta2 = [t - lr * s for t, s in zip(theta1, step, strict=True)]
    for got, want in zip(affine_of(tent), theta2, strict=True):
        assert torch.allclose(got, want, atol=1e-6)
    assert ADAPTERS.get("tent").Config().nesterov is False  # the released baselines' SGD


def eata_loss(logits: torch.Tensor) -> torch.Tensor:
    entropy = softmax_entropy(logits)
    return (torch.exp(E0 - entropy.detach()) * entropy).mean()


def test_eata_edge_batch_steps_once_per_edge_batch_on_its_uploads_as_cema_released() -> None:
    lr = 0.2
    eata = make(
        "eata", logit_scale=30.0, lr=lr, batch_size=64, fisher_alpha=0.0,
        cloud_filter=False, step_on="edge_batch",
    )  # fmt: skip
    x = images(5, 0)  # fewer uploads than batch_size: one step anyway, on these 5
    theta0 = [net(1, 30.0)[1].weight.detach().clone(), net(1, 30.0)[1].bias.detach().clone()]
    g = gradient(theta0, x, eata_loss, logit_scale=30.0)
    stats = eata.observe(0, x)
    assert (stats.steps, stats.samples, eata.pending(0)) == (1, 5, 0)
    model = net(1, 30.0)
    with torch.no_grad(), use_batch_statistics(model):
        expected_loss = float(eata_loss(model(x)))
    assert stats.loss == pytest.approx(expected_loss, rel=1e-5)
    for got, t, grad in zip(affine_of(eata), theta0, g, strict=True):
        assert torch.allclose(got, t - lr * grad, atol=1e-6)  # first SGD step: theta - lr g
    assert eata.observe(0, images(0, 1)).steps == 0  # a batch that uploaded nothing: no step
    assert eata.observe(0, images(7, 2)).samples == 7  # the next edge batch: its own 7


def test_a_run_behind_the_eata_policy_steps_once_per_upload_message_on_its_samples() -> None:
    data = tiny_scenario_dict(
        dataset__size=64, stream__samples_per_device=64, stream__segment_samples=32
    )
    result = run_scenario(scenario_from_dict(data, ["cloud.adapter=eata", "policy.name=eata"]))
    assert result.summary["resolved"]["cloud.eata.step_on"] == "edge_batch"
    events = result.events
    uploads = events[(events["kind"] == "upload") & (events["samples"] > 0)]
    updates = events[events["kind"] == "update"]
    # one message served at a time (gather 1): each update is one edge batch's uploads, one step
    assert len(updates) == len(uploads) > 0 and (updates["steps"] == 1).all()
    assert sorted(updates["samples"]) == sorted(uploads["samples"])


def test_cema_replay_only_step_after_an_empty_edge_batch_is_an_option() -> None:
    teacher = net(2)
    cfg = ADAPTERS.get("cema").Config(
        batch_size=16, replay_min=16, replay_batch=8, replay_only_batch=12
    )
    cema = ADAPTERS.create("cema", net(1), teacher, cfg, C, 0)
    cema.observe(0, images(20, 0))
    stats = cema.observe(0, images(0, 1))  # what a header-only message brings: nothing
    assert (stats.steps, stats.samples, stats.teacher_steps) == (1, 12, 0)
    assert cfg.replay_after_empty_batch is False  # fleetsim's default; true = the release

    data = tiny_scenario_dict(
        dataset__size=64,
        stream__samples_per_device=64,
        stream__segment_samples=32,
        stream__batch_size=4,
        policy__name="random",
        policy__random={"p": 0.2},  # 0.8^4: about 4 in 10 edge batches upload nothing
    )
    small_replay = ["cloud.cema.replay_min=8", "cloud.cema.replay_only_batch=8"]

    def run(released: bool):
        flag = f"cloud.cema.replay_after_empty_batch={str(released).lower()}"
        return run_scenario(scenario_from_dict(data, [*small_replay, flag]))

    before, released = run(False), run(True)
    header = scenario_from_dict(data).network.header_bytes
    uploads = released.events[released.events["kind"] == "upload"]
    empty = uploads[uploads["samples"] == 0]
    assert len(empty) > 0 and (empty["bytes"] == header).all()
    old = before.events[before.events["kind"] == "upload"]
    assert (old["samples"] > 0).all()
    # every batch is heard of; the uploaded samples are the same, the notices add headers
    assert len(uploads) == 2 * 64 // 4 - len(released.events.query("kind == 'drop'"))
    assert released.summary["uploaded_samples"] == before.summary["uploaded_samples"]
    assert released.summary["upload_bytes"] == before.summary["upload_bytes"] + header * len(empty)
    assert released.summary["cloud_steps"] > before.summary["cloud_steps"]
