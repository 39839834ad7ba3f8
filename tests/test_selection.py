"""Model selection (AdaptiveNet-style, issue 8): family tables, the choice under a latency budget,
re-selection on budget and latency changes, the engine running each device with its member, and
config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from policies.selection import SELECTION_POLICIES, load_family
from policies.selection.adaptivenet import AdaptiveNetConfig, AdaptiveNetSelection
from policies.selection.family import FamilyError, ModelFamily, family_dir, measure_family
from simulator.build import STREAM, seeded_rng
from simulator.config import ScenarioError, SelectionConfig, scenario_from_dict
from simulator.data.datasets import create_dataset, make_synthetic
from simulator.data.loader import BatchLoader
from simulator.data.streams import build_stream
from simulator.engine import run_scenario
from simulator.models.flops import count_macs
from simulator.models.zoo import create_model
from tests.conftest import tiny_scenario_dict

# A hand-made family: accuracies and MACs chosen to make the choices easy to follow.
HAND_MADE = {
    "name": "hand_made",
    "members": [
        {"model": "resnet20", "accuracy": 0.80, "macs": 100},
        {"model": "resnet32", "accuracy": 0.85, "macs": 200},
        {"model": "resnet44", "accuracy": 0.90, "macs": 300},
        {"model": "resnet56", "accuracy": 0.90, "macs": 400},  # as accurate as 44, slower
    ],
}
# nominal batch latency (s) on some device: 10 ms per 100 MACs
NOMINAL = {"resnet20": 0.010, "resnet32": 0.020, "resnet44": 0.030, "resnet56": 0.040}


def _policy(tmp_path: Path, table: dict = HAND_MADE, **params) -> AdaptiveNetSelection:
    path = tmp_path / "family.json"
    path.write_text(json.dumps(table))
    return AdaptiveNetSelection(AdaptiveNetConfig(family=str(path), **params), "resnet20")


def test_adaptivenet_picks_the_most_accurate_member_within_the_budget(tmp_path):
    policy = _policy(tmp_path)
    first = policy.choose(0.025, NOMINAL)
    assert (first.model, first.reason, first.fits) == ("resnet32", "initial", True)
    assert first.predicted_s == pytest.approx(0.020)
    # no budget: the most accurate; a tie on accuracy goes to the member with fewer MACs
    assert _policy(tmp_path).choose(None, NOMINAL).model == "resnet44"
    assert _policy(tmp_path).choose(1.0, NOMINAL).model == "resnet44"


def test_adaptivenet_tie_on_accuracy_and_macs_goes_to_the_name(tmp_path):
    table = {
        "name": "tie",
        "members": [
            {"model": "resnet56", "accuracy": 0.9, "macs": 300},
            {"model": "resnet44", "accuracy": 0.9, "macs": 300},
        ],
    }
    nominal = {"resnet44": 0.03, "resnet56": 0.03}
    assert _policy(tmp_path, table).choose(0.05, nominal).model == "resnet44"


def test_adaptivenet_runs_the_fastest_member_when_none_fits(tmp_path):
    policy = _policy(tmp_path)
    decision = policy.choose(0.005, NOMINAL)
    assert (decision.model, decision.reason, decision.fits) == ("resnet20", "none_fits", False)
    policy.choose(0.05, NOMINAL)  # a budget everything fits: up to the best
    down = policy.choose(0.001, NOMINAL)
    assert (down.model, down.reason) == ("resnet20", "none_fits")


def test_a_budget_change_triggers_reselection(tmp_path):
    policy = _policy(tmp_path)
    assert policy.choose(0.035, NOMINAL).model == "resnet44"
    assert policy.choose(0.035, NOMINAL).reason == "kept"
    tighter = policy.choose(0.015, NOMINAL)
    assert (tighter.model, tighter.reason) == ("resnet20", "budget_change")
    looser = policy.choose(0.025, NOMINAL)
    assert (looser.model, looser.reason) == ("resnet32", "budget_change")


def test_measured_slowdown_switches_down_and_recovery_switches_back_up(tmp_path):
    policy = _policy(tmp_path, ewma_alpha=0.5, headroom=0.05)
    assert policy.choose(0.035, NOMINAL).model == "resnet44"
    policy.observe(0.060, 0.030)  # throttled: twice the nominal time; ratio 1 -> 1.5
    assert policy.latency_ratio == pytest.approx(1.5)
    down = policy.choose(0.035, NOMINAL)  # resnet44 predicted 45 ms > 35
    assert (down.model, down.reason) == ("resnet32", "slowdown")
    assert down.predicted_s == pytest.approx(0.030)
    for _ in range(2):  # back to nominal speed: ratio 1.5 -> 1.25 -> 1.125
        policy.observe(0.020, 0.020)
        assert policy.choose(0.035, NOMINAL).model == "resnet32"  # 33.75 ms > 0.95 x 35
    policy.observe(0.020, 0.020)  # ratio 1.0625: resnet44 predicted 31.9 ms <= 33.25
    up = policy.choose(0.035, NOMINAL)
    assert (up.model, up.reason) == ("resnet44", "recovery")


def test_headroom_keeps_a_member_that_still_fits(tmp_path):
    policy = _policy(tmp_path, headroom=0.2)
    assert policy.choose(0.022, NOMINAL).model == "resnet32"  # resnet32 (20 ms) fits 22 ms
    policy.current = "resnet20"  # as if it had been running resnet20
    # resnet32 fits the budget but not within (1 - 0.2) x 22 = 17.6 ms, and resnet20 still fits
    assert policy.choose(0.022, NOMINAL).model == "resnet20"


def test_fixed_selection_keeps_edge_model_whatever_the_budget():
    policy = SELECTION_POLICIES.create("fixed", None, "resnet56")
    first = policy.choose(0.001, {"resnet56": 0.04})
    assert (first.model, first.reason, first.fits) == ("resnet56", "none_fits", False)
    assert policy.choose(1.0, {"resnet56": 0.04}).reason == "kept"


def test_shipped_family_macs_come_from_count_macs_and_accuracy_from_counts():
    family = load_family("cifar10_resnet")
    assert family.models == ["resnet20", "resnet32", "resnet44", "resnet56"]
    for member in family.members:
        model = create_model(member.model, pretrained=False)
        assert member.macs == count_macs(model, family.input_shape)
        assert member.accuracy == member.correct / member.images
        assert member.images == 1017
    assert family.measured_on["variant"] == "exact_prefix"
    # the pixels it was measured on: the md5 ../shared/data/cifar10/SOURCE.md states for them
    assert family.measured_on["images_md5"] == "0c4c38dfa836385de34b32047bf21481"
    assert family.command.startswith("fleetsim zoo family")
    assert (family_dir() / "cifar10_resnet.json").is_file()


def test_measure_family_evaluates_members_and_counts_macs():
    data = make_synthetic(48, split="test", seed=0)
    family = measure_family(
        ["synthetic_edge", "synthetic_teacher"], data.images, data.labels, name="syn", batch_size=40
    )
    edge, teacher = family.members
    for member in family.members:
        model = create_model(member.model)
        assert member.macs == count_macs(model, (3, 32, 32))
        with torch.inference_mode():
            x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255
            prediction = model(x).argmax(1)
        assert member.correct == int((prediction.numpy() == data.labels).sum())
        assert member.accuracy == member.correct / 48
    assert teacher.macs > edge.macs
    again = ModelFamily.from_dict(json.loads(family.to_json()))
    assert again.members == family.members and again.measured_on["images"] == 48


def test_family_tables_reject_nonsense(tmp_path):
    with pytest.raises(FamilyError, match="no members"):
        ModelFamily("empty", [])
    with pytest.raises(FamilyError, match="unknown family"):
        load_family(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"members": [{"model": "resnet20", "accuracy": 1.5, "macs": 1}]}))
    with pytest.raises(FamilyError, match="accuracy must be in"):
        load_family(bad)


def test_budgets_per_device_per_profile_and_over_time():
    sel = SelectionConfig(
        latency_budget_ms={"phone": 40, "default": 100},
        budget_schedule=[{"at_s": 10, "latency_budget_ms": [20, 30]}],
        slowdown=[
            {"start_s": 5, "end_s": 15, "factor": 2.0, "profiles": ["phone"]},
            {"start_s": 8, "factor": 1.5, "devices": [1]},
        ],
    )
    assert sel.budget_s(0, "phone", 0.0) == pytest.approx(0.040)
    assert sel.budget_s(1, "jetson_nano", 9.9) == pytest.approx(0.100)
    assert sel.budget_s(1, "jetson_nano", 10.0) == pytest.approx(0.030)
    assert sel.slowdown_factor(1, "phone", 4.0) == 1.0
    assert sel.slowdown_factor(1, "phone", 9.0) == pytest.approx(3.0)  # overlapping: multiply
    assert sel.slowdown_factor(0, "phone", 15.0) == 1.0  # end_s is exclusive
    assert SelectionConfig().active is False and sel.active is True


@pytest.fixture(scope="module")
def synthetic_family(tmp_path_factory) -> Path:
    """The synthetic models as a two-member family, measured on 64 synthetic images."""
    data = make_synthetic(64, split="test", seed=1)
    family = measure_family(
        ["synthetic_edge", "synthetic_teacher"], data.images, data.labels, name="syn"
    )
    assert family.member("synthetic_teacher").accuracy > family.member("synthetic_edge").accuracy
    path = tmp_path_factory.mktemp("family") / "syn.json"
    path.write_text(family.to_json())
    return path


def _selection_scenario(family: Path, **selection) -> dict:
    data = tiny_scenario_dict(
        stream__samples_per_device=112, stream__batch_size=16, stream__rate_hz=16
    )
    data["stream"]["corruptions"] = ["clean"]
    data["edge"] = {"model": "synthetic_edge", "profile": ["raspberry_pi4", "jetson_xavier_nx"]}
    data["cloud"] = {"adapter": "none"}
    data["policy"] = {"name": "none"}
    data["selection"] = {
        "name": "adaptivenet",
        "latency_budget_ms": 80,
        "adaptivenet": {"family": str(family), "ewma_alpha": 1.0},
        **selection,
    }
    return data


def test_devices_with_different_profiles_run_different_members(synthetic_family):
    # batches of 16 every second (t = 1..7); the Xavier (device 1) is 15x slower from 3 s to 5 s;
    # the latency estimate is the last batch's (ewma_alpha 1)
    slow = [{"start_s": 3.0, "end_s": 5.0, "factor": 15.0, "devices": [1]}]
    scenario = scenario_from_dict(_selection_scenario(synthetic_family, slowdown=slow))
    result = run_scenario(scenario)
    events, summary = result.events, result.summary
    samples = events[events["kind"] == "sample"]
    pi4, xavier = samples[samples["device"] == 0], samples[samples["device"] == 1]
    # Pi 4: teacher 110.6 ms > 80, edge 54 ms fits; Xavier: teacher 6.2 ms fits (93 ms throttled,
    # when the edge model's 59 ms fit): down after the first slow batch, up after the first fast
    assert set(pi4["model"]) == {"synthetic_edge"}
    assert xavier["model"].iloc[0] == "synthetic_teacher"
    switches = events[events["kind"] == "switch"]
    moves = [(r.from_model, r.to_model, r.reason) for r in switches.itertuples() if r.device == 1]
    assert moves == [
        ("", "synthetic_teacher", "initial"),
        ("synthetic_teacher", "synthetic_edge", "slowdown"),
        ("synthetic_edge", "synthetic_teacher", "recovery"),
    ]
    assert summary["model_switches"] == 2 and summary["fallback"] == 0.0
    assert summary["switches_by_reason"] == {"recovery": 1, "slowdown": 1}
    assert summary["per_profile"]["raspberry_pi4"]["within_budget"] == 1.0
    assert summary["per_profile"]["raspberry_pi4"]["compute_mean_ms"] == pytest.approx(
        5 + 16 * 12_239_488 / 4e6
    )
    xavier_figures = summary["per_profile"]["jetson_xavier_nx"]
    assert 0 < xavier_figures["within_budget"] < 1  # the throttled teacher batches overran
    assert set(xavier_figures["models"]) == {"synthetic_edge", "synthetic_teacher"}
    assert summary["per_model"]["synthetic_edge"]["devices"] == 2
    assert summary["upload_bytes"] == 0 and result.extra["executor"]["rows"] == len(samples)
    # the first batch of the Xavier ran on the teacher: its predictions are the teacher's own
    dataset = create_dataset("synthetic", size=512, seed=0)
    stream = build_stream(scenario.stream, 1, len(dataset), seeded_rng(0, STREAM, 1))
    images = BatchLoader(dataset, 0)(stream, 0)
    with torch.inference_mode():
        alone = create_model("synthetic_teacher")(images.float() / 255).argmax(1).numpy()
    first = xavier[xavier["batch"] == 0]
    assert (first["prediction"].to_numpy() == alone).all()


def test_fixed_selection_with_a_budget_leaves_predictions_unchanged():
    small = dict(stream__samples_per_device=64, cloud__adapter="none", policy__name="none")
    plain = run_scenario(scenario_from_dict(tiny_scenario_dict(**small)))
    budgeted = run_scenario(
        scenario_from_dict(tiny_scenario_dict(**small, selection={"latency_budget_ms": 10.0}))
    )
    a = plain.events[plain.events["kind"] == "sample"]
    b = budgeted.events[budgeted.events["kind"] == "sample"]
    assert "model" not in a and set(b["model"]) == {"synthetic_edge"}
    assert (a["prediction"].to_numpy() == b["prediction"].to_numpy()).all()
    assert plain.summary["accuracy"] == budgeted.summary["accuracy"]
    # fixed ms: 5 ms per batch + 2 ms per sample = 69 ms for 32 samples, over a 10 ms budget
    assert budgeted.summary["compute_mean_ms"] == pytest.approx(69.0)
    assert budgeted.summary["within_budget"] == 0.0 and budgeted.summary["model_switches"] == 0
    assert budgeted.summary["fallback"] == 1.0  # its one model never meets the budget


def _problems(data: dict) -> dict[str, str]:
    with pytest.raises(ScenarioError) as exc:
        scenario_from_dict(data)
    return {p.path: p.message for p in exc.value.problems}


def test_adaptivenet_is_a_zero_upload_baseline_on_profiled_devices(synthetic_family):
    data = _selection_scenario(synthetic_family)
    data["cloud"] = {"adapter": "cema", "teacher": "synthetic_teacher"}
    data["policy"] = {"name": "cema"}
    del data["edge"]["profile"]
    del data["selection"]["latency_budget_ms"]
    problems = _problems(data)
    assert "cloud.adapter: none" in problems["cloud.adapter"]
    assert "policy.name: none" in problems["policy.name"]
    assert "hardware profiles" in problems["edge.profile"]
    assert "needs a latency budget" in problems["selection.latency_budget_ms"]
    data = _selection_scenario(synthetic_family)
    data["cloud"] = {"adapter": "bn_stats"}  # edge-only: allowed
    assert scenario_from_dict(data).cloud.adapter == "bn_stats"


def test_selection_config_errors_name_the_dotted_path(tmp_path, synthetic_family):
    family = synthetic_family
    base = _selection_scenario(family)
    cases = {
        "selection.name": ({"name": "oracle"}, "unknown selection policy"),
        "selection.latency_budget_ms": ({"latency_budget_ms": -5}, "> 0"),
        "selection.adaptivenet.family": (
            {"adaptivenet": {"family": str(tmp_path / "none.json")}},
            "unknown family",
        ),
        "selection.adaptivenet.members": (
            {"adaptivenet": {"family": str(family), "members": ["resnet20"]}},
            "not in family",
        ),
        "selection.latency_budget_ms.toaster": (
            {"latency_budget_ms": {"toaster": 5, "default": 9}},
            "unknown profile",
        ),
        "selection.slowdown.0.devices.0": (
            {"slowdown": [{"factor": 2, "devices": [7]}]},
            "no such device",
        ),
        "selection.slowdown.0.factor": ({"slowdown": [{"factor": 0}]}, "greater than 0"),
        "selection.budget_schedule.0.at_s": (
            {"budget_schedule": [{"latency_budget_ms": 5}]},
            "missing",
        ),
    }
    for path, (change, message) in cases.items():
        data = json.loads(json.dumps(base))
        data["selection"].update(change)
        problems = _problems(data)
        assert path in problems and message in problems[path], (path, problems)
    data = json.loads(json.dumps(base))
    data["selection"]["latency_budget_ms"] = {"phone": 50}
    assert (
        "no budget for profile(s) jetson_xavier_nx, raspberry_pi4"
        in _problems(data)["selection.latency_budget_ms"]
    )
    with pytest.raises(ValidationError):
        AdaptiveNetConfig(headroom=1.0)


def test_zoo_family_command_writes_a_measured_table(tmp_path):
    from typer.testing import CliRunner

    from simulator.cli import app

    out = tmp_path / "syn.json"
    args = ["zoo", "family", "--name", "syn", "--models", "synthetic_edge", "--dataset"]
    args += ["synthetic", "--variant", "auto", "--size", "32", "--out", str(out), "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    family = load_family(out)
    assert family.models == ["synthetic_edge"] and family.members[0].images == 32
    assert "--size 32" in family.command and family.measured_on["dataset"] == "synthetic"
    bad = CliRunner().invoke(app, [*args[:5], "nonsense", *args[6:]])
    assert bad.exit_code == 2 and "unknown model" in bad.output
    wrong = CliRunner().invoke(app, ["zoo", "family", "--dataset", "synthetic"])  # exact_prefix
    assert wrong.exit_code == 2 and "no variant 'exact_prefix'" in wrong.output
