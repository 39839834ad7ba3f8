"""Readers for the trace formats researchers already have, chosen by ``format`` or detected.

- ``csv``: fleetsim's own ``time_s,mbps`` (header required; ``#`` comment lines allowed).
- ``5gophers``: the per-second throughput CSVs of the 5Gophers dataset (Narayanan et al., WWW 2020):
  ``01-Throughput/data.csv`` (select ``CARRIER`` or ``CARRIER/RUN``), the walking trace with its
  ``radio_type`` column (select ``4G`` or ``5G``: those seconds in order, the other radio's cut out),
  and the driving traces with one column per carrier (select ``Sprint``, ``TMobile`` or ``Verizon``).
  A jump in ``seq_num`` is a gap: its seconds are an outage at 0 Mbit/s (``gap="outage"``) or
  hold the last rate (``gap="hold"``).
- ``mahimahi``: one line per 1500-byte delivery opportunity, its time in ms; the rate is counted
  in bins of ``bin_s`` seconds (1 s unless given).
- ``twocolumn``: ``time throughput`` per line, whitespace or comma separated (the cooked traces of
  the Norway HSDPA, FCC and Ghent 4G adaptive-streaming datasets): time in seconds and
  throughput in Mbit/s unless ``time_unit``/``rate_unit`` say otherwise.

Every reader shifts the time origin to 0 (and says so in the trace's notes when it did) and
refuses a malformed file with a :class:`TraceError` naming the file, the line and what is wrong.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal, get_args

from simulator.traces.model import Trace, TraceError

TraceFormat = Literal["auto", "csv", "5gophers", "mahimahi", "twocolumn"]
GapRule = Literal["outage", "hold"]
TimeUnit = Literal["s", "ms"]
RateUnit = Literal["mbps", "kbps", "bps"]
MAHIMAHI_PACKET_BYTES = 1500
_RATE_FACTOR = {"mbps": 1.0, "kbps": 1e-3, "bps": 1e-6}
_CARRIER_COLUMN = re.compile(r"^(\w+)_throughput_mbps$")


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the non-empty lines that are not ``#`` comments."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise TraceError(path, None, "not a text file") from None
    rows = [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1)]
    return [(i, line) for i, line in rows if line and not line.startswith("#")]


def _number(path: Path, line: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(path, line, f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise TraceError(path, line, f"{what} must be finite, got {text!r}")
    return value


def _finish(
    path: Path,
    rows: list[tuple[int, float, float]],
    fmt: str,
    name: str,
    notes: list[str],
) -> Trace:
    """Check (line, time, rate) rows and build the trace with its origin at 0."""
    if not rows:
        raise TraceError(path, None, "no data rows")
    for k, (line, t, r) in enumerate(rows):
        if r < 0:
            raise TraceError(path, line, f"throughput must be >= 0, got {r}")
        if k and t <= rows[k - 1][1]:
            raise TraceError(path, line, f"time must increase, got {t:g} after {rows[k - 1][1]:g}")
    if max(r for _, _, r in rows) <= 0:
        raise TraceError(path, None, "every throughput is 0: the link would never carry a byte")
    origin = rows[0][1]
    if origin != 0:
        notes.append(f"time origin shifted from {origin:g} s to 0")
    times = tuple(t - origin for _, t, _ in rows)
    return Trace(times, tuple(r for _, _, r in rows), name or path.stem, str(path), fmt, notes)


def read_csv_trace(path: Path, select: str | None = None, **_: object) -> Trace:
    """fleetsim's ``time_s,mbps`` CSV."""
    lines = _lines(path)
    if not lines:
        raise TraceError(path, None, "empty file")
    line, header = lines[0]
    if [h.strip() for h in header.split(",")] != ["time_s", "mbps"]:
        raise TraceError(path, line, f"header must be 'time_s,mbps', got {header!r}")
    rows = []
    for line, text in lines[1:]:
        cells = text.split(",")
        if len(cells) != 2:
            raise TraceError(path, line, f"expected 2 comma-separated values, got {len(cells)}")
        rows.append(
            (line, _number(path, line, cells[0], "time_s"), _number(path, line, cells[1], "mbps"))
        )
    return _finish(path, rows, "csv", "", [])


