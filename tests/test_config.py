from pathlib import Path

import pytest
import yaml

from simulator.config import (
    ScenarioError,
    apply_overrides,
    dump_scenario,
    load_scenario,
    scenario_from_dict,
)
from tests.conftest import tiny_scenario_dict


def test_required_dotted_keys_exist_and_overrides_apply():
    keys = {
        "seed": 3,
        "dataset.name": "synthetic",
        "fleet.devices": 5,
        "stream.samples_per_device": 128,
        "stream.batch_size": 16,
        "stream.corruptions": ["contrast", "clean"],
        "stream.severity": 2,
        "network.uplink_mbps": 2.5,
        "network.downlink_mbps": 9,
        "network.latency_ms": 7,
        "edge.model": "synthetic_edge",
        "cloud.teacher": "synthetic_teacher",
        "cloud.adapter": "cema",
        "cloud.scope": "per_device",
        "policy.name": "random",
    }
    overrides = [
        f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in keys.items()
    ]
    s = scenario_from_dict(tiny_scenario_dict(), overrides)
    for dotted, expected in keys.items():
        node = s
        for part in dotted.split("."):
            node = getattr(node, part)
        assert node == expected, dotted


def test_plugin_parameters_are_validated_and_defaults_resolved():
    s = scenario_from_dict(tiny_scenario_dict(), ["policy.random.p=0.25", "policy.name=random"])
    assert s.policy.params().p == 0.25
    resolved = s.resolved()
    assert resolved["policy"]["random"]["p"] == 0.25
    assert "lr_edge" in str(resolved["cloud"]["cema"]) or resolved["cloud"]["cema"]


def test_resolved_config_round_trips(tmp_path: Path):
    s = scenario_from_dict(tiny_scenario_dict(), ["policy.cema.e_min=0.05"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_scenario(s))
    again = load_scenario(path)
    assert again.resolved() == s.resolved()


def test_per_device_lists_cycle_over_devices():
    from simulator.config import per_device_value

    s = scenario_from_dict(tiny_scenario_dict(), ["network.uplink_mbps=[1, 2, 3]"])
    assert [per_device_value(s.network.uplink_mbps, d) for d in range(5)] == [1, 2, 3, 1, 2]


@pytest.mark.parametrize(
    ("override", "path", "hint"),
    [
        ("stream.bogus=1", "stream.bogus", "allowed"),
        ("fleet.devices=many", "fleet.devices", "integer"),
        ("network.uplink_mbps=-1", "network.uplink_mbps", "> 0"),
        ("network.uplink_mbps=0", "network.uplink_mbps", "> 0"),
        ("network.downlink_mbps=[1, 0]", "network.downlink_mbps", "> 0"),
        ("network.latency_ms=-5", "network.latency_ms", ">= 0"),
        ("stream.severity=7", "stream.severity", "5"),
        ("stream.corruptions=[fog_of_war]", "stream.corruptions", "gaussian_noise"),
        ("policy.name=psychic", "policy.name", "cema"),
        ("cloud.adapter=magic", "cloud.adapter", "cema"),
        ("edge.model=resnet9000", "edge.model", "resnet20"),
        ("dataset.name=mnist", "dataset.name", "synthetic"),
        ("cloud.scope=global", "cloud.scope", "per_device"),
        ("policy.random.p=1.5", "policy.random.p", "1"),
        ("policy.cema.nonsense=1", "policy.cema.nonsense", "e_min"),
        ("edge.checkpoint=/no/such/file.pt", "edge.checkpoint", "does not exist"),
        ("dataset.root=/no/such/folder", "dataset.root", "does not exist"),
    ],
)
def test_bad_input_names_the_dotted_path_value_and_what_is_allowed(override, path, hint):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(tiny_scenario_dict(), [override])
    text = str(info.value)
    assert any(p.path == path for p in info.value.problems), text
    assert hint in text
    assert override.partition("=")[2].strip("[]").split(",")[0] in text


def test_missing_scenario_file_is_reported():
    with pytest.raises(ScenarioError, match="does not exist"):
        load_scenario("no/such/scenario.yaml")


def test_malformed_override_is_reported():
    with pytest.raises(ScenarioError, match="dotted.key=value"):
        apply_overrides({}, ["seed"])


def test_every_problem_is_reported_at_once_including_plugin_parameters():
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(
            tiny_scenario_dict(),
            ["stream.severity=0", "policy.cema.e_mn=0.1", "cloud.cema.lr_edge=-1"],
        )
    paths = {p.path for p in info.value.problems}
    assert paths == {"stream.severity", "policy.cema.e_mn", "cloud.cema.lr_edge"}


def test_a_sweep_section_is_ignored_by_a_single_run():
    data = {**tiny_scenario_dict(), "sweep": {"grid": {"policy.name": ["none", "cema"]}}}
    assert scenario_from_dict(data).policy.name == "cema"


def test_relative_paths_are_read_from_the_cwd_else_from_the_scenario_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = tmp_path / "study"
    (folder / "traces").mkdir(parents=True)
    (folder / "traces" / "up.csv").write_text("time_s,mbps\n0,2.0\n10,1.0\n")
    data = tiny_scenario_dict()
    data["network"]["uplink_trace"] = "traces/up.csv"
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)  # "traces/up.csv" is not here: taken from the file's folder
    assert load_scenario(path).network.uplink_trace == Path("study/traces/up.csv")
    monkeypatch.chdir(folder)  # here it is: kept as written
    assert load_scenario(path).network.uplink_trace == Path("traces/up.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # above the working directory: absolute
    assert load_scenario(path).network.uplink_trace == (folder / "traces" / "up.csv").resolve()
    # paths a sweep: section sweeps are read the same way
    from simulator.sweep import plan_sweep

    data["sweep"] = {"grid": {"network.uplink_trace": ["traces/up.csv", None]}}
    path.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    traces = [r.resolved["network"]["uplink_trace"] for r in plan_sweep(path).runs]
    assert traces == ["study/traces/up.csv", None]


def test_yaml_merge_keys_still_work_and_only_real_duplicates_are_refused(tmp_path: Path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        "cloud:\n  adapter: eata\n  tent: &shared {batch_size: 16, lr: 0.001}\n"
        "  eata: {<<: *shared, lr: 0.002}\npolicy: {name: eata}\n"
    )
    scenario = load_scenario(path)
    assert (scenario.cloud.params().batch_size, scenario.cloud.params().lr) == (16, 0.002)
    path.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(ScenarioError, match="given twice"):
        load_scenario(path)
