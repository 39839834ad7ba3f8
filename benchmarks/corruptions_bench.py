"""Fidelity and speed of fleetsim's corruptions against the PyPI package ``imagecorruptions``.

Not a test (pytest never collects it). One run measures both sides on the same images:

    cd /work/main && PYTHONPATH=. .venv/bin/python benchmarks/corruptions_bench.py \\
        --reference-python /tmp/icenv/bin/python

The reference side runs ``corruptions_reference.py`` in its own environment (NumPy < 2; see
corruptions.md) as a subprocess, before fleetsim's side, both limited to 2 threads. Prints Markdown
tables (fidelity per corruption and severity, speed per corruption) for corruptions.md.

Images: the first ``--images`` CIFAR-10 test images (bit-exact prefix file), upsampled to 224x224
with Pillow bicubic for the fidelity and 224 speed runs; the first ``--images32`` at native 32x32.

``--accuracy-only`` measures no speed: the fidelity and accuracy-drop tables on ``--images`` images
(e.g. 256), with the reference split into ``--workers`` parallel processes over contiguous chunks
of images (chunk k seeds numpy with k), while fleetsim corrupts in batches of ``--batch``:

    PYTHONPATH=. .venv/bin/python benchmarks/corruptions_bench.py --accuracy-only --images 256
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


def ours(images: np.ndarray, name: str, severity: int, start: int = 0) -> tuple[np.ndarray, float]:
    """fleetsim's corruption of the whole batch at once (seed 0, dataset indices from ``start``);
    output NHWC and seconds."""
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    indices = torch.arange(start, start + len(images))
    t0, cpu = time.perf_counter(), time.process_time()
    out = corrupt(batch, name, severity, seed=0, indices=indices)
    seconds = time.perf_counter() - t0
    CPU_SECONDS.append(time.process_time() - cpu)
    return out.permute(0, 2, 3, 1).numpy(), seconds


CPU_SECONDS: list[float] = []  # process CPU time (all threads) of each ``ours`` call


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    diff = torch.from_numpy(np.ascontiguousarray(a)).to(torch.int32) - torch.from_numpy(
        np.ascontiguousarray(b)
    ).to(torch.int32)
    mse = (diff * diff).sum(dtype=torch.int64).item() / diff.numel()
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def sharpness(images: np.ndarray) -> float:
    """Mean |4-neighbour Laplacian| of the grey image: high-frequency energy (blur response).

    Integer arithmetic (grey = channel sum / 3), so exact and cheap on large sets.
    """
    grey = torch.from_numpy(np.ascontiguousarray(images)).to(torch.int32).sum(-1)
    lap = (
        4 * grey[:, 1:-1, 1:-1]
        - grey[:, :-2, 1:-1]
        - grey[:, 2:, 1:-1]
        - grey[:, 1:-1, :-2]
        - grey[:, 1:-1, 2:]
    )
    return lap.abs().sum(dtype=torch.int64).item() / 3 / lap.numel()


def stats(clean: np.ndarray, y: np.ndarray, clean_sharpness: float | None = None) -> dict:
    """MAD, noise std, mean brightness, relative sharpness; exact integer sums (0-255 units)."""
    a = torch.from_numpy(np.ascontiguousarray(y))
    diff = a.to(torch.int32) - torch.from_numpy(np.ascontiguousarray(clean)).to(torch.int32)
    n = diff.numel()
    total = diff.sum(dtype=torch.int64).item()
    squares = (diff * diff).sum(dtype=torch.int64).item()
    if clean_sharpness is None:
        clean_sharpness = sharpness(clean)
    return {
        "mad": diff.abs().sum(dtype=torch.int64).item() / n,  # mean |y - x|
        "std": math.sqrt(max(squares / n - (total / n) ** 2, 0.0)),  # noise std
        "mean": a.sum(dtype=torch.int64).item() / n,  # mean brightness
        "sharp": sharpness(y) / clean_sharpness,  # blur response, 1 = as sharp as clean
    }


def print_fidelity(fidelity_rows: list) -> None:
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


def print_accuracy(names: list[str], clean_accuracy: float, n: int, accuracy: dict) -> None:
    print(
        f"\nAccuracy drop (points) of resnet20, clean accuracy {100 * clean_accuracy:.1f} % "
        f"on {n} images: ours / ref\n"
    )
    print("| corruption | s1 | s2 | s3 | s4 | s5 | mean | mean ours - ref |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        drops = [
            [100 * (clean_accuracy - accuracy[name, s][k]) for s in range(1, 6)] for k in (0, 1)
        ]
        cells = [f"{a:.1f} / {b:.1f}" for a, b in zip(*drops, strict=True)]
        mean = f"{np.mean(drops[0]):.1f} / {np.mean(drops[1]):.1f}"
        gap = np.mean(drops[0]) - np.mean(drops[1])
        print(f"| {name} | " + " | ".join(cells) + f" | {mean} | {gap:+.1f} |")


def fidelity_row(
    name: str,
    severity: int,
    clean: np.ndarray,
    mine: np.ndarray,
    theirs: np.ndarray,
    clean_sharpness: float | None = None,
):
    return (
        name,
        severity,
        psnr(mine, theirs) if not is_random(name) else None,
        psnr(clean, theirs),
        stats(clean, mine, clean_sharpness),
        stats(clean, theirs, clean_sharpness),
    )


def wait_for(path: Path, procs: list[subprocess.Popen]) -> None:
    """Block until a reference chunk file exists; fail if a worker died first."""
    while not path.exists():
        if any(p.poll() not in (None, 0) for p in procs):
            raise RuntimeError("a reference worker failed")
        time.sleep(1.0)


def accuracy_only(args: argparse.Namespace) -> None:
    """Fidelity and accuracy tables on ``args.images`` images; reference in parallel chunks."""
    torch.set_num_threads(1)  # not timed; one thread avoids OpenMP spinning on a loaded machine
    images224, _, labels = load_images(args.images, 0)
    # glass_blur last: the reference spends most of its time there, so the other rows come first
    names = sorted(list_corruptions(), key=lambda name: name == "glass_blur")
    model = FixedModel()
    clean_accuracy = model.accuracy(images224, labels)
    bounds = np.linspace(0, len(images224), args.workers + 1).astype(int)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    script = Path(__file__).with_name("corruptions_reference.py")
    wall = time.perf_counter()
    fidelity_rows, accuracy = [], {}
    clean_sharpness = sharpness(images224)
    with tempfile.TemporaryDirectory(prefix="fleetsim-acc-") as tmp:
        procs, dirs = [], []
        for k in range(args.workers):
            if args.resume:  # reference chunks written (or being written) by an earlier launch
                dirs.append(Path(args.resume) / f"chunk{k}")
                continue
            chunk_dir = Path(tmp) / f"chunk{k}"
            chunk_dir.mkdir()
            np.savez(chunk_dir / "in.npz", images224=images224[bounds[k] : bounds[k + 1]])
            command = [args.reference_python, str(script), str(chunk_dir / "in.npz")]
            command += [str(chunk_dir), "--chunk", str(k), ",".join(names)]
            procs.append(subprocess.Popen(command, env=env))
            dirs.append(chunk_dir)
        for name in names:
            mine = {}
            for severity in range(1, 6):
                parts = [
                    ours(images224[i : i + args.batch], name, severity, start=i)[0]
                    for i in range(0, len(images224), args.batch)
                ]
                mine[severity] = np.concatenate(parts)
            theirs: dict[int, list[np.ndarray]] = {s: [] for s in range(1, 6)}
            for chunk_dir in dirs:
                wait_for(chunk_dir / f"{name}.npz", procs)
                with np.load(chunk_dir / f"{name}.npz") as data:
                    for severity in range(1, 6):
                        theirs[severity].append(data[f"{name}-{severity}"])
                if not args.resume:
                    (chunk_dir / f"{name}.npz").unlink()
            for severity in range(1, 6):
                ref = np.concatenate(theirs[severity])
                accuracy[name, severity] = (
                    model.accuracy(mine[severity], labels),
                    model.accuracy(ref, labels),
                )
                fidelity_rows.append(
                    fidelity_row(name, severity, images224, mine[severity], ref, clean_sharpness)
                )
            print(f"{name} done ({time.perf_counter() - wall:.0f} s)", file=sys.stderr, flush=True)
            for row in fidelity_rows[-5:]:  # partial results, in case the run is cut short
                print(row, file=sys.stderr)
            print([accuracy[name, s] for s in range(1, 6)], clean_accuracy, file=sys.stderr)
        for p in procs:
            p.wait()
    print(
        f"# accuracy-only: {len(images224)} images at 224x224 (CIFAR-10 prefix, bicubic x7); "
        f"reference in {args.workers} chunks; wall time {time.perf_counter() - wall:.0f} s\n"
    )
    names = list_corruptions()
    fidelity_rows.sort(key=lambda row: row[0])
    print_fidelity(fidelity_rows)
    print_accuracy(names, clean_accuracy, len(labels), accuracy)


def print_speed(speed: dict) -> None:
    print(
        "\n| corruption | ours 224 (img/s) | ref 224 (img/s) | speed-up 224 | ours 32 (img/s) | "
        "ref 32 (img/s) | speed-up 32 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (o224, r224, o32, r32) in speed.items():
        print(
            f"| {name} | {o224:.1f} | {r224:.1f} | {o224 / r224:.1f}x | {o32:.0f} | {r32:.0f} | "
            f"{o32 / r32:.1f}x |"
        )
    # aggregate: time to run every corruption x severity once on the same images
    total = {
        k: sum(1 / s[i] for s in speed.values() if not math.isnan(s[i]))
        for k, i in (("o224", 0), ("r224", 1), ("o32", 2), ("r32", 3))
    }
    n = len(speed)
    print(
        f"| **all {n} (aggregate)** | {n / total['o224']:.1f} | {n / total['r224']:.1f} | "
        f"{total['r224'] / total['o224']:.1f}x | {n / total['o32']:.0f} | "
        f"{n / total['r32']:.0f} | {total['r32'] / total['o32']:.1f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-python", default="/tmp/icenv/bin/python")
    parser.add_argument("--images", type=int, default=16, help="images at 224x224")
    parser.add_argument("--images32", type=int, default=64, help="images at 32x32")
    parser.add_argument("--accuracy-only", action="store_true", help="no speed, chunked reference")
    parser.add_argument("--workers", type=int, default=2, help="reference processes (accuracy)")
    parser.add_argument("--batch", type=int, default=32, help="fleetsim batch size (accuracy)")
    parser.add_argument(
        "--resume", help="accuracy: read the reference chunks from this folder (chunk0, ...)"
    )
    args = parser.parse_args()
    torch.set_num_threads(int(THREADS))
    if args.accuracy_only:
        accuracy_only(args)
        return
    images224, images32, labels = load_images(args.images, args.images32)
    load_start = os.getloadavg()
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
    fidelity_rows, speed, cpu_speed, accuracy = [], {}, {}, {}
    for name in names:
        t224 = r224 = t32 = r32 = 0.0
        c224 = rc224 = c32 = rc32 = 0.0
        for severity in range(1, 6):
            mine, seconds = ours(images224, name, severity)
            c224 += CPU_SECONDS[-1]
            theirs = ref[f"{name}-{severity}"]
            t224 += seconds
            r224 += float(ref[f"t224-{name}-{severity}"])
            rc224 += float(ref[f"c224-{name}-{severity}"])
            _, seconds32 = ours(images32, name, severity)
            c32 += CPU_SECONDS[-1]
            t32 += seconds32
            r32 += float(ref.get(f"t32-{name}-{severity}", np.nan))
            rc32 += float(ref.get(f"c32-{name}-{severity}", np.nan))
            accuracy[name, severity] = (
                model.accuracy(mine, labels),
                model.accuracy(theirs, labels),
            )
            fidelity_rows.append(fidelity_row(name, severity, images224, mine, theirs))
        n224, n32 = 5 * len(images224), 5 * len(images32)
        speed[name] = (n224 / t224, n224 / r224, n32 / t32, n32 / r32)
        cpu_speed[name] = (n224 / c224, n224 / rc224, n32 / c32, n32 / rc32)
        print(f"ours {name} done", file=sys.stderr, flush=True)

    print(
        f"# images: {len(images224)} at 224x224 (CIFAR-10 prefix, bicubic x7), {len(images32)} at 32x32"
    )
    print(f"# reference wall time {ref_wall:.1f} s; torch {torch.__version__}, threads {THREADS}")
    print(f"# load average (1, 5, 15 min) at start {load_start}, at end {os.getloadavg()}\n")
    print_fidelity(fidelity_rows)
    print("\nWall clock:")
    print_speed(speed)
    print("\nCPU time (process, all threads; images per CPU-second):")
    print_speed(cpu_speed)

    print_accuracy(names, clean_accuracy, len(labels), accuracy)


if __name__ == "__main__":
    main()
