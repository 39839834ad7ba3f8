"""External plug-ins (simulator/plugins.py): a scenario's plugins: (files and modules), installed
packages' entry points, clear errors, sources in fleetsim list, fresh sweep workers, and the example
package examples/my_policy."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from simulator import plugins
from simulator.cli import app
from simulator.config import ScenarioError, load_scenario, scenario_from_dict
from simulator.plugins import PluginError, load_entry_points, registries
from tests.conftest import REPO, tiny_scenario_dict

EXAMPLE = REPO / "examples" / "my_policy"

#: An upload policy plug-in in one file: a decorated class with its pydantic Config.
FIRST_HALF = '''
import numpy as np
from pydantic import BaseModel, ConfigDict

from policies.upload.base import LOW_INFO, UPLOAD_POLICIES, UploadPolicy, check_batch, reasons_for


@UPLOAD_POLICIES.register("first_half")
class FirstHalf(UploadPolicy):
    """Upload the first half of each batch."""

    method_names = {"cema": "First half"}

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    def select(self, probs, entropy):
        batch = check_batch(probs, entropy)
        mask = np.arange(batch) < batch // 2
        self.last_reasons = reasons_for(mask, LOW_INFO)
        return mask
'''


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Registries and the loader as they are now, restored after the test (and its plug-in
    modules forgotten), so that what a test registers does not leak into the others."""
    for registry in registries().values():
        monkeypatch.setattr(registry, "_items", dict(registry._items))
        monkeypatch.setattr(registry, "_sources", dict(registry._sources))
    monkeypatch.setattr(plugins, "_imported", {})
    monkeypatch.setattr(plugins, "_entry_points_done", set())
    monkeypatch.setattr(plugins, "_scanned", False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("fleetsim_plugin_", "tp_", "my_policy")):
            del sys.modules[name]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _scenario(path: Path, **changes) -> Path:
    return _write(path, yaml.safe_dump(tiny_scenario_dict(**changes)))


def fake_entry_points(*modules: str, dist: str = "fleetsim-my-policy"):
    """A stand-in for ``importlib.metadata.entry_points``: one installed distribution ``dist``
    declaring each module in ``fleetsim.plugins``."""
    entries = [
        SimpleNamespace(
            name=module.rpartition(".")[2],
            value=module,
            group=plugins.ENTRY_POINT_GROUP,
            dist=SimpleNamespace(name=dist),
            load=functools.partial(importlib.import_module, module),
        )
        for module in modules
    ]

    def entry_points(**selection):
        assert selection == {"group": plugins.ENTRY_POINT_GROUP}
        return entries

    return entry_points


def test_a_plugin_file_relative_to_the_scenario_registers_before_validation(
    tmp_path, fresh_plugins, monkeypatch
):
    _write(tmp_path / "plugs" / "first_half.py", FIRST_HALF)
    path = _scenario(tmp_path / "scenarios" / "s.yaml", plugins=["../plugs/first_half.py"])
    monkeypatch.chdir(REPO)  # not the scenario's folder: the path is read from the scenario's
    scenario = load_scenario(path, ["policy.name=first_half"])
    policy = scenario.policy.plugin
    assert policy.__name__ == "FirstHalf"
    source = registries()["policies"].source("first_half")
    assert source == f"scenario plug-in ({(tmp_path / 'plugs' / 'first_half.py').resolve()})"
    assert scenario.resolved()["plugins"] == [str((tmp_path / "plugs" / "first_half.py").resolve())]
    mask = policy(None, 10, np.random.default_rng(0)).select(
        torch.full((4, 10), 0.1), torch.zeros(4)
    )
    assert mask.tolist() == [True, True, False, False]
    # loading again (another scenario, the resolved config) imports nothing twice
    again = scenario_from_dict(scenario.resolved())
    assert again.policy.plugin is policy
    assert "plugins" not in load_scenario(_scenario(tmp_path / "plain.yaml")).resolved()


