"""Speed of the fleet-batched executor against the machine's limit and a naive per-device loop.

Not a test (pytest never collects ``benchmarks/``). Prints Markdown tables for benchmarks/speed.md:

    PYTHONPATH=. .venv/bin/python benchmarks/speed_bench.py throughput   # executor vs limit vs naive
    PYTHONPATH=. .venv/bin/python benchmarks/speed_bench.py limits       # eager vs row model vs TorchScript
    PYTHONPATH=. .venv/bin/python benchmarks/speed_bench.py kernels      # norm and ReLU kernels
    PYTHONPATH=. .venv/bin/python benchmarks/speed_bench.py growth       # wall time, memory vs size
    PYTHONPATH=. .venv/bin/python benchmarks/speed_bench.py profile      # where a (synthetic) quickstart run goes

Every figure is measured in the process that prints it, on CIFAR-10 test images from ``--data``
(default ../shared/data/cifar10) with the pretrained ResNet-20, corrupted sets read from the disk
cache (built by a warm-up run first, so corruption cost is not in the timings).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10"


def fleet_scenario(devices: int, samples: int, data: Path, batch: int = 16, **overrides) -> dict:
    """Edge-inference-bound fleet: ResNet-20 on CIFAR-10, no uploads, no adaptation.

    Edge compute of 10 ms per image (+5 ms per batch of ``batch``) is roughly a Raspberry Pi 4
    running ResNet-20; images arrive at 32 Hz per device, so at batches of 16 a device computes
    about a third of the time (at batches of 1, one frame at a time, about half).
    """
    scenario = {
        "name": f"speed-{devices}x{samples}",
        "seed": 0,
        "dataset": {"name": "cifar10", "root": str(data), "cache": True},
        "fleet": {"devices": devices},
        "stream": {
            "samples_per_device": samples,
            "batch_size": batch,
            "corruptions": ["gaussian_noise", "fog", "contrast"],
            "severity": 5,
            "segment_samples": max(16, samples // 3),
            "arrival": "poisson",
            "rate_hz": 32,
        },
        "edge": {"model": "resnet20", "ms_per_sample": 10.0, "ms_per_batch": 5.0},
        "cloud": {"adapter": "none"},
        "policy": {"name": "none"},
    }
    for dotted, value in overrides.items():
        node = scenario
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return scenario


def run(
    scenario: dict, executor: str = "batched", device: str = "cpu", max_rows: int | None = None
):
    from simulator.config import scenario_from_dict
    from simulator.engine import run_scenario

    return run_scenario(
        scenario_from_dict(scenario),
        executor=executor,  # type: ignore[arg-type]
        device=device,
        max_rows=max_rows,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_s(f, x: torch.Tensor, images: int, repeats: int = 1) -> float:
    """Images per second of ``f`` on the batch ``x`` over ``images`` images (inference mode, after
    3 warm-up passes: a GPU's first passes load kernels); the best of ``repeats`` timings."""
    best = 0.0
    with torch.inference_mode():
        for _ in range(3):
            f(x)
        for _ in range(repeats):
            _sync(x.device)
            start, done = time.perf_counter(), 0
            while done < images:
                f(x)
                done += len(x)
            _sync(x.device)
            best = max(best, done / (time.perf_counter() - start))
    return best


def forward_limit(images: int, batch: int, device: str = "cpu") -> float:
    """Images per second of the plain ResNet-20 forward pass (eval BN, inference mode, channels
    last) over ``images`` random images in batches of ``batch``, already on ``device``: the
    machine's physical limit."""
    from simulator.compute import resolve_device
    from simulator.models.zoo import create_model

    where = resolve_device(device)
    model = create_model("resnet20").eval().to(where, memory_format=torch.channels_last)
    x = torch.rand(batch, 3, 32, 32, device=where).contiguous(memory_format=torch.channels_last)
    return images_per_s(model, x, images)


def limits(args: argparse.Namespace) -> None:
    """Images/s of three ways to run ResNet-20 (best of 3, channels-last, inference mode): eager
    (the limit of table 1), the executor's row model (per-row scale/shift, one shared state) and
    a frozen TorchScript graph (BN folded into the convolutions, weights prepacked)."""
    from simulator.fleet.executor import FleetExecutor
    from simulator.models.norm import get_norm_state
    from simulator.models.zoo import create_model

    def rate(f, rows: int) -> float:
        x = torch.rand(rows, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        return images_per_s(f, x, 4096, repeats=3)

    eager = create_model("resnet20").eval().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        frozen = torch.jit.optimize_for_inference(
            torch.jit.freeze(torch.jit.script(create_model("resnet20").eval()))
        )
    executor = FleetExecutor(create_model("resnet20"))
    table = executor._table(0, get_norm_state(eager))

    def row_model(x: torch.Tensor) -> torch.Tensor:
        rows = table.unsqueeze(0).expand(len(x), -1, -1)
        for _, norm in executor._norms:
            view = rows[:, :, norm.offset : norm.offset + norm.num_features]
            norm.scale, norm.shift, norm.groups = view[:, 0], view[:, 1], None
        return executor.row_model(x)

    print("| rows per pass | eager | executor's row model | frozen TorchScript | frozen / eager |")
    print("|---:|---:|---:|---:|---:|")
    for rows in args.rows:
        e, r, f = rate(eager, rows), rate(row_model, rows), rate(frozen, rows)
        print(f"| {rows} | {e:,.0f} | {r:,.0f} | {f:,.0f} | {f / e:.2f}x |", flush=True)


def kernels(args: argparse.Namespace) -> None:
    """Microseconds per call of the executor's per-row norm (a multiply and an add, or one fused
    ``addcmul``) against eval BatchNorm, and of ReLU allocating or in place, on ResNet-20's
    activation shapes (channels-last, inference mode, best of 3 timings of 200 calls)."""

    def micros(f, x: torch.Tensor) -> float:
        return len(x) / images_per_s(f, x, 200 * len(x), repeats=3) * 1e6

    print("| rows | activation | mul + add | addcmul | eval BN | relu | relu in place |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for rows in args.rows:
        for channels, side in ((16, 32), (64, 8)):
            shape = (rows, channels, side, side)
            x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
            scale, shift = torch.randn(rows, channels, 1, 1), torch.randn(rows, channels, 1, 1)
            bn = torch.nn.BatchNorm2d(channels).eval()

            def mul_add(x: torch.Tensor, scale=scale, shift=shift) -> torch.Tensor:
                y = x * scale
                y += shift
                return y

            def fused(x: torch.Tensor, scale=scale, shift=shift) -> torch.Tensor:
                return torch.addcmul(shift, x, scale)

            cells = [
                micros(mul_add, x),
                micros(fused, x),
                micros(bn, x),
                micros(torch.relu, x),
                micros(torch.relu_, x.clone()),
            ]
            print(
                f"| {rows} | {channels}x{side}x{side} | "
                + " | ".join(f"{c:,.0f}" for c in cells)
                + " |",
                flush=True,
            )


def throughput(args: argparse.Namespace) -> None:
    total = args.samples
    print(f"Simulated edge inferences per wall second, {total} inferences per row (ResNet-20,")
    print(f"32x32); limit = plain forward pass on {total} images at the executor's mean batch.\n")
    print(
        "| devices | samples/device | executor rows/pass | batched inf/s | limit inf/s | of limit "
        "| naive inf/s | batched/naive |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    device, rows = args.device, args.max_rows
    run(fleet_scenario(4, 64, args.data), device=device)  # warm-up: the corrupted-set cache
    for devices in args.devices:
        samples = max(16, total // devices)
        scenario = fleet_scenario(devices, samples, args.data, batch=args.edge_batch)
        result = run(scenario, device=device, max_rows=rows)
        n = result.summary["samples"]
        rate = n / result.extra["loop_s"]
        ex = result.extra["executor"]
        mean_batch = max(1, round(ex["rows"] / ex["forward_passes"]))
        limit = forward_limit(n, mean_batch, device)
        naive_cell = ratio_cell = "-"
        if devices in args.naive:
            naive = run(scenario, executor="naive", device=device)
            naive_rate = n / naive.extra["loop_s"]
            naive_cell, ratio_cell = f"{naive_rate:,.0f}", f"{rate / naive_rate:.1f}x"
        print(
            f"| {devices} | {samples} | {mean_batch} | {rate:,.0f} | {limit:,.0f} | "
            f"{rate / limit:.2f} | {naive_cell} | {ratio_cell} |",
            flush=True,
        )


def _child(devices: int, samples: int, data: str) -> None:
    result = run(fleet_scenario(devices, samples, Path(data)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "devices": devices,
                "samples": samples,
                "total": result.summary["samples"],
                "wall_s": result.summary["wall_time_s"],
                "loop_s": result.extra["loop_s"],
                "setup_s": result.extra["setup_s"],
                "sim_s": result.summary["sim_time_s"],
                "peak_mb": peak_mb,
                "rows_per_pass": result.extra["executor"]["rows"]
                / result.extra["executor"]["forward_passes"],
            }
        )
    )


def growth(args: argparse.Namespace) -> None:
    """Each point in a fresh process, so peak memory (max RSS) is that run's own."""
    run(fleet_scenario(4, 64, args.data))  # warm the corrupted-set cache
    points = [(d, args.growth_samples) for d in (1, 10, 100, 300, 1000)]
    points += [(100, s) for s in (32, 128, 512)]
    rows = []
    for devices, samples in points:
        out = subprocess.run(
            [sys.executable, __file__, "_child", str(devices), str(samples), str(args.data)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(
            f"| {r['devices']} | {r['samples']} | {r['total']:,} | {r['sim_s']:.1f} | "
            f"{r['setup_s']:.2f} | {r['loop_s']:.2f} | {r['wall_s']:.2f} | "
            f"{1e3 * r['loop_s'] / r['total']:.3f} | {r['rows_per_pass']:.0f} | "
            f"{r['peak_mb']:.0f} |",
            flush=True,
        )
    Path(args.json).write_text(json.dumps(rows, indent=1))
    plot_growth(rows, Path(args.plot))


def plot_growth(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for label, pick in (
        ("devices (samples/device fixed)", lambda r: r["samples"] == rows[0]["samples"]),
        ("samples/device (100 devices)", lambda r: r["devices"] == 100),
    ):
        pts = sorted({(r["total"], r["loop_s"], r["peak_mb"]) for r in rows if pick(r)})
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
        ax2.plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=label)
    for ax, ylabel in ((ax1, "simulation wall time (s)"), (ax2, "peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel("total simulated inferences")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


# Where the time goes: cumulative time of these functions (file, function name) in one run.
PROFILE_PARTS = [
    ("edge forward (executor passes)", "executor.py", "_forward_rows"),
    ("edge forward (naive)", "executor.py", "_forward_naive"),
    ("image loading + corruption", "loader.py", "many"),
    ("cloud adapter (teacher + edge steps)", None, "observe"),
    ("upload encoding (JPEG sizes)", "payload.py", "encoded_sizes"),
    ("upload policy", None, "select"),
    ("event recording", "metrics.py", "samples"),
    ("summary + events frame", "metrics.py", "summarize"),
    ("setup: dataset", "datasets.py", "create_dataset"),
    ("setup: models", "zoo.py", "create_model"),
]


def profile(args: argparse.Namespace) -> None:
    from simulator.config import load_scenario
    from simulator.engine import run_scenario
    from simulator.runs import write_run

    scenario = load_scenario(ROOT / "scenarios" / "synthetic_quickstart.yaml")
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    result = run_scenario(scenario)
    write_run(result, Path(args.out))
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    cumulative: dict[str, float] = {}
    for (file, _, name), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        for label, want_file, want_name in PROFILE_PARTS:
            if name == want_name and (want_file is None or file.endswith(want_file)):
                if (
                    want_name in ("observe", "select")
                    and "/work/" not in file
                    and "main" not in file
                ):
                    continue
                cumulative[label] = cumulative.get(label, 0.0) + ct
    io = sum(
        ct
        for (f, _, n), (_, _, _, ct, _) in stats.stats.items()  # type: ignore[attr-defined]
        if n == "write_run"
    )
    simpy_self = sum(
        tt
        for (f, _, _), (_, _, tt, _, _) in stats.stats.items()  # type: ignore[attr-defined]
        if "/simpy/" in f
    )
    print(
        f"Quickstart (8 devices x 2048 samples, CEMA), profiled wall {total:.1f} s "
        f"(the run's own wall_time_s, profiled: {result.summary['wall_time_s']:.1f} s).\n"
    )
    print("| part | wall s | share |")
    print("|---|---:|---:|")
    accounted = 0.0
    for label, *_ in PROFILE_PARTS:
        if label in cumulative and cumulative[label] > 0.005:
            accounted += cumulative[label]
            print(
                f"| {label} | {cumulative[label]:.2f} | {100 * cumulative[label] / total:.1f} % |"
            )
    print(
        f"| SimPy event handling (simpy's own code) | {simpy_self:.2f} | "
        f"{100 * simpy_self / total:.1f} % |"
    )
    print(f"| writing the run folder (parquet, json, yaml) | {io:.2f} | {100 * io / total:.1f} % |")
    rest = total - accounted - simpy_self - io
    print(
        f"| everything else (device/cloud processes, streams, glue) | {rest:.2f} | "
        f"{100 * rest / total:.1f} % |"
    )
    if args.top:
        stats.sort_stats("cumulative").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = {
        "throughput": throughput,
        "limits": limits,
        "kernels": kernels,
        "growth": growth,
        "profile": profile,
    }
    parser.add_argument("what", choices=[*commands, "_child"])
    parser.add_argument("rest", nargs="*")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=16384, help="inferences per throughput row")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--naive", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--growth-samples", type=int, default=64)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "speed_growth.json"))
    parser.add_argument("--plot", default=str(ROOT / "benchmarks" / "figures" / "speed_growth.png"))
    parser.add_argument("--out", default="/tmp/fleetsim-profile-run")
    parser.add_argument("--top", type=int, default=0, help="also print the top-N cProfile rows")
    parser.add_argument("--device", default="cpu", help="throughput: cpu, cuda, cuda:N")
    parser.add_argument("--max-rows", type=int, default=None, help="throughput: rows per pass")
    parser.add_argument(
        "--edge-batch", type=int, default=16, help="throughput: images per device batch"
    )
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[16, 64, 128], help="limits, kernels"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "_child":
        _child(int(args.rest[0]), int(args.rest[1]), args.rest[2])
        return
    commands[args.what](args)


if __name__ == "__main__":
    main()
