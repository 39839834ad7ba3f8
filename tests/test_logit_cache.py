"""Frozen-teacher logits cached on disk: exact, shared across runs, keyed by the weights."""

import json
import sqlite3

import pytest
import torch

from simulator.config import scenario_from_dict
from simulator.engine import run_scenario
from simulator.models.logit_cache import LogitCache, forward_rows
from simulator.models.zoo import create_model
from tests.conftest import tiny_scenario_dict


@pytest.fixture(scope="module")
def teacher():
    return create_model("synthetic_teacher").eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_cached_rows_equal_fresh_ones_bit_for_bit_in_any_batch(teacher, tmp_path):
    x = _images(12, 0)
    direct = forward_rows(teacher, x)
    cold = LogitCache(teacher, root=tmp_path)
    assert torch.equal(cold(x[:2]), direct[:2])  # a tiny pass (padded) fills two rows
    assert torch.equal(cold(x), direct)  # ten misses, two hits
    assert (cold.hits, cold.misses) == (2, 12)
    warm = LogitCache(teacher, root=tmp_path)  # another run (or process) later
    assert torch.equal(warm(x[[5, 0, 11]]), direct[[5, 0, 11]])
    assert (warm.hits, warm.misses) == (3, 0)
    memory = LogitCache(teacher, persist=False)
    assert torch.equal(memory(x[3:9]), direct[3:9]) and memory.path is None
    with sqlite3.connect(cold.path) as db:
        assert db.execute("SELECT COUNT(*) FROM logits").fetchone()[0] == 12


def test_other_weights_never_see_the_old_logits(teacher, tmp_path):
    first = LogitCache(teacher, root=tmp_path)
    first(_images(4, 1))
    changed = create_model("synthetic_teacher").eval()
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)
    second = LogitCache(changed, root=tmp_path)
    assert second.path != first.path
    second(_images(4, 1))
    assert second.hits == 0 and second.misses == 4


def test_the_same_weights_in_another_memory_layout_get_their_own_cache(teacher, tmp_path):
    contiguous = LogitCache(teacher, root=tmp_path)
    channels_last = create_model("synthetic_teacher").eval().to(memory_format=torch.channels_last)
    assert torch.equal(
        channels_last.state_dict()["net.conv1.weight"], teacher.state_dict()["net.conv1.weight"]
    )
    assert LogitCache(channels_last, root=tmp_path).path != contiguous.path


def test_frozen_teacher_run_is_identical_with_cold_warm_or_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path))
    frozen = {"batch_size": 16, "adapt_teacher": False, "teacher_distill_norm": "running"}

    def summary(**extra) -> str:
        scenario = tiny_scenario_dict(
            stream__samples_per_device=96, stream__segment_samples=48, cloud__cema=frozen | extra
        )
        s = run_scenario(scenario_from_dict(scenario)).summary
        return json.dumps({k: v for k, v in s.items() if k != "wall_time_s"}, sort_keys=True)

    cold = summary()
    files = list((tmp_path / "logits").glob("teacher-*.sqlite"))
    assert len(files) == 1
    with sqlite3.connect(files[0]) as db:
        stored = db.execute("SELECT COUNT(*) FROM logits").fetchone()[0]
    assert stored > 0
    assert summary() == cold  # warm: served from the file
    assert summary(teacher_logit_cache=False) == cold
