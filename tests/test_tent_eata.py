"""Tent and EATA cloud adapters and the EATA upload policy: steps, filters, scopes, config, runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from policies.upload import UPLOAD_POLICIES
from policies.upload.base import REDUNDANT, UNRELIABLE, UPLOADED
from simulator.adaptation import ADAPTERS
from simulator.adaptation.eata import EataAdapter, eata_filter
from simulator.adaptation.losses import softmax_entropy
from simulator.adaptation.tent import TentAdapter
from simulator.config import ScenarioError, scenario_from_dict
from simulator.engine import run_scenario
from simulator.models.norm import get_norm_state, set_norm_state, use_batch_statistics
from tests.conftest import tiny_scenario_dict

C = 10
E0 = 0.4 * math.log(C)


def tiny_model(seed: int = 1, logit_scale: float = 1.0) -> nn.Module:
    """Conv-BN-ReLU-pool-linear; ``logit_scale`` makes predictions confident (low entropy)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, C),
    ).eval()
    with torch.no_grad():
        model[5].weight.mul_(logit_scale)
    return model


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def make(name: str, seed: int = 0, logit_scale: float = 1.0, **config: object):
    cls = ADAPTERS.get(name)
    return ADAPTERS.create(
        name, tiny_model(1, logit_scale), None, cls.Config.model_validate(config), C, seed
    )


def batch_entropy(model: nn.Module, state: dict[str, torch.Tensor], x: torch.Tensor) -> float:
    """Mean entropy of ``model`` with ``state`` loaded, BN on batch statistics (Tent's forward)."""
    set_norm_state(model, state)
    with torch.no_grad(), use_batch_statistics(model):
        return float(softmax_entropy(model(x)).mean())


def one_hot_ish(cls: int, confidence: float) -> list[float]:
    rest = (1 - confidence) / (C - 1)
    return [confidence if c == cls else rest for c in range(C)]


def entropy_of(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.log()).sum(1)


# -- Tent ------------------------------------------------------------------------------------
def test_tent_step_lowers_the_entropy_of_the_batch_it_saw() -> None:
    tent = make("tent", batch_size=32, lr=0.05)
    x = images(32, 0)
    before = batch_entropy(tiny_model(1), tent.norm_state(0), x)
    stats = tent.observe(0, x)
    assert stats.steps == 1 and stats.samples == 32 and stats.teacher_steps == 0
    assert stats.loss == pytest.approx(before, rel=1e-5)  # loss = mean entropy before the step
    after = batch_entropy(tiny_model(1), tent.norm_state(0), x)
    assert after < before
    assert tent.version(0) == 1


def test_tent_defaults_follow_the_official_cifar10_config_and_edge_uses_batch_stats() -> None:
    cfg = TentAdapter.Config()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.batch_size) == ("adam", 1e-3, 0.9, 200)
    assert TentAdapter.edge_norm == "batch" and EataAdapter.edge_norm == "batch"
    assert not TentAdapter.needs_teacher and not EataAdapter.needs_teacher
    tent = make("tent")
    assert isinstance(tent._optimizer, torch.optim.Adam)
    assert tent._optimizer.defaults["betas"] == (0.9, 0.999)
    # the SGD choice: plain momentum as the released EATA/CEMA Tent baselines; Nesterov (Tent's
    # own conf.py) when asked
    sgd = make("tent", optimizer="sgd")._optimizer.defaults
    assert (sgd["momentum"], sgd["nesterov"], sgd["dampening"]) == (0.9, False, 0)
    assert make("tent", optimizer="sgd", nesterov=True)._optimizer.defaults["nesterov"]
    assert not make("eata")._optimizer.defaults["nesterov"]
    assert not make("tent", optimizer="sgd", momentum=0.0)._optimizer.defaults["nesterov"]


