"""Shared fixtures: a tiny scenario that runs in a few seconds on the shipped synthetic models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

torch.set_num_threads(2)


def tiny_scenario_dict(**changes) -> dict:
    """A two-device CEMA scenario small enough for unit tests."""
    data = {
        "name": "tiny",
        "seed": 0,
        "dataset": {"name": "synthetic", "size": 512},
        "fleet": {"devices": 2},
        "stream": {
            "samples_per_device": 256,
            "batch_size": 32,
            "corruptions": ["gaussian_noise", "contrast"],
            "severity": 5,
            "segment_samples": 128,
            "rate_hz": 32,
        },
        "network": {"uplink_mbps": [1.0, 4.0], "downlink_mbps": 20.0, "latency_ms": 10.0},
        "edge": {"model": "synthetic_edge"},
        "cloud": {
            "teacher": "synthetic_teacher",
            "adapter": "cema",
            "ms_per_step": 40,  # fixed step time (tests of cloud profiles set null)
            "cema": {"batch_size": 16},
        },
        "policy": {"name": "cema"},
    }
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return data


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_scenario_dict()))
    return path
