"""Where a fleet-batched run's wall time goes on a device: cProfile of two speed_bench fleets.

Not a test. On the GPU machine, after ``gpu_check.sh`` installed the carried wheels::

    PYTHONPATH=/tmp/site:. FLEETSIM_MODELS=.gpu/models python3 benchmarks/gpu_profile.py \\
        --data .gpu/data/cifar10 > $OUT/gpu_profile.txt

Profiles 256 devices x 64 samples in edge batches of 16 and 64 devices x 64 single frames (each
run once unprofiled first, so caches and kernels are warm) and prints the top functions by
cumulative and by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import speed_bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "cifar10")
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args()
    speed_bench.run(speed_bench.fleet_scenario(4, 64, args.data), device=args.device)
    for devices, samples, batch in ((256, 64, 16), (64, 64, 1)):
        scenario = speed_bench.fleet_scenario(devices, samples, args.data, batch=batch)
        speed_bench.run(scenario, device=args.device)  # warm
        profiler = cProfile.Profile()
        profiler.enable()
        result = speed_bench.run(scenario, device=args.device)
        profiler.disable()
        print(
            f"### {devices} devices x {samples}, edge batch {batch}: loop "
            f"{result.extra['loop_s']:.2f} s, {result.summary['samples']} samples"
        )
        for order in ("cumulative", "tottime"):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(args.top)
            print(text.getvalue())


if __name__ == "__main__":
    main()
