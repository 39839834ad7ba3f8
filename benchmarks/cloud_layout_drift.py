"""Cloud training layout on the CPU: how far channels-last drifts from contiguous over a run.

The cloud adapters train in the layout of ``CLOUD_MEMORY_FORMAT`` (simulator/adaptation/base.py),
chosen on the CPU by this measurement (channels-last had been chosen for speed). Both layouts
compute the same float32 arithmetic in another order, so their results differ by rounding, and a
run of adaptation steps can amplify rounding. This measures by how much,
step by step, on real data: three copies of one adapter see the same uploads (CIFAR-10 exact test
images under a continual sequence of corruptions, severity 5, the same batches for all):

* ``channels_last``: the layout fleetsim used on the CPU until this measurement;
* ``contiguous``: the same adapter with ``memory_format = torch.contiguous_format``;
* ``nudged``: contiguous, with every upload multiplied by ``1 + 2**-23`` (about one float32
  rounding step of each pixel): the drift that *any* rounding-level change of the computation
  produces, against which the layout's drift is judged.

After every ``observe``: the relative difference of the last step's BN-affine gradient
(``|g_a - g_b| / |g_b|``), the adapted affine's largest absolute difference and its difference
relative to how far adaptation moved it from the source, the loss, and, on 64 further images of
the step's corruption, how many edge predictions with the two adapted states differ. Step 1 starts
from the same state in every copy, so its gradient difference is the layout's rounding alone.
Wall time per ``observe`` is reported for each copy.

Which layout is nearer the exact result: a train-mode BN layer alone on offset inputs, and, on
the first batch of every corruption, the BN-affine
gradients of CEMA's two losses (the teacher's weighted entropy, the edge's distillation loss on
the teacher's batch-statistics logits), from the source models, in float64 (the reference) and in
float32 contiguous and channels-last, relative error of each float32 layout against float64.
Not a test:

    PYTHONPATH=. .venv/bin/python benchmarks/cloud_layout_drift.py --steps-per-corruption 10 \
        --json benchmarks/figures/cloud_layout_drift.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from simulator.adaptation import ADAPTERS
from simulator.adaptation.base import CloudAdapter
from simulator.adaptation.losses import cema_distillation_loss, teacher_entropy_loss
from simulator.data.corruptions import corrupt
from simulator.data.datasets import create_dataset
from simulator.models.norm import configure_norm_adaptation, set_norm_state, use_batch_statistics
from simulator.models.zoo import create_model

CORRUPTIONS = ("gaussian_noise", "defocus_blur", "snow", "contrast", "jpeg_compression")
COPIES = ("channels_last", "contiguous", "nudged")
NUDGE = 1.0 + 2.0**-23


def build(name: str, layout: torch.memory_format, edge, teacher, seed: int) -> CloudAdapter:
    """Adapter ``name`` with its defaults, its models in ``layout``."""
    cls = ADAPTERS.get(name)
    in_layout = type(f"{cls.__name__}InLayout", (cls,), {"memory_format_override": layout})
    teacher_copy = copy.deepcopy(teacher) if cls.needs_teacher else None
    return in_layout(copy.deepcopy(edge), teacher_copy, cls.Config(), 10, seed)


def affine_params(adapter: CloudAdapter) -> list[torch.nn.Parameter]:
    """The edge BN affine parameters the adapter trains (their ``.grad``: the last step's)."""
    params = getattr(adapter, "_edge_params", None)
    return params if params is not None else adapter._params  # type: ignore[attr-defined]


def flat_affine(state: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([state[n].reshape(-1).double() for n in names])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def exact_gradient_errors(edge, teacher, x: torch.Tensor) -> dict[str, float]:
    """Relative error against float64 of the float32 BN-affine gradients of CEMA's teacher
    entropy loss and edge distillation loss, per layout (same source models, same batch)."""
    e0 = 0.4 * float(np.log(10))
    grads: dict[tuple[str, str], torch.Tensor] = {}
    for dtype, layout in (
        (torch.float64, torch.contiguous_format),
        (torch.float32, torch.contiguous_format),
        (torch.float32, torch.channels_last),
    ):
        student = copy.deepcopy(edge).to(dtype).to(memory_format=layout).eval()
        master = copy.deepcopy(teacher).to(dtype).to(memory_format=layout).eval()
        inputs = x.to(dtype).contiguous(memory_format=layout)
        key = "float64" if dtype == torch.float64 else f"float32_{_name(layout)}"
        params = configure_norm_adaptation(master)
        with use_batch_statistics(master):
            loss = teacher_entropy_loss(master(inputs), e0)
        grads[("teacher", key)] = _flat(torch.autograd.grad(loss, params))
        with torch.no_grad(), use_batch_statistics(master):
            target = master(inputs)
        params = configure_norm_adaptation(student)
        with use_batch_statistics(student):
            loss = cema_distillation_loss(student(inputs), target, e0)
        grads[("edge", key)] = _flat(torch.autograd.grad(loss, params))
    return {
        f"{model}_{key}": relative(grads[(model, key)], grads[(model, "float64")])
        for model in ("teacher", "edge")
        for key in ("float32_contiguous", "float32_channels_last")
    }


def bn_layer_errors(seed: int = 0) -> dict[str, dict[str, float]]:
    """One train-mode BatchNorm2d alone (batch 128, 16 channels, 32 x 32, inputs of std 0.05 and
    mean 0, 0.3, 3, 30): relative error of its float32 output against float64, per layout."""
    generator = torch.Generator().manual_seed(seed)
    errors: dict[str, dict[str, float]] = {}
    for mean in (0.0, 0.3, 3.0, 30.0):
        x = torch.randn(128, 16, 32, 32, dtype=torch.float64, generator=generator) * 0.05 + mean
        with torch.no_grad():
            reference = torch.nn.BatchNorm2d(16).double().train()(x)
        row = {}
        for layout in (torch.contiguous_format, torch.channels_last):
            layer = torch.nn.BatchNorm2d(16).train()
            with torch.no_grad():
                out = layer(x.float().contiguous(memory_format=layout)).double()
            row[_name(layout)] = float((out - reference).norm() / reference.norm())
        errors[f"mean/std={mean / 0.05:g}"] = row
    return errors


def _name(layout: torch.memory_format) -> str:
    return "channels_last" if layout == torch.channels_last else "contiguous"


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1).double() for t in tensors])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default="cema", choices=["cema", "tent", "eata"])
    parser.add_argument("--edge", default="resnet20")
    parser.add_argument("--teacher", default="resnet56-augmix")
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS))
    parser.add_argument("--steps-per-corruption", type=int, default=10)
    parser.add_argument("--uploads", type=int, default=32, help="uploads per observe call")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    bn_errors = bn_layer_errors(args.seed)
    print(f"BN layer alone, relative error vs float64: {json.dumps(bn_errors)}", flush=True)
    dataset = create_dataset("cifar10", variant="exact_prefix")
    pixels = torch.from_numpy(np.array(dataset.images)).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(np.array(dataset.labels))
    edge = create_model(args.edge, num_classes=10)
    teacher = create_model(args.teacher, num_classes=10)
    layouts = {
        "channels_last": torch.channels_last,
        "contiguous": torch.contiguous_format,
        "nudged": torch.contiguous_format,
    }
    adapters = {k: build(args.adapter, v, edge, teacher, args.seed) for k, v in layouts.items()}
    names = [
        n
        for n, p in adapters["contiguous"].edge_model.named_parameters()
        if any(p is q for q in affine_params(adapters["contiguous"]))
    ]
    source = flat_affine(dict(adapters["contiguous"].edge_model.named_parameters()), names)
    judge = copy.deepcopy(edge).eval()  # contiguous edge forward with an adapted state
    rng = np.random.default_rng(args.seed)
    rows, exact = [], []
    step = 0
    for corruption in args.corruptions:
        for k in range(args.steps_per_corruption):
            step += 1
            chosen = torch.from_numpy(rng.choice(len(pixels), args.uploads + 64, replace=False))
            batch = corrupt(pixels[chosen], corruption, 5, seed=args.seed, indices=chosen)
            x = batch[: args.uploads].float().div_(255.0)
            held_out = batch[args.uploads :].float().div_(255.0)
            held_labels = labels[chosen[args.uploads :]]
            if k == 0:
                errors = exact_gradient_errors(edge, teacher, x)
                exact.append({"corruption": corruption, **errors})
                print(f"    vs float64: {json.dumps(errors)}", flush=True)
            stats, wall, grads, states = {}, {}, {}, {}
            for key, adapter in adapters.items():
                inputs = x * NUDGE if key == "nudged" else x
                start = time.perf_counter()
                stats[key] = adapter.observe(0, inputs.clone())
                wall[key] = time.perf_counter() - start
                grads[key] = torch.cat(
                    [
                        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).double()
                        for p in affine_params(adapter)
                    ]
                )
                states[key] = adapter.norm_state(0)
            steps = {k: s.steps for k, s in stats.items()}
            if len(set(steps.values())) != 1:
                raise RuntimeError(f"step {step}: the copies took different steps: {steps}")
            predictions = {}
            for key, state in states.items():
                set_norm_state(judge, state)
                with torch.no_grad(), use_batch_statistics(judge):
                    predictions[key] = judge(held_out).argmax(1)
            reference = flat_affine(states["contiguous"], names)
            row = {
                "step": step,
                "corruption": corruption,
                "steps": steps["contiguous"],
                "moved": float((reference - source.detach()).norm()),
                "accuracy_contiguous": float(
                    (predictions["contiguous"] == held_labels).float().mean()
                ),
            }
            for key in ("channels_last", "nudged"):
                other = flat_affine(states[key], names)
                row[f"grad_rel_{key}"] = relative(grads[key], grads["contiguous"])
                row[f"param_max_abs_{key}"] = float((other - reference).abs().max())
                row[f"param_rel_moved_{key}"] = float(
                    (other - reference).norm() / max(row["moved"], 1e-30)
                )
                row[f"loss_diff_{key}"] = abs(
                    (stats[key].loss or 0.0) - (stats["contiguous"].loss or 0.0)
                )
                row[f"disagree_{key}"] = int((predictions[key] != predictions["contiguous"]).sum())
            for key in COPIES:
                row[f"wall_s_{key}"] = wall[key]
            rows.append(row)
            print(
                f"{step:3d} {corruption:16s} grad cl {row['grad_rel_channels_last']:.2e} "
                f"nudge {row['grad_rel_nudged']:.2e} | param max cl "
                f"{row['param_max_abs_channels_last']:.2e} nudge {row['param_max_abs_nudged']:.2e}"
                f" (moved {row['moved']:.3f}) | disagree/64 cl {row['disagree_channels_last']} "
                f"nudge {row['disagree_nudged']} | wall cl {wall['channels_last']:.2f}s "
                f"c {wall['contiguous']:.2f}s",
                flush=True,
            )
    summary = {
        "adapter": args.adapter,
        "edge": args.edge,
        "teacher": args.teacher,
        "threads": args.threads,
        "torch": torch.__version__,
        "steps": len(rows),
        "held_out_predictions": 64 * len(rows),
    }
    for key in ("channels_last", "nudged"):
        summary[key] = {
            "grad_rel_first": rows[0][f"grad_rel_{key}"],
            "grad_rel_median": float(np.median([r[f"grad_rel_{key}"] for r in rows])),
            "grad_rel_max": max(r[f"grad_rel_{key}"] for r in rows),
            "param_max_abs_final": rows[-1][f"param_max_abs_{key}"],
            "param_max_abs_max": max(r[f"param_max_abs_{key}"] for r in rows),
            "param_rel_moved_final": rows[-1][f"param_rel_moved_{key}"],
            "disagreements": sum(r[f"disagree_{key}"] for r in rows),
        }
    summary["bn_layer_error"] = bn_errors
    summary["exact_gradient_error_median"] = {
        key: float(np.median([e[key] for e in exact])) for key in exact[0] if key != "corruption"
    }
    summary["wall_s_mean"] = {k: float(np.mean([r[f"wall_s_{k}"] for r in rows])) for k in COPIES}
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"summary": summary, "steps": rows, "exact": exact}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
