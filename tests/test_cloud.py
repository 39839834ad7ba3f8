"""The cloud queue: scheduling policies order work as specified; gathering; queue and staleness."""

from types import SimpleNamespace

import numpy as np
import pytest
import simpy
import torch

from simulator.adaptation.base import AdaptStats
from simulator.config import ScenarioError, scenario_from_dict
from simulator.engine import run_scenario
from simulator.fleet.cloud import Cloud
from simulator.fleet.cloud_time import CloudTime
from simulator.fleet.messages import NormState, UploadMessage
from simulator.metrics import EventRecorder
from tests.conftest import tiny_scenario_dict


class _Adapter:
    """Records what it was asked to learn from; one step per call."""

    def __init__(self):
        self.calls: list[list[int]] = []
        self.versions: dict[int, int] = {}

    def observe(self, scope, images):
        tags = (images[:, 0, 0, 0] * 255).round().int().tolist()  # pixel = message tag
        self.calls.append(tags)
        if tags == [9]:  # tag 9: a message that triggers no step
            return AdaptStats()
        self.versions[scope] = self.versions.get(scope, 0) + 1
        return AdaptStats(steps=1, samples=len(images))

    def version(self, scope):
        return self.versions.get(scope, 0)

    def norm_state(self, scope):
        return {"bn.weight": torch.ones(2)}


class _Link:
    def send(self, nbytes):
        yield from ()


def _device():
    device = SimpleNamespace(state=NormState({}, version=0), downlink=_Link())
    device.receive = lambda state: setattr(device, "state", state)
    return device


def _cloud(env, adapter, devices, **options) -> Cloud:
    """A cloud over the stand-in adapter: one-second steps, one worker and fifo unless told."""
    settings = dict(
        workers=1,
        step_time=CloudTime(ms_per_step=1000.0),
        per_device_scope=False,
        state_dtype=torch.float32,
        header_bytes=0,
        recorder=EventRecorder(),
    )
    return Cloud(env, adapter, devices, **(settings | options))


def _serve_order(schedule: str, arrivals, gather: int = 1, per_device_scope: bool = False):
    """Messages (device, sent_s, tag) all arrive at t=1 while the one worker is busy with tag 0."""
    env = simpy.Environment()
    adapter = _Adapter()
    devices = {d: _device() for d in range(4)}
    cloud = _cloud(
        env, adapter, devices, per_device_scope=per_device_scope, schedule=schedule, gather=gather
    )

    def message(device, sent_s, tag):
        images = torch.full((1, 3, 2, 2), tag, dtype=torch.uint8)
        return UploadMessage(device, 0, images, 10, sent_s)

    def arrive():
        cloud.deliver(message(3, 0.0, 0))  # occupies the worker until t=1
        yield env.timeout(0.5)
        for device, sent_s, tag in arrivals:
            cloud.deliver(message(device, sent_s, tag))

    env.process(arrive())
    env.run()
    return adapter.calls[1:], devices


ARRIVALS = [(1, 0.40, 1), (1, 0.30, 2), (0, 0.45, 3), (2, 0.10, 4), (0, 0.20, 5)]


def test_fifo_serves_in_arrival_order():
    order, _ = _serve_order("fifo", ARRIVALS)
    assert order == [[1], [2], [3], [4], [5]]


def test_round_robin_gives_devices_turns_after_the_last_served():
    # last served: device 3, so device 0 first (its oldest arrival), then 1, 2, then 0, 1 again
    order, _ = _serve_order("round_robin", ARRIVALS)
    assert order == [[3], [1], [4], [5], [2]]


def test_oldest_first_serves_the_earliest_taken_samples():
    order, _ = _serve_order("oldest_first", ARRIVALS)
    assert order == [[4], [5], [2], [1], [3]]


def test_gather_serves_several_messages_of_one_scope_together():
    order, devices = _serve_order("fifo", ARRIVALS, gather=3)
    assert order == [[1, 2, 3], [4, 5]]
    # device 1 was last served with the first gathered batch (version 2); 0 and 2 with the last
    assert [devices[d].state.version for d in (0, 1, 2)] == [3, 2, 3]
    per_device, _ = _serve_order("fifo", ARRIVALS, gather=3, per_device_scope=True)
    assert per_device == [[1, 2], [3, 5], [4]]  # never mixes scopes


def test_unknown_schedule_is_refused_in_the_scenario():
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(tiny_scenario_dict(cloud__schedule="lifo"))
    assert "cloud.schedule" in str(err.value) and "round_robin" in str(err.value)


