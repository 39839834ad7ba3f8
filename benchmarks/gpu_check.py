"""What only a GPU can show: fleetsim's numbers and speed with ``--device cuda``.

Not a test (CI has no GPU). Run on a machine with one, through ``benchmarks/gpu_check.sh``, which
also installs what that machine lacks; every section prints Markdown (collected in
``--out``/gpu_check.md) and the raw figures go to ``--out``/gpu_check.json:

1. ``exactness``: the fleet-batched executor on the GPU against one request per pass on the GPU
   and on the CPU (ResNet-20, 64 devices with distinct normalization states, eval and batch
   statistics): identical predictions and the largest logit difference.
2. ``runs``: small scenarios of every adapter, upload policy family, offloading and the 4-bit
   edge, on the GPU twice (same summary: repeatable) and on the CPU (accuracy and uploads within
   float rounding's reach).
3. ``throughput``: benchmarks/speed_bench.py's table 1 on the GPU (executor vs limit vs naive).
4. ``curve``: the plain ResNet-20 forward pass on the GPU at 1 to 8,192 rows (images/s).
5. ``quickstart``: scenarios/synthetic_quickstart.yaml on the GPU and on the CPU (wall time, accuracy).
6. ``rows``: table 1 again at 128 and 1,024 rows per pass (for ``DEFAULT_MAX_ROWS``).
7. ``frames``: table 1b, devices classifying one frame at a time (edge batches of 1).

The report is rewritten after every section, so a run stopped by its time limit keeps the sections
it finished.

``--device cpu --quick`` runs every section on the CPU at small sizes: it checks the script
itself without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from simulator.compute import describe_device, resolve_device  # noqa: E402

REPORT: list[str] = []
FIGURES: dict[str, object] = {}


def say(line: str = "") -> None:
    print(line, flush=True)
    REPORT.append(line)


# -- 1. exactness ------------------------------------------------------------------------------
def exactness(device: torch.device, devices: int) -> None:
    from simulator.fleet.executor import FleetExecutor
    from simulator.models.norm import get_norm_state
    from simulator.models.zoo import create_model

    model = create_model("resnet20")
    source = get_norm_state(model)
    generator = torch.Generator().manual_seed(0)
    states, batches = [], []
    for _ in range(devices):  # each device's own state: the source, perturbed
        state = {
            k: (v * (1 + 0.1 * torch.randn(v.shape, generator=generator))).abs()
            if k.endswith("running_var")
            else v + 0.1 * torch.randn(v.shape, generator=generator)
            for k, v in source.items()
        }
        states.append(state)
        batches.append(
            torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=generator)
        )
    say("## Exactness of the executor on the device\n")
    say(f"ResNet-20, {devices} devices x 16 images, each device its own normalization state.\n")
    say("| statistics | compared | predictions equal | max abs logit difference |")
    say("|---|---|---:|---:|")
    for batch_stats in (False, True):
        outputs = {}
        for kind, where in (("batched", device), ("serial", device), ("serial", "cpu")):
            executor = FleetExecutor(model, kind=kind, batch_statistics=batch_stats, device=where)
            tickets = [executor.submit(d, states[d], images=batches[d]) for d in range(devices)]
            outputs[(kind, str(where))] = [t.result() for t in tickets]
        base = outputs[("batched", str(device))]
        for key in (("serial", str(device)), ("serial", "cpu")):
            other = outputs[key]
            equal = sum(
                int((a.prediction == b.prediction).sum()) for a, b in zip(base, other, strict=True)
            )
            diff = max(
                float((a.logits - b.logits).abs().max()) for a, b in zip(base, other, strict=True)
            )
            label = "batch" if batch_stats else "eval"
            say(
                f"| {label} | batched on {device} vs {key[0]} on {key[1]} | "
                f"{equal}/{16 * devices} | {diff:.2e} |"
            )
            FIGURES[f"exactness/{label}/{key[0]}-{key[1]}"] = {"equal": equal, "max_diff": diff}
    say()


# -- 2. small runs of every path ---------------------------------------------------------------
def tiny(samples: int, **changes: object) -> dict:
    """The tests' two-device CEMA scenario (synthetic data and models), ``samples`` per device."""
    from tests.conftest import tiny_scenario_dict

    return tiny_scenario_dict(
        stream__samples_per_device=samples, stream__segment_samples=samples // 2, **changes
    )