@pytest.mark.parametrize("name", ["tent", "eata"])
def test_updates_change_only_the_bn_affine_and_the_module_returns_to_source(name: str) -> None:
    adapter = make(name, logit_scale=30.0, batch_size=16, lr=0.05)
    source = get_norm_state(tiny_model(1, 30.0))
    adapter.observe(0, images(16, 3))
    assert adapter.version(0) == 1
    state = adapter.norm_state(0)
    assert set(state) == set(source)
    assert not torch.equal(state["1.weight"], source["1.weight"])
    assert not torch.equal(state["1.bias"], source["1.bias"])
    assert torch.equal(state["1.running_mean"], source["1.running_mean"])
    assert torch.equal(state["1.running_var"], source["1.running_var"])
    for key, value in get_norm_state(adapter.edge_model).items():
        assert torch.equal(value, source[key]), key
    assert all(torch.equal(v, source[k]) for k, v in adapter.norm_state(7).items())
    assert adapter.version(7) == 0  # a scope never seen holds the source state


def test_tent_carries_remainders_over_to_the_next_cloud_batch() -> None:
    tent = make("tent", batch_size=32)
    assert tent.observe(0, images(20, 0)).steps == 0 and tent.pending(0) == 20
    assert tent.observe(0, images(50, 1)).steps == 2 and tent.pending(0) == 6
    assert tent.version(0) == 2


@pytest.mark.parametrize("name", ["tent", "eata"])
def test_per_device_scopes_are_independent_including_optimizer_state(name: str) -> None:
    mixed = make(name, logit_scale=30.0, batch_size=16, lr=0.05)
    alone = make(name, logit_scale=30.0, batch_size=16, lr=0.05)
    mixed.observe(0, images(16, 0))
    mixed.observe(1, images(16, 1))
    mixed.observe(0, images(16, 2))
    alone.observe(0, images(16, 0))
    alone.observe(0, images(16, 2))
    assert mixed.version(1) == 1 and mixed.version(0) == alone.version(0) >= 1
    for key, value in alone.norm_state(0).items():
        assert torch.equal(mixed.norm_state(0)[key], value), key
    assert not torch.equal(mixed.norm_state(0)["1.weight"], mixed.norm_state(1)["1.weight"])


@pytest.mark.parametrize("name", ["tent", "eata"])
def test_adapters_are_deterministic_per_seed(name: str) -> None:
    runs = []
    for _ in range(2):
        adapter = make(name, logit_scale=30.0, batch_size=16)
        losses = [adapter.observe("shared", images(24, k)).loss for k in range(3)]
        runs.append((losses, adapter.norm_state("shared")))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[0][1].items():
        assert torch.equal(runs[1][1][key], value)


# -- EATA's filter ---------------------------------------------------------------------------
def test_eata_filter_first_batch_keeps_all_reliable_and_starts_the_average() -> None:
    probs = torch.tensor(
        [one_hot_ish(0, 0.91), [1 / C] * C, one_hot_ish(1, 0.91), one_hot_ish(2, 0.5)]
    )
    entropy = entropy_of(probs)
    assert entropy[0] < E0 < entropy[3] < entropy[1]  # 0.50, 0.92 (E_0), 2.07, 2.30 nats
    out = eata_filter(probs, entropy, E0, None, d_margin=0.4)
    assert out.reliable.tolist() == [True, False, True, False]
    assert out.kept.tolist() == [True, False, True, False]
    assert torch.allclose(out.mean_probs, probs[[0, 2]].mean(0))


def test_eata_filter_drops_high_entropy_and_redundant_samples_and_updates_the_average() -> None:
    p_avg = torch.tensor(one_hot_ish(0, 0.91))
    probs = torch.tensor(
        [one_hot_ish(0, 0.95), one_hot_ish(1, 0.95), [1 / C] * C, one_hot_ish(3, 0.9)]
    )
    cos = torch.nn.functional.cosine_similarity(p_avg.unsqueeze(0), probs, dim=1)
    assert cos[0] > 0.99 and cos[1] < 0.4 and cos[3] < 0.4  # same class: redundant
    out = eata_filter(probs, entropy_of(probs), E0, p_avg, d_margin=0.4)
    assert out.reliable.tolist() == [True, True, False, True]
    assert out.kept.tolist() == [False, True, False, True]
    expected = 0.9 * p_avg + 0.1 * probs[[1, 3]].mean(0)
    assert torch.allclose(out.mean_probs, expected)
    # nothing kept: the average stays; redundancy filter off: every reliable sample is kept
    none_kept = eata_filter(probs[[0, 2]], entropy_of(probs[[0, 2]]), E0, p_avg, 0.4)
    assert not none_kept.kept.any() and torch.equal(none_kept.mean_probs, p_avg)
    off = eata_filter(probs, entropy_of(probs), E0, p_avg, 0.4, filter_redundant=False)
    assert off.kept.tolist() == [True, True, False, True]


