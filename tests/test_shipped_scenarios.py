"""Every scenario the project ships is valid (a renamed key or option would break it silently)."""

from pathlib import Path

import pytest

from simulator.config import read_scenario_yaml, scenario_from_dict

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.yaml"))


def test_the_project_ships_scenarios():
    assert {p.stem for p in SCENARIOS} >= {
        "quickstart",
        "synthetic_quickstart",
        "bandwidth_sweep",
        "fleet_scale",
    }


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_shipped_scenario_validates(path, monkeypatch):
    monkeypatch.chdir(path.parents[1])  # paths inside scenarios are relative to the repository
    scenario = scenario_from_dict(read_scenario_yaml(path))
    assert scenario.name
