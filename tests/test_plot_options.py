"""`fleetsim plot` options for papers: a sweep drawn relative to a baseline (paired per seed),
methods renamed and chosen, one colour per series, short ticks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from analysis import plots
from analysis.load import load_runs
from analysis.report import figure, with_methods
from simulator.cli import app
from simulator.sweep import SweepSpec
from tests.test_analysis import _close_figures  # noqa: F401 (autouse fixture)
from tests.test_analysis_fixes import fake_sweep

runner = CliRunner()


@pytest.fixture(scope="module")
def methods(tmp_path_factory) -> Path:
    spec = SweepSpec(
        grid={"network.uplink_mbps": [0.2, 1.0, 4.0]},
        zip={
            "cloud.adapter": ["none", "bn_stats", "cema", "cema"],
            "policy.name": ["none", "none", "cema", "random"],
        },
        seeds=3,
    )
    return fake_sweep(tmp_path_factory.mktemp("plot_options"), spec)


def _line(fig, label: str) -> tuple[np.ndarray, np.ndarray]:
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == label]
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


def test_relative_to_draws_the_mean_of_paired_differences_per_point(methods):
    runs = with_methods(load_runs(methods))
    fig, stem = figure(methods, "sweep", x="network.uplink_mbps", relative_to="BN adapt")
    assert stem == "sweep_accuracy_vs_bn_adapt"
    xs, ys = _line(fig, "CEMA")
    for x, y in zip(xs, ys, strict=True):
        at = runs[runs["network.uplink_mbps"] == x].set_index("seed")
        cema = at[at["method"] == "CEMA"]["accuracy"]
        base = at[at["method"] == "BN adapt"]["accuracy"]
        assert y == pytest.approx(100 * (cema - base.reindex(cema.index)).mean())
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "BN adapt" in labels  # the zero line
    _, zero = _line(fig, "BN adapt")
    assert set(zero) == {0.0}
    assert "gain over BN adapt (points)" in fig.axes[0].get_ylabel()


def test_relative_to_refuses_a_baseline_missing_at_a_point_or_absent(methods, tmp_path):
    with pytest.raises(ValueError, match="no runs of 'Tent'.*series: Source, BN adapt"):
        figure(methods, "sweep", x="network.uplink_mbps", relative_to="Tent")
    with pytest.raises(ValueError, match="relative_to is for sweep figures"):
        figure(methods, "pareto", relative_to="BN adapt")
    runs = load_runs(methods)
    missing = runs[(runs["cloud.adapter"] == "bn_stats") & (runs["seed"] == 1)]["path"].iloc[0]
    (Path(missing) / "summary.json").rename(Path(missing) / "summary.json.away")
    try:
        with pytest.raises(ValueError, match="'BN adapt' has no run at .*seed=1"):
            figure(methods, "sweep", x="network.uplink_mbps", relative_to="BN adapt")
    finally:
        (Path(missing) / "summary.json.away").rename(Path(missing) / "summary.json")


def test_the_cli_renames_and_chooses_methods_and_names_an_unknown_one(methods, tmp_path):
    args = ["plot", str(methods), "--kind", "sweep", "--x", "network.uplink_mbps"]
    out = tmp_path / "figs"
    result = runner.invoke(
        app,
        [
            *args,
            "--label", "cema/random=Random (CEMA bytes)",
            "--method", "CEMA", "--method", "Random (CEMA bytes)",
            "--relative-to", "BN adapt", "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "sweep_accuracy_vs_bn_adapt.png").is_file()
    fig, _ = figure(
        methods,
        "sweep",
        x="network.uplink_mbps",
        labels={"cema/random": "Random (CEMA bytes)"},
        methods=["CEMA", "cema/random"],
    )
    names = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert names == ["Random (CEMA bytes)", "CEMA"]  # a renamed method keeps its rank
    bad = runner.invoke(app, [*args, "--method", "EATA", "--out", str(out)])
    assert bad.exit_code == 2 and "no runs of method 'EATA'" in bad.output
    assert "Traceback" not in bad.output


def test_every_series_of_a_figure_gets_its_own_colour():
    names = ["Source", "BN adapt", "EATA", "Upload-all", "CEMA", "x/a", "x/b", "Renamed (c)"]
    styles = plots.figure_styles(names)
    colours = [colour for colour, _ in styles.values()]
    assert len(set(colours)) == len(names)
    assert styles["CEMA"] == ("#D55E00", "o")  # a declared style is kept
    many = plots.figure_styles([f"m{i}" for i in range(30)])
    assert len({c for c, _ in many.values()}) >= 12  # then colours repeat, markers differ


def test_ticks_are_short_on_a_log_axis():
    assert [plots._format_tick(v) for v in (1e-4, 3e-4, 0.001, 0.003, 1.0, 2, "x")] == [
        "1e-4", "3e-4", "0.001", "0.003", "1", "2", "x",
    ]  # fmt: skip