def test_eata_adapter_steps_only_on_kept_samples_with_weighted_entropy() -> None:
    eata = make("eata", batch_size=16, fisher_alpha=0.0)
    stats = eata.observe(0, images(16, 0))  # untrained tiny model: every entropy > E_0
    assert stats.steps == 0 and eata.version(0) == 0 and eata.filter_counts(0) == (0, 0)

    confident = make("eata", logit_scale=30.0, batch_size=16, fisher_alpha=0.0)
    x = images(16, 0)
    model = tiny_model(1, 30.0)
    with torch.no_grad(), use_batch_statistics(model):
        logits = model(x)
    entropy = softmax_entropy(logits)
    chosen = eata_filter(logits.softmax(1), entropy, E0, None, 0.4)
    assert torch.equal(chosen.kept, chosen.reliable) and int(chosen.kept.sum()) > 0  # 1st batch
    stats = confident.observe(0, x)
    kept_entropy = entropy[chosen.kept]
    expected = float((torch.exp(E0 - kept_entropy) * kept_entropy).mean())
    assert stats.steps == 1 and stats.loss == pytest.approx(expected, rel=1e-5)
    reliable, kept = confident.filter_counts(0)
    assert (reliable, kept) == (int(chosen.reliable.sum()), int(chosen.kept.sum()))


def test_eata_behind_its_own_upload_filter_steps_on_every_upload() -> None:
    resolve = EataAdapter.for_upload_policy
    assert resolve(None, "eata").cloud_filter is False  # the devices filtered already
    assert resolve(None, "all").cloud_filter is True
    assert resolve(EataAdapter.Config(cloud_filter=True), "eata").cloud_filter is True
    assert resolve(EataAdapter.Config(cloud_filter=False), "all").cloud_filter is False
    assert ADAPTERS.get("tent").for_upload_policy(None, "eata") is None  # nothing to resolve

    x = images(16, 0)  # untrained tiny model: every entropy > E_0, so the filter keeps nothing
    assert make("eata", batch_size=16, fisher_alpha=0.0).observe(0, x).steps == 0
    unfiltered = make("eata", batch_size=16, fisher_alpha=0.0, cloud_filter=False)
    stats = unfiltered.observe(0, x)
    model = tiny_model(1)
    with torch.no_grad(), use_batch_statistics(model):
        entropy = softmax_entropy(model(x))
    expected = float((torch.exp(E0 - entropy) * entropy).mean())
    assert stats.steps == 1 and stats.samples == 16
    assert stats.loss == pytest.approx(expected, rel=1e-5)
    assert unfiltered.filter_counts(0) == (16, 16)


def test_eata_steps_once_per_edge_batch_on_all_its_samples_as_released() -> None:
    assert EataAdapter.for_upload_policy(None, "eata").step_on == "edge_batch"
    assert EataAdapter.for_upload_policy(None, "all").step_on == "cloud_batch"
    given = EataAdapter.Config(step_on="cloud_batch")
    assert EataAdapter.for_upload_policy(given, "eata").step_on == "cloud_batch"
    x = images(5, 3)  # five kept samples of one edge batch: fewer than a cloud batch of 64
    per_edge = make("eata", fisher_alpha=0.0, cloud_filter=False, step_on="edge_batch")
    stats = per_edge.observe(0, x)
    model = tiny_model(1)
    with torch.no_grad(), use_batch_statistics(model):
        entropy = softmax_entropy(model(x))
    assert stats.steps == 1 and stats.samples == 5 and per_edge.pending(0) == 0
    assert stats.loss == pytest.approx(float((torch.exp(E0 - entropy) * entropy).mean()), rel=1e-5)
    assert (stats.edge_forward, stats.edge_backward) == (5, 5)
    per_cloud = make("eata", fisher_alpha=0.0, cloud_filter=False, step_on="cloud_batch")
    assert per_cloud.observe(0, x).steps == 0 and per_cloud.pending(0) == 5