def variants(samples: int, data_root: Path, family: Path) -> list[tuple[str, dict]]:
    cifar = {"name": "cifar10", "root": str(data_root), "variant": "exact_prefix"}
    quantized = {"model": "resnet20-w4a4-minmax", "ms_per_sample": 0.8, "ms_per_batch": 5.0}
    return [
        (
            "cema, per-device scopes, frozen teacher (logit cache)",
            tiny(
                samples,
                cloud__cema={
                    "batch_size": 16,
                    "adapt_teacher": False,
                    "teacher_distill_norm": "running",
                },
            ),
        ),
        (
            "cema, batch renormalisation (tbr) at the edge and in the teacher",
            tiny(
                samples,
                cloud__cema={"batch_size": 16, "edge_norm": "tbr", "teacher_distill_norm": "tbr"},
            ),
        ),
        (
            "cema, shared scope, adapting teacher",
            tiny(
                samples,
                cloud__scope="shared",
                cloud__cema={"batch_size": 16, "adapt_teacher": True},
            ),
        ),
        *(
            (name, tiny(samples, cloud__adapter=name, policy={"name": "all"}, **{batch: 32}))
            for name, batch in (
                ("tent", "cloud__tent__batch_size"),
                ("eata", "cloud__eata__batch_size"),
            )
        ),
        (
            "bn_stats (batch statistics at the edge)",
            tiny(samples, cloud__adapter="bn_stats", policy={"name": "none"}),
        ),
        (
            "random uploads, delta downloads",
            tiny(
                samples,
                policy={"name": "random", "random": {"p": 0.3}},
                cloud__downlink_payload="delta",
            ),
        ),
        ("edgefm offloading", tiny(samples, routing={"name": "edgefm"})),
        (
            "adaptivenet model selection (two members, two profiles)",
            tiny(
                samples,
                stream__batch_size=16,
                edge={"model": "synthetic_edge", "profile": ["raspberry_pi4", "jetson_xavier_nx"]},
                cloud={"adapter": "none"},
                policy={"name": "none"},
                selection={
                    "name": "adaptivenet",
                    "latency_budget_ms": 80,
                    "adaptivenet": {"family": str(family), "ewma_alpha": 1.0},
                },
            ),
        ),
        (
            "4-bit (min-max) edge, ResNet-56 teacher, CIFAR-10",
            tiny(
                samples,
                dataset=cifar,
                edge=quantized,
                cloud__teacher="resnet56",
                stream__batch_size=64,
            ),
        ),
    ]


def runs(device: torch.device, samples: int, data_root: Path) -> None:
    from policies.selection.family import measure_family
    from simulator.config import scenario_from_dict
    from simulator.data.datasets import make_synthetic
    from simulator.engine import run_scenario
    from simulator.models.gdfq import build_quantized
    from simulator.models.zoo import ModelError, create_model

    try:
        create_model("resnet20-w4a4-minmax")
    except ModelError:  # built here (seconds: min-max ranges over noise images)
        build_quantized("resnet20", 4, "minmax")
    data = make_synthetic(64, split="test", seed=1)  # the two synthetic models as a family
    members = measure_family(
        ["synthetic_edge", "synthetic_teacher"], data.images, data.labels, name="syn"
    )
    family = Path(tempfile.mkdtemp()) / "synthetic_family.json"
    family.write_text(members.to_json())
    say("## Every path on the device, twice, and on the CPU\n")
    say(
        f"Small scenarios (2 devices x {samples} samples). Repeatable: the two device runs give "
        "the same summary (wall time aside). Accuracy and uploaded samples against the CPU's.\n"
    )
    say(
        "| scenario | repeatable | accuracy device / cpu | uploads device / cpu | wall s device / cpu |"
    )
    say("|---|---|---:|---:|---:|")
    for label, data in variants(samples, data_root, family):
        try:
            scenario = scenario_from_dict(copy.deepcopy(data))
            first = run_scenario(scenario, device=device)
            second = run_scenario(scenario, device=device)
            cpu = run_scenario(scenario, device="cpu")
        except Exception as exc:  # one broken path must not hide the others
            say(f"| {label} | FAILED: {type(exc).__name__}: {' '.join(str(exc).split())} | | | |")
            FIGURES[f"runs/{label}"] = {"error": f"{type(exc).__name__}: {exc}"}
            continue

        def numbers(result) -> str:
            return json.dumps(
                {k: v for k, v in result.summary.items() if k != "wall_time_s"}, sort_keys=True
            )

        same = numbers(first) == numbers(second)
        a, b = first.summary, cpu.summary
        say(
            f"| {label} | {'yes' if same else 'NO'} | {100 * a['accuracy']:.2f} / "
            f"{100 * b['accuracy']:.2f} | {a['uploaded_samples']} / {b['uploaded_samples']} | "
            f"{a['wall_time_s']:.1f} / {b['wall_time_s']:.1f} |"
        )
        FIGURES[f"runs/{label}"] = {
            "repeatable": same,
            "accuracy": [a["accuracy"], b["accuracy"]],
            "uploads": [a["uploaded_samples"], b["uploaded_samples"]],
            "wall_s": [a["wall_time_s"], b["wall_time_s"]],
        }
    say()


