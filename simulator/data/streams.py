"""Per-device test streams: which images, in which corruption domain, arriving when.

A stream is a schedule of domain segments (corruption, severity, length) laid over a sequence of
dataset images, plus an arrival process; consecutive samples are grouped into edge batches whose
ready time is the arrival of their last sample.

- ``continual``: the listed corruptions in order, cycling; with ``stagger`` device d starts at
  corruption ``d % len(corruptions)`` so the fleet sees several domains at once.
- ``random``: Markov switching; each segment moves to a uniformly drawn *other* domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.config import StreamConfig, per_device_value


@dataclass(frozen=True)
class Domain:
    corruption: str  # "clean" for no corruption
    severity: int

    @property
    def key(self) -> str:
        return "clean" if self.corruption == "clean" else f"{self.corruption}/{self.severity}"


@dataclass
class DeviceStream:
    """All samples one device will see, in order."""

    device: int
    indices: np.ndarray  # dataset index per sample (int64)
    domain_ids: np.ndarray  # index into ``domains`` per sample (int16)
    arrival_s: np.ndarray  # simulated arrival time per sample (float64, increasing)
    domains: list[Domain]
    batch_size: int

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def num_batches(self) -> int:
        return -(-len(self) // self.batch_size)

    def batch(self, b: int) -> slice:
        return slice(b * self.batch_size, min((b + 1) * self.batch_size, len(self)))

    def ready_s(self, b: int) -> float:
        """A batch is ready when its last sample has arrived."""
        return float(self.arrival_s[self.batch(b).stop - 1])


def stream_domains(config: StreamConfig) -> list[Domain]:
    """The domains a stream config can visit, in the order of ``config.corruptions``."""
    return [Domain(c, config.severity) for c in config.corruptions]


def _domain_sequence(
    config: StreamConfig, device: int, segments: int, rng: np.random.Generator
) -> list[int]:
    n = len(config.corruptions)
    if config.schedule == "continual":
        start = device % n if config.stagger else 0
        return [(start + s) % n for s in range(segments)]
    current = int(rng.integers(n))
    seq = [current]
    for _ in range(segments - 1):
        if n > 1:
            step = int(rng.integers(1, n))  # uniform over the other n-1 domains
            current = (current + step) % n
        seq.append(current)
    return seq


def build_stream(
    config: StreamConfig, device: int, dataset_size: int, rng: np.random.Generator
) -> DeviceStream:
    """The stream of one device; ``rng`` must be the device's own generator."""
    n = config.samples_per_device
    reps = -(-n // dataset_size)
    indices = np.concatenate([rng.permutation(dataset_size) for _ in range(reps)])[:n]
    segments = -(-n // config.segment_samples)
    sequence = _domain_sequence(config, device, segments, rng)
    domain_ids = np.repeat(np.asarray(sequence, dtype=np.int16), config.segment_samples)[:n]
    rate_hz = per_device_value(config.rate_hz, device)
    if config.arrival == "fixed":
        arrival = np.arange(1, n + 1, dtype=np.float64) / rate_hz
    else:
        arrival = np.cumsum(rng.exponential(1.0 / rate_hz, size=n))
    domains = stream_domains(config)
    return DeviceStream(
        device=device,
        indices=indices.astype(np.int64),
        domain_ids=domain_ids,
        arrival_s=arrival,
        domains=domains,
        batch_size=config.batch_size,
    )