def test_eata_fisher_is_estimated_from_first_uploads_at_the_source_and_anchors_updates() -> None:
    eata = make("eata", logit_scale=30.0, batch_size=16, fisher_samples=16, lr=0.05)
    x = images(16, 0)
    eata.observe(0, x)
    model = tiny_model(1, 30.0)
    with use_batch_statistics(model):
        logits = model(x)
    loss = nn.functional.cross_entropy(logits, logits.argmax(1))
    grad_w, grad_b = torch.autograd.grad(loss, [model[1].weight, model[1].bias])
    fisher = eata.fisher(0)
    assert torch.allclose(fisher["1.weight"], grad_w.square(), atol=1e-7)
    assert torch.allclose(fisher["1.bias"], grad_b.square(), atol=1e-7)
    eata.observe(0, images(16, 1))  # past fisher_samples: the estimate is frozen
    assert torch.equal(eata.fisher(0)["1.weight"], fisher["1.weight"])
    assert make("eata", fisher_alpha=0.0).fisher(0) is None

    def drift(alpha: float) -> float:
        adapter = make(
            "eata",
            logit_scale=10.0,
            batch_size=16,
            lr=0.05,
            fisher_alpha=alpha,
            filter_redundant=False,
        )
        for k in range(4):
            adapter.observe(0, images(16, k))
        assert adapter.version(0) == 4
        source = get_norm_state(tiny_model(1, 10.0))
        return float((adapter.norm_state(0)["1.weight"] - source["1.weight"]).abs().sum())

    assert drift(100.0) < drift(10.0) < drift(0.0)  # the regulariser holds the affine near source


# -- EATA upload policy ----------------------------------------------------------------------
def test_eata_policy_uploads_what_the_filter_keeps_with_reasons() -> None:
    policy = UPLOAD_POLICIES.create("eata", None, C, np.random.default_rng(0))
    first = torch.tensor([one_hot_ish(0, 0.91), [1 / C] * C, one_hot_ish(0, 0.93)])
    mask = policy.select(first, entropy_of(first))
    assert mask.tolist() == [True, False, True]
    assert policy.last_reasons.tolist() == [UPLOADED, UNRELIABLE, UPLOADED]
    assert torch.allclose(policy.mean_probs, first[[0, 2]].mean(0))

    second = torch.tensor([one_hot_ish(0, 0.95), one_hot_ish(4, 0.95), one_hot_ish(5, 0.4)])
    mask = policy.select(second, entropy_of(second))
    assert mask.dtype == bool and mask.tolist() == [False, True, False]
    assert policy.last_reasons.tolist() == [REDUNDANT, UPLOADED, UNRELIABLE]

    open_policy = UPLOAD_POLICIES.create(
        "eata",
        UPLOAD_POLICIES.get("eata").Config(filter_redundant=False),
        C,
        np.random.default_rng(0),
    )
    open_policy.select(first, entropy_of(first))
    assert open_policy.select(second, entropy_of(second)).tolist() == [True, True, False]


