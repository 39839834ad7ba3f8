"""Measured round-trip times for ``network.latency.dist: empirical``.

Files: the 5Gophers ping traces (``protocol,network_type,ue_location,target_server,probe_num,
rtt_in_ms``; select ``4G``, ``5G``, or ``4G/US-East``), the 5Gophers RTT table (``rtt_ms,carrier,
server_location``; select ``VERIZON`` or ``VERIZON/US-East``), or plain text with one RTT in ms per
line (``#`` comments allowed; an ``rtt_ms`` header line is skipped). A message's one-way latency is
half an RTT drawn uniformly from the samples with the scenario's seed.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from simulator.traces.model import TraceError


def _plain(path: Path) -> list[float]:
    values: list[float] = []
    header_allowed = True
    for line, text in enumerate(path.read_text().splitlines(), start=1):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        if header_allowed and text == "rtt_ms":
            header_allowed = False
            continue
        header_allowed = False
        try:
            value = float(text)
        except ValueError:
            raise TraceError(path, line, f"an RTT in ms must be a number, got {text!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise TraceError(path, line, f"an RTT must be a finite number >= 0 ms, got {text!r}")
        values.append(value)
    return values


def _table(path: Path, select: str | None) -> list[float]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        records = list(enumerate(reader, start=2))
    if "rtt_in_ms" in columns:  # ping traces
        value, keys = "rtt_in_ms", ("network_type", "target_server")
    else:
        value, keys = "rtt_ms", ("carrier", "server_location")
    first, _, second = (select or "").partition("/")
    values = []
    for line, row in records:
        if first and row.get(keys[0]) != first or second and row.get(keys[1]) != second:
            continue
        try:
            rtt = float(row[value])
        except (TypeError, ValueError):
            raise TraceError(path, line, f"{value} must be a number, got {row[value]!r}") from None
        if not (math.isfinite(rtt) and rtt >= 0):
            raise TraceError(path, line, f"{value} must be a finite number >= 0, got {rtt}")
        values.append(rtt)
    if not values:
        known = sorted({f"{row.get(keys[0])}/{row.get(keys[1])}" for _, row in records})
        raise TraceError(path, None, f"no RTT selected by {select!r}; known: {', '.join(known)}")
    return values


def read_rtt(path: str | Path, select: str | None = None) -> np.ndarray:
    """RTT samples in ms from ``path`` (see the module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TraceError(path, None, "no such file")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    head = next((ln for ln in lines if ln and not ln.startswith("#")), "")
    values = _table(path, select) if "," in head and "rtt" in head else _plain(path)
    if not values:
        raise TraceError(path, None, "no RTT samples")
    return np.asarray(values, dtype=float)
