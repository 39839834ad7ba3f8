"""Sweeps: expansion and naming, validation, resume, failures, Ctrl-C, local vs dask executors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simulator import sweep
from simulator.cli import app
from simulator.config import ScenarioError
from simulator.sweep import SweepSpec, expand, parse_values, plan_sweep, run_name, run_sweep
from tests.conftest import fake_run_scenario, tiny_scenario_dict


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_grid_is_cartesian_then_zip_in_lockstep_then_seeds():
    spec = SweepSpec(
        grid={"network.uplink_mbps": [0.5, 2.0], "policy.name": ["all", "cema"]},
        zip={"fleet.devices": [2, 4], "stream.batch_size": [16, 32]},
        seeds=2,
    )
    runs = expand(spec, base_seed=10)
    assert len(runs) == 2 * 2 * 2 * 2
    assert runs[0].params == {
        "network.uplink_mbps": 0.5,
        "policy.name": "all",
        "fleet.devices": 2,
        "stream.batch_size": 16,
        "seed": 10,
    }
    assert runs[0].name == (
        "network.uplink_mbps=0.5__policy.name=all__fleet.devices=2__stream.batch_size=16__seed=10"
    )
    assert {r.params["seed"] for r in runs} == {10, 11}
    assert all(
        (r.params["fleet.devices"], r.params["stream.batch_size"]) in {(2, 16), (4, 32)}
        for r in runs
    )
    assert runs[-1].overrides[-1] == "seed=11"


def test_run_names_are_short_safe_and_deterministic():
    assert run_name({"network.uplink_mbps": 2.0, "policy.name": "cema", "seed": 1}) == (
        "network.uplink_mbps=2__policy.name=cema__seed=1"
    )
    assert run_name({"network.uplink_mbps": [1, 2.5]}) == "network.uplink_mbps=1-2.5"
    assert run_name({"dataset.root": "/data/x y"}) == "dataset.root=-data-x-y"
    long = {f"policy.cema.key{i}": "v" * 30 for i in range(10)}
    assert len(run_name(long)) <= 180 and run_name(long) == run_name(dict(long))
    assert run_name({}) == "base"


def test_zip_lists_must_have_equal_lengths():
    with pytest.raises(ScenarioError, match="equal lengths"):
        expand(SweepSpec(zip={"a.b": [1, 2], "c.d": [1]}))


def test_parse_values_reads_yaml_values_and_lists():
    assert parse_values("network.uplink_mbps=0.5,1,2") == ("network.uplink_mbps", [0.5, 1, 2])
    assert parse_values("policy.name=none,cema") == ("policy.name", ["none", "cema"])
    assert parse_values("network.uplink_mbps=[[1,2],[3,4]]")[1] == [[1, 2], [3, 4]]


def test_yaml_sweep_section_is_read_stripped_and_overridden_by_the_command_line(tmp_path):
    data = tiny_scenario_dict()
    data["sweep"] = {"grid": {"policy.name": ["none", "cema"]}, "seeds": 2}
    plan = plan_sweep(_write(tmp_path, data), cli_spec=SweepSpec(seeds=3))
    assert [r.spec.name for r in plan.runs][:3] == [
        "policy.name=none__seed=0",
        "policy.name=none__seed=1",
        "policy.name=none__seed=2",
    ]
    assert len(plan.runs) == 6
    assert "sweep" not in plan.runs[0].resolved
    assert len({r.config_hash for r in plan.runs}) == 6


def test_invalid_expanded_config_exits_2_with_dotted_path_before_running(tmp_path, fake_engine):
    path = _write(tmp_path, tiny_scenario_dict())
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["sweep", str(path), "--grid", "network.uplink_mbps=1,-2", "--out", str(out)]
    )
    assert result.exit_code == 2
    assert "network.uplink_mbps" in result.output and "-2" in result.output
    assert not out.exists()


def test_failing_run_is_recorded_and_the_others_finish_then_resume_retries_only_it(
    tmp_path, monkeypatch
):
    calls: list[tuple[str, int]] = []

    def flaky(scenario, progress=None, device="cpu"):
        calls.append((scenario.policy.name, scenario.seed))
        if scenario.policy.name == "all" and scenario.seed == 1:
            raise RuntimeError("link exploded")
        return fake_run_scenario(scenario)

    monkeypatch.setattr("simulator.engine.run_scenario", flaky)
    plan = plan_sweep(
        _write(tmp_path, tiny_scenario_dict()),
        cli_spec=SweepSpec(grid={"policy.name": ["none", "all"]}, seeds=2),
    )
    out = tmp_path / "out"
    manifest = run_sweep(plan, out)
    status = {r["name"]: r["status"] for r in manifest["runs"]}
    assert status == {
        "policy.name=none__seed=0": "finished",
        "policy.name=none__seed=1": "finished",
        "policy.name=all__seed=0": "finished",
        "policy.name=all__seed=1": "failed",
    }
    failed = next(r for r in manifest["runs"] if r["status"] == "failed")
    assert "RuntimeError: link exploded" in failed["error"]
    assert "Traceback" in failed["traceback"] and "flaky" in failed["traceback"]
    assert not (out / "policy.name=all__seed=1").exists()
    assert json.loads((out / "sweep.json").read_text())["counts"] == {"finished": 3, "failed": 1}
    info = json.loads((out / "policy.name=none__seed=0" / "run.json").read_text())
    assert info["config_hash"] == plan.runs[0].config_hash

    calls.clear()
    monkeypatch.setattr("simulator.engine.run_scenario", fake_run_scenario)
    monkeypatch.setattr("simulator.sweep.execute_run", _counting(sweep.execute_run, calls))
    first = json.loads((out / "sweep.json").read_text())
    manifest = run_sweep(plan, out)
    assert calls == ["policy.name=all__seed=1"]
    assert manifest["counts"] == {"skipped": 3, "finished": 1}
    # the resumed manifest keeps what the first attempt knew of the skipped runs, and its start
    was = {r["name"]: r for r in first["runs"]}
    for entry in manifest["runs"]:
        if entry["status"] == "skipped":
            known = was[entry["name"]]
            assert entry["accuracy"] == known["accuracy"] and entry["finished"] == known["finished"]
    assert manifest["first_started"] == first["started"]


def _counting(function, calls):
    def wrapper(resolved, out_dir, info, threads=None, device="cpu"):
        calls.append(Path(out_dir).name)
        return function(resolved, out_dir, info, threads, device)

    return wrapper


def test_changed_config_is_not_skipped(tmp_path, fake_engine):
    path = _write(tmp_path, tiny_scenario_dict())
    spec = SweepSpec(grid={"policy.name": ["none"]})
    out = tmp_path / "out"
    run_sweep(plan_sweep(path, cli_spec=spec), out)
    again = run_sweep(plan_sweep(path, ["network.latency_ms=50"], cli_spec=spec), out)
    assert again["counts"] == {"finished": 1}


def test_ctrl_c_leaves_no_half_written_run_folder(tmp_path, monkeypatch):
    def interrupted(scenario, progress=None, device="cpu"):
        if scenario.seed == 1:
            raise KeyboardInterrupt
        return fake_run_scenario(scenario)

    monkeypatch.setattr("simulator.engine.run_scenario", interrupted)
    plan = plan_sweep(_write(tmp_path, tiny_scenario_dict()), cli_spec=SweepSpec(seeds=3))
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan, out)
    assert sorted(p.name for p in out.iterdir()) == ["seed=0", "sweep.json"]
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in manifest["runs"]] == ["finished", "interrupted", "interrupted"]


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_summaries_as_the_local_executor(tmp_path):
    data = tiny_scenario_dict(
        stream__samples_per_device=64, stream__segment_samples=32, dataset__size=128
    )
    plan = plan_sweep(_write(tmp_path, data), cli_spec=SweepSpec(seeds=2))
    local = run_sweep(plan, tmp_path / "local")
    dask = run_sweep(plan, tmp_path / "dask", executor="dask", jobs=1, dask_processes=False)
    assert local["counts"] == dask["counts"] == {"finished": 2}

    def numbers(root: Path, name: str) -> dict:
        summary = json.loads((root / name / "summary.json").read_text())
        summary.pop("wall_time_s")
        return summary

    for run in plan.runs:
        name = run.spec.name
        assert numbers(tmp_path / "dask", name) == numbers(tmp_path / "local", name)
    assert numbers(tmp_path / "local", "seed=0") != numbers(tmp_path / "local", "seed=1")


def test_sweep_command_runs_grid_times_zip_and_a_second_call_skips_everything(
    tmp_path, fake_engine
):
    path = _write(tmp_path, tiny_scenario_dict())
    out = tmp_path / "out"
    args = [
        "sweep", str(path), "--grid", "policy.name=none,all", "--zip", "network.latency_ms=5,50",
        "--zip", "network.downlink_mbps=10,20", "--out", str(out), "--no-progress",
    ]  # fmt: skip
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert {p.name for p in out.iterdir() if p.is_dir()} == {
        "policy.name=all__network.latency_ms=5__network.downlink_mbps=10",
        "policy.name=all__network.latency_ms=50__network.downlink_mbps=20",
        "policy.name=none__network.latency_ms=5__network.downlink_mbps=10",
        "policy.name=none__network.latency_ms=50__network.downlink_mbps=20",
    }
    config = yaml.safe_load(
        (
            out / "policy.name=all__network.latency_ms=50__network.downlink_mbps=20" / "config.yaml"
        ).read_text()
    )
    assert config["network"]["latency_ms"] == 50 and config["policy"]["name"] == "all"
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "4 skipped" in again.output


def test_cli_prints_a_failed_runs_error_verbatim(tmp_path, monkeypatch):
    def broken(scenario, progress=None, device="cpu"):
        raise KeyError("corruptions ['acid_rain'] [/x] not found")

    monkeypatch.setattr("simulator.engine.run_scenario", broken)
    out = tmp_path / "out[1]"
    path = _write(tmp_path, tiny_scenario_dict())
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(out), "--no-progress"])
    assert result.exit_code == 1, result.output  # a failed run: exit 1, the manifest says which
    text = " ".join(result.output.split())
    assert "failed base: KeyError: \"corruptions ['acid_rain'] [/x] not found\"" in text
    assert f"-> {out}/sweep.json" in text


def test_command_line_axes_replace_the_yamls_and_a_set_of_a_swept_key_is_refused(tmp_path):
    data = tiny_scenario_dict()
    data["sweep"] = {
        "grid": {"stream.corruptions": [["fog"], ["contrast"]]},
        "zip": {"cloud.adapter": ["none", "cema"], "policy.name": ["none", "cema"]},
    }
    path = _write(tmp_path, data)
    assert len(plan_sweep(path).runs) == 4
    # the printed --zip of `fleetsim match-budget` for reset runs: it names the grid's key and
    # replaces the YAML's whole zip
    cli = SweepSpec(
        zip={"stream.corruptions": [["fog"], ["contrast"]], "policy.random.p": [0.2, 0.4]}
    )
    plan = plan_sweep(path, ["cloud.adapter=cema", "policy.name=random"], cli)
    assert [run.spec.params for run in plan.runs] == [
        {"stream.corruptions": ["fog"], "policy.random.p": 0.2},
        {"stream.corruptions": ["contrast"], "policy.random.p": 0.4},
    ]
    assert {run.resolved["cloud"]["adapter"] for run in plan.runs} == {"cema"}
    with pytest.raises(ScenarioError) as info:  # the YAML's zip would override it in every run
        plan_sweep(path, ["policy.name=random"])
    assert "policy.name" in str(info.value) and "--grid/--zip" in str(info.value)


def test_validate_checks_every_run_of_the_sweep_section(tmp_path):
    data = tiny_scenario_dict()
    data["sweep"] = {"grid": {"polcy.name": ["all"]}}
    bad = CliRunner().invoke(app, ["validate", str(_write(tmp_path, data))])
    assert bad.exit_code == 2 and "polcy" in bad.output
    data["sweep"] = {"grid": {"policy.name": ["none", "all"]}, "seeds": 2}
    path = _write(tmp_path, data)
    good = CliRunner().invoke(app, ["validate", str(path), "--show"])
    assert good.exit_code == 0, good.output
    assert "makes 4 valid runs" in good.output and "seeds: 2" in good.output
    data["sweep"] = {"zip": {"policy.name": ["none", "all"], "seed": [1]}}
    uneven = CliRunner().invoke(app, ["validate", str(_write(tmp_path, data))])
    assert uneven.exit_code == 2 and "values per key: policy.name 2, seed 1" in uneven.output


def test_a_scheduler_without_the_dask_executor_is_refused(tmp_path):
    path = _write(tmp_path, tiny_scenario_dict())
    args = ["sweep", str(path), "--scheduler", "tcp://nowhere:8786", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "needs --executor dask" in result.output
    assert not (tmp_path / "o").exists()


def test_analysis_warns_about_run_folders_the_sweep_json_does_not_list(tmp_path, fake_engine):
    path = _write(tmp_path, tiny_scenario_dict())
    out = tmp_path / "out"
    first = ["sweep", str(path), "--grid", "policy.name=none,all", "--out", str(out)]
    assert CliRunner().invoke(app, first).exit_code == 0
    again = ["sweep", str(path), "--grid", "policy.name=all", "--out", str(out)]  # narrower grid
    assert CliRunner().invoke(app, again).exit_code == 0
    result = CliRunner().invoke(app, ["plot", str(out), "--out", str(tmp_path / "fig")])
    assert result.exit_code == 0, result.output
    assert "1 run folder not in its sweep.json (policy.name=none)" in result.stderr


def test_validate_warns_of_a_set_of_a_swept_key_that_run_takes(tmp_path):
    data = tiny_scenario_dict()
    data["sweep"] = {"grid": {"policy.name": ["none", "all"]}}
    path = _write(tmp_path, data)
    result = CliRunner().invoke(app, ["validate", str(path), "--set", "policy.name=cema"])
    assert result.exit_code == 0, result.output
    assert "--set policy.name=cema: the sweep: section sweeps this key" in result.stderr


def test_a_command_line_grid_over_a_zipped_key_drops_the_yamls_whole_zip():
    yaml_spec = SweepSpec(zip={"cloud.adapter": ["none", "cema"], "policy.name": ["none", "cema"]})
    merged = yaml_spec.merged(SweepSpec(grid={"policy.name": ["all", "random"]}))
    assert merged.zip == {} and merged.grid == {"policy.name": ["all", "random"]}
    kept = yaml_spec.merged(SweepSpec(grid={"seed": [1, 2]}))
    assert kept.zip == yaml_spec.zip


def test_sweep_axis_mistakes_say_what_is_wrong():
    with pytest.raises(ScenarioError, match="a sweep axis looks like dotted.key=v1,v2"):
        parse_values("policy.name=")
    with pytest.raises(ScenarioError, match="seed is swept as an axis too"):
        expand(SweepSpec(grid={"seed": [0, 1]}, seeds=2))
    with pytest.raises(ScenarioError, match="share a folder name") as info:
        expand(SweepSpec(grid={"policy.name": ["all", "all"]}))
    assert "policy.name=all" in str(info.value)