def read_5gophers(
    path: Path, select: str | None = None, gap: GapRule = "outage", **_: object
) -> Trace:
    """One series of a 5Gophers throughput CSV (see the module docstring for ``select``)."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        records = [(i, row) for i, row in enumerate(reader, start=2)]
    carriers = [m.group(1) for c in columns if (m := _CARRIER_COLUMN.match(c))]
    notes: list[str] = []
    if "seq_num" not in columns:
        raise TraceError(path, 1, f"not a 5Gophers throughput file: no seq_num column in {columns}")
    if carriers:  # the driving traces: one column per carrier
        if select not in carriers:
            raise TraceError(
                path, None, f"select one carrier column: {', '.join(carriers)} (got {select!r})"
            )
        column, keep = f"{select}_throughput_mbps", lambda row: True
        name = f"{path.stem}-{select}"
    elif "radio_type" in columns:  # the walking trace: 4G and 5G seconds
        radios = sorted({row["radio_type"] for _, row in records})
        if select is not None and select not in radios:
            raise TraceError(
                path, None, f"select a radio type: {', '.join(radios)} (got {select!r})"
            )
        column = "throughput_mbps"
        keep = (lambda row: True) if select is None else (lambda row: row["radio_type"] == select)
        name = path.stem + (f"-{select}" if select else "")
        if select:
            notes.append(f"only the {select} seconds, in order (the other radio's cut out)")
    elif "carrier" in columns and "throughput_mbps" in columns:  # 01-Throughput/data.csv
        carrier, _, run = (select or "").partition("/")
        known = sorted({row["carrier"] for _, row in records})
        if carrier not in known:
            raise TraceError(
                path, None, f"select CARRIER or CARRIER/RUN, carriers: {', '.join(known)}"
            )
        column = "throughput_mbps"

        def keep(row: dict[str, str]) -> bool:
            return row["carrier"] == carrier and (not run or row["run_num"] == run)

        name = f"{path.stem}-{select}"
        notes.append(f"runs of {carrier} concatenated in file order" if not run else "")
    else:
        raise TraceError(path, 1, f"no throughput column in {columns}")
    rows: list[tuple[int, float, float]] = []
    fill_gaps = not (select and "radio_type" in columns)  # a radio's seconds are concatenated
    last_seq: float | None = None
    gaps = 0
    for line, row in records:
        if not keep(row):
            continue
        seq = _number(path, line, row.get("seq_num", ""), "seq_num")
        rate = _number(path, line, row.get(column, ""), column)
        t = rows[-1][1] + 1.0 if rows else 0.0
        if fill_gaps and last_seq is not None and seq > last_seq + 1:
            missing = int(seq - last_seq - 1)
            gaps += missing
            fill = 0.0 if gap == "outage" else rows[-1][2]
            for _ in range(missing):
                rows.append((line, t, fill))
                t += 1.0
        rows.append((line, t, rate))
        last_seq = seq  # a new run restarts seq_num: no gap
    if gaps:
        notes.append(f"{gaps} missing seconds filled ({'0 Mbit/s' if gap == 'outage' else 'held'})")
    return _finish(path, rows, "5gophers", name, [n for n in notes if n])


def read_mahimahi(path: Path, bin_s: float | None = None, **_: object) -> Trace:
    """Delivery opportunities (ms, one 1500-byte packet each) counted in bins of ``bin_s``."""
    width = 1.0 if bin_s is None else float(bin_s)
    if not width > 0:
        raise ValueError(f"bin_s must be > 0, got {bin_s}")
    stamps = []
    for line, text in _lines(path):
        ms = _number(path, line, text, "a delivery time (ms)")
        if ms < 0 or ms != int(ms):
            raise TraceError(path, line, f"delivery times are whole ms >= 0, got {text!r}")
        if stamps and ms < stamps[-1][1]:
            raise TraceError(
                path, line, f"delivery times must not decrease ({text} after {stamps[-1][1]:g})"
            )
        stamps.append((line, ms))
    if not stamps:
        raise TraceError(path, None, "no delivery times")
    bins = int(stamps[-1][1] / 1000.0 // width) + 1
    counts = [0] * bins
    for _, ms in stamps:
        counts[int(ms / 1000.0 // width)] += 1
    factor = MAHIMAHI_PACKET_BYTES * 8 / width / 1e6
    rows = [(stamps[0][0], k * width, c * factor) for k, c in enumerate(counts)]
    return _finish(path, rows, "mahimahi", "", [f"{width:g} s bins of 1500-byte deliveries"])


def read_twocolumn(
    path: Path, time_unit: TimeUnit = "s", rate_unit: RateUnit = "mbps", **_: object
) -> Trace:
    """``time throughput`` lines (whitespace or comma separated)."""
    rows = []
    to_s = 1e-3 if time_unit == "ms" else 1.0
    for line, text in _lines(path):
        cells = [c for c in re.split(r"[\s,]+", text) if c]
        if len(cells) != 2:
            raise TraceError(path, line, f"expected 2 columns (time throughput), got {len(cells)}")
        t = _number(path, line, cells[0], "time") * to_s
        r = _number(path, line, cells[1], "throughput") * _RATE_FACTOR[rate_unit]
        rows.append((line, t, r))
    units = f"time in {time_unit}, throughput in {rate_unit}"
    return _finish(path, rows, "twocolumn", "", [units])


READERS: dict[str, Callable[..., Trace]] = {
    "csv": read_csv_trace,
    "5gophers": read_5gophers,
    "mahimahi": read_mahimahi,
    "twocolumn": read_twocolumn,
}


def detect_format(path: Path) -> str:
    """The format of ``path`` from its first data line (see the module docstring)."""
    lines = _lines(path)
    if not lines:
        raise TraceError(path, None, "empty file")
    line, first = lines[0]
    if first.replace(" ", "") == "time_s,mbps":
        return "csv"
    if "throughput_mbps" in first and "seq_num" in first:
        return "5gophers"
    cells = [c for c in re.split(r"[\s,]+", first) if c]
    try:
        numbers = [float(c) for c in cells]
    except ValueError:
        numbers = []
    if len(numbers) == 1 and numbers[0] == int(numbers[0]):
        return "mahimahi"
    if len(numbers) == 2:
        return "twocolumn"
    if not numbers and path.suffix.lower() == ".csv":
        return "csv"  # a header fleetsim's csv reader will name as wrong
    formats = ", ".join(f for f in get_args(TraceFormat) if f != "auto")
    raise TraceError(
        path, line, f"cannot tell the trace format from {first[:60]!r}; give one of {formats}"
    )


def read_trace(
    path: str | Path,
    format: TraceFormat = "auto",
    select: str | None = None,
    **options: object,
) -> Trace:
    """Read a bandwidth trace; ``format="auto"`` detects it (and the trace's notes say so)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TraceError(path, None, "no such file")
    if format not in get_args(TraceFormat):
        raise ValueError(
            f"unknown trace format {format!r}; allowed: {', '.join(get_args(TraceFormat))}"
        )
    fmt = detect_format(path) if format == "auto" else format
    trace = READERS[fmt](path, select=select, **options)
    if format == "auto":
        trace.notes.insert(0, f"format detected: {fmt}")
    return trace
