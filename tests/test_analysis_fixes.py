"""Analysis fixes: list-valued swept keys, one series per method, match-budget refusing to pool
methods, and clear errors of plot/report/table/compare (analysis/, their `fleetsim` commands)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from analysis import tables, tta
from analysis.load import ListValue, load_events, load_runs
from analysis.paired import paired_comparison
from analysis.report import KINDS, figure, reference_runs, with_methods
from simulator.cli import app
from simulator.sweep import SweepSpec, plan_sweep, run_sweep
from tests.conftest import fake_run_scenario, tiny_scenario_dict
from tests.test_analysis import _close_figures, _legend  # noqa: F401 (autouse fixture)
from tests.test_tta_table import reset_sweep, write_run

runner = CliRunner()


def fake_sweep(root: Path, spec: SweepSpec) -> Path:
    """A sweep of the tiny scenario with the stand-in engine (milliseconds per run)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "scenario.yaml"
    path.write_text(yaml.safe_dump(tiny_scenario_dict()))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("simulator.engine.run_scenario", fake_run_scenario)
        run_sweep(plan_sweep(path, cli_spec=spec), root / "runs", progress=False)
    return root / "runs"


@pytest.fixture(scope="module")
def corruption_sweep(tmp_path_factory) -> Path:
    spec = SweepSpec(
        grid={"stream.corruptions": [["fog"], ["contrast"]], "policy.name": ["none", "cema"]},
        seeds=2,
    )
    return fake_sweep(tmp_path_factory.mktemp("corruptions"), spec)


@pytest.fixture(scope="module")
def uplink_sweep(tmp_path_factory) -> Path:
    spec = SweepSpec(grid={"network.uplink_mbps": [[0.5, 2.0], [1.0, 4.0]]}, seeds=2)
    return fake_sweep(tmp_path_factory.mktemp("uplinks"), spec)


@pytest.fixture(scope="module")
def method_sweep(tmp_path_factory) -> Path:
    spec = SweepSpec(
        grid={"network.uplink_mbps": [0.2, 1.0, 4.0]},
        zip={
            "cloud.adapter": ["none", "bn_stats", "cema"],
            "policy.name": ["none", "none", "cema"],
        },
        seeds=2,
    )
    return fake_sweep(tmp_path_factory.mktemp("methods"), spec)


# --------------------------------------------------------------------------------------------------
# 1. list-valued swept keys


def test_list_values_of_a_swept_key_load_as_hashable_lists_that_print_as_lists(corruption_sweep):
    runs = load_runs(corruption_sweep)
    column = runs["stream.corruptions"]
    assert column.nunique() == 2 and set(column) == {("fog",), ("contrast",)}
    assert isinstance(column.iloc[0], ListValue) and str(ListValue(("fog",))) == "[fog]"
    assert str(ListValue((0.5, 2.0))) == "[0.5, 2.0]"
    events = load_events(corruption_sweep, [runs["run"].iloc[0]], kinds=["sample"])
    assert events["stream.corruptions"].iloc[0] in ("[fog]", "[contrast]")


@pytest.mark.parametrize("kind", KINDS)
def test_every_plot_kind_draws_a_sweep_over_a_list_valued_key(corruption_sweep, kind):
    fig, _ = figure(corruption_sweep, kind)
    assert fig.axes


def test_a_sweep_plot_over_lists_puts_them_at_even_positions_labelled_as_lists(corruption_sweep):
    fig, _ = figure(corruption_sweep, "sweep")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["[contrast]", "[fog]"]
    assert list(ax.get_xticks()) == [0.0, 1.0]
    assert ax.get_xlabel() == "stream.corruptions" and _legend(ax) == ["none", "cema"]


def test_timeline_names_the_list_value_it_chose(corruption_sweep):
    fig, _ = figure(corruption_sweep, "timeline")
    assert fig.axes[0].get_title(loc="left") == "at stream.corruptions = [fog]"


