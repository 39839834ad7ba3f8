"""The bandwidth-aware upload policy: a token bucket on the available uplink rate."""

import numpy as np
import pytest
import torch

from policies.upload import UPLOAD_POLICIES
from simulator.config import ScenarioError, scenario_from_dict
from simulator.engine import run_scenario
from tests.conftest import tiny_scenario_dict


def _policy(**config):
    cls = UPLOAD_POLICIES.get("budget")
    policy = cls(cls.Config(inner="all", **config), 10, np.random.default_rng(0))
    inner = UPLOAD_POLICIES.get("all")
    policy.bind_inner(inner(inner.Config(), 10, np.random.default_rng(1)))
    return policy


def _batch(n: int):
    entropy = torch.linspace(0.1, 2.0, n)
    return torch.full((n, 10), 0.1), entropy


def test_the_bucket_fills_at_a_share_of_the_uplink_and_keeps_the_most_uncertain():
    policy = _policy(fraction=0.5, burst_s=4.0, initial_sample_bytes=2000)
    policy.context(0.0, 8.0)  # 8 Mbit/s: 0.5 MB/s for uploads, nothing saved yet
    probs, entropy = _batch(300)
    assert not policy.select(probs, entropy).any()
    assert set(policy.last_reasons) == {"over_budget"}
    policy.context(1.0, 8.0)  # one second at 0.5 MB/s: 250 samples of 2000 B
    mask = policy.select(probs, entropy)
    assert mask.sum() == 250 and mask[-250:].all()  # the highest-entropy ones
    assert (policy.last_reasons[mask] == "uploaded").all()
    policy.charge(250 * 2400, 250)  # real payloads were larger: the estimate follows them
    assert policy.sample_bytes == 2400 and policy.tokens == pytest.approx(5e5 - 6e5)


def test_an_outage_refills_nothing_and_the_bucket_is_capped():
    policy = _policy(fraction=1.0, burst_s=2.0, initial_sample_bytes=1000)
    policy.context(0.0, 0.0)  # the link is down
    policy.context(100.0, 4.0)
    assert policy.tokens == 0
    policy.context(200.0, 4.0)  # 100 s at 0.5 MB/s, capped at 2 s of it
    assert policy.tokens == pytest.approx(1e6)


def test_a_run_holds_each_device_to_its_byte_budget():
    fraction = 0.05
    scenario = tiny_scenario_dict(
        policy={"name": "budget", "budget": {"inner": "all", "fraction": fraction, "burst_s": 1}},
        cloud__adapter="none",
    )
    result = run_scenario(scenario_from_dict(scenario))
    s = result.summary
    assert 0 < s["uploaded_samples"] < s["samples"]
    for row in s["per_device"]:
        budget = fraction * row["uplink_mbps"] * 1e6 / 8 * (s["sim_time_s"] + 1)
        one_batch = 32 * 3500  # an estimate may be one batch short of the real payload
        assert row["upload_bytes"] <= budget + one_batch
    reasons = result.events[result.events.kind == "sample"].reason.astype(str)
    assert "over_budget" in set(reasons)


@pytest.mark.parametrize("inner", ["budget", "nope"])
def test_bad_inner_policy_is_refused(inner):
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(
            tiny_scenario_dict(policy={"name": "budget", "budget": {"inner": inner}})
        )
    assert "policy.budget.inner" in str(err.value)