def test_a_plugin_module_on_the_path_registers_and_a_name_clash_names_both_sources(
    tmp_path, fresh_plugins, monkeypatch
):
    _write(tmp_path / "mods" / "tp_first.py", FIRST_HALF)
    _write(tmp_path / "mods" / "tp_again.py", FIRST_HALF.replace("FirstHalf", "Again"))
    _write(tmp_path / "mods" / "tp_cema.py", FIRST_HALF.replace('"first_half"', '"cema"'))
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    scenario = scenario_from_dict(
        tiny_scenario_dict(plugins=["tp_first"], policy__name="first_half")
    )
    assert scenario.policy.plugin.__module__ == "tp_first"
    assert registries()["policies"].source("first_half") == "scenario plug-in (tp_first)"
    with pytest.raises(ScenarioError) as clash:
        scenario_from_dict(tiny_scenario_dict(plugins=["tp_first", "tp_again"]))
    message = str(clash.value)
    assert (
        "plugins.1 = 'tp_again': failed to load: DuplicateNameError: upload policy 'first_half'"
        in message
    )
    assert "by scenario plug-in (tp_first) (tp_first.FirstHalf)" in message
    assert "by scenario plug-in (tp_again) (tp_again.Again)" in message
    with pytest.raises(ScenarioError, match=r"by built in \(policies.upload.cema.CemaUpload\)"):
        scenario_from_dict(tiny_scenario_dict(plugins=["tp_cema"]))
    assert registries()["policies"].get("cema").__module__ == "policies.upload.cema"


def test_a_plugin_that_fails_to_import_is_named_with_its_error_before_anything_runs(
    tmp_path, fresh_plugins
):
    broken = _write(
        tmp_path / "broken.py",
        "from policies.upload.base import UPLOAD_POLICIES\n"
        "\n"
        "@UPLOAD_POLICIES.register('half_done')\n"
        "class HalfDone:\n"
        "    pass\n"
        "\n"
        "import tp_no_such_module\n",
    )
    path = _scenario(
        tmp_path / "s.yaml", plugins=["broken.py", "missing.py", "tp_nowhere", "not a module"]
    )
    with pytest.raises(ScenarioError) as failed:
        load_scenario(path)
    problems = [str(p) for p in failed.value.problems]
    assert problems[0].startswith(
        f"plugins.0 = '{broken}': failed to load: ModuleNotFoundError: No module named "
        f"'tp_no_such_module' (at {broken}, line 7)"
    )
    assert problems[1] == (
        f"plugins.1 = '{tmp_path / 'missing.py'}': failed to load: file "
        f"{tmp_path / 'missing.py'} does not exist"
    )
    assert problems[2] == (
        "plugins.2 = 'tp_nowhere': failed to load: ModuleNotFoundError: No module named "
        "'tp_nowhere'"
    )
    assert problems[3] == (
        "plugins.3 = 'not a module': failed to load: not a module name (dotted.name) nor a .py file"
    )
    assert "half_done" not in registries()["policies"]  # what it registered before failing
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "No module named 'tp_no_such_module'" in result.output
    assert not (tmp_path / "run").exists()
    with pytest.raises(ScenarioError, match="plugins = 'x.py': must be a list"):
        scenario_from_dict(tiny_scenario_dict(plugins="x.py"))


def test_installed_plugins_load_from_their_entry_point_and_list_shows_every_source(
    tmp_path, fresh_plugins, monkeypatch
):
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.setattr(
        importlib.metadata, "entry_points", fake_entry_points("my_policy.top_entropy")
    )
    scenario = scenario_from_dict(tiny_scenario_dict(policy__name="top_entropy"))
    assert scenario.policy.plugin.__name__ == "TopEntropy"
    assert load_entry_points() == []  # idempotent: once per process
    plugin = _write(tmp_path / "first_half.py", FIRST_HALF)
    result = CliRunner().invoke(app, ["list", "policies", "--plugins", str(plugin)])
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.output)
    assert rows["cema"][0] == "built in"
    assert rows["top_entropy"][0] == "entry point (fleetsim-my-policy)"
    assert rows["first_half"][0].replace(" ", "") == f"scenarioplug-in({plugin})"
    # a scenario's plug-ins, listed from the scenario
    _write(tmp_path / "other.py", FIRST_HALF.replace('"first_half"', '"other_half"'))
    path = _scenario(tmp_path / "s.yaml", plugins=["other.py"])
    listed = CliRunner().invoke(app, ["list", "policies", "--scenario", str(path)])
    assert listed.exit_code == 0, listed.output
    other = _table_rows(listed.output)["other_half"][0].replace(" ", "")
    assert other == f"scenarioplug-in({tmp_path / 'other.py'})"


