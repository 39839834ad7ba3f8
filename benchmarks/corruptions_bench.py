"""Fidelity and speed of fleetsim's corruptions against the PyPI package ``imagecorruptions``.

Not a test (pytest never collects it). One run measures both sides on the same images:

    cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/corruptions_bench.py \\
        --reference-python /tmp/icenv/bin/python

The reference side runs ``corruptions_reference.py`` in its own environment (NumPy < 2; see
corruptions.md) as a subprocess, before fleetsim's side, both limited to 2 threads. Prints Markdown
tables (fidelity per corruption and severity, speed per corruption) for corruptions.md.

Images: the first ``--images`` CIFAR-10 test images (bit-exact prefix file), upsampled to 224x224
with Pillow bicubic for the fidelity and 224 speed runs; the first ``--images32`` at native 32x32.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simulator.data.corruptions import corrupt, is_random, list_corruptions

REPO = Path(__file__).resolve().parents[1]
CIFAR_PREFIX = REPO.parent / "shared" / "data" / "cifar10" / "test_exact_prefix.npz"
THREADS = "2"


def load_images(n224: int, n32: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CIFAR-10 test prefix: ``n224`` images upsampled (bicubic) to 224, ``n32`` at 32x32, labels."""
    data = np.load(CIFAR_PREFIX)
    x = data["x"]
    up = [np.asarray(Image.fromarray(im).resize((224, 224), Image.BICUBIC)) for im in x[:n224]]
    return np.stack(up), np.ascontiguousarray(x[:n32]), data["y"][:n224]


class FixedModel:
    """CIFAR-10 ResNet-20 (zoo ``resnet20``) on 224 images resized back to 32 (antialiased)."""

    def __init__(self) -> None:
        from simulator.models.zoo import create_model

        self.model = create_model("resnet20").eval()

    def accuracy(self, images224: np.ndarray, labels: np.ndarray) -> float:
        x = torch.from_numpy(np.ascontiguousarray(images224)).permute(0, 3, 1, 2).float() / 255
        x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True)
        with torch.inference_mode():
            predictions = self.model(x).argmax(1).numpy()
        return float((predictions == labels).mean())


def run_reference(python: str, images224: np.ndarray, images32: np.ndarray, workdir: Path) -> dict:
    """Corrupt with imagecorruptions in its own environment; outputs and seconds per key."""
    in_path, out_path = workdir / "in.npz", workdir / "out.npz"
    np.savez(in_path, images224=images224, images32=images32)
    env = dict(
        os.environ, OMP_NUM_THREADS=THREADS, OPENBLAS_NUM_THREADS=THREADS, MKL_NUM_THREADS=THREADS
    )
    script = Path(__file__).with_name("corruptions_reference.py")
    subprocess.run([python, str(script), str(in_path), str(out_path)], check=True, env=env)
    with np.load(out_path) as data:
        return {k: data[k] for k in data.files}


