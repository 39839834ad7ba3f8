"""Cloud compute time from the counted MACs of each step on a cloud hardware profile."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from simulator.adaptation import AdaptStats
from simulator.cli import app
from simulator.config import ScenarioError, scenario_from_dict
from simulator.engine import run_scenario
from simulator.fleet.cloud_time import CloudTime
from simulator.hardware import CLOUD_PROFILES, CloudProfile
from tests.conftest import tiny_scenario_dict
from tests.test_adaptation import images, make_cema


def test_step_time_from_macs_matches_a_hand_computation():
    profile = CloudProfile(gmacs_per_s=100.0, step_overhead_ms=2.0)
    timing = CloudTime(profile=profile, profile_name="mine", teacher_macs=10**7, edge_macs=10**6)
    stats = AdaptStats(
        steps=2, teacher_forward=160, teacher_backward=32, edge_forward=128, edge_backward=128
    )
    # teacher 1e7 x (160 + 32) + edge 1e6 x (128 + 128) = 2.176e9 MACs at 1e11 MAC/s, + 2 x 2 ms
    assert timing(stats) == pytest.approx(0.004 + 2.176e9 / 1e11)
    assert timing(AdaptStats()) == 0.0  # no step, no time
    assert CloudTime(ms_per_step=40.0)(stats) == pytest.approx(0.08)
    assert timing.describe() == "mine" and CloudTime(ms_per_step=1).describe() == "ms_per_step"
    with pytest.raises(ValueError, match="exactly one"):
        CloudTime(ms_per_step=40.0, profile=profile)


def test_cema_reports_the_work_of_its_steps():
    adapter = make_cema()  # cloud batches of 32, replay only from 256 stored uploads
    stats = adapter.observe(0, images(40, 0))
    # teacher: a step on the 32 (forward + backward), then distillation logits for them (forward)
    assert (stats.teacher_forward, stats.teacher_backward) == (64, 32)
    assert (stats.edge_forward, stats.edge_backward) == (32, 32)
    frozen = make_cema(adapt_teacher=False).observe(0, images(40, 0))
    assert (frozen.teacher_forward, frozen.teacher_backward) == (32, 0)


def _run(*overrides: str) -> dict:
    data = tiny_scenario_dict(stream__samples_per_device=128, stream__segment_samples=64)
    return run_scenario(scenario_from_dict(data, ["cloud.ms_per_step=null", *overrides]))


def test_a_run_takes_cloud_time_from_the_profile_and_records_it():
    fast, slow = _run(), _run("cloud.profile=cpu_server")
    s = fast.summary
    assert s["cloud_profile"] == "a100" and slow.summary["cloud_profile"] == "cpu_server"
    updates = fast.events[fast.events.kind == "update"]
    assert len(updates) and s["cloud_compute_s"] == pytest.approx(updates["compute_s"].sum())
    assert s["cloud_busy_s"] == pytest.approx(s["cloud_compute_s"])
    # the same work (same steps) on a slower machine: the tiny models are overhead-bound
    assert slow.summary["cloud_steps"] == s["cloud_steps"]
    assert slow.summary["cloud_compute_s"] > 2 * s["cloud_compute_s"]
    fixed = _run("cloud.ms_per_step=40").summary
    assert fixed["cloud_profile"] == "ms_per_step"
    assert fixed["cloud_compute_s"] == pytest.approx(0.04 * fixed["cloud_steps"])
    own = _run("cloud.profile=mine", "cloud.profiles={mine: {gmacs_per_s: 1.0}}").summary
    assert (
        own["cloud_profile"] == "mine" and own["cloud_compute_s"] > slow.summary["cloud_compute_s"]
    )


def test_an_unknown_cloud_profile_names_the_allowed_ones():
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(tiny_scenario_dict(), ["cloud.profile=tpu"])
    assert "unknown cloud profile 'tpu'" in str(err.value) and "cpu_server" in str(err.value)


def test_list_profiles_shows_the_cloud_profiles():
    result = CliRunner().invoke(app, ["list", "profiles"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "cloud profiles" in result.output
    assert all(name in result.output for name in CLOUD_PROFILES)