@pytest.mark.parametrize("fixture", ["corruption_sweep", "uplink_sweep"])
def test_report_over_a_list_valued_key_writes_every_file_with_readable_labels(
    fixture, request, tmp_path
):
    sweep = request.getfixturevalue(fixture)
    result = runner.invoke(app, ["report", str(sweep), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    names = {p.name for p in (tmp_path / "report").iterdir()}
    for stem in ("pareto", "sweep_accuracy", "sweep_upload_bytes", "timeline", "devices", "cloud"):
        assert {f"{stem}.pdf", f"{stem}.png"} <= names
    aggregate = (tmp_path / "report" / "aggregate.md").read_text()
    expected = "| [fog] | cema | 2 |" if fixture == "corruption_sweep" else "| [0.5, 2.0] | 2 |"
    assert expected in aggregate


def test_tables_group_and_sort_list_values(uplink_sweep):
    runs = load_runs(uplink_sweep)
    assert (
        tables.runs_table(runs)["network.uplink_mbps"].tolist()
        == ["[0.5, 2.0]"] * 2 + ["[1.0, 4.0]"] * 2
    )
    assert tables.aggregate_table(runs)["seeds"].tolist() == ["2", "2"]


# --------------------------------------------------------------------------------------------------
# 3. one series per method in the run-level figures


def test_timeline_of_a_method_sweep_draws_every_method_and_names_the_other_keys(method_sweep):
    fig, _ = figure(method_sweep, "timeline")
    ax = fig.axes[0]
    assert _legend(ax) == ["Source", "BN adapt", "CEMA"]
    assert ax.get_title(loc="left") == "at network.uplink_mbps = 1"
    colours = [line.get_color() for line in ax.get_lines() if line.get_label() != "_nolegend_"]
    assert len(set(colours[:3])) == 3  # BN adapt is not drawn in CEMA's colour


def test_pareto_and_sweep_plots_of_a_method_sweep_have_one_series_per_method(method_sweep):
    pareto, _ = figure(method_sweep, "pareto")
    assert _legend(pareto.axes[0])[-3:] == ["Source", "BN adapt", "CEMA"]
    sweep, _ = figure(method_sweep, "sweep")
    assert sweep.axes[0].get_xlabel() == "uplink (Mbit/s)"
    assert _legend(sweep.axes[0]) == ["Source", "BN adapt", "CEMA"]


def test_several_sweep_folders_are_read_together_with_unique_run_names(tmp_path):
    first = fake_sweep(tmp_path / "a", SweepSpec(grid={"policy.name": ["none", "cema"]}, seeds=2))
    second = fake_sweep(tmp_path / "b", SweepSpec(grid={"policy.name": ["all"]}, seeds=2))
    runs = load_runs([first, second])
    assert sorted(runs["policy.name"].unique()) == ["all", "cema", "none"]
    assert len(runs) == 6 and runs["run"].is_unique
    with pytest.raises(ValueError, match="given twice"):
        load_runs([first, first])
    # a name two sweeps share is prefixed with its sweep folder (here both are called "runs")
    again = fake_sweep(tmp_path / "c", SweepSpec(grid={"policy.name": ["none"]}, seeds=1))
    both = load_runs([first, again])
    assert both["run"].is_unique
    shared = sorted(n for n in both["run"] if "/" in n)
    assert shared == [f"{first}/policy.name=none__seed=0", f"{again}/policy.name=none__seed=0"]
    events = load_events([first, second], runs=[runs["run"].iloc[-1]], kinds=["sample"])
    assert set(events["run"]) == {runs["run"].iloc[-1]}
    out = tmp_path / "fig"
    result = runner.invoke(app, ["plot", str(first), str(second), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "pareto.png").is_file()


@pytest.mark.parametrize("kind", ["devices", "cloud"])
def test_one_run_figures_name_the_run_and_reference_point(method_sweep, kind):
    fig, _ = figure(method_sweep, kind)
    assert fig.axes[0].get_title(loc="left") == "CEMA, seed 0, at network.uplink_mbps = 1"


def test_the_reference_point_keeps_keys_zipped_with_the_method_and_every_method():
    runs = pd.DataFrame(
        {
            "run": [f"r{i}" for i in range(6)],
            "cloud.adapter": ["cema"] * 6,
            "policy.name": ["random", "random", "cema", "cema", "all", "all"],
            "policy.random.p": [0.3, 0.3, 0.0, 0.0, 1.0, 1.0],  # zipped with the policy
            "network.uplink_mbps": [1.0, 2.0, 1.0, 2.0, 2.0, 4.0],  # 2 is the only shared one
            "adapter": ["cema"] * 6,
            "policy": ["random", "random", "cema", "cema", "all", "all"],
        }
    )
    runs.attrs["swept"] = ["policy.name", "policy.random.p", "network.uplink_mbps"]
    chosen = reference_runs(with_methods(runs))
    assert sorted(chosen["policy.name"]) == ["all", "cema", "random"]
    assert chosen.attrs["reference"] == {"network.uplink_mbps": 2.0}


# --------------------------------------------------------------------------------------------------
# 2. match-budget refuses to pool methods


def test_match_budget_without_method_refuses_runs_of_several_methods(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "cema", seed=0, adapter="cema", policy="cema", domains={"fog": (80, 30)})
    write_run(root / "source", seed=0, adapter="none", policy="none", domains={"fog": (50, 0)})
    with pytest.raises(tta.TableError, match="2 methods: CEMA .cema/cema., Source .none/none."):
        tta.matched_random_p([root])
    result = runner.invoke(app, ["match-budget", str(root)])
    assert result.exit_code == 2
    assert "--method ADAPTER/POLICY" in result.output and "cema/cema, none/none" in result.output
    chosen = runner.invoke(app, ["match-budget", str(root), "--method", "cema/cema", "--json"])
    assert chosen.exit_code == 0, chosen.output
    assert '"p": 0.3' in chosen.output


# --------------------------------------------------------------------------------------------------
# 4. clear errors


def test_sweep_plot_lists_the_metrics_and_the_swept_keys(corruption_sweep):
    with pytest.raises(
        ValueError, match="unknown metric 'nope'; metrics of these runs: .*accuracy"
    ):
        figure(corruption_sweep, "sweep", metric="nope")
    result = runner.invoke(
        app, ["plot", str(corruption_sweep), "--kind", "sweep", "--x", "foo.bar"]
    )
    assert result.exit_code == 2
    assert "'foo.bar' is not swept" in result.output
    assert "swept keys: stream.corruptions, policy.name, seed" in result.output


def test_table_out_with_a_suffix_writes_that_pair(tmp_path):
    sweep = reset_sweep(tmp_path / "sweep")
    result = runner.invoke(app, ["table", str(sweep), "--out", str(tmp_path / "t" / "x.md")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["x.md", "x.tex"]
    md, tex = tta.write_table(pd.DataFrame({"a": ["1"]}), tmp_path / "u" / "y.tex", "caption")
    assert (md.name, tex.name) == ("y.md", "y.tex")


@pytest.mark.parametrize("command", ["plot", "report", "table"])
@pytest.mark.parametrize("under", [False, True])
def test_an_out_path_at_or_under_a_file_fails_before_anything_is_read(tmp_path, command, under):
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    out = blocker / "sub" if under else blocker
    if command == "table" and not under:
        out = blocker / "t"
    missing = tmp_path / "no-runs"  # the --out check comes first: no 'no such folder' error
    result = runner.invoke(app, [command, str(missing), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert f"--out {out}" in result.output and "not a folder" in result.output
    assert "Traceback" not in result.output and blocker.read_text() == "mine"


def test_compare_says_one_method_not_one_methods(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "cema", seed=0, adapter="cema", policy="cema", domains={"fog": (80, 30)})
    result = runner.invoke(app, ["compare", str(root)])
    assert result.exit_code == 2
    assert "the runs hold 1 method (CEMA)" in result.output and "1 methods" not in result.output


def test_compare_names_a_missing_method_before_building_the_table(tmp_path):
    root = tmp_path / "runs"
    for uplink in (1.0, 2.0):  # two runs per cell: the table alone would ask for --by
        for adapter, policy in (("cema", "cema"), ("none", "none")):
            write_run(
                root / f"{adapter}-{uplink}",
                seed=0,
                adapter=adapter,
                policy=policy,
                domains={"fog": (80, 30)},
                config={"network.uplink_mbps": uplink},
            )
    with pytest.raises(
        tta.TableError, match="no runs of method 'Nope'; the runs hold: Source, CEMA"
    ):
        paired_comparison([root], a="CEMA", b="Nope")
    result = runner.invoke(app, ["compare", str(root), "--a", "Nope", "--b", "CEMA"])
    assert result.exit_code == 2 and "no runs of method 'Nope'" in result.output


def test_figures_name_a_budget_method_with_its_inner_policy_as_the_tables_do(tmp_path):
    spec = SweepSpec(
        zip={"cloud.adapter": ["none", "cema"], "policy.name": ["none", "budget"]},
        grid={"policy.budget.inner": ["random"]},
    )
    runs = with_methods(load_runs(fake_sweep(tmp_path, spec)))
    assert sorted(runs["method"]) == ["Source", "cema/budget (random)"]