def _table_rows(output: str) -> dict[str, list[str]]:
    """A printed table's rows, by name: the other cells, each with its wrapped lines joined."""
    rows: dict[str, list[str]] = {}
    name = ""
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if not cells:
            continue
        if cells[0]:
            name = cells[0]
            rows[name] = cells[1:]
        elif name:
            rows[name] = [f"{a} {b}".strip() for a, b in zip(rows[name], cells[1:], strict=True)]
    return rows


def test_an_installed_plugin_that_fails_names_its_entry_point_and_distribution(
    fresh_plugins, monkeypatch
):
    monkeypatch.setattr(
        importlib.metadata, "entry_points", fake_entry_points("tp_gone.policies", dist="gone-dist")
    )
    with pytest.raises(PluginError) as failed:
        scenario_from_dict(tiny_scenario_dict())
    assert str(failed.value) == (
        "plug-in 'policies' (entry point 'tp_gone.policies' of gone-dist) failed to load: "
        "ModuleNotFoundError: No module named 'tp_gone'"
    )
    result = CliRunner().invoke(app, ["list", "adapters"])
    assert result.exit_code == 2 and "gone-dist" in result.output


def test_a_dataset_and_a_model_are_each_one_decorated_definition(tmp_path, fresh_plugins):
    plugin = _write(
        tmp_path / "tp_data_model.py",
        '''
import numpy as np
from torch import nn

from simulator.data.datasets import DATASETS, ImageDataset
from simulator.models.zoo import MODELS


@DATASETS.register("tp_stripes")
def stripes(*, split, root, variant, seed, size):
    """Two classes of stripes."""
    labels = np.arange(size or 8) % 2
    images = np.zeros((len(labels), 32, 32, 3), dtype=np.uint8)
    images[labels == 1, ::2] = 255
    return ImageDataset("tp_stripes", images, labels, ["flat", "striped"], "generated")


@MODELS.register("tp_tiny")
class Tiny(nn.Sequential):
    """A linear classifier."""

    mean, std, dataset = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "tp_stripes"

    def __init__(self, num_classes):
        super().__init__(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))
''',
    )
    scenario = scenario_from_dict(
        tiny_scenario_dict(
            plugins=[str(plugin)], dataset={"name": "tp_stripes"}, edge={"model": "tp_tiny"}
        )
    )
    from simulator.data.datasets import create_dataset
    from simulator.models.zoo import create_model, trained_on

    data = create_dataset(scenario.dataset.name, size=4)
    model = create_model(scenario.edge.model, num_classes=data.num_classes)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255
    assert model(images).shape == (4, 2)
    assert trained_on("tp_tiny") == "tp_stripes"


def test_the_example_packages_own_tests_pass(fresh_plugins, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    module = plugins._import_file(EXAMPLE / "tests" / "test_top_entropy.py")
    tests = [getattr(module, name) for name in dir(module) if name.startswith("test_")]
    assert len(tests) == 2
    for test in tests:
        test()


@pytest.mark.slow
def test_a_scenario_plugin_is_registered_in_fresh_process_pool_workers(tmp_path, fresh_plugins):
    plugin = _write(tmp_path / "first_half.py", FIRST_HALF)
    data = tiny_scenario_dict(plugins=[plugin.name], fleet={"devices": 1})
    data["cloud"] = {"adapter": "none", "teacher": None}  # the policy is what matters here
    data["stream"].update(samples_per_device=64, segment_samples=32)
    data["dataset"]["size"] = 64
    path = _write(tmp_path / "s.yaml", yaml.safe_dump(data))
    out = tmp_path / "sweep"
    args = ["sweep", str(path), "--grid", "policy.name=first_half,all", "--jobs", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    runs = json.loads((out / "sweep.json").read_text())["runs"]
    assert {r["name"]: r["status"] for r in runs} == {
        "policy.name=first_half": "finished",
        "policy.name=all": "finished",
    }
    summary = json.loads((out / "policy.name=first_half" / "summary.json").read_text())
    assert summary["upload_fraction"] == pytest.approx(0.5)
