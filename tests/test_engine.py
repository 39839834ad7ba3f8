"""Whole-run behaviour on a tiny scenario: determinism, accounting, atomic output."""

import json

import numpy as np
import pytest

from simulator.config import scenario_from_dict
from simulator.engine import run_scenario
from simulator.fleet.cloud import AFFINE_FIELDS
from simulator.models.norm import norm_state_nbytes
from simulator.models.zoo import create_model
from simulator.runs import write_run
from tests.conftest import tiny_scenario_dict


def _numbers(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_time_s"}


@pytest.fixture(scope="module")
def cema_run():
    return run_scenario(scenario_from_dict(tiny_scenario_dict()))


def test_same_seed_gives_identical_summary_and_another_seed_differs(cema_run):
    again = run_scenario(scenario_from_dict(tiny_scenario_dict()))
    assert json.dumps(_numbers(again.summary)) == json.dumps(_numbers(cema_run.summary))
    other = run_scenario(scenario_from_dict(tiny_scenario_dict(seed=1)))
    assert _numbers(other.summary) != _numbers(cema_run.summary)


def test_summary_counts_agree_with_events(cema_run):
    s, ev = cema_run.summary, cema_run.events
    samples = ev[ev.kind == "sample"]
    assert s["samples"] == 2 * 256 == len(samples)
    assert s["accuracy"] == pytest.approx(samples.correct.mean())
    assert s["uploaded_samples"] == samples.uploaded.sum()
    uploads = ev[ev.kind == "upload"]
    assert uploads.samples.sum() == s["uploaded_samples"]
    assert sum(d["samples"] for d in s["per_device"]) == s["samples"]
    assert sum(d["upload_bytes"] for d in s["per_device"]) == s["upload_bytes"]
    assert set(s["per_domain"]) == {"gaussian_noise/5", "contrast/5"}
    assert 0 < s["uploaded_samples"] < s["samples"]
    assert s["updates"] > 0 and s["download_bytes"] > 0
    assert s["sim_time_s"] >= 256 / 32.0


def test_download_bytes_are_real_normalization_state_bytes(cema_run):
    model = create_model("synthetic_edge")
    from simulator.models.norm import get_norm_state

    # CEMA's default edge normalises with batch statistics: only the BN affine travels
    state = get_norm_state(model)
    affine = {k: v for k, v in state.items() if k.endswith(AFFINE_FIELDS)}
    assert 0 < len(affine) < len(state)
    per_message = 64 + norm_state_nbytes(affine)
    downloads = cema_run.events[cema_run.events.kind == "download"]
    assert (downloads.bytes == per_message).all()
    assert cema_run.summary["download_bytes"] == per_message * len(downloads)


def test_predictions_use_the_state_held_before_the_batch_own_update(cema_run):
    ev = cema_run.events
    samples = ev[ev.kind == "sample"]
    first = samples[samples.batch == 0]
    assert (first.version == 0).all()
    # A device's version never goes backwards.
    for _, g in samples.groupby("device"):
        assert np.all(np.diff(g.version.to_numpy()) >= 0)


def test_policy_none_uploads_nothing_and_source_model_never_updates():
    r = run_scenario(
        scenario_from_dict(tiny_scenario_dict(policy={"name": "none"}), ["cloud.adapter=none"])
    )
    s = r.summary
    assert s["uploaded_samples"] == 0 and s["upload_bytes"] == 0
    assert s["updates"] == 0 and s["download_bytes"] == 0


def test_upload_bytes_are_measured_encodings_plus_headers():
    raw = run_scenario(
        scenario_from_dict(tiny_scenario_dict(), ["policy.name=all", "network.encoding=raw"])
    )
    s = raw.summary
    assert s["uploaded_samples"] == s["samples"]
    assert s["upload_bytes"] == s["samples"] * 32 * 32 * 3 + 64 * s["upload_messages"]


def test_write_run_is_atomic_and_replaces(tmp_path, cema_run):
    out = tmp_path / "run"
    write_run(cema_run, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "events.parquet",
        "summary.json",
    ]
    write_run(cema_run, out)  # replacing an existing run leaves no temporary folders
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert json.loads((out / "summary.json").read_text())["samples"] == 512


def test_per_device_scope_keeps_one_state_per_device():
    r = run_scenario(scenario_from_dict(tiny_scenario_dict(), ["cloud.scope=per_device"]))
    updates = r.events[r.events.kind == "update"]
    assert set(updates.scope.astype(int)) == {0, 1}
    # Each device's updates come from its own uploads only; a scope's version counts its own steps.
    assert (updates.scope.astype(int) == updates.device.astype(int)).all()
    for _, g in updates.groupby("scope"):
        assert list(g.version.astype(int)) == list(g.steps.astype(int).cumsum())


def test_bn_stats_baseline_normalises_with_batch_statistics_on_the_edge():
    source = run_scenario(
        scenario_from_dict(tiny_scenario_dict(), ["cloud.adapter=none", "policy.name=none"])
    )
    bn = run_scenario(
        scenario_from_dict(tiny_scenario_dict(), ["cloud.adapter=bn_stats", "policy.name=none"])
    )
    assert bn.summary["updates"] == 0 and bn.summary["download_bytes"] == 0
    # Test-batch statistics recover much of what contrast and noise take from the source model.
    assert bn.summary["accuracy"] > source.summary["accuracy"] + 0.05


def test_cached_corruptions_give_the_same_run(tmp_path, monkeypatch, cema_run):
    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path / "cache"))
    cached = run_scenario(scenario_from_dict(tiny_scenario_dict(), ["dataset.cache=true"]))
    assert _numbers(cached.summary) == _numbers(cema_run.summary)
    assert any((tmp_path / "cache").rglob("*.npy"))


def test_runs_without_likely_mistakes_have_no_warnings_key():
    result = run_scenario(scenario_from_dict(tiny_scenario_dict(stream__samples_per_device=64)))
    assert "warnings" not in result.summary


def test_a_short_last_batch_under_batch_statistics_is_warned_about():
    from simulator.checks import scenario_warnings

    def warnings(**changes):
        return scenario_warnings(scenario_from_dict(tiny_scenario_dict(**changes)))

    # the tiny scenario's CEMA edge normalises with batch statistics (edge_norm: batch)
    assert warnings() == []  # 256 samples in batches of 32
    [text] = warnings(stream__samples_per_device=257)
    assert "last batch of 1 image," in text and "a multiple of 32" in text
    assert warnings(stream__samples_per_device=272) == []  # a last batch of 16 is fine
    assert warnings(stream__samples_per_device=257, cloud__cema__edge_norm="eval") == []