def ours(images: np.ndarray, name: str, severity: int) -> tuple[np.ndarray, float]:
    """fleetsim's corruption of the whole batch at once (seed 0); output NHWC and seconds."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    start = time.perf_counter()
    out = corrupt(batch, name, severity, seed=0, indices=torch.arange(len(images)))
    seconds = time.perf_counter() - start
    return out.permute(0, 2, 3, 1).numpy(), seconds


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def sharpness(images: np.ndarray) -> float:
    """Mean |4-neighbour Laplacian| of the grey image: high-frequency energy (blur response)."""
    grey = images.astype(np.float64).mean(axis=-1)
    lap = (
        4 * grey[:, 1:-1, 1:-1]
        - grey[:, :-2, 1:-1]
        - grey[:, 2:, 1:-1]
        - grey[:, 1:-1, :-2]
        - grey[:, 1:-1, 2:]
    )
    return float(np.abs(lap).mean())


def stats(clean: np.ndarray, y: np.ndarray) -> dict[str, float]:
    diff = y.astype(np.float64) - clean.astype(np.float64)
    return {
        "mad": float(np.abs(diff).mean()),  # mean |y - x|, 0-255 units
        "std": float(diff.std()),  # noise std, 0-255 units
        "mean": float(y.mean()),  # mean brightness
        "sharp": sharpness(y) / sharpness(clean),  # blur response, 1 = as sharp as clean
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", default="/tmp/icenv/bin/python")
    parser.add_argument("--images", type=int, default=16, help="images at 224x224")
    parser.add_argument("--images32", type=int, default=64, help="images at 32x32")
    args = parser.parse_args()
    torch.set_num_threads(int(THREADS))
    images224, images32, labels = load_images(args.images, args.images32)
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fleetsim-bench-") as tmp:
        ref = run_reference(args.reference_python, images224, images32, Path(tmp))
    ref_wall = time.perf_counter() - wall

    names = list_corruptions()
    for name in names:  # warm-up (one-time setup such as kernels, tables), not timed
        ours(images224[:1], name, 1)
        ours(images32[:1], name, 1)

    model = FixedModel()
    clean_accuracy = model.accuracy(images224, labels)
    fidelity_rows, speed, accuracy = [], {}, {}
    for name in names:
        t224 = r224 = t32 = r32 = 0.0
        for severity in range(1, 6):
            mine, seconds = ours(images224, name, severity)
            theirs = ref[f"{name}-{severity}"]
            t224 += seconds
            r224 += float(ref[f"t224-{name}-{severity}"])
            _, seconds32 = ours(images32, name, severity)
            t32 += seconds32
            r32 += float(ref.get(f"t32-{name}-{severity}", np.nan))
            s_ours, s_ref = stats(images224, mine), stats(images224, theirs)
            accuracy[name, severity] = (
                model.accuracy(mine, labels),
                model.accuracy(theirs, labels),
            )
            fidelity_rows.append(
                (
                    name,
                    severity,
                    psnr(mine, theirs) if not is_random(name) else None,
                    psnr(images224, theirs),
                    s_ours,
                    s_ref,
                )
            )
        n224, n32 = 5 * len(images224), 5 * len(images32)
        speed[name] = (n224 / t224, n224 / r224, n32 / t32, n32 / r32)
        print(f"ours {name} done", file=sys.stderr, flush=True)

    print(
        f"# images: {len(images224)} at 224x224 (CIFAR-10 prefix, bicubic x7), {len(images32)} at 32x32"
    )
    print(f"# reference wall time {ref_wall:.1f} s; torch {torch.__version__}, threads {THREADS}\n")
    print(
        "| corruption | sev | PSNR ours vs ref (dB) | PSNR clean vs ref (dB) | MAD ours / ref | "
        "noise std ours / ref | mean ours / ref | sharpness ours / ref |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, severity, p, p_clean, so, sr in fidelity_rows:
        p_text = "random" if p is None else ("inf" if math.isinf(p) else f"{p:.1f}")
        print(
            f"| {name} | {severity} | {p_text} | {p_clean:.1f} | {so['mad']:.1f} / {sr['mad']:.1f} | "
            f"{so['std']:.1f} / {sr['std']:.1f} | {so['mean']:.1f} / {sr['mean']:.1f} | "
            f"{so['sharp']:.2f} / {sr['sharp']:.2f} |"
        )
    print(
        "\n| corruption | ours 224 (img/s) | ref 224 (img/s) | speed-up 224 | ours 32 (img/s) | "
        "ref 32 (img/s) | speed-up 32 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (o224, r224, o32, r32) in speed.items():
        print(
            f"| {name} | {o224:.1f} | {r224:.1f} | {o224 / r224:.1f}x | {o32:.0f} | {r32:.0f} | {o32 / r32:.1f}x |"
        )
    # aggregate: time to run every corruption x severity once on the same images
    total = {
        k: sum(1 / s[i] for s in speed.values() if not math.isnan(s[i]))
        for k, i in (("o224", 0), ("r224", 1), ("o32", 2), ("r32", 3))
    }
    print(
        f"| **all 19 (aggregate)** | {len(names) / total['o224']:.1f} | {len(names) / total['r224']:.1f} | "
        f"{total['r224'] / total['o224']:.1f}x | {len(names) / total['o32']:.0f} | "
        f"{len(names) / total['r32']:.0f} | {total['r32'] / total['o32']:.1f}x |"
    )

    print(
        f"\nAccuracy drop (points) of resnet20, clean accuracy {100 * clean_accuracy:.1f} % "
        f"on {len(labels)} images: ours / ref\n"
    )
    print("| corruption | s1 | s2 | s3 | s4 | s5 | mean |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        drops = [
            [100 * (clean_accuracy - accuracy[name, s][k]) for s in range(1, 6)] for k in (0, 1)
        ]
        cells = [f"{a:.1f} / {b:.1f}" for a, b in zip(*drops, strict=True)]
        mean = f"{np.mean(drops[0]):.1f} / {np.mean(drops[1]):.1f}"
        print(f"| {name} | " + " | ".join(cells) + f" | {mean} |")


if __name__ == "__main__":
    main()
