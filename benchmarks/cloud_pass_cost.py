"""What a cloud training pass costs against a forward pass, for the cloud step-time rule.

``simulator/fleet/cloud_time.py`` counts a training pass (forward + backward of the BN affine) as
2x the forward's MACs (``BACKWARD_FACTOR`` in ``simulator/hardware.py``). This times, on the CPU, a no-grad forward and a forward + backward with
only the BN affine trainable (as every adapter here trains), train-mode BN, in the contiguous
(the cloud's CPU layout) and channels-last layouts, and prints the ratio with each model's counted MACs and the effective
GMAC/s of the forward. Not a test:

    PYTHONPATH=. .venv/bin/python benchmarks/cloud_pass_cost.py --models resnet20 resnet56
"""

from __future__ import annotations

import argparse
import time

import torch

from simulator.models.flops import count_macs
from simulator.models.norm import configure_norm_adaptation
from simulator.models.zoo import create_model


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet20", "resnet56"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    print("| model | layout | MMAC/image | forward s | training pass s | ratio | forward GMAC/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.models:
        for layout in (torch.contiguous_format, torch.channels_last):
            model = create_model(name, num_classes=10)
            macs = count_macs(model, (3, 32, 32))
            configure_norm_adaptation(model)
            model = model.to(memory_format=layout).train()
            inputs = x.contiguous(memory_format=layout)
            forward_s = best_of(lambda m=model, i=inputs: _forward(m, i), args.repeats)
            train_s = best_of(lambda m=model, i=inputs: _training_pass(m, i), args.repeats)
            gmacs = macs * args.batch / forward_s / 1e9
            label = "channels-last" if layout == torch.channels_last else "contiguous"
            print(
                f"| {name} | {label} | {macs / 1e6:.1f} | {forward_s:.3f} | {train_s:.3f} | "
                f"{train_s / forward_s:.2f} | {gmacs:.1f} |"
            )


def _forward(model: torch.nn.Module, inputs: torch.Tensor) -> None:
    with torch.no_grad():
        model(inputs)


def _training_pass(model: torch.nn.Module, inputs: torch.Tensor) -> None:
    model(inputs).logsumexp(1).mean().backward()


if __name__ == "__main__":
    main()
