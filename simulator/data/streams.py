"""Per-device test streams: which images, in which corruption domain, arriving when.

A stream is a schedule of domain segments (corruption, severity, length) laid over a sequence of
dataset images, plus an arrival process; consecutive samples are grouped into edge batches whose
ready time is the arrival of their last sample.

Schedules (``stream.schedule``):

- ``continual``: the listed corruptions in order, cycling; with ``stagger`` device d starts at
  corruption ``d % len(corruptions)`` so the fleet sees several domains at once.
- ``random``: Markov switching; each segment moves to a uniformly drawn *other* domain.
- ``mixed``: every sample's domain is drawn uniformly from the corruptions (the mixed-domains
  setting of the test-time-adaptation benchmarks: consecutive samples rarely share a domain).
- ``gradual``: the corruptions in order (as ``continual``), each walking a severity sequence one
  segment per step, by default ``1, 2, 3, 4, 5, 4, 3, 2, 1`` (Wang et al., CoTTA, CVPR 2022). With
  ``gradual_start: peak`` (CoTTA's) the first corruption starts at the walk's highest severity and
  walks down, ``5, 4, 3, 2, 1``, since the first shift away from the source is the largest.

``stream.groups`` gives device groups their own schedule: a group's keys override the stream's for
its devices, and ``stagger`` there rotates by the device's position in its group.

Label shift (``stream.labels``), from a generator of its own (``label_rng``) so that switching it
on changes no domain or arrival:

- ``alpha``: each device draws a class prior ``p ~ Dir(alpha * 1)`` over the dataset's classes and
  each sample's class from ``p``; the images of a class are taken in a random order, cycling.
- ``correlation`` (Yuan et al., RoTTA, CVPR 2023; Marsden et al., ROID, WACV 2024): each block of
  the stream (a domain segment by default) is cut into time slots (as many as classes, at most
  100); each class spreads its samples of the block over the slots by ``q ~ Dir(correlation * 1)``,
  keeping their order, and each slot plays its classes in a random order, one run per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from simulator.config import StreamConfig, per_device_value

#: Most time slots per correlated block by default (RoTTA's cap for many-class datasets).
MAX_SLOTS = 100


@dataclass(frozen=True)
class Domain:
    corruption: str  # "clean" for no corruption
    severity: int

    @property
    def key(self) -> str:
        return "clean" if self.corruption == "clean" else f"{self.corruption}/{self.severity}"


@dataclass
class DeviceStream:
    """All samples one device will see, in order.

    With label shift or stream groups it also carries what ``events.parquet`` records per sample
    (:meth:`sample_columns`): the device's group, each sample's class prior and correlation slot.
    """

    device: int
    indices: np.ndarray  # dataset index per sample (int64)
    domain_ids: np.ndarray  # index into ``domains`` per sample (int16)
    arrival_s: np.ndarray  # simulated arrival time per sample (float64, increasing)
    domains: list[Domain]
    batch_size: int
    group: int | None = None  # the device's stream group (None without groups)
    class_priors: np.ndarray | None = None  # the device's prior per class id (alpha), float64
    class_prior: np.ndarray | None = None  # per sample: its class's prior (float32, NaN: none)
    label_slot: np.ndarray | None = None  # per sample: its correlation slot (int32, -1: none)

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

    def severities(self) -> np.ndarray:
        """Each sample's severity (0 for clean)."""
        by_id = np.array([0 if d.corruption == "clean" else d.severity for d in self.domains])
        return by_id[self.domain_ids]

    def sample_columns(self, rows: slice) -> dict[str, Any]:
        """The stream's own per-sample columns of ``rows`` for the event record: ``stream_group``
        with groups, ``class_prior`` and ``label_slot`` with label shift; none otherwise."""
        columns: dict[str, Any] = {}
        if self.group is not None:
            columns["stream_group"] = self.group
        if self.class_prior is not None:
            columns["class_prior"] = self.class_prior[rows]
        if self.label_slot is not None:
            columns["label_slot"] = self.label_slot[rows]
        return columns


def _schedule_domains(config: StreamConfig) -> list[Domain]:
    """The domains one effective schedule can visit, as :func:`_segment_domains` numbers them."""
    if config.schedule != "gradual":
        return [Domain(c, config.severity) for c in config.corruptions]
    levels = sorted(set(config.walk()))
    return [Domain(c, s) for c in config.corruptions for s in levels]


def stream_domains(config: StreamConfig) -> list[Domain]:
    """The domains a stream config can visit (every group's, without repeats), in the order of
    its corruptions and severities."""
    seen: dict[Domain, None] = {}
    for effective in config.effective():
        for domain in _schedule_domains(effective):
            seen.setdefault(domain, None)
    return list(seen)


def _segment_domains(
    config: StreamConfig, position: int, segments: int, rng: np.random.Generator
) -> list[int]:
    """The domain (an index into :func:`_schedule_domains`) of each of ``segments`` segments."""
    n = len(config.corruptions)
    start = position % n if config.stagger else 0
    if config.schedule == "continual":
        return [(start + s) % n for s in range(segments)]
    if config.schedule == "gradual":
        walk = config.walk()
        levels = sorted(set(walk))
        sequence: list[int] = []
        visit = 0
        while len(sequence) < segments:
            corruption = (start + visit) % n
            steps = walk
            if visit == 0 and config.gradual_start == "peak":
                steps = walk[int(np.argmax(walk)) :]
            sequence += [corruption * len(levels) + levels.index(s) for s in steps]
            visit += 1
        return sequence[:segments]
    current = int(rng.integers(n))
    seq = [current]
    for _ in range(segments - 1):
        if n > 1:
            step = int(rng.integers(1, n))  # uniform over the other n-1 domains
            current = (current + step) % n
        seq.append(current)
    return seq


