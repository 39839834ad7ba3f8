"""Where the simulator's tensors compute: the CPU (the default) or an accelerator.

A run's *results* are defined by the scenario and its seed; the compute device is a speed choice,
like the executor. The edge executor's fleet-batched passes, the cloud adapter's models and the
foundation model answering offloads all run on the chosen device; everything that leaves them
(edge outputs, downloaded normalization states, offload answers) comes back to the CPU, so
streams, policies, the network and the recorded events never see a device tensor.

Numbers: on one device, runs are meant to be repeatable per seed (cuDNN is put in deterministic
mode, its autotuner, which picks kernels by timing, is off, and TF32 is off, so GPU convolutions keep
full float32 precision); benchmarks/gpu_check.py checks it on a GPU, which CI does not have. Across devices they agree to float rounding
only: a GPU sums convolutions in another order than the CPU, so a prediction on a near-tie can
differ, and a run's summary is not bit-identical between ``cpu`` and ``cuda``.
"""

from __future__ import annotations

import re

import torch

__all__ = ["describe_device", "resolve_device"]

_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def resolve_device(spec: str | torch.device = "cpu") -> torch.device:
    """The torch device for ``spec`` (cpu | cuda | cuda:N | auto), checked to exist.

    Raises ``ValueError`` naming the value and what is allowed, or saying why the machine cannot
    run it (no GPU seen by this torch build, an index beyond the GPUs present).
    """
    text = str(spec).strip().lower()
    if not _PATTERN.match(text):
        raise ValueError(
            f"device: {str(spec)!r} is not one of cpu, cuda, cuda:N (N a GPU index), auto"
        )
    if text == "auto":
        return _configure(torch.device("cuda")) if _cuda_count() > 0 else torch.device("cpu")
    device = torch.device(text)
    if device.type == "cuda":
        count = _cuda_count()
        if count == 0:
            raise ValueError(
                f"device: {text!r} needs an NVIDIA GPU, but this torch build ({torch.__version__}) "
                "sees none; use --device cpu (or auto, which falls back to the CPU)"
            )
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device: {text!r} asks for GPU {device.index}, but torch sees {count} "
                f"(cuda:0 to cuda:{count - 1})"
            )
        return _configure(device)
    return device


def describe_device(device: torch.device) -> str:
    """A label for summaries: ``cpu``, or the GPU's index and name (``cuda:0 (NVIDIA H200)``)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type


def _configure(device: torch.device) -> torch.device:
    """Repeatable GPU numbers per seed: deterministic cuDNN kernels, no timing-based choice, and
    full float32 convolutions (cuDNN's default TF32 keeps 10 mantissa bits, far from the CPU)."""
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    return device


def _cuda_count() -> int:
    """NVIDIA GPUs this torch build can use (0 without CUDA or without a GPU)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
