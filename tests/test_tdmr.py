"""TDMR (cloud adapter ``tdmr``): its losses against hand computations, the model payloads, the
cloud that redeploys whole models, and whole runs on the shipped synthetic models."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import simpy
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from simulator.adaptation.base import AdaptStats
from simulator.adaptation.tdmr import (
    ProxySpace,
    TdmrAdapter,
    features_and_logits,
    gaussian_shift,
    input_transform,
    progressive_alpha,
    proxy_alignment_loss,
    reprogramming_loss,
    soft_kd_loss,
    tdmr_distillation_loss,
)
from simulator.adaptation.whole_model import ModelShipping
from simulator.cli import app
from simulator.config import ScenarioError, scenario_from_dict
from simulator.data.corruptions import corrupt
from simulator.data.datasets import make_synthetic
from simulator.engine import run_scenario
from simulator.fleet.cloud_time import CloudTime
from simulator.fleet.executor import FleetExecutor
from simulator.fleet.model_payload import decode_model, encode_model
from simulator.fleet.redeploy import ModelCloud, ModelDeployments, stale_model_seconds
from simulator.metrics import EventRecorder
from simulator.models.flops import count_macs
from simulator.models.quant import fake_quantize, weight_qparams
from simulator.models.zoo import create_model
from tests.conftest import tiny_scenario_dict


def _tiny_net(width: int = 4, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(width, classes),
    ).eval()


# -- losses against hand computations -------------------------------------------------------------
def test_input_transform_adds_the_bounded_pattern_and_clips_to_the_pixel_range():
    images = torch.tensor([0.5, 0.99]).view(1, 1, 1, 2)
    pattern = torch.full((1, 1, 1, 2), math.atanh(0.5))  # tanh = 0.5
    out = input_transform(images, pattern, budget=0.1)
    assert out.flatten().tolist() == pytest.approx([0.55, 1.0])


def test_reprogramming_loss_is_the_weighted_mean_cross_entropy():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    loss = reprogramming_loss(logits, torch.tensor([1, 0]), torch.tensor([2.0, 1.0]))
    assert float(loss) == pytest.approx((2 * math.log(4 / 3) + math.log(2)) / 2)


def test_proxy_alignment_loss_compares_directions_not_lengths():
    student = torch.tensor([[3.0, 4.0], [5.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    # row 1: (0.6, 0.8) vs (0, 1): 0.36 + 0.04; row 2: equal directions
    assert float(proxy_alignment_loss(student, teacher)) == pytest.approx(0.2)


def test_soft_kd_loss_is_t_squared_kl_of_softened_distributions():
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])  # at T=2: softmax (3/4, 1/4)
    expected = 4 * (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))
    assert float(soft_kd_loss(student, teacher, temperature=2.0)) == pytest.approx(expected)


def test_distillation_loss_mixes_proxy_and_task_terms_by_alpha():
    student_proxy = torch.tensor([[3.0, 4.0]])
    teacher_proxy = torch.tensor([[0.0, 2.0]])
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])
    loss, parts = tdmr_distillation_loss(
        student_proxy,
        teacher_proxy,
        student,
        teacher,
        torch.tensor([0]),
        torch.tensor([2.0]),
        0.25,
        temperature=2.0,
        ce_weight=0.5,
    )
    kd = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    ce = 2 * math.log(2.0)
    assert parts == pytest.approx({"proxy": 0.4, "kd": kd, "ce": ce})
    assert float(loss) == pytest.approx(0.25 * 0.4 + 0.75 * kd + 0.5 * ce)
    with pytest.raises(ValueError, match="proxy features"):
        tdmr_distillation_loss(None, None, student, teacher, torch.tensor([0]), torch.ones(1), 0.5)


def test_progressive_alpha_falls_linearly_and_the_ablations_hold_it():
    assert [progressive_alpha(k, 5) for k in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert [progressive_alpha(k, 3, "no_progressive") for k in range(3)] == [0.5] * 3
    assert [progressive_alpha(k, 3, "plain_kd") for k in range(3)] == [0.0] * 3
    assert progressive_alpha(0, 1) == 0.0
    with pytest.raises(ValueError):
        progressive_alpha(5, 5)


def test_gaussian_shift_is_the_symmetric_kl_per_dimension():
    zero, one = torch.zeros(2), torch.ones(2)
    assert gaussian_shift(zero, one, one, one) == pytest.approx(0.5)  # mean moved by one std
    assert gaussian_shift(zero, one, zero, 4 * one) == pytest.approx(0.5625)  # 0.25 (0.25 + 4 - 2)
    assert gaussian_shift(zero, one, zero, one) == 0.0


def test_proxy_space_starts_as_the_foundation_models_own_classifier():
    teacher = _tiny_net(width=6, classes=3)
    proxy = ProxySpace((3, 8, 8), teacher[-1], 5, 3, 0.1, torch.Generator().manual_seed(0))
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features, logits = features_and_logits(teacher, proxy.transform(x))
        _, mapped = proxy(features)
    assert torch.equal(proxy.transform(x), x)  # a zero pattern: the input unchanged
    torch.testing.assert_close(mapped, logits)


# -- payloads ----------------------------------------------------------------------------------------
def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in _tiny_net(width=8, seed=seed).state_dict().items()}


def test_full_payload_decodes_to_exactly_the_weights():
    weights = _weights()
    payload = encode_model(weights, "full", 3)
    decoded, version = decode_model(payload)
    assert version == 3 and decoded.keys() == weights.keys()
    assert all(torch.equal(decoded[k], weights[k]) for k in weights)
    assert encode_model(weights, "full", 3) == payload  # the same bytes every time


def test_changed_payload_carries_only_changed_tensors_and_rebuilds_the_model_exactly():
    held, new = _weights(), _weights()
    new["5.weight"] = new["5.weight"] + 1.0  # the classifier only
    payload = encode_model(new, "changed", 2, held=held, held_version=1)
    full = encode_model(new, "full", 2)
    assert len(payload) < len(full)
    record = torch.load(__import__("io").BytesIO(payload), weights_only=True)
    assert list(record["tensors"]) == ["5.weight"]
    decoded, version = decode_model(payload, held, 1)
    assert version == 2 and all(torch.equal(decoded[k], new[k]) for k in new)
    with pytest.raises(ValueError, match="builds on version 1"):
        decode_model(payload, held, 0)


def test_quantized_payload_carries_the_fake_quantized_weights_in_fewer_bytes():
    torch.manual_seed(0)
    weights = {"fc.weight": torch.randn(64, 255), "fc.bias": torch.randn(64)}
    full = encode_model(weights, "full", 1)
    w8 = encode_model(weights, "quantized", 1, bits=8)
    w4 = encode_model(weights, "quantized", 1, bits=4)
    assert len(w4) < len(w8) < len(full)
    assert len(full) - len(w8) > 0.7 * 64 * 255 * 3  # 4 bytes -> 1 byte per weight
    for bits, payload in ((8, w8), (4, w4)):
        decoded, _ = decode_model(payload)
        scale, zero = weight_qparams(weights["fc.weight"], bits)
        expected = fake_quantize(weights["fc.weight"], scale, zero, bits)
        torch.testing.assert_close(decoded["fc.weight"], expected, rtol=0, atol=1e-6)
        assert max(len(row.unique()) for row in decoded["fc.weight"]) <= 2**bits
        assert torch.equal(decoded["fc.bias"], weights["fc.bias"])


# -- the cloud that redeploys ------------------------------------------------------------------------
class _Rebuilder:
    """Stand-in adapter: a rebuild after every 2 uploads adds 1 to the classifier weights."""

    def __init__(self, weights, kind="full", bits=8):
        self.weights, self.kind, self.bits = weights, kind, bits
        self.uploads = self.at_rebuild = self.current = 0

    def shipping(self):
        return ModelShipping(self.kind, self.bits)

    def tick_s(self):
        return None

    def observe(self, scope, images):
        self.uploads += len(images)
        return AdaptStats()

    def rebuild_reason(self, scope, now_s):
        return "uploads" if self.uploads - self.at_rebuild >= 2 else None

    def rebuild(self, scope, now_s, reason):
        self.at_rebuild = self.uploads
        self.current += 1
        self.weights = {**self.weights, "5.weight": self.weights["5.weight"] + 1.0}
        return AdaptStats(steps=1)

    def version(self, scope):
        return self.current

    def model_state(self, scope):
        return {k: v.clone() for k, v in self.weights.items()}


class _Downlink:
    def __init__(self, env, mbps):
        self.env, self.mbps, self.sent = env, mbps, []

    def send(self, nbytes):
        self.sent.append(nbytes)
        yield self.env.timeout(nbytes * 8 / (self.mbps * 1e6))


def _redeploy(kind: str, header_bytes: int = 64):
    env = simpy.Environment()
    recorder = EventRecorder()
    source = _weights()
    net = _tiny_net(width=8)
    runtime = FleetExecutor(net, batch_statistics=True)
    switches: list[tuple[float, int]] = []
    device = SimpleNamespace(downlink=_Downlink(env, mbps=1.0))
    device.switch_model = lambda executor, state: switches.append((env.now, state.version))
    adapter = _Rebuilder(source, kind)
    cloud = ModelCloud(
        env,
        adapter,
        {0: device},
        workers=1,
        step_time=CloudTime(ms_per_step=500.0),
        per_device_scope=False,
        header_bytes=header_bytes,
        recorder=recorder,
        deployments=ModelDeployments(net, runtime),
        source_weights=source,
    )
    image = SimpleNamespace(float=lambda: torch.zeros(2, 3, 8, 8))
    for t in (0.0, 10.0):
        env.process(_deliver_at(env, cloud, t, image))
    env.run()
    return cloud, adapter, device, switches, recorder.frame(), source


def _deliver_at(env, cloud, t, images):
    yield env.timeout(t)
    cloud.deliver(SimpleNamespace(device=0, images=images, sent_s=t))


def test_download_bytes_equal_the_serialized_payload_and_the_switch_waits_for_all_of_them():
    cloud, adapter, device, switches, events, source = _redeploy("full")
    downloads = events[events["kind"] == "download"]
    updates = events[events["kind"] == "update"]
    assert list(downloads["version"]) == [1, 2]
    expected = [source]
    for version in (1, 2):
        weights = {**expected[-1], "5.weight": expected[-1]["5.weight"] + 1.0}
        payload = encode_model(weights, "full", version)
        row = downloads[downloads["version"] == version].iloc[0]
        assert row["payload_bytes"] == len(payload) and row["bytes"] == len(payload) + 64
        expected.append(weights)
    assert device.downlink.sent == list(downloads["bytes"])
    # the rebuild takes 0.5 s of simulated cloud time; the switch comes once the last byte is in
    for (t_switch, _), t_update, nbytes in zip(
        switches, updates["sim_time_s"], downloads["bytes"], strict=True
    ):
        assert t_switch == pytest.approx(t_update + nbytes * 8 / 1e6)
    assert [v for _, v in switches] == [1, 2]
    assert t_update == pytest.approx(10.5)
    executor, _ = cloud.deployments.get(0, 2, expected[2])
    assert torch.equal(executor.row_model[-1].weight, expected[2]["5.weight"])
    assert torch.equal(adapter.weights["5.weight"], expected[2]["5.weight"])


def test_changed_payloads_build_on_what_the_device_holds():
    _, _, device, switches, events, _ = _redeploy("changed", header_bytes=0)
    downloads = events[events["kind"] == "download"]
    full = encode_model(_weights(), "full", 1)
    assert (downloads["bytes"] < len(full) / 2).all()  # the classifier only (and no header)
    assert [v for _, v in switches] == [1, 2]


def test_stale_model_seconds_count_from_publication_to_switch_within_the_active_span():
    import pandas as pd

    events = pd.DataFrame(
        [
            {"kind": "sample", "device": 0, "sim_time_s": 0.0},
            {"kind": "update", "scope": 0, "version": 1, "sim_time_s": 2.0},
            {"kind": "model_switch", "device": 0, "to_version": 1, "sim_time_s": 3.5},
            {"kind": "update", "scope": 0, "version": 2, "sim_time_s": 8.0},
            {"kind": "sample", "device": 0, "sim_time_s": 10.0},
        ]
    )
    assert stale_model_seconds(events, lambda d: 0) == {0: pytest.approx(1.5 + 2.0)}


# -- the adapter ---------------------------------------------------------------------------------------
def _noisy_synthetic(n: int, corruption: str = "gaussian_noise", seed: int = 3) -> torch.Tensor:
    ds = make_synthetic(n, seed=seed)
    x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).contiguous()
    if corruption != "clean":
        x = corrupt(x, corruption, 5, seed=0, indices=torch.arange(n))
    return x.float() / 255.0


def _adapter(**config) -> TdmrAdapter:
    settings = dict(
        reprogram_steps=4, distill_steps=20, batch_size=32, min_uploads=32, every_uploads=64
    )
    settings.update(config)
    return TdmrAdapter(
        create_model("synthetic_edge"),
        create_model("synthetic_teacher"),
        TdmrAdapter.Config(**settings),
        10,
        0,
    )


def test_a_rebuild_reduces_the_distillation_loss_on_held_out_uploads():
    torch.manual_seed(0)
    adapter = _adapter()
    images = _noisy_synthetic(224)
    uploads, held_out = images[:160], images[160:]
    adapter.observe(0, uploads)
    assert adapter.rebuild_reason(0, 0.0) == "uploads"
    stats = adapter.rebuild(0, 0.0, "uploads")
    source = adapter.heldout_distillation_loss(0, held_out, adapter._source_weights)
    rebuilt = adapter.heldout_distillation_loss(0, held_out)
    assert adapter.version(0) == 1
    assert rebuilt < 0.95 * source
    # counted work: stage 1 reads the foundation model twice and back once per image, stage 2
    # once, and trains the whole edge model (backward at twice a forward)
    assert stats == AdaptStats(
        steps=24,
        samples=640,
        teacher_steps=4,
        loss=stats.loss,
        teacher_forward=2 * 128 + 640,
        teacher_backward=128,
        edge_forward=640,
        edge_backward=1280,
    )


def test_ablations_without_a_proxy_space_skip_the_reprogramming():
    images = _noisy_synthetic(64)
    for variant in ("no_proxy", "plain_kd"):
        adapter = _adapter(variant=variant, distill_steps=2, batch_size=16)
        adapter.observe(0, images)
        stats = adapter.rebuild(0, 0.0)
        assert stats.teacher_steps == 0 and stats.teacher_backward == 0 and stats.steps == 2
    trained = _adapter(trainable="norm_and_head", distill_steps=2, batch_size=16)
    trained.observe(0, images)
    trained.rebuild(0, 0.0)
    after = trained.model_state(0)
    source = trained._source_weights
    changed = {k for k in source if not torch.equal(source[k], after[k])}
    assert "net.linear.weight" in changed and "net.conv1.weight" not in changed


def test_triggers_wait_for_min_uploads_then_follow_schedule_uploads_or_shift():
    clean, noisy = _noisy_synthetic(96, "clean"), _noisy_synthetic(96)
    by_uploads = _adapter(every_uploads=64)
    by_uploads.observe(0, clean[:40])
    assert by_uploads.rebuild_reason(0, 100.0) is None
    by_uploads.observe(0, clean[40:64])
    assert by_uploads.rebuild_reason(0, 0.0) == "uploads"

    scheduled = _adapter(rebuild="schedule", interval_s=30.0)
    scheduled.observe(0, clean[:40])
    assert scheduled.tick_s() == 30.0
    assert scheduled.rebuild_reason(0, 29.0) is None
    assert scheduled.rebuild_reason(0, 30.0) == "schedule"

    shifting = _adapter(rebuild="shift", shift_window=32, min_uploads=32, distill_steps=1)
    stats = shifting.observe(0, clean[:48])
    assert stats.teacher_forward == 48 and stats.steps == 1  # the foundation model read them
    assert shifting.rebuild_reason(0, 0.0) == "first"
    shifting.rebuild(0, 0.0, "first")
    shifting.observe(0, clean[48:96])  # the same domain: no shift
    assert shifting.rebuild_reason(0, 1.0) is None
    shifting.observe(0, noisy[:48])  # noise at severity 5: shift
    assert shifting.rebuild_reason(0, 2.0) == "shift"


def test_bad_options_are_refused_with_the_field_and_value():
    with pytest.raises(ValueError, match="every_uploads"):
        TdmrAdapter.Config(every_uploads=10, min_uploads=64)
    with pytest.raises(ValueError, match="proxy_dim"):
        _adapter(proxy_dim=4)
    with pytest.raises(ScenarioError, match="cloud.tdmr.ship"):
        scenario_from_dict(_tdmr_scenario(ship="zip"))


# -- whole runs ----------------------------------------------------------------------------------------
def _tdmr_scenario(**options) -> dict:
    tdmr = dict(reprogram_steps=2, distill_steps=3, batch_size=16, min_uploads=32, every_uploads=64)
    tdmr.update(options)
    data = tiny_scenario_dict(
        **{
            "stream__samples_per_device": 128,
            "network__downlink_mbps": 2.0,  # a model takes about a second to arrive
            "cloud__adapter": "tdmr",
            "cloud__tdmr": tdmr,
            "policy__name": "all",
        }
    )
    data["cloud"].pop("cema")
    return data


@pytest.fixture(scope="module")
def tdmr_run():
    torch.manual_seed(0)
    return run_scenario(scenario_from_dict(_tdmr_scenario()))


def test_a_device_never_runs_a_model_before_it_has_fully_arrived(tdmr_run):
    events, scenario = tdmr_run.events, tdmr_run.scenario
    samples = events[events["kind"] == "sample"]
    switches = events[events["kind"] == "model_switch"]
    downloads = events[events["kind"] == "download"]
    assert len(switches) == len(downloads) > 0
    compute_s = (scenario.edge.ms_per_batch + scenario.edge.ms_per_sample * 32) / 1000.0
    in_flight = 0
    for device, rows in samples.groupby("device"):
        arrived = {
            int(v): t
            for v, t in zip(
                downloads[downloads["device"] == device]["version"],
                downloads[downloads["device"] == device]["sim_time_s"],
                strict=True,
            )
        }
        own = switches[switches["device"] == device]
        assert dict(zip(own["to_version"].astype(int), own["sim_time_s"], strict=True)) == arrived
        for version, t in zip(rows["version"].astype(int), rows["sim_time_s"], strict=True):
            if version:
                assert t - compute_s >= arrived[version] - 1e-9  # started after the arrival
        in_flight += int((rows["state_lag"] > 0).sum())
    assert in_flight > 0  # batches did run on the old model while a new one travelled


def test_rebuild_events_carry_their_queue_delay_and_draw_as_the_cloud_figure(tdmr_run):
    from analysis import plots

    updates = tdmr_run.events[tdmr_run.events["kind"] == "update"]
    queue = updates["queue_s"].to_numpy(float)
    assert len(queue) and (queue >= 0).all()
    # a rebuild waits only behind jobs taken before it: never longer than its start time
    assert (queue <= updates["started_s"].to_numpy(float) + 1e-9).all()
    fig = plots.cloud(tdmr_run.events)  # the report's cloud figure (it once lacked queue_s)
    assert len(fig.axes) == 3 and len(fig.axes[0].lines) == 1
    # records written before rebuilds had queue_s still draw, saying so on that panel
    older = plots.cloud(tdmr_run.events.drop(columns="queue_s"))
    assert not older.axes[0].lines and older.axes[0].texts[0].get_text() == "not recorded"


def test_summary_states_model_bytes_rebuilds_versions_and_stale_time(tdmr_run):
    summary, events = tdmr_run.summary, tdmr_run.events
    downloads = events[events["kind"] == "download"]
    assert summary["model_download_bytes"] == summary["download_bytes"] == downloads["bytes"].sum()
    assert summary["rebuilds"] == summary["updates"] > 0
    assert summary["model_versions"] == {"0": summary["rebuilds"]}
    assert summary["model_payload"] == "full"
    assert summary["redeploy_switches"] == 2 * summary["rebuilds"]
    assert "model_switches" not in summary  # that key is model selection's
    assert summary["stale_model_s"] > 0
    assert 0 < summary["stale_model_sample_fraction"] < 1
    versions = summary["model_version_per_device"]
    assert versions == {"0": summary["rebuilds"], "1": summary["rebuilds"]}
    per_device = summary["stale_model_s_per_device"]
    assert set(per_device) == {"0", "1"}
    assert sum(per_device.values()) == pytest.approx(summary["stale_model_s"])
    rows = summary["per_device"]
    assert sum(row["download_bytes"] for row in rows) == summary["model_download_bytes"]
    # the cloud's part as the normalization-state cloud gives it: its busy time is the rebuilds'
    assert summary["cloud_compute_s"] == pytest.approx(summary["rebuild_compute_s"])
    assert summary["cloud_busy_s"] == pytest.approx(summary["rebuild_compute_s"])
    expected = summary["cloud_busy_s"] / summary["sim_time_s"]  # one worker
    assert summary["cloud_utilization"] == pytest.approx(expected)
    # a rebuild's cloud time: 40 ms per step (the tiny scenario's override), 5 steps
    updates = events[events["kind"] == "update"]
    assert updates["compute_s"].tolist() == pytest.approx([0.2] * len(updates))


def test_per_device_scope_quantized_models_and_cloud_time_from_macs():
    data = _tdmr_scenario(ship="quantized", quant_bits=4, reprogram_steps=1, distill_steps=2)
    data["cloud"].update(scope="per_device", ms_per_step=None, profile="cpu_server")
    result = run_scenario(scenario_from_dict(data))
    summary, events = result.summary, result.events
    assert summary["model_payload"] == "quantized-w4"
    assert set(summary["model_versions"]) == {"0", "1"}
    downloads = events[events["kind"] == "download"]
    assert set(downloads["device"].astype(int)) == {0, 1}
    full = len(encode_model(create_model("synthetic_edge").state_dict(), "full", 1))
    assert (downloads["payload_bytes"] < full / 3).all()
    # a rebuild's simulated time from its counted MACs on the profile (2 ms a step, 150 GMAC/s):
    # stage 1, 1 step of 16 images: the teacher forward twice, backward once; stage 2, 2 steps:
    # the teacher forward, the edge model forward and backward (twice a forward)
    teacher_macs = count_macs(create_model("synthetic_teacher"))
    edge_macs = count_macs(create_model("synthetic_edge"))
    macs = teacher_macs * (2 * 16 + 2 * 16 + 16) + edge_macs * (2 * 16 + 2 * 2 * 16)
    updates = events[events["kind"] == "update"]
    assert updates["compute_s"].tolist() == pytest.approx([3 * 0.002 + macs / 150e9] * len(updates))


def test_a_scheduled_rebuild_runs_behind_cemas_upload_filter():
    data = _tdmr_scenario(rebuild="schedule", interval_s=1.5, min_uploads=8)
    data["policy"] = {"name": "cema"}
    summary = run_scenario(scenario_from_dict(data)).summary
    assert 0 < summary["uploaded_samples"] < summary["samples"]
    assert summary["rebuilds"] >= 1
    assert summary["rebuilds_schedule"] == summary["rebuilds"]
    assert np.isfinite(summary["accuracy"])


def test_downlink_delta_is_refused_for_whole_models():
    data = _tdmr_scenario()
    data["cloud"]["downlink_payload"] = "delta"
    with pytest.raises(ScenarioError, match="cloud.downlink_payload") as caught:
        scenario_from_dict(data)  # refused by validation, before anything is built
    assert "cloud.tdmr.ship" in str(caught.value)


def test_the_labelled_target_set_comes_from_the_train_split_corrupted_per_domain():
    from simulator.data.labelled import labelled_target_set

    scenario = scenario_from_dict(_tdmr_scenario(labelled_per_domain=3))
    images, labels = labelled_target_set(scenario, 3)
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8
    train = make_synthetic(1024, split="train", seed=0)
    pool = torch.from_numpy(train.images).permute(0, 3, 1, 2)
    for image in images:  # noise and contrast: corrupted, no image equals a train image
        assert not (pool == image).flatten(1).all(1).any()
    assert labels.dtype == torch.int64 and len(labels) == 6
    again, _ = labelled_target_set(scenario, 3)
    assert torch.equal(images, again)  # seeded
    adapter = _adapter(labelled_batch=4, reprogram_steps=1, distill_steps=1, batch_size=16)
    adapter.hold_labelled(images, labels)
    adapter.observe(0, _noisy_synthetic(32))
    stats = adapter.rebuild(0, 0.0)
    assert stats.samples == 16 + 4  # each step: uploads and labelled images


@pytest.mark.slow
def test_a_tdmr_run_through_the_cli_prints_rebuilds_and_writes_the_models_bytes(tmp_path: Path):
    path = tmp_path / "tdmr.yaml"
    path.write_text(yaml.safe_dump(_tdmr_scenario(reprogram_steps=1, distill_steps=2)))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adapter"] == "tdmr" and summary["rebuilds"] > 0
    assert summary["download_bytes"] == summary["model_download_bytes"] > 0
    shipped = f"{summary['rebuilds']:,} / {summary['model_downloads']:,} (full, "
    assert shipped in result.output and "time on a stale model" in result.output
