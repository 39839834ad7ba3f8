"""Reference side of ``corruptions_bench.py``: run the PyPI package ``imagecorruptions``.

Runs in its own virtual environment (NumPy < 2; see corruptions.md), not in fleetsim's:

    /tmp/icenv/bin/python benchmarks/corruptions_reference.py IN.npz OUT.npz
    /tmp/icenv/bin/python benchmarks/corruptions_reference.py IN.npz OUT_DIR --chunk SEED NAMES

IN.npz holds ``images224`` and ``images32`` (uint8 NHWC). Speed mode (two arguments): OUT.npz
receives, per corruption and severity, the corrupted 224x224 images (``{name}-{severity}``) and the
seconds spent on them (``t224-{name}-{severity}``), and the seconds for all 32x32 images
(``t32-{name}-{severity}``), with the CPU seconds of the process (all threads) in ``c224-...``
and ``c32-...``; ``np.random.seed(0)`` once. Chunk mode (accuracy runs, not timed):
``np.random.seed(SEED)`` once, then for each comma-separated corruption name in NAMES the 224x224
images at severities 1-5 go to ``OUT_DIR/{name}.npz`` (written to a temporary name, then renamed,
so a reader never sees half a file). Images are corrupted one at a time, which is the package's API.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np


def _patch_skimage_multichannel() -> None:
    """imagecorruptions 1.1.2 calls ``gaussian(..., multichannel=True)``, removed in scikit-image
    0.20; map it to ``channel_axis=-1`` (the same computation) so glass_blur and gaussian_blur run.
    """
    from imagecorruptions import corruptions
    from skimage.filters import gaussian

    def gaussian_compat(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs.setdefault("channel_axis", -1)
        return gaussian(image, *args, **kwargs)

    corruptions.gaussian = gaussian_compat


def main(in_path: str, out_path: str) -> None:
    from imagecorruptions import corrupt, get_corruption_names

    _patch_skimage_multichannel()
    data = np.load(in_path)
    images224, images32 = data["images224"], data["images32"]
    np.random.seed(0)
    out: dict[str, np.ndarray] = {}
    for name in get_corruption_names("all"):
        for severity in range(1, 6):
            start, cpu = time.perf_counter(), time.process_time()
            out[f"{name}-{severity}"] = np.stack(
                [corrupt(image, corruption_name=name, severity=severity) for image in images224]
            )
            out[f"t224-{name}-{severity}"] = np.float64(time.perf_counter() - start)
            out[f"c224-{name}-{severity}"] = np.float64(time.process_time() - cpu)
            start, cpu = time.perf_counter(), time.process_time()
            try:
                for image in images32:
                    corrupt(image, corruption_name=name, severity=severity)
                out[f"t32-{name}-{severity}"] = np.float64(time.perf_counter() - start)
                out[f"c32-{name}-{severity}"] = np.float64(time.process_time() - cpu)
            except Exception as exc:  # some originals assume larger images
                print(f"{name} s{severity} at 32x32 failed: {exc!r}", file=sys.stderr)
            print(f"reference {name} s{severity} done", file=sys.stderr, flush=True)
    np.savez(out_path, **out)


def main_chunk(in_path: str, out_dir: str, seed: int, names: list[str]) -> None:
    from imagecorruptions import corrupt

    _patch_skimage_multichannel()
    images224 = np.load(in_path)["images224"]
    np.random.seed(seed)
    for name in names:
        out = {
            f"{name}-{severity}": np.stack(
                [corrupt(image, corruption_name=name, severity=severity) for image in images224]
            )
            for severity in range(1, 6)
        }
        partial = os.path.join(out_dir, f"{name}.partial.npz")
        np.savez(partial, **out)
        os.replace(partial, os.path.join(out_dir, f"{name}.npz"))
        print(f"reference chunk {seed} {name} done", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[3] == "--chunk":
        main_chunk(sys.argv[1], sys.argv[2], int(sys.argv[4]), sys.argv[5].split(","))
    else:
        main(sys.argv[1], sys.argv[2])
