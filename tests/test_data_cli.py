"""``fleetsim data corrupt`` and ``fleetsim data preview`` on a tiny synthetic set."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from simulator.cli import app
from simulator.data.cache import CorruptionCache
from simulator.data.datasets import create_dataset

runner = CliRunner()


def test_data_corrupt_fills_the_cache_then_reports_hits(tmp_path):
    args = ["data", "corrupt", "--size", "12", "--cache", str(tmp_path), "--no-progress"]
    args += ["-c", "shot_noise,contrast", "--severity", "2", "--severity", "5", "--seed", "4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 built, 0 already cached" in " ".join(result.output.split())
    dataset = create_dataset("synthetic", size=12, seed=4)
    cache = CorruptionCache(tmp_path)
    for name in ("shot_noise", "contrast"):
        for severity in (2, 5):
            assert cache.contains(dataset, name, severity, 4)
    assert len(list(tmp_path.rglob("*.npy"))) == 4
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 built, 4 already cached" in " ".join(again.output.split())


def test_data_preview_writes_a_grid_image(tmp_path):
    out = tmp_path / "grid.png"
    args = ["data", "preview", "--out", str(out), "--images", "2"]
    result = runner.invoke(app, args + ["-c", "fog,pixelate", "--severity", "1", "--severity", "5"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        width, height = image.size
    assert width > height > 100  # 2 rows x 3 columns (clean, s1, s5) of 2-image strips


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "corrupt", "-c", "fogg"], "allowed: brightness"),
        (["data", "corrupt", "--severity", "7"], "severity must be 1-5"),
        (["data", "corrupt", "--severity", "0"], "severity must be 1-5"),
        (["data", "corrupt", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["data", "preview", "--out", "x.png", "--size-px", "64"], "32 or 224"),
        (["data", "preview", "--out", "x.png", "-c", "blur"], "unknown corruption 'blur'"),
    ],
)
def test_data_commands_refuse_bad_input_with_exit_code_2(tmp_path, args, message):
    result = runner.invoke(app, [*args, "--cache", str(tmp_path)] if "corrupt" in args else args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not np.any([p.suffix == ".npy" for p in tmp_path.rglob("*")])


def test_data_stream_draws_a_device_stream_and_says_what_it_shows(tiny_yaml, tmp_path):
    out = tmp_path / "figs" / "stream.png"
    args = ["data", "stream", str(tiny_yaml), "--device", "1", "--out", str(out)]
    args += ["--set", "stream.schedule=gradual", "--set", "stream.labels.alpha=0.5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "tiny: device 1, schedule gradual, alpha 0.5" in text
    assert "256 samples in 8 batches over 8.0 simulated s" in text
    assert "class prior:" in text
    with Image.open(out) as image:
        width, height = image.size
    assert width > height > 300


def test_data_stream_refuses_a_device_the_fleet_does_not_have(tiny_yaml, tmp_path):
    out = tmp_path / "s.png"
    result = runner.invoke(app, ["data", "stream", str(tiny_yaml), "--device", "2", "-o", str(out)])
    assert result.exit_code == 2
    assert "--device 2 does not exist: fleet.devices is 2 (ids 0-1)" in result.output
    assert not out.exists()


def test_data_stream_reports_an_invalid_stream_by_its_key(tiny_yaml, tmp_path):
    out = tmp_path / "s.png"
    args = ["data", "stream", str(tiny_yaml), "-o", str(out), "--set", "stream.labels.alpha=0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "stream.labels.alpha = 0: must be > 0" in " ".join(result.output.split())
    assert not out.exists()


def test_data_stream_help_teaches_the_stream_options():
    result = runner.invoke(app, ["data", "stream", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for words in ("continual | random | mixed | gradual", "labels.alpha", "labels.correlation"):
        assert words in text
    assert "fleetsim data stream scenarios/quickstart.yaml --device 3 --out stream.png" in text
