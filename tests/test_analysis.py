"""Analysis: loading run folders, each plot kind, tables equal to summary.json, the report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from analysis import plots, stats, tables
from analysis.load import load_events, load_runs
from analysis.report import figure
from simulator.cli import app
from simulator.sweep import SweepSpec, plan_sweep, run_sweep
from tests.conftest import fake_run_scenario, tiny_scenario_dict

POLICIES = ["none", "random", "cema"]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("analysis")
    path = root / "scenario.yaml"
    path.write_text(yaml.safe_dump(tiny_scenario_dict()))
    spec = SweepSpec(grid={"network.uplink_mbps": [0.2, 1.0], "policy.name": POLICIES}, seeds=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("simulator.engine.run_scenario", fake_run_scenario)
        run_sweep(plan_sweep(path, cli_spec=spec), root / "runs")
    return root / "runs"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_load_runs_gives_one_row_per_run_with_swept_keys_and_summary_numbers(sweep_dir):
    runs = load_runs(sweep_dir)
    assert len(runs) == 2 * 3 * 3
    assert runs.attrs["swept"] == ["network.uplink_mbps", "policy.name", "seed"]
    row = runs[runs["run"] == "network.uplink_mbps=1__policy.name=cema__seed=2"].iloc[0]
    summary = json.loads((sweep_dir / row["run"] / "summary.json").read_text())
    assert row["accuracy"] == summary["accuracy"] and row["upload_bytes"] == summary["upload_bytes"]
    assert row["network.uplink_mbps"] == 1.0 and row["seed"] == 2
    events = load_events(sweep_dir, [row["run"]])
    assert set(events["run"]) == {row["run"]} and (events["policy.name"] == "cema").all()


def test_pareto_plots_one_series_per_policy_with_units(sweep_dir):
    fig = plots.pareto(load_runs(sweep_dir))
    ax = fig.axes[0]
    assert ax.get_xlabel() == "upload, whole fleet (MB)" and ax.get_ylabel() == "accuracy (%)"
    assert _legend(ax) == POLICIES


def test_pareto_front_keeps_points_that_no_other_beats():
    points = [(0.0, 30.0), (1.0, 29.0), (1.0, 40.0), (2.0, 35.0), (3.0, 45.0)]
    assert plots.pareto_front(points) == [(0.0, 30.0), (1.0, 40.0), (3.0, 45.0)]


def test_sweep_curve_has_mean_line_and_t_interval_band_per_policy(sweep_dir):
    runs = load_runs(sweep_dir)
    fig = plots.sweep_curve(runs, x="network.uplink_mbps", metric="accuracy")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "uplink (Mbit/s)" and ax.get_ylabel() == "accuracy (%)"
    assert _legend(ax) == POLICIES
    cema = next(line for line in ax.get_lines() if line.get_label() == "cema")
    at_1 = runs[(runs["policy.name"] == "cema") & (runs["network.uplink_mbps"] == 1.0)]
    assert cema.get_ydata()[-1] == pytest.approx(100 * at_1["accuracy"].mean())
    band = ax.collections[POLICIES.index("cema")].get_paths()[0].vertices[:, 1]
    tops = [
        sum(stats.t_interval(100 * g["accuracy"].to_numpy()))
        for _, g in runs[runs["policy.name"] == "cema"].groupby("network.uplink_mbps")
    ]
    assert band.max() == pytest.approx(max(tops))


def test_t_interval_uses_student_t():
    mean, half = stats.t_interval(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-5)
    assert stats.t_interval(np.array([5.0])) == (5.0, 0.0)


def test_timeline_marks_domain_boundaries(sweep_dir):
    fig, stem = figure(sweep_dir, "timeline")
    ax = fig.axes[0]
    assert stem == "timeline"
    assert ax.get_xlabel() == "simulated time (s)" and ax.get_ylabel() == "accuracy (%)"
    assert _legend(ax) == POLICIES
    labels = [t.get_text().strip() for t in ax.texts]
    assert labels == ["gaussian_noise/5", "contrast/5"]


def test_devices_heatmap_has_a_row_per_device(sweep_dir):
    fig, _ = figure(sweep_dir, "devices")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "device" and ax.get_xlabel() == "simulated time (s)"
    assert ax.images[0].get_array().shape[0] == 2
    assert fig.axes[1].get_ylabel() == "accuracy (%)"


def test_cloud_figure_shows_queue_updates_and_utilization(sweep_dir):
    fig, _ = figure(sweep_dir, "cloud")
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "queue delay (s)",
        "updates / bin",
        "utilization (%)",
    ]
    assert sum(p.get_height() for p in fig.axes[1].patches) == 3


def test_runs_table_numbers_equal_the_summaries_in_markdown_and_latex(sweep_dir):
    runs = load_runs(sweep_dir)
    table = tables.runs_table(runs)
    markdown = tables.to_markdown(table)
    latex = tables.to_latex(table)
    header, _, *rows = markdown.strip().splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert len(rows) == len(runs)
    for line in rows:
        cells = dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
        name = (
            f"network.uplink_mbps={cells['network.uplink_mbps'].replace('.0', '')}"
            f"__policy.name={cells['policy.name']}__seed={cells['seed']}"
        )
        summary = json.loads((sweep_dir / name / "summary.json").read_text())
        for metric in ("accuracy", "upload_bytes", "upload_fraction", "updates"):
            assert json.loads(cells[metric]) == summary[metric]
            assert cells[metric] in latex
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    assert re.search(r"policy\\_name|policy\.name", latex)


def test_report_writes_every_figure_as_pdf_and_png_and_both_tables(sweep_dir, tmp_path):
    result = CliRunner().invoke(app, ["report", str(sweep_dir), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    names = {p.name for p in tmp_path.iterdir()}
    for stem in ("pareto", "sweep_accuracy", "sweep_upload_bytes", "timeline", "devices", "cloud"):
        assert {f"{stem}.pdf", f"{stem}.png"} <= names
    assert {"runs.md", "runs.tex", "aggregate.md", "aggregate.tex"} <= names


def test_a_failing_report_leaves_its_folder_as_it_was(sweep_dir, tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    calls = []

    def cloud_fails(runs_dir, kind, out_dir, x=None, metric="accuracy"):
        calls.append(kind)
        if kind == "cloud":  # the last figure: the others are written by then
            raise ValueError("cloud figure failed")
        return real_draw(runs_dir, kind, out_dir, x=x, metric=metric)

    import analysis.report as report

    real_draw = report.draw
    monkeypatch.setattr(report, "draw", cloud_fails)
    result = CliRunner().invoke(app, ["report", str(sweep_dir), "--out", str(out)])
    assert result.exit_code == 2 and "cloud figure failed" in result.output
    assert "pareto" in calls  # figures were drawn before the failure, into the staging folder
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no staging folder left


def test_plot_command_rejects_an_unknown_folder(tmp_path):
    result = CliRunner().invoke(app, ["plot", str(tmp_path / "nothing"), "--kind", "pareto"])
    assert result.exit_code == 2


def test_a_report_of_summaries_only_leaves_out_the_run_figures_and_says_why(sweep_dir, tmp_path):
    # a committed record keeps summary.json and config.yaml, not events.parquet
    record = tmp_path / "record"
    for run in sweep_dir.iterdir():
        if run.is_dir() and (run / "summary.json").is_file():
            (record / run.name).mkdir(parents=True)
            for name in ("summary.json", "config.yaml", "run.json"):
                if (run / name).is_file():
                    (record / run.name / name).write_bytes((run / name).read_bytes())
    (record / "sweep.json").write_bytes((sweep_dir / "sweep.json").read_bytes())
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(record), "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"pareto.pdf", "sweep_accuracy.png", "aggregate.md", "runs.md"} <= names
    assert not names & {"timeline.pdf", "devices.pdf", "cloud.pdf"}
    for kind in ("timeline", "devices", "cloud"):
        assert f"note: no {kind} figure" in result.output
    assert "kept no events" in " ".join(result.output.split())
    # a method that never received a state has no age of one: a dash, not "nan ± nan"
    aggregate = (out / "aggregate.md").read_text()
    assert "nan" not in aggregate


def test_the_aggregate_table_writes_a_dash_for_a_metric_no_seed_has():
    import pandas as pd

    runs = pd.DataFrame(
        {
            "policy.name": ["none", "none", "cema", "cema"],
            "seed": [0, 1, 0, 1],
            "accuracy": [0.5, 0.7, 0.6, 0.8],
            "state_staleness_mean_s": [np.nan, np.nan, 4.0, 6.0],
        }
    )
    runs.attrs["swept"] = ["policy.name", "seed"]
    table = tables.aggregate_table(runs).set_index("policy.name")
    age = plots.quantity("state_staleness_mean_s")[0]
    assert table.loc["none", age] == "–"
    assert table.loc["cema", age].startswith("5.00 ± ")
    assert table.loc["none", "accuracy (%)"].startswith("60.00 ± ")


def test_the_aggregate_table_keeps_runs_that_lack_a_key_another_folder_sweeps():
    import pandas as pd

    # a method sweep and the random sweep at matched bytes (which alone sweeps policy.random.p)
    runs = pd.DataFrame(
        {
            "policy.name": ["cema", "cema", "random", "random"],
            "policy.random.p": [np.nan, np.nan, 0.45, 0.45],
            "seed": [0, 1, 0, 1],
            "accuracy": [0.6, 0.8, 0.5, 0.7],
        }
    )
    runs.attrs["swept"] = ["policy.name", "policy.random.p", "seed"]
    table = tables.aggregate_table(runs)
    assert list(table["policy.name"]) == ["cema", "random"]
    assert list(table["seeds"]) == ["2", "2"]


def test_the_aggregate_table_shows_whole_model_figures_only_where_runs_have_them():
    import pandas as pd

    runs = pd.DataFrame(
        {
            "cloud.adapter": ["cema", "cema", "tdmr", "tdmr"],
            "seed": [0, 1, 0, 1],
            "accuracy": [0.6, 0.8, 0.5, 0.7],
            "stale_model_s": [np.nan, np.nan, 1.0, 3.0],
            "rebuild_ms_mean": [np.nan, np.nan, 1800.0, 1800.0],
        }
    )
    runs.attrs["swept"] = ["cloud.adapter", "seed"]
    table = tables.aggregate_table(runs).set_index("cloud.adapter")
    stale, rebuild = (plots.quantity(k)[0] for k in ("stale_model_s", "rebuild_ms_mean"))
    assert table.loc["cema", stale] == table.loc["cema", rebuild] == "–"
    assert table.loc["tdmr", stale].startswith("2.00 ± ")
    assert table.loc["tdmr", rebuild] == "1800.00"
    # a folder of state-shipping runs has no such column at all
    only_cema = runs[runs["cloud.adapter"] == "cema"].drop(
        columns=["stale_model_s", "rebuild_ms_mean"]
    )
    only_cema.attrs["swept"] = runs.attrs["swept"]
    assert stale not in tables.aggregate_table(only_cema).columns
