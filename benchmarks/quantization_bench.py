"""Clean and corrupted accuracy of ResNet-20 (CIFAR-10) at fp32 and data-free W8A8 / W4A4.

Not a test (pytest never collects it). Evaluates zoo models by name; the quantized checkpoints are
built first with ``fleetsim zoo quantize`` (see quantization.md for the exact command lines):

    cd /work/main && PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/quantization_bench.py \\
        --json benchmarks/figures/quantization.json

Clean accuracy: the 1,017 bit-exact CIFAR-10 test images (``variant="exact_prefix"``), and with
``--jpeg`` also the 10,000 JPEG-derived test images. Corrupted accuracy: the first ``--images``
exact images under each of ``--corruptions`` at each of ``--severities`` (fleetsim's
CIFAR-10-C-style corruptions, seed 0), corrupted once and shared by all models. Prints a Markdown
table and writes every number (plus each checkpoint's build report) to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from simulator.data.corruptions import corrupt
from simulator.data.datasets import create_dataset
from simulator.models.train import evaluate
from simulator.models.zoo import _CARDS, _pretrained_path, create_model, model_info

MODELS = (
    "resnet20",
    "resnet20-w8a8-minmax",
    "resnet20-w8a8-gdfq",
    "resnet20-w4a4-minmax",
    "resnet20-w4a4-gdfq",
)
CORRUPTIONS = ("gaussian_noise", "defocus_blur", "contrast", "jpeg_compression")


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--images", type=int, default=500, help="images per corrupted set")
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS))
    parser.add_argument("--severities", nargs="+", type=int, default=[3, 5])
    parser.add_argument(
        "--extra",
        nargs="*",
        default=[],
        help="more rows: LABEL=MODEL:CHECKPOINT (e.g. an ablation built with fleetsim zoo quantize "
        "--out)",
    )
    parser.add_argument("--jpeg", action="store_true", help="also the 10,000 JPEG test images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    exact = create_dataset("cifar10", split="test", variant="exact_prefix")
    jpeg = create_dataset("cifar10", split="test", variant="jpeg") if args.jpeg else None
    start = time.perf_counter()
    sub = _nchw(exact.images[: args.images])
    sub_labels = exact.labels[: args.images]
    indices = torch.arange(len(sub))
    corrupted = {
        f"{name}@{sev}": corrupt(sub, name, sev, seed=0, indices=indices)
        for name in args.corruptions
        for sev in args.severities
    }
    corrupt_s = time.perf_counter() - start

    rows = [(name, name, None) for name in args.models]
    for spec in args.extra:
        label, _, rest = spec.partition("=")
        model_name, _, checkpoint = rest.partition(":")
        rows.append((label, model_name, Path(checkpoint)))
    results: dict[str, dict] = {}
    for label, name, checkpoint in rows:
        t0 = time.perf_counter()
        model = create_model(name, checkpoint=checkpoint)
        row: dict = {"size_bytes": model_info(name)["size_bytes"]}
        row["clean_exact_1017"] = evaluate(model, exact.images, exact.labels)
        if jpeg is not None:
            row["clean_jpeg_10000"] = evaluate(model, jpeg.images, jpeg.labels)
        row["corrupted"] = {k: evaluate(model, x, sub_labels) for k, x in corrupted.items()}
        for sev in args.severities:
            accs = [v for k, v in row["corrupted"].items() if k.endswith(f"@{sev}")]
            row[f"corrupted_mean_s{sev}"] = sum(accs) / len(accs)
        if name != "resnet20":
            path = checkpoint or _pretrained_path(_CARDS[name])
            row["checkpoint"] = str(path)
            saved = torch.load(path, map_location="cpu", weights_only=True)
            row["build"] = saved.get("quantization", {}) if isinstance(saved, dict) else {}
        row["eval_wall_s"] = time.perf_counter() - t0
        results[label] = row
        print(f"{label}: {row['clean_exact_1017']:.4f} ({row['eval_wall_s']:.0f} s)", flush=True)

    sev_cols = [f"corrupted_mean_s{s}" for s in args.severities]
    header = ["model", "size (KiB)", "clean, 1,017 exact"]
    header += ["clean, 10k JPEG"] if jpeg is not None else []
    header += [f"corrupted sev {s} (mean of {len(args.corruptions)})" for s in args.severities]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in results.items():
        cells = [
            f"`{name}`",
            f"{row['size_bytes'] / 1024:.0f}",
            f"{100 * row['clean_exact_1017']:.2f}",
        ]
        if jpeg is not None:
            cells.append(f"{100 * row['clean_jpeg_10000']:.2f}")
        cells += [f"{100 * row[c]:.2f}" for c in sev_cols]
        print("| " + " | ".join(cells) + " |")
    print("\n| model | " + " | ".join(corrupted) + " |")
    print("|---|" + "---|" * len(corrupted))
    for name, row in results.items():
        print(
            f"| `{name}` | "
            + " | ".join(f"{100 * v:.1f}" for v in row["corrupted"].values())
            + " |"
        )
    print(f"\ncorrupting {len(corrupted)} x {len(sub)} images: {corrupt_s:.0f} s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"args": {k: str(v) for k, v in vars(args).items()}, "corrupt_wall_s": corrupt_s}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
