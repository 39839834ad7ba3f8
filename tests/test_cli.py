"""The command line as a user runs it: exit codes, messages, files written (or not)."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simulator.cli import app
from tests.conftest import tiny_scenario_dict

runner = CliRunner()


@pytest.mark.slow
def test_run_writes_the_three_files_and_prints_a_summary(tmp_path: Path, tiny_yaml: Path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(tiny_yaml), "--out", str(out), "--set", "seed=2"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"config.yaml", "events.parquet", "summary.json"}
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 2
    assert "accuracy" in result.output and "upload bytes" in result.output
    assert "delivered accuracy" not in result.output  # edge_only: every answer is the edge's


@pytest.mark.slow
def test_run_with_edgefm_routing_prints_delivered_accuracy_latency_and_offloads(
    tmp_path: Path, tiny_yaml: Path
):
    out = tmp_path / "out"
    overrides = ["--set", "routing.name=edgefm", "--set", "stream.samples_per_device=64"]
    result = runner.invoke(app, ["run", str(tiny_yaml), "--out", str(out), *overrides])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert "delivered accuracy" in result.output and "latency p50 / p95" in result.output
    assert f"{100 * summary['delivered_accuracy']:.2f} %" in result.output


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("stream.nope=1", "stream.nope"),
        ("fleet.devices=abc", "fleet.devices"),
        ("network.uplink_mbps=-2", "network.uplink_mbps"),
        ("network.downlink_mbps=0", "network.downlink_mbps"),
        ("stream.severity=6", "stream.severity"),
        ("stream.corruptions=[acid_rain]", "stream.corruptions"),
        ("policy.name=oracle", "policy.name"),
        ("cloud.adapter=unknown", "cloud.adapter"),
        ("edge.model=not_a_model", "edge.model"),
        ("cloud.teacher=timm:not_a_model_xyz", "cloud.teacher"),
        ("dataset.name=imagenet22k", "dataset.name"),
        ("edge.checkpoint=missing.pt", "edge.checkpoint"),
        ("fleet.devices=true", "fleet.devices"),  # pydantic would take true as 1
        ("dataset.size=true", "dataset.size"),  # int | None
        ("network.cloud_ingress_mbps=true", "network.cloud_ingress_mbps"),  # float | None
        ("cloud.cema.batch_size=true", "cloud.cema.batch_size"),
        ("policy.cema.lambda=false", "policy.cema.lambda"),
    ],
)
def test_bad_input_exits_2_names_the_path_and_writes_nothing(tmp_path, tiny_yaml, override, path):
    out = tmp_path / "never"
    for command in ("run", "validate"):
        args = [command, str(tiny_yaml), "--set", override]
        if command == "run":
            args += ["--out", str(out)]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert path in result.output
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.yaml"]


def test_missing_scenario_file_exits_2(tmp_path):
    result = runner.invoke(app, ["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (b"seed: 1\nseed: 2\n", "key 'seed' is given twice"),
        (b"network: {latency_ms: 5, latency_ms: 9}\n", "key 'latency_ms' is given twice"),
        (b"", "is empty"),
        (b"# only a comment\n", "is empty"),
        (b"name: caf\xe9\n", "is not UTF-8 text"),
        (b"nmae: x\n", "allowed: name, description, seed"),
    ],
)
def test_a_bad_scenario_file_is_refused_with_what_is_wrong(tmp_path, text: bytes, says: str):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and says in result.output, result.output
    if says.startswith("allowed"):
        assert "sweep" in result.output  # a top-level key too
    folder = runner.invoke(app, ["validate", str(tmp_path)])
    assert folder.exit_code == 2 and "is a folder" in folder.output


def test_validate_accepts_a_good_scenario_and_shows_it(tiny_yaml):
    result = runner.invoke(app, ["validate", str(tiny_yaml), "--show"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "uplink_mbps" in result.output


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("policies", ["none", "all", "random", "cema"]),
        ("adapters", ["none", "bn_stats", "cema"]),
        ("datasets", ["synthetic", "cifar10"]),
        ("models", ["resnet20", "resnet56", "resnet56-augmix", "synthetic_edge", "timm:"]),
        ("routing", ["edge_only", "edgefm"]),
        ("selection", ["fixed", "adaptivenet"]),
        (
            "corruptions",
            [
                "gaussian_noise",
                "shot_noise",
                "impulse_noise",
                "defocus_blur",
                "contrast",
                "brightness",
                "pixelate",
                "jpeg_compression",
            ],
        ),
    ],
)
def test_list_shows_every_registered_name(kind, expected):
    result = runner.invoke(app, ["list", kind])
    assert result.exit_code == 0, result.output
    for name in expected:
        assert name in result.output


@pytest.mark.parametrize("name", ["quickstart", "synthetic_quickstart"])
def test_quickstart_scenarios_are_valid(name):
    repo = Path(__file__).resolve().parents[1]
    result = runner.invoke(app, ["validate", str(repo / "scenarios" / f"{name}.yaml")])
    assert result.exit_code == 0, result.output


def test_tiny_dict_helper_matches_yaml(tiny_yaml):
    assert yaml.safe_load(tiny_yaml.read_text()) == tiny_scenario_dict()


@pytest.mark.parametrize("name", ["runs[v2]", "a[/x]b", "list[str]"])
def test_error_messages_keep_brackets_verbatim(tmp_path: Path, name: str):
    # Rich markup would swallow "[v2]" and fail outright on a stray closing tag like "[/x]"
    missing = tmp_path / name
    result = runner.invoke(app, ["report", str(missing)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "MarkupError" not in result.output
    assert f"error: no such folder: {missing}" in " ".join(result.output.split())
    assert not missing.exists()  # nothing created for a report that could not be made


def test_small_batches_under_batch_statistics_are_warned_about_not_refused(tmp_path: Path):
    path = tmp_path / "small.yaml"
    data = tiny_scenario_dict(stream__batch_size=4, stream__samples_per_device=32)
    data["cloud"] = {"adapter": "bn_stats"}
    data["policy"] = {"name": "none"}
    path.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: stream.batch_size 4: with cloud.adapter 'bn_stats'" in result.stderr
    assert "raise stream.batch_size" in result.stderr
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(path), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "warning: stream.batch_size 4" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [w[:26] for w in summary["warnings"]] == ["stream.batch_size 4: with "]
    # the sweep says how many of its runs the warning concerns
    result = runner.invoke(
        app,
        ["sweep", str(path), "--grid", "stream.batch_size=4,32", "--out", str(tmp_path / "sw")],
    )
    assert result.exit_code == 0, result.output
    assert "warning: (1 of 2 runs) stream.batch_size 4" in result.stderr
    # CEMA's default edge normalises with batch statistics too (the hint names the way out);
    # with edge_norm eval it uses downloaded running statistics, fine at any batch size
    result = runner.invoke(
        app, ["validate", str(path), "--set", "cloud.adapter=cema", "--set", "policy.name=cema"]
    )
    assert "warning" in result.stderr and "cloud.cema.edge_norm: eval" in result.stderr
    result = runner.invoke(
        app,
        [
            "validate",
            str(path),
            "--set",
            "cloud.adapter=cema",
            "--set",
            "cloud.cema.edge_norm=eval",
        ],
    )
    assert result.exit_code == 0 and "warning" not in result.stderr
    # a model trained on another dataset than the stream's
    result = runner.invoke(app, ["validate", str(path), "--set", "dataset.name=cifar10"])
    assert "edge.model synthetic_edge was trained on synthetic, but dataset.name is cifar10" in (
        result.stderr
    )
    offloads = [
        "--set=edge.model=resnet20",
        "--set=routing.name=edgefm",
        "--set=cloud.adapter=none",
    ]
    result = runner.invoke(app, ["validate", str(path), "--set=dataset.name=cifar10", *offloads])
    assert "edge.model" not in result.stderr  # resnet20 is a CIFAR-10 model
    assert "cloud.teacher synthetic_teacher was trained on synthetic" in result.stderr  # answers
    # batches longer than a domain segment or a whole stream: warned whatever the adapter
    for changes, says in (
        (["stream.segment_samples=16", "stream.batch_size=32"], "every batch mixes images"),
        (["stream.batch_size=64"], "each device classifies one batch of 32"),
    ):
        args = ["validate", str(path), "--set", "cloud.adapter=none"]
        result = runner.invoke(app, args + [f"--set={c}" for c in changes])
        assert result.exit_code == 0 and says in result.stderr, result.stderr
    one_domain = ["--set=stream.corruptions=[fog]", "--set=stream.segment_samples=16"]
    result = runner.invoke(app, [*args, *one_domain, "--set=stream.batch_size=32"])
    assert result.exit_code == 0 and "mixes" not in result.stderr  # one corruption: nothing to mix


def test_run_never_replaces_a_folder_that_is_not_a_run_and_checks_out_before_simulating(
    tmp_path: Path, tiny_yaml: Path, monkeypatch
):
    import simulator.engine

    def no_simulating(*args, **kwargs):
        raise AssertionError("the run started although --out was unusable")

    monkeypatch.setattr(simulator.engine, "run_scenario", no_simulating)
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "notes.txt").write_text("precious")
    afile = tmp_path / "notes.txt"
    afile.write_text("also precious")
    for out, says in (
        (victim, "holds notes.txt, sub/"),
        (afile, "is a file"),
        (afile / "x", "is a file, so no folder"),
    ):
        result = runner.invoke(app, ["run", str(tiny_yaml), "--out", str(out)])
        assert result.exit_code == 2 and says in result.output, result.output
    assert (victim / "notes.txt").read_text() == "precious" and (victim / "sub").is_dir()
    assert afile.read_text() == "also precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "tiny.yaml", "victim"]
    link = tmp_path / "link"
    link.symlink_to(victim)
    result = runner.invoke(app, ["run", str(tiny_yaml), "--out", str(link)])
    assert result.exit_code == 2 and "symbolic link" in result.output
    link.unlink()
    monkeypatch.chdir(victim / "sub")  # an empty folder, but the working directory
    result = runner.invoke(app, ["run", str(tiny_yaml), "--out", "."])
    assert result.exit_code == 2 and "working directory" in result.output
    for name in ('""', "../../x", "a/b", "..", ".hidden"):
        result = runner.invoke(app, ["run", str(tiny_yaml), "--set", f"name={name}"])
        assert result.exit_code == 2 and "should be a folder name" in result.output


def test_run_replaces_an_earlier_run_folder_readable_as_a_plain_folder(
    tmp_path: Path, tiny_yaml: Path, fake_engine
):
    import os

    out = tmp_path / "run"
    out.mkdir()  # an empty folder is fine too
    for seed in (1, 2):
        result = runner.invoke(
            app, ["run", str(tiny_yaml), "--out", str(out), "--set", f"seed={seed}"]
        )
        assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 2
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0o700
    data = tiny_scenario_dict()
    data["sweep"] = {"grid": {"policy.name": ["none", "all"]}}
    swept = tmp_path / "swept.yaml"
    swept.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["run", str(swept), "--out", str(out)])
    assert result.exit_code == 0 and "runs its base config only" in result.output


def test_ctrl_c_during_a_run_says_nothing_was_written(tmp_path: Path, tiny_yaml: Path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("simulator.engine.run_scenario", interrupted)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(tiny_yaml), "--out", str(out), "--no-progress"])
    assert result.exit_code == 130 and "interrupted; nothing written" in result.output
    assert not out.exists()


def test_a_run_folder_keeps_taking_runs_after_plot_but_a_sweeps_run_is_left_to_the_sweep(
    tmp_path: Path, tiny_yaml: Path, monkeypatch, fake_engine
):
    import simulator.runs

    out = tmp_path / "run"
    assert runner.invoke(app, ["run", str(tiny_yaml), "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, ["plot", str(out), "--kind", "devices"]).exit_code == 0
    assert (out / "figures").is_dir()
    again = runner.invoke(app, ["run", str(tiny_yaml), "--out", str(out), "--set", "seed=3"])
    assert again.exit_code == 0, again.output  # figures/ is fleetsim's own: it goes with the run
    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 3
    (out / "run.json").write_text("{}")  # what a sweep's run folder holds
    refused = runner.invoke(app, ["run", str(tiny_yaml), "--out", str(out)])
    assert refused.exit_code == 2 and "only `fleetsim sweep` replaces" in refused.output
    # the write test is made where the run is written: next to the folder, in its parent
    probed = []
    monkeypatch.setattr(simulator.runs, "_probe", lambda folder, *a: probed.append(folder))
    simulator.runs.check_run_dir(tmp_path / "new" / "deeper")
    simulator.runs.check_run_dir(tmp_path / "run2")
    assert probed == [tmp_path, tmp_path]


def test_help_lists_the_commands_then_the_groups_in_a_fixed_order():
    """The cli/ package's modules register in import order; ``fleetsim --help`` keeps one order."""
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    names = [
        "validate", "run", "list", "sweep", "plot", "report", "table", "match-budget", "compare",
        "zoo", "data", "traces",
    ]  # fmt: skip
    listed = [line.split()[1] for line in result.output.splitlines() if line.startswith("│ ")]
    assert [name for name in listed if name in names] == names


def test_zoo_build_writes_into_the_packages_weights_folder_by_default(monkeypatch):
    import simulator.models

    seen = {}

    def fake_build_zoo(target, names, seed, progress):
        seen.update(target=target, names=names, seed=seed)
        return {"tiny": {"accuracy": 0.5}}

    monkeypatch.setattr("simulator.models.train.build_zoo", fake_build_zoo)
    result = runner.invoke(app, ["zoo", "build", "--name", "tiny", "--seed", "3"])
    assert result.exit_code == 0, result.output
    weights = Path(simulator.models.__file__).parent / "weights"
    assert seen == {"target": weights, "names": ["tiny"], "seed": 3}
    assert weights.is_dir() and "accuracy=0.5" in result.output
