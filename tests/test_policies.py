"""Upload policies: none, all, random, and CEMA's filter order, thresholds and redundancy EMA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from policies.upload import REASONS, UPLOAD_POLICIES
from policies.upload.cema import CemaUpload

C = 10
LN_C = math.log(C)
E0 = 0.4 * LN_C


def uniform_probs(batch_size: int, num_classes: int = C) -> torch.Tensor:
    return torch.full((batch_size, num_classes), 1.0 / num_classes)


def two_hot(i: int, j: int, num_classes: int = C) -> torch.Tensor:
    p = torch.zeros(num_classes)
    p[[i, j]] = 0.5
    return p


def make_cema(**config: object) -> CemaUpload:
    cfg = CemaUpload.Config.model_validate(config)
    return CemaUpload(cfg, C, np.random.default_rng(0))


def test_registry_lists_builtin_upload_policies() -> None:
    builtin = ["all", "budget", "cema", "eata", "none", "random", "uncertain"]
    assert UPLOAD_POLICIES.names() == builtin
    assert UPLOAD_POLICIES.describe("cema").startswith("CEMA")


def test_none_uploads_nothing_and_all_uploads_everything() -> None:
    probs, entropy = uniform_probs(5), torch.rand(5)
    none = UPLOAD_POLICIES.create("none", None, C, np.random.default_rng(0))
    assert not none.select(probs, entropy).any()
    assert list(none.last_reasons) == ["disabled"] * 5
    everything = UPLOAD_POLICIES.create("all", None, C, np.random.default_rng(0))
    mask = everything.select(probs, entropy)
    assert mask.dtype == bool and mask.all()
    assert list(everything.last_reasons) == ["uploaded"] * 5


def test_random_policy_uploads_at_rate_p_and_is_deterministic_per_seed() -> None:
    config = UPLOAD_POLICIES.get("random").Config(p=0.3)
    probs, entropy = uniform_probs(20_000), torch.zeros(20_000)

    def run(seed: int) -> np.ndarray:
        policy = UPLOAD_POLICIES.create("random", config, C, np.random.default_rng(seed))
        return policy.select(probs, entropy)

    mask = run(1)
    assert mask.mean() == pytest.approx(0.3, abs=0.01)
    np.testing.assert_array_equal(mask, run(1))
    assert (mask != run(2)).any()
    policy = UPLOAD_POLICIES.create("random", config, C, np.random.default_rng(1))
    policy.select(probs[:4], entropy[:4])
    assert set(policy.last_reasons) <= {"uploaded", "not_sampled"}
    with pytest.raises(ValidationError):
        UPLOAD_POLICIES.get("random").Config(p=1.5)


def test_cema_drops_unreliable_then_low_informative_samples() -> None:
    policy = make_cema(filter_redundant=False)
    entropy = torch.tensor([2.0, E0, E0 - 1e-6, 0.5, 0.01], dtype=torch.float64)
    mask = policy.select(uniform_probs(5), entropy)
    assert mask.tolist() == [False, False, True, True, False]
    assert policy.last_reasons.tolist() == [
        "unreliable",
        "unreliable",
        "uploaded",
        "uploaded",
        "low_info",
    ]
    assert set(policy.last_reasons) <= set(REASONS)


def test_cema_low_informative_boundary_is_inclusive() -> None:
    policy = make_cema(filter_redundant=False)
    e_low = 0.02 * LN_C
    entropy = torch.tensor([e_low, e_low + 1e-9, e_low - 1e-9], dtype=torch.float64)
    mask = policy.select(uniform_probs(3), entropy)
    assert mask.tolist() == [False, True, False]
    assert policy.last_reasons.tolist() == ["low_info", "uploaded", "low_info"]


def test_cema_high_entropy_sample_that_is_also_redundant_is_reported_unreliable() -> None:
    policy = make_cema(filter_redundant=True)
    first = torch.stack([two_hot(0, 1), two_hot(0, 1)])
    assert policy.select(first, torch.tensor([0.5, 0.5])).all()  # first batch initialises p_avg
    torch.testing.assert_close(policy.mean_probs, two_hot(0, 1))

    probs = torch.stack([two_hot(0, 1), two_hot(0, 1), two_hot(2, 3)])
    mask = policy.select(probs, torch.tensor([2.0, 0.5, 0.5]))
    assert mask.tolist() == [False, False, True]
    assert policy.last_reasons.tolist() == ["unreliable", "redundant", "uploaded"]
    # EMA 0.9 over the probabilities of the samples kept after filtering (EATA's update order).
    torch.testing.assert_close(policy.mean_probs, 0.9 * two_hot(0, 1) + 0.1 * two_hot(2, 3))


def test_cema_redundancy_average_unchanged_when_nothing_is_kept() -> None:
    policy = make_cema(filter_redundant=True)
    policy.select(two_hot(0, 1).unsqueeze(0), torch.tensor([0.5]))
    mask = policy.select(two_hot(0, 1).unsqueeze(0), torch.tensor([0.5]))
    assert not mask.any()
    torch.testing.assert_close(policy.mean_probs, two_hot(0, 1))


def test_cema_dynamic_threshold_after_warmup_equals_e0_times_mean_ratio_times_lambda() -> None:
    policy = make_cema(filter_redundant=False, warmup_samples=8, **{"lambda": 0.5})
    batch1 = torch.tensor([0.2, 0.4, 0.2, 0.4], dtype=torch.float64)
    policy.select(uniform_probs(4), batch1)
    assert policy.warmup_mean is None and policy.e_max == pytest.approx(E0)  # static before

    batch2 = torch.tensor([0.6, 0.2, 0.2, 0.2], dtype=torch.float64)
    policy.select(uniform_probs(4), batch2)
    mean_w = float(torch.cat([batch1, batch2]).mean())
    assert policy.warmup_mean == pytest.approx(mean_w)
    assert policy.e_max == pytest.approx(E0 * 0.5)  # mean_t == mean_W at the end of warm-up

    batch3 = torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float64)
    mean_t = float(torch.cat([batch1, batch2, batch3]).mean())
    expected = E0 * (mean_t / mean_w) * 0.5  # the threshold uses mean_t including batch 3
    mask = policy.select(uniform_probs(4), batch3)
    assert policy.e_max == pytest.approx(expected)
    assert mask.tolist() == (batch3.numpy() < expected).tolist()
    assert policy.mean_entropy == pytest.approx(mean_t)


def test_cema_static_threshold_when_dynamic_is_off() -> None:
    policy = make_cema(filter_redundant=False, warmup_samples=2, dynamic=False)
    policy.select(uniform_probs(4), torch.full((4,), 0.1, dtype=torch.float64))
    policy.select(uniform_probs(4), torch.full((4,), 0.8, dtype=torch.float64))
    assert policy.e_max == pytest.approx(E0)


def test_cema_all_filters_off_uploads_everything() -> None:
    policy = make_cema(filter_unreliable=False, filter_low_info=False, filter_redundant=False)
    mask = policy.select(uniform_probs(3), torch.tensor([5.0, 0.0, 1.0]))
    assert mask.all()


def test_cema_config_accepts_lambda_alias_and_forbids_unknown_keys() -> None:
    assert CemaUpload.Config.model_validate({"lambda": 0.6}).lambda_ == 0.6
    with pytest.raises(ValidationError):
        CemaUpload.Config.model_validate({"lamda": 0.6})
    with pytest.raises(ValidationError):
        CemaUpload.Config.model_validate({"e0_factor": 0})
