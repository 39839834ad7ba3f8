"""Why CEMA uploads what it uploads: per upload reason, its share and who gets those samples right.

For each CIFAR-10-C run folder given (``events.parquet`` with per-sample ``reason``), prints a
Markdown table: share of the stream per reason (``uploaded``, ``low_info``, ``unreliable``, ...),
the edge's accuracy on those samples, and the accuracy of two frozen teachers (``resnet56-augmix``,
``resnet56``) on the same corrupted images, once with running BN statistics and once with the
statistics of random batches of 128 images of the same corruption (closer to CEMA's cloud, whose
teacher also adapts). Not a test; used by benchmarks/cifar10c.md:

    PYTHONPATH=. .venv/bin/python benchmarks/cifar10c_reasons.py runs/c10c_s5_cema_base/*seed=0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from simulator.data.corruptions import corrupt
from simulator.data.datasets import create_dataset
from simulator.models.zoo import create_model

TEACHERS = ("resnet56-augmix", "resnet56")
MODES = ("eval", "batch")


class TeacherPredictions:
    """Frozen-teacher predictions per (teacher, domain, seed, BN mode) on the whole exact prefix."""

    def __init__(self) -> None:
        dataset = create_dataset("cifar10", variant="exact_prefix")
        self.images = torch.from_numpy(np.array(dataset.images)).permute(0, 3, 1, 2).contiguous()
        self.labels = torch.as_tensor(np.array(dataset.labels))
        # one copy per BN mode: train-mode passes update running statistics, which must never
        # reach the running-statistics (eval) predictions
        self.models = {
            (name, mode): create_model(name).train(mode == "batch")
            for name in TEACHERS
            for mode in MODES
        }
        self._corrupted: dict[tuple[str, int], torch.Tensor] = {}
        self._predictions: dict[tuple[str, str, int, str], torch.Tensor] = {}

    def correct(self, teacher: str, domain: str, seed: int, mode: str) -> torch.Tensor:
        key = (teacher, domain, seed, mode)
        if key not in self._predictions:
            x = self._domain_images(domain, seed)
            if mode == "batch":
                order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
            else:
                order = torch.arange(len(x))
            model = self.models[(teacher, mode)]  # "batch": a train-mode copy, batch statistics
            predictions = torch.empty(len(x), dtype=torch.long)
            with torch.no_grad():
                for start in range(0, len(x), 128):
                    rows = order[start : start + 128]
                    predictions[rows] = model(x[rows]).argmax(1)
            self._predictions[key] = predictions == self.labels
        return self._predictions[key]

    def _domain_images(self, domain: str, seed: int) -> torch.Tensor:
        if (domain, seed) not in self._corrupted:
            name, severity = domain.rsplit("/", 1)
            indices = torch.arange(len(self.images))
            x = corrupt(self.images, name, int(severity), seed=seed, indices=indices)
            self._corrupted = {(domain, seed): x.float() / 255}  # one domain at a time in memory
        return self._corrupted[(domain, seed)]


def reasons_table(run: Path, teachers: TeacherPredictions) -> str:
    seed = json.loads((run / "summary.json").read_text())["seed"]
    events = pd.read_parquet(run / "events.parquet")
    events = events[events.kind == "sample"].reset_index(drop=True)
    columns = {}
    for domain, group in events.groupby("domain"):
        index = torch.as_tensor(group["index"].astype(int).to_numpy())
        for teacher in TEACHERS:
            for mode in MODES:
                column = columns.setdefault((teacher, mode), np.zeros(len(events), bool))
                column[group.index.to_numpy()] = teachers.correct(teacher, domain, seed, mode)[
                    index
                ].numpy()
    lines = [
        f"{run} (seed {seed}): edge accuracy {100 * events.correct.mean():.2f} %",
        "",
        "| reason | share | edge correct | resnet56-augmix correct (running / batch BN) "
        "| resnet56 correct (running / batch BN) | median entropy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for reason, group in events.groupby("reason"):
        rows = group.index.to_numpy()
        cells = [
            " / ".join(f"{100 * columns[(t, m)][rows].mean():.1f}" for m in MODES) + " %"
            for t in TEACHERS
        ]
        lines.append(
            f"| {reason} | {100 * len(group) / len(events):.1f} % | "
            f"{100 * group.correct.mean():.1f} % | {cells[0]} | {cells[1]} | "
            f"{group.entropy.median():.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (with events.parquet)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    teachers = TeacherPredictions()
    for run in args.runs:
        print(reasons_table(run, teachers) + "\n")


if __name__ == "__main__":
    main()
