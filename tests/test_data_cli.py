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