def _prior_indices(
    labels: np.ndarray, n: int, alpha: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` dataset indices whose classes are drawn from a prior ``p ~ Dir(alpha)`` over the
    classes present in ``labels``; returns them and ``p`` by class id (0 for absent classes)."""
    classes = np.unique(labels)
    prior = rng.dirichlet(np.full(len(classes), alpha))
    drawn = rng.choice(len(classes), size=n, p=prior)
    indices = np.empty(n, dtype=np.int64)
    for k, c in enumerate(classes):
        where = np.flatnonzero(drawn == k)
        if not len(where):
            continue
        pool = np.flatnonzero(labels == c)
        reps = -(-len(where) // len(pool))
        indices[where] = np.concatenate([rng.permutation(pool) for _ in range(reps)])[: len(where)]
    by_class = np.zeros(int(labels.max()) + 1)
    by_class[classes] = prior
    return indices, by_class


def correlated_order(
    block_labels: np.ndarray, concentration: float, slots: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A temporally correlated order of one block: positions into ``block_labels`` and the time
    slot of each (RoTTA's Dirichlet class order).

    Each class present spreads its positions (in their order) over ``slots`` consecutive time
    slots in shares ``q ~ Dir(concentration * 1)``; each slot then plays its classes in a random
    order, one run per class. Small ``concentration`` puts most of a class in one slot.
    """
    classes = np.unique(block_labels)
    per_slot: list[list[np.ndarray]] = [[] for _ in range(slots)]
    for c in classes:
        members = np.flatnonzero(block_labels == c)
        shares = rng.dirichlet(np.full(slots, concentration))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for s, part in enumerate(np.split(members, cuts)):
            per_slot[s].append(part)
    order, slot_of = [], []
    for s, parts in enumerate(per_slot):
        for k in rng.permutation(len(parts)):
            order.append(parts[k])
            slot_of.append(np.full(len(parts[k]), s, dtype=np.int32))
    return np.concatenate(order), np.concatenate(slot_of)


def _needs_columns(config: StreamConfig) -> tuple[bool, bool]:
    """Whether any device of the fleet has a class prior, and any a correlated order: then every
    device records that column (NaN / -1 where it has none), so the event table stays whole."""
    labels = [e.labels for e in config.effective()]
    return any(x.alpha is not None for x in labels), any(x.correlation is not None for x in labels)


def build_stream(
    config: StreamConfig,
    device: int,
    dataset_size: int,
    rng: np.random.Generator,
    *,
    labels: np.ndarray | None = None,
    label_rng: np.random.Generator | None = None,
) -> DeviceStream:
    """The stream of one device; ``rng`` must be the device's own generator, and with label shift
    (``stream.labels``, the device's group's included) ``labels`` holds the dataset's labels and
    ``label_rng`` is the device's own generator for them."""
    own, group, position = config.for_device(device)
    n = config.samples_per_device
    reps = -(-n // dataset_size)
    indices = np.concatenate([rng.permutation(dataset_size) for _ in range(reps)])[:n]
    if own.schedule == "mixed":
        domain_ids = rng.integers(len(own.corruptions), size=n).astype(np.int16)
    else:
        segments = -(-n // own.segment_samples)
        sequence = _segment_domains(own, position, segments, rng)
        domain_ids = np.repeat(np.asarray(sequence, dtype=np.int16), own.segment_samples)[:n]
    rate_hz = per_device_value(config.rate_hz, device)
    if config.arrival == "fixed":
        arrival = np.arange(1, n + 1, dtype=np.float64) / rate_hz
    else:
        arrival = np.cumsum(rng.exponential(1.0 / rate_hz, size=n))
    stream = DeviceStream(
        device=device,
        indices=indices.astype(np.int64),
        domain_ids=domain_ids,
        arrival_s=arrival,
        domains=_schedule_domains(own),
        batch_size=config.batch_size,
        group=group,
    )
    with_prior, with_slots = _needs_columns(config)
    if with_prior or with_slots:
        _shift_labels(stream, own, labels, label_rng, with_prior, with_slots)
    return stream


def _shift_labels(
    stream: DeviceStream,
    own: StreamConfig,
    labels: np.ndarray | None,
    rng: np.random.Generator | None,
    with_prior: bool,
    with_slots: bool,
) -> None:
    """Apply ``own.labels`` to ``stream`` in place, and fill the per-sample columns the fleet
    records (``with_prior``, ``with_slots``)."""
    if labels is None or rng is None:
        raise ValueError("a stream with label shift (stream.labels) needs labels and label_rng")
    n, shift = len(stream), own.labels
    if shift.alpha is not None:
        stream.indices, stream.class_priors = _prior_indices(labels, n, shift.alpha, rng)
    if with_prior:
        stream.class_prior = (
            np.full(n, np.nan, dtype=np.float32)
            if stream.class_priors is None
            else stream.class_priors[labels[stream.indices]].astype(np.float32)
        )
    if not with_slots:
        return
    stream.label_slot = np.full(n, -1, dtype=np.int32)
    if shift.correlation is None:
        return
    slots = shift.slots or min(len(np.unique(labels)), MAX_SLOTS)
    block = shift.block_samples or (n if own.schedule == "mixed" else own.segment_samples)
    for b, start in enumerate(range(0, n, block)):
        rows = slice(start, min(start + block, n))
        order, slot = correlated_order(labels[stream.indices[rows]], shift.correlation, slots, rng)
        stream.indices[rows] = stream.indices[rows][order]
        if stream.class_prior is not None:
            stream.class_prior[rows] = stream.class_prior[rows][order]
        stream.label_slot[rows] = b * slots + slot