def test_run_reports_queue_utilization_and_staleness():
    scenario = tiny_scenario_dict(
        stream__samples_per_device=256,
        stream__segment_samples=128,
        cloud__ms_per_step=1500.0,
        policy__name="all",
        cloud__cema={"batch_size": 16, "replay_capacity": 0},
    )
    result = run_scenario(scenario_from_dict(scenario))
    s, ev = result.summary, result.events
    queue = ev[ev.kind == "queue"]
    assert len(queue) and s["cloud_queue_max"] == queue["queue"].max() >= 1
    assert 0 < s["cloud_queue_mean"] <= s["cloud_queue_max"]
    assert s["cloud_utilization"] == pytest.approx(s["cloud_busy_s"] / s["sim_time_s"])
    samples = ev[ev.kind == "sample"]
    source = samples.version == 0
    assert samples.state_staleness_s[source].isna().all()
    adapted = samples.state_staleness_s[~source]
    assert len(adapted) and (adapted >= 0).all()
    assert (samples.state_lag >= 0).all()
    assert s["state_staleness_mean_s"] == pytest.approx(float(np.mean(adapted)))


def test_delta_payload_sends_only_what_changed_sparse_or_dense():
    from simulator.fleet.cloud import delta_payload

    held = {"w": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.zeros(4)}
    new = {"w": torch.tensor([1.0, 2.0, 3.5, 4.0]), "b": torch.tensor([0.1, 0.2, 0.3, 0.4])}
    state, nbytes = delta_payload(held, new, torch.float32)
    assert nbytes == 1 * (4 + 4) + 4 * 4  # w: one changed entry, sparse; b: all changed, dense
    assert torch.equal(state["w"], new["w"]) and torch.allclose(state["b"], new["b"])
    half, half_bytes = delta_payload(held, new, torch.float16)
    assert half_bytes == 1 * (2 + 4) + 4 * 2
    assert torch.allclose(half["b"], new["b"], atol=1e-3)
    lossy, lossy_bytes = delta_payload(held, new, torch.float32, tolerance=0.25)
    assert lossy_bytes == 8 + 2 * 8  # b: only 0.3 and 0.4 exceed the tolerance (sparse)
    assert torch.equal(lossy["b"][:2], held["b"][:2])


def test_delta_downloads_track_what_each_device_holds():
    base = tiny_scenario_dict(stream__samples_per_device=128, stream__segment_samples=64)
    full = run_scenario(scenario_from_dict(base)).summary
    base["cloud"]["downlink_payload"] = "delta"
    exact = run_scenario(scenario_from_dict(base)).summary
    assert exact["downloads"] == full["downloads"]
    assert exact["download_bytes"] <= full["download_bytes"]
    assert abs(exact["accuracy"] - full["accuracy"]) <= 0.02
    base["cloud"]["delta_tolerance"] = 1e-2
    lossy = run_scenario(scenario_from_dict(base)).summary
    assert lossy["download_bytes"] < exact["download_bytes"]


def test_cema_with_batch_statistics_at_the_edge_downloads_only_the_affine():
    base = tiny_scenario_dict(stream__samples_per_device=128, stream__segment_samples=64)
    batch = run_scenario(scenario_from_dict(base))  # edge_norm: batch is the default
    base["cloud"]["cema"]["edge_norm"] = "eval"
    full = run_scenario(scenario_from_dict(base))
    downloads = batch.events[batch.events.kind == "download"]
    assert len(downloads) == batch.summary["downloads"] > 0
    # ResNet-8 width 16: the BN affine is half of weight+bias+running_mean+running_var
    assert batch.summary["download_bytes"] / batch.summary["downloads"] < (
        0.55 * full.summary["download_bytes"] / full.summary["downloads"]
    )
    assert batch.summary["accuracy"] != full.summary["accuracy"]
    # the released code's batch renormalisation: an eval edge too (running statistics travel)
    base["cloud"]["cema"].update(edge_norm="tbr", teacher_distill_norm="tbr")
    tbr = run_scenario(scenario_from_dict(base))
    assert tbr.summary["downloads"] > 0
    assert tbr.summary["download_bytes"] / tbr.summary["downloads"] == pytest.approx(
        full.summary["download_bytes"] / full.summary["downloads"], rel=0.05
    )


def test_with_several_workers_no_device_gets_a_state_still_being_computed():
    env = simpy.Environment()
    adapter = _Adapter()
    devices = {d: _device() for d in range(3)}
    cloud = _cloud(env, adapter, devices, workers=2)

    def message(device, tag):
        return UploadMessage(device, 0, torch.full((1, 3, 2, 2), tag, dtype=torch.uint8), 10, 0.0)

    seen = {}

    def scenario():
        cloud.deliver(message(0, 1))  # worker 1 computes version 1 from t=0 to t=1
        yield env.timeout(0.5)
        cloud.deliver(message(2, 9))  # worker 2: no step; version 1 is not finished yet
        yield env.timeout(0.1)
        seen["device 2 at 0.6"] = devices[2].state.version
        seen["latest at 0.6"] = cloud.latest_version(2)

    env.process(scenario())
    env.run()
    assert seen == {"device 2 at 0.6": 0, "latest at 0.6": 0}
    assert devices[0].state.version == 1 and cloud.latest_version(0) == 1