# -- 3. forward curve --------------------------------------------------------------------------
def curve(device: torch.device, rows: list[int], images: int) -> None:
    from speed_bench import forward_limit

    say(f"## Plain ResNet-20 forward pass on {describe_device(device)}, images/s\n")
    rates = {n: forward_limit(max(images, 4 * n), n, str(device)) for n in rows}
    say("| rows per pass | " + " | ".join(f"{n:,}" for n in rows) + " |")
    say("|---|" + "---:|" * len(rows))
    say("| images/s | " + " | ".join(f"{rates[n]:,.0f}" for n in rows) + " |")
    say()
    FIGURES["curve"] = rates


# -- 4. throughput -----------------------------------------------------------------------------
def throughput(
    device: torch.device,
    data_root: Path,
    samples: int,
    max_rows: list[int | None],
    fleet: list[int],
    edge_batch: int = 16,
) -> None:
    import speed_bench

    for rows in max_rows:
        say(
            f"## Throughput on {describe_device(device)}, max_rows "
            f"{'default' if rows is None else rows}, edge batches of {edge_batch}\n"
        )
        args = argparse.Namespace(
            samples=samples,
            devices=fleet,
            naive=fleet if rows is None else [],
            data=data_root,
            device=str(device),
            max_rows=rows,
            edge_batch=edge_batch,
        )
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            speed_bench.throughput(args)
        for line in buffer.getvalue().splitlines():
            say(line)
        say()


# -- 5. quickstart -----------------------------------------------------------------------------
def quickstart(device: torch.device, samples: int | None) -> None:
    from simulator.config import load_scenario
    from simulator.engine import run_scenario

    overrides = [] if samples is None else [f"stream.samples_per_device={samples}"]
    scenario = load_scenario(ROOT / "scenarios" / "synthetic_quickstart.yaml", overrides)
    say("## Quickstart on the device and on the CPU\n")
    say(f"CPU threads: {torch.get_num_threads()}.\n")
    say("| device | accuracy | uploads | wall s | loop s |")
    say("|---|---:|---:|---:|---:|")
    for where in (device, torch.device("cpu")):
        result = run_scenario(scenario, device=where)
        s = result.summary
        say(
            f"| {s['compute_device']} | {100 * s['accuracy']:.2f} % | {s['uploaded_samples']} | "
            f"{s['wall_time_s']:.1f} | {result.extra['loop_s']:.1f} |"
        )
        FIGURES[f"quickstart/{where}"] = {"accuracy": s["accuracy"], "wall_s": s["wall_time_s"]}
    say()


# in the order of what matters most, so a run cut short by its time limit still has those
SECTIONS = ("exactness", "runs", "throughput", "curve", "quickstart", "rows", "frames")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp")))
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="small sizes (checks the script)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    quick = args.quick
    say(f"# fleetsim on {describe_device(device)}\n")
    say(
        f"torch {torch.__version__}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n"
    )
    started = time.perf_counter()
    steps = {
        "exactness": lambda: exactness(device, 8 if quick else 64),
        "runs": lambda: runs(device, 64 if quick else 256, args.data),
        "curve": lambda: curve(
            device,
            [1, 16, 128] if quick else [1, 16, 64, 128, 256, 1024, 4096, 8192],
            256 if quick else 16384,
        ),
        "throughput": lambda: throughput(
            device, args.data, 512 if quick else 16384, [None], fleet if quick else [*fleet, 1000]
        ),
        "quickstart": lambda: quickstart(device, 128 if quick else None),
        "rows": lambda: throughput(  # other pass sizes, for DEFAULT_MAX_ROWS
            device, args.data, 512 if quick else 16384, [128] if quick else [128, 1024], fleet
        ),
        "frames": lambda: throughput(  # table 1b: one frame per device batch
            device, args.data, 256 if quick else 4096, [None], fleet, edge_batch=1
        ),
    }
    fleet = [1, 16] if quick else [1, 16, 64, 256]
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every section: a run cut short keeps what it measured
        (args.out / "gpu_check.md").write_text("\n".join(REPORT) + "\n")
        (args.out / "gpu_check.json").write_text(json.dumps(FIGURES, indent=1, default=str) + "\n")

    for name in args.only:
        t = time.perf_counter()
        try:
            steps[name]()
        except Exception as exc:  # report and go on: the other sections still count
            say(f"**{name} failed**: {type(exc).__name__}: {exc}\n")
            FIGURES[f"{name}/error"] = f"{type(exc).__name__}: {exc}"
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", file=sys.stderr, flush=True)
        save()
    say(f"Total {time.perf_counter() - started:.0f} s.")
    save()


if __name__ == "__main__":
    main()