# -- configuration and whole runs -------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("cloud.eata.d_margin=0", "cloud.eata.d_margin"),
        ("cloud.eata.fisher_alpha=-1", "cloud.eata.fisher_alpha"),
        ("cloud.eata.e0_factor=1.5", "cloud.eata.e0_factor"),
        ("cloud.eata.cloud_filter=maybe", "cloud.eata.cloud_filter"),
        ("cloud.tent.optimizer=rmsprop", "cloud.tent.optimizer"),
        ("cloud.tent.lr=0", "cloud.tent.lr"),
        ("cloud.tent.momentum=1", "cloud.tent.momentum"),
        ("cloud.tent.steps=2", "cloud.tent.steps"),
        ("policy.eata.d_margin=2", "policy.eata.d_margin"),
        ("policy.eata.ema_momentum=1", "policy.eata.ema_momentum"),
    ],
)
def test_bad_tent_and_eata_values_are_rejected_with_their_dotted_path(
    override: str, path: str
) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(tiny_scenario_dict(), [override])
    assert path in {p.path for p in info.value.problems}, str(info.value)
    assert override.partition("=")[2] in str(info.value)


def test_good_tent_and_eata_values_resolve() -> None:
    s = scenario_from_dict(
        tiny_scenario_dict(),
        ["cloud.adapter=eata", "cloud.eata.fisher_alpha=0", "policy.name=eata"],
    )
    assert s.cloud.params().fisher_alpha == 0 and s.cloud.params().d_margin == 0.4
    assert s.policy.params().d_margin == 0.4
    tent = scenario_from_dict(tiny_scenario_dict(), ["cloud.adapter=tent", "cloud.tent.lr=0.01"])
    assert tent.cloud.params().lr == 0.01 and tent.cloud.params().optimizer == "adam"


@pytest.mark.parametrize(("adapter", "policy"), [("tent", "all"), ("eata", "eata")])
def test_tiny_scenario_runs_end_to_end(adapter: str, policy: str) -> None:
    data = tiny_scenario_dict(
        dataset__size=64, stream__samples_per_device=32, stream__segment_samples=32
    )
    scenario = scenario_from_dict(
        data,
        [f"cloud.adapter={adapter}", f"cloud.{adapter}.batch_size=16", f"policy.name={policy}"],
    )
    s = run_scenario(scenario).summary
    assert s["adapter"] == adapter and s["samples"] == 2 * 32
    assert s["updates"] > 0 and s["download_bytes"] > 0
    if policy == "all":
        assert s["uploaded_samples"] == s["samples"]
    else:
        assert 0 < s["uploaded_samples"] < s["samples"]


def test_a_run_resolves_the_eata_cloud_filter_from_the_upload_policy() -> None:
    data = tiny_scenario_dict(
        dataset__size=64, stream__samples_per_device=64, stream__segment_samples=32
    )
    base = ["cloud.adapter=eata", "cloud.eata.batch_size=16", "cloud.eata.fisher_alpha=0"]

    def updates(*overrides: str) -> tuple[int, float]:
        s = run_scenario(scenario_from_dict(data, [*base, *overrides])).summary
        return s["updates"], s["mean_entropy"]

    summary = run_scenario(scenario_from_dict(data, [*base, "policy.name=eata"])).summary
    assert summary["resolved"] == {  # what auto became: the released cloud-edge baseline
        "cloud.eata.cloud_filter": False,
        "cloud.eata.step_on": "edge_batch",
    }
    # unfiltered, stepping per upload message: every upload is stepped on once
    assert summary["cloud_kept_samples"] == summary["cloud_reliable_samples"] > 0
    assert summary["cloud_kept_samples"] == summary["uploaded_samples"]
    assert summary["cloud_steps"] == summary["upload_messages"]
    batched = run_scenario(
        scenario_from_dict(data, [*base, "policy.name=eata", "cloud.eata.step_on=cloud_batch"])
    ).summary
    # per cloud batch: only uploads that completed a batch of 16
    assert batched["cloud_kept_samples"] == 16 * batched["cloud_steps"]
    behind_eata = updates("policy.name=eata")
    assert behind_eata == updates("policy.name=eata", "cloud.eata.cloud_filter=false")
    budget = ["policy.name=budget", "policy.budget.inner=eata", "policy.budget.burst_s=1000"]
    assert updates(*budget) == updates(*budget, "cloud.eata.cloud_filter=false")
    # filtering the uploads again steps on fewer of them: the edge learns something else
    assert updates("policy.name=eata", "cloud.eata.cloud_filter=true") != behind_eata
