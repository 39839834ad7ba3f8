"""The real traces fleetsim ships (derived from 5Gophers, CC BY 4.0), and how a name is resolved.

5Gophers (A. Narayanan et al., "A First Look at Commercial 5G Performance on Smartphones",
The Web Conference 2020, doi:10.1145/3366423.3380169) measured mostly *downlink* throughput.
fleetsim's devices need uplinks, so each shipped uplink trace is a measured downlink series scaled
by an uplink/downlink ratio per radio (:data:`UPLINK_RATIO`): that ratio is an assumption, stated
in every trace's provenance file, not a measurement of this dataset. The RTT sets are measured
ICMP round-trip times as they are. :func:`derive` rebuilds every shipped file from a copy of the
dataset, bit for bit (tests check it where ``../shared`` exists).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator.traces.model import Trace
from simulator.traces.readers import read_trace
from simulator.traces.rtt import read_rtt

DATA = Path(__file__).with_name("data")
DATASET = "5Gophers 1.0"
PAPER = (
    'A. Narayanan et al., "A First Look at Commercial 5G Performance on Smartphones", '
    "The Web Conference (WWW) 2020, doi:10.1145/3366423.3380169"
)
LICENCE = "Creative Commons Attribution 4.0 International (CC BY 4.0)"
# Uplink/downlink throughput ratio assumed per radio. 4G LTE: uplinks commonly reach a quarter
# to a third of the downlink (FDD, 2x2 MIMO down vs 1 layer up); mmWave 5G in 2019: uplink traffic
# mostly stayed on the LTE anchor, a few percent of the mmWave downlink. Assumptions, not data.
UPLINK_RATIO = {"4G": 0.30, "5G": 0.05}
MOBILITY = "All-Carriers/03-User-Mobility"
PINGS = "mmWave-only/04-Ping-Traces (Latency Tests)"


@dataclass(frozen=True)
class Shipped:
    """A shipped trace or RTT set: its short name, what it is, and how it was derived."""

    name: str
    kind: str  # "uplink" (a bandwidth trace) or "rtt" (RTT samples)
    radio: str
    mobility: str
    description: str
    derivation: str
    derive: Callable[[Path], str]  # 5Gophers folder -> the file's text

    @property
    def path(self) -> Path:
        return DATA / (f"{self.name}.csv" if self.kind == "uplink" else f"{self.name}.txt")

    @property
    def provenance_path(self) -> Path:
        return DATA / f"{self.name}.md"


def _trace_text(trace: Trace, ratio: float, name: str) -> str:
    lines = [f"# {name}: derived from {DATASET} (CC BY 4.0); see {name}.md", "time_s,mbps"]
    lines += [f"{t:g},{r * ratio:.4f}" for t, r in zip(trace.times_s, trace.mbps, strict=True)]
    return "\n".join(lines) + "\n"


def _concat(traces: list[Trace]) -> Trace:
    times: list[float] = []
    rates: list[float] = []
    for trace in traces:
        start = times[-1] + 1.0 if times else 0.0
        times += [start + t for t in trace.times_s]
        rates += list(trace.mbps)
    return Trace(tuple(times), tuple(rates), "concat", "", "5gophers")


def _walking(radio: str) -> Callable[[Path], str]:
    def derive(root: Path) -> str:
        trace = read_trace(root / MOBILITY / "walking-trace.csv", "5gophers", select=radio)
        return _trace_text(trace, UPLINK_RATIO[radio], f"{radio.lower()}-walking-up")

    return derive


def _driving(root: Path) -> str:
    traces = [
        read_trace(root / MOBILITY / f"car-driving-trace-{k}.csv", "5gophers", select="Verizon")
        for k in (1, 2)
    ]
    return _trace_text(_concat(traces), UPLINK_RATIO["5G"], "5g-driving-up")


def _pings(radio: str) -> Callable[[Path], str]:
    def derive(root: Path) -> str:
        values: list[float] = []
        for path in sorted((root / PINGS).glob("ping-trace-*.log")):
            text = path.read_text()
            if f",{radio}," in text and ",US-East," in text:
                values += read_rtt(path, f"{radio}/US-East").tolist()
        head = f"# {radio.lower()}-rtt: RTT in ms, from {DATASET} (CC BY 4.0); see {radio.lower()}-rtt.md"
        return "\n".join([head, *(f"{v:g}" for v in values)]) + "\n"

    return derive


_WALK = (
    "`{mob}/walking-trace.csv`: the seconds whose `radio_type` is {radio}, in order (the other "
    "radio's seconds cut out), downlink Mbit/s x {ratio} (the assumed uplink/downlink ratio of {radio})."
)
SHIPPED: dict[str, Shipped] = {
    s.name: s
    for s in (
        Shipped(
            "4g-walking-up",
            "uplink",
            "4G",
            "walking",
            "4G LTE uplink, a walk in Minneapolis (2019)",
            _WALK.format(mob=MOBILITY, radio="4G", ratio=UPLINK_RATIO["4G"]),
            _walking("4G"),
        ),
        Shipped(
            "5g-walking-up",
            "uplink",
            "5G",
            "walking",
            "mmWave 5G uplink, the same walk's 5G seconds",
            _WALK.format(mob=MOBILITY, radio="5G", ratio=UPLINK_RATIO["5G"]),
            _walking("5G"),
        ),
        Shipped(
            "5g-driving-up",
            "uplink",
            "5G",
            "driving",
            "5G-carrier uplink while driving (Verizon column; the radio per second is not recorded)",
            f"`{MOBILITY}/car-driving-trace-1.csv` then `-2.csv`, column "
            "`Verizon_throughput_mbps` (the carrier whose 5G in 2019 was mmWave; the files do "
            "not record the radio per second), missing `seq_num` seconds as 0 Mbit/s outages, "
            f"downlink Mbit/s x {UPLINK_RATIO['5G']}.",
            _driving,
        ),
        Shipped(
            "4g-rtt",
            "rtt",
            "4G",
            "stationary",
            "ICMP RTTs over 4G to a US-East server",
            f"`{PINGS}/ping-trace-*.log`: rows with `network_type` 4G and `target_server` "
            "US-East, every probe, files in name order; RTTs in ms unchanged.",
            _pings("4G"),
        ),
        Shipped(
            "5g-rtt",
            "rtt",
            "5G",
            "stationary",
            "ICMP RTTs over mmWave 5G to a US-East server",
            f"`{PINGS}/ping-trace-*.log`: rows with `network_type` 5G and `target_server` "
            "US-East, every probe, files in name order; RTTs in ms unchanged.",
            _pings("5G"),
        ),
    )
}


def provenance(item: Shipped) -> str:
    """The provenance file's text: dataset, paper, licence and exactly how the file was derived."""
    return (
        f"# {item.name}\n\n{item.description}.\n\n"
        f"- Dataset: {DATASET} (`../shared/data/traces/5gophers`; "
        "https://github.com/SIGCOMM20-5Gophers/5Gophers-dataset)\n"
        f"- Paper: {PAPER}\n"
        f"- Licence: {LICENCE}. This file is a derived work; changes: {item.derivation}\n"
        "- Rebuilt by `simulator.traces.shipped.derive(<5gophers folder>, <out folder>)`.\n"
    )


def derive(root: str | Path, out: str | Path = DATA) -> list[Path]:
    """Write every shipped file and its provenance from a 5Gophers folder into ``out``."""
    root, out = Path(root), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for item in SHIPPED.values():
        for path, text in (
            (item.path, item.derive(root)),
            (item.provenance_path, provenance(item)),
        ):
            target = out / path.name
            target.write_text(text)
            written.append(target)
    return written


def shipped_trace(name: str) -> Trace:
    item = SHIPPED[name]
    if item.kind != "uplink":
        raise ValueError(f"{name!r} is an RTT set, not a bandwidth trace")
    trace = read_trace(item.path, "csv")
    return Trace(trace.times_s, trace.mbps, name, str(item.path), "csv", [item.description])


def shipped_rtt(name: str) -> np.ndarray:
    item = SHIPPED[name]
    if item.kind != "rtt":
        raise ValueError(f"{name!r} is a bandwidth trace, not an RTT set")
    return read_rtt(item.path)


def names(kind: str) -> list[str]:
    return [n for n, item in SHIPPED.items() if item.kind == kind]
