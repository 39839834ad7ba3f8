"""Shared fixtures: a tiny scenario that runs in a few seconds on the shipped synthetic models, a
fake engine for tests of the CLI and sweeps that check a message or a folder (no simulating), and
the marks for what needs the developers' ../shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from simulator.engine import RunResult

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_CIFAR = SHARED / "data" / "cifar10"
SHARED_MODELS = SHARED / "models" / "cifar10"


def needs_shared(*files: Path | str) -> pytest.MarkDecorator:
    """Skip unless each of ``files`` (paths under ../shared, or absolute) exists, naming the first
    missing one: real data the project cannot ship or make."""
    paths = [Path(f) if Path(f).is_absolute() else SHARED / f for f in files]
    missing = [p for p in paths if not p.exists()]
    reason = f"needs {missing[0]} (real data from ../shared, absent here)" if missing else ""
    return pytest.mark.skipif(bool(missing), reason=reason)


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


def fake_run_scenario(
    scenario, progress=None, executor="batched", device="cpu", max_rows=None
) -> RunResult:
    """A stand-in for :func:`simulator.engine.run_scenario`: seeded events of two devices and a
    summary computed from them, in milliseconds, for tests of what the CLI, sweeps and analysis
    do with a run (messages, folders, tables) rather than of the simulation."""
    uplink = float(np.mean(scenario.network.uplink_mbps))
    policy = scenario.policy.name
    rng = np.random.default_rng([scenario.seed, int(uplink * 100), len(policy)])
    share = {"none": 0.0, "all": 1.0, "random": 0.3}.get(policy, 0.4)
    p_correct = 0.3 + 0.3 * share * min(uplink, 1.0)
    rows = []
    for device in range(2):
        for i in range(64):
            t = 0.25 * (i // 8) + 0.01 * device
            domain = "gaussian_noise/5" if i < 32 else "contrast/5"
            uploaded = bool(rng.random() < share)
            rows.append(
                {
                    "kind": "sample",
                    "sim_time_s": t,
                    "device": device,
                    "domain": domain,
                    "correct": bool(rng.random() < p_correct),
                    "uploaded": uploaded,
                }
            )
    updates = [
        {"kind": "update", "sim_time_s": 0.5 + 0.5 * k, "device": 0, "steps": 1, "queue_s": 0.1 * k}
        for k in range(3 if share else 0)
    ]
    events = pd.DataFrame(rows + updates)
    samples = events[events["kind"] == "sample"]
    uploaded = int(samples["uploaded"].sum())
    summary = {
        "samples": len(samples),
        "accuracy": float(samples["correct"].mean()),
        "uploaded_samples": uploaded,
        "upload_fraction": uploaded / len(samples),
        "upload_bytes": uploaded * 1000,
        "download_bytes": 500 * len(updates),
        "updates": len(updates),
        "cloud_steps": len(updates),
        "per_domain": {
            str(domain): {
                "samples": len(group),
                "accuracy": float(group["correct"].mean()),
                "uploaded_samples": int(group["uploaded"].sum()),
            }
            for domain, group in samples.groupby("domain", sort=True)
        },
        "per_device": [],
        "scenario": scenario.name,
        "seed": scenario.seed,
        "devices": 2,
        "policy": policy,
        "adapter": scenario.cloud.adapter,
        "sim_time_s": float(events["sim_time_s"].max()),
        "wall_time_s": 0.001,
    }
    return RunResult(scenario, events, summary)


@pytest.fixture
def fake_engine(monkeypatch) -> None:
    """The engine replaced by :func:`fake_run_scenario` in this process (the CLI and sweeps with
    one job import it at call time)."""
    monkeypatch.setattr("simulator.engine.run_scenario", fake_run_scenario)
