"""The fleet-batched executor: batched rows equal one-at-a-time inference, whole runs included."""

import json

import pytest
import torch
from torch import nn

from simulator.config import scenario_from_dict
from simulator.engine import run_scenario
from simulator.fleet.executor import FleetExecutor
from simulator.models.norm import get_norm_state, set_norm_state, use_batch_statistics
from simulator.models.zoo import create_model
from tests.conftest import tiny_scenario_dict

SIZES = [5, 1, 16, 3, 2]


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return create_model("synthetic_edge").eval()


def _states(model: nn.Module, count: int) -> list[dict[str, torch.Tensor]]:
    """The source state and ``count - 1`` perturbed ones (as if adapted differently)."""
    source = get_norm_state(model)
    states = [source]
    g = torch.Generator().manual_seed(0)
    for _ in range(count - 1):
        state = {}
        for key, value in source.items():
            noise = torch.randn(value.shape, generator=g)
            if key.endswith("running_var"):
                state[key] = value * (1 + 0.3 * noise).abs().clamp_min(0.1)
            else:
                state[key] = value + 0.2 * noise
        states.append(state)
    return states


def _images(sizes: list[int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8) for n in sizes]


def _run(executor: FleetExecutor, images, states) -> list[torch.Tensor]:
    tickets = [executor.submit(k, states[k % len(states)], images=x) for k, x in enumerate(images)]
    return [t.result().logits for t in tickets]


@pytest.mark.parametrize("batch_statistics", [False, True], ids=["eval", "batch-stats"])
def test_one_pass_over_many_devices_equals_each_device_alone_bit_for_bit(model, batch_statistics):
    images, states = _images(SIZES), _states(model, 3)
    batched = FleetExecutor(model, kind="batched", batch_statistics=batch_statistics)
    serial = FleetExecutor(model, kind="serial", batch_statistics=batch_statistics)
    together = _run(batched, images, states)
    alone = _run(serial, images, states)
    assert batched.forward_passes == 1 and serial.forward_passes == len(SIZES)
    for a, b in zip(together, alone, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("batch_statistics", [False, True], ids=["eval", "batch-stats"])
def test_rows_match_the_plain_model_with_the_state_loaded(model, batch_statistics):
    images, states = _images(SIZES, seed=1), _states(model, 3)
    rows = _run(FleetExecutor(model, batch_statistics=batch_statistics), images, states)
    plain = create_model("synthetic_edge").eval()
    for k, (x, got) in enumerate(zip(images, rows, strict=True)):
        if batch_statistics and len(x) == 1:
            continue  # BN refuses batch statistics of one value per channel... not here, but alone
        set_norm_state(plain, states[k % len(states)])
        with torch.no_grad():
            if batch_statistics:
                with use_batch_statistics(plain):
                    want = plain(x.float() / 255)
            else:
                want = plain(x.float() / 255)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert torch.equal(got.argmax(1), want.argmax(1))


def test_naive_executor_agrees_to_float_tolerance(model):
    images, states = _images(SIZES, seed=2), _states(model, 2)
    rows = _run(FleetExecutor(model), images, states)
    naive = _run(FleetExecutor(create_model("synthetic_edge"), kind="naive"), images, states)
    for a, b in zip(rows, naive, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_a_lone_one_row_request_equals_that_row_inside_a_big_pass(model):
    images, states = _images([1, 31]), _states(model, 2)
    alone = FleetExecutor(model).infer(images[0], states[0])
    together = _run(FleetExecutor(model), images, states)[0]
    assert torch.equal(alone.logits, together)


def test_first_result_runs_every_pending_request_and_max_rows_splits_at_requests(model):
    images, states = _images([4, 4, 4]), _states(model, 2)
    executor = FleetExecutor(model, max_rows=10)
    tickets = [executor.submit(k, states[k % 2], images=x) for k, x in enumerate(images)]
    assert not any(t.done for t in tickets)
    tickets[1].result()
    assert all(t.done for t in tickets)
    assert executor.forward_passes == 2 and executor.rows_run == 12
    serial = _run(FleetExecutor(model, kind="serial"), images, states)
    for t, want in zip(tickets, serial, strict=True):
        assert torch.equal(t.result().logits, want)


def test_state_table_is_kept_per_device_and_rebuilt_when_its_state_changes(model):
    executor = FleetExecutor(model)
    states = _states(model, 2)
    x = _images([2])[0]
    executor.infer(x, states[0], key="dev")
    first = executor._tables["dev"][1]
    executor.infer(x, states[0], key="dev")
    assert executor._tables["dev"][1] is first
    changed = executor.infer(x, states[1], key="dev")
    assert len(executor._tables) == 1 and executor._tables["dev"][1] is not first
    assert torch.equal(changed.logits, FleetExecutor(model).infer(x, states[1]).logits)


class _BatchNormAct(nn.BatchNorm2d):
    """Like timm's BatchNormAct2d: BN followed by an activation module held by the layer."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


def test_batchnorm_subclasses_keep_their_activation():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), _BatchNormAct(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    net[1].running_mean.normal_()
    x = _images([3])[0]
    got = FleetExecutor(net).infer(x, get_norm_state(net)).logits
    with torch.no_grad():
        want = net(x.float() / 255)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bad_arguments_are_refused(model):
    with pytest.raises(ValueError, match="batched, serial, naive"):
        FleetExecutor(model, kind="fast")  # type: ignore[arg-type]
    executor = FleetExecutor(model)
    with pytest.raises(ValueError, match="exactly one of"):
        executor.submit(0, get_norm_state(model))
    with pytest.raises(ValueError, match="load="):
        executor.submit(0, get_norm_state(model), source=("stream", 0))


def _small(**changes) -> dict:
    return tiny_scenario_dict(
        fleet__devices=3,
        stream__samples_per_device=64,
        stream__segment_samples=32,
        stream__batch_size=16,
        edge__ms_per_sample=20.0,  # long computations overlap across devices: real batching
        **changes,
    )


def _numbers(summary: dict) -> str:
    return json.dumps({k: v for k, v in summary.items() if k != "wall_time_s"}, sort_keys=True)


@pytest.mark.parametrize("adapter", ["cema", "bn_stats"])
def test_whole_run_summary_is_identical_batched_or_one_batch_at_a_time(adapter):
    scenario = scenario_from_dict(_small(cloud__adapter=adapter))
    batched = run_scenario(scenario, executor="batched")
    serial = run_scenario(scenario, executor="serial")
    assert _numbers(batched.summary) == _numbers(serial.summary)
    assert batched.events.equals(serial.events)
    requests = serial.extra["executor"]["forward_passes"]
    assert batched.extra["executor"]["forward_passes"] < requests
    assert batched.extra["executor"]["rows"] == serial.extra["executor"]["rows"] == 3 * 64
    if adapter != "cema":
        return
    naive = run_scenario(scenario, executor="naive")
    samples = batched.events[batched.events.kind == "sample"]
    naive_samples = naive.events[naive.events.kind == "sample"]
    assert (samples.prediction.values == naive_samples.prediction.values).all()


def test_cli_refuses_an_unknown_executor_and_writes_nothing(tiny_yaml, tmp_path):
    from typer.testing import CliRunner

    from simulator.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["run", str(tiny_yaml), "--out", str(out), "--executor", "fast"]
    )
    assert result.exit_code == 2
    assert "--executor" in result.output and "batched, serial, naive" in result.output
    assert not out.exists()
