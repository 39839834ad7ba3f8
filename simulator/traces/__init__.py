"""Real network traces: readers for the formats researchers have, the traces fleetsim ships, and
how a scenario names one (a shipped short name, or a path with an optional ``#select`` suffix
such as ``car-driving-trace-1.csv#Verizon``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from simulator.traces.model import Trace, TraceError
from simulator.traces.readers import TraceFormat, detect_format, read_trace
from simulator.traces.rtt import read_rtt
from simulator.traces.shipped import SHIPPED, names, shipped_rtt, shipped_trace

__all__ = [
    "SHIPPED",
    "Trace",
    "TraceError",
    "TraceFormat",
    "detect_format",
    "names",
    "read_rtt",
    "read_trace",
    "resolve_rtt",
    "resolve_trace",
]


def _file(value: str, kind: str, what: str) -> tuple[Path, str | None]:
    """``(path, select)`` of a ``path[#select]`` value naming an existing file; else a TraceError
    listing the shipped ``kind`` entries (``what``: how to call them)."""
    text, sep, select = value.partition("#")
    path = Path(text).expanduser()
    if not path.is_file():
        raise TraceError(path, None, f"no such file, and not a {what} ({', '.join(names(kind))})")
    return path, (select if sep else None)


@lru_cache(maxsize=64)
def _resolve_trace(value: str, format: str) -> Trace:
    if value in SHIPPED:
        return shipped_trace(value)
    path, select = _file(value, "uplink", "shipped trace")
    return read_trace(path, format, select=select)  # type: ignore[arg-type]


def resolve_trace(value: str | Path, format: TraceFormat = "auto") -> Trace:
    """The bandwidth trace a scenario names: a shipped short name, or ``path[#select]``."""
    return _resolve_trace(str(value), format)


@lru_cache(maxsize=64)
def _resolve_rtt(value: str) -> np.ndarray:
    if value in SHIPPED:
        return shipped_rtt(value)
    path, select = _file(value, "rtt", "shipped RTT set")
    return read_rtt(path, select)


def resolve_rtt(value: str | Path) -> np.ndarray:
    """RTT samples (ms) a scenario names: a shipped RTT set, or ``path[#select]`` (read-only)."""
    samples = _resolve_rtt(str(value))
    samples.setflags(write=False)
    return samples
