"""Real network traces: the readers (hand-made files and the 5Gophers files in ../shared), the
shipped traces and RTT sets, empirical latency, the uplink scale and the `fleetsim traces` CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import simpy
from typer.testing import CliRunner

from simulator.checks import scenario_warnings
from simulator.cli import app
from simulator.config import ScenarioError, scenario_from_dict
from simulator.fleet.links import FleetNetwork
from simulator.fleet.network import Latency
from simulator.traces import SHIPPED, TraceError, read_rtt, read_trace, resolve_rtt, resolve_trace
from simulator.traces.shipped import derive
from tests.conftest import SHARED, needs_shared, tiny_scenario_dict

FIVEGOPHERS = SHARED / "data" / "traces" / "5gophers"
needs_5gophers = needs_shared(FIVEGOPHERS)
runner = CliRunner()


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- readers on hand-made files ------------------------------------------------------------------


def test_csv_reader_shifts_the_origin_and_says_so(tmp_path):
    trace = read_trace(_write(tmp_path, "t.csv", "# a comment\ntime_s,mbps\n5,2\n6,4\n8,1\n"))
    assert trace.times_s == (0.0, 1.0, 3.0) and trace.mbps == (2.0, 4.0, 1.0)
    assert trace.format == "csv" and "format detected: csv" in trace.notes
    assert any("origin shifted from 5" in n for n in trace.notes)
    # rows hold 1, 2 and (the last step repeated) 2 s: mean (2 + 8 + 2) / 5
    assert trace.stats()["mean_mbps"] == pytest.approx(12 / 5)


def test_mahimahi_counts_1500_byte_deliveries_per_bin(tmp_path):
    # 3 deliveries in the first second, none in the second, 1 in the third
    trace = read_trace(_write(tmp_path, "up.mahi", "0\n10\n999\n2500\n"))
    assert trace.format == "mahimahi"
    per_packet = 1500 * 8 / 1e6
    assert trace.mbps == pytest.approx((3 * per_packet, 0.0, per_packet))
    assert trace.stats()["outage_share"] == pytest.approx(1 / 3)
    half = read_trace(_write(tmp_path, "b.mahi", "0\n10\n999\n2500\n"), "mahimahi", bin_s=0.5)
    assert half.mbps[0] == pytest.approx(2 * per_packet / 0.5)


def test_twocolumn_reads_time_throughput_with_stated_units(tmp_path):
    path = _write(tmp_path, "norway.log", "1000 500\n2000 1500\n3000 0\n")
    trace = read_trace(path, "twocolumn", time_unit="ms", rate_unit="kbps")
    assert trace.times_s == (0.0, 1.0, 2.0) and trace.mbps == pytest.approx((0.5, 1.5, 0.0))
    assert read_trace(_write(tmp_path, "fcc.txt", "0.0 2.5\n1.0 3.0\n")).format == "twocolumn"


def test_5gophers_reader_fills_gaps_and_selects_a_carrier_or_a_radio(tmp_path):
    driving = _write(
        tmp_path,
        "drive.csv",
        "protocol,num_tcp_conn,seq_num,Sprint_throughput_mbps,Verizon_throughput_mbps\n"
        "TCP,8,0,1,10\nTCP,8,1,2,20\nTCP,8,4,3,30\n",
    )
    trace = read_trace(driving, select="Verizon")
    assert trace.mbps == (10.0, 20.0, 0.0, 0.0, 30.0)  # seq 2 and 3 missing: outages
    assert read_trace(driving, select="Sprint", gap="hold").mbps == (1.0, 2.0, 2.0, 2.0, 3.0)
    with pytest.raises(TraceError, match="select one carrier column: Sprint, Verizon"):
        read_trace(driving)
    walking = _write(
        tmp_path,
        "walk.csv",
        "protocol,num_tcp_conn,seq_num,anonymized_mCid,radio_type,throughput_mbps\n"
        "TCP,8,1,3,4G,5\nTCP,8,2,3,5G,500\nTCP,8,3,3,4G,7\n",
    )
    assert read_trace(walking, select="4G").mbps == (5.0, 7.0)  # the 5G second cut out
    assert read_trace(walking).mbps == (5.0, 500.0, 7.0)


@pytest.mark.parametrize(
    ("name", "text", "fmt", "hint"),
    [
        (
            "a.csv",
            "time_s,mbps\n0,1\n1,x\n",
            "auto",
            "a.csv: line 3: mbps must be a number, got 'x'",
        ),
        ("b.csv", "time_s,mbps\n0,1\n0,2\n", "auto", "b.csv: line 3: time must increase"),
        ("c.csv", "time_s,mbps\n0,-1\n", "auto", "c.csv: line 2: throughput must be >= 0"),
        ("d.csv", "t,rate\n0,1\n", "auto", "d.csv: line 1: header must be 'time_s,mbps'"),
        ("e.csv", "time_s,mbps\n", "csv", "e.csv: no data rows"),
        ("f.txt", "", "auto", "f.txt: empty file"),
        ("g.mahi", "0\n20\n10\n", "mahimahi", "g.mahi: line 3: delivery times must not decrease"),
        ("h.mahi", "0\n1.5\n", "mahimahi", "h.mahi: line 2: delivery times are whole ms"),
        ("i.txt", "0 1 2\n", "twocolumn", "i.txt: line 1: expected 2 columns"),
        ("j.txt", "hello world\n", "auto", "j.txt: line 1: cannot tell the trace format"),
        ("k.csv", "time_s,mbps\n0,0\n1,0\n", "csv", "every throughput is 0"),
    ],
)
def test_a_malformed_file_is_refused_naming_file_line_and_what(tmp_path, name, text, fmt, hint):
    with pytest.raises(TraceError) as err:
        read_trace(_write(tmp_path, name, text), fmt)
    assert hint in str(err.value)


def test_rtt_files_plain_and_tables(tmp_path):
    assert read_rtt(_write(tmp_path, "r.txt", "# ms\nrtt_ms\n40\n60\n")).tolist() == [40, 60]
    pings = _write(
        tmp_path,
        "p.log",
        "protocol,network_type,ue_location,target_server,probe_num,rtt_in_ms\n"
        "ICMP,4G,A,US-East,1,50\nICMP,5G,A,US-East,1,20\nICMP,5G,A,US-West,1,80\n",
    )
    assert read_rtt(pings, "5G").tolist() == [20, 80]
    assert read_rtt(pings, "5G/US-East").tolist() == [20]
    with pytest.raises(TraceError, match="no RTT selected by '3G'"):
        read_rtt(pings, "3G")
    with pytest.raises(TraceError, match="line 2: an RTT in ms must be a number"):
        read_rtt(_write(tmp_path, "bad.txt", "40\nfast\n"))


# -- real files and the shipped set --------------------------------------------------------------


@needs_5gophers
def test_real_5gophers_files_read_as_published():
    walk = FIVEGOPHERS / "All-Carriers" / "03-User-Mobility" / "walking-trace.csv"
    four, five = read_trace(walk, select="4G"), read_trace(walk, select="5G")
    assert (len(four.mbps), len(five.mbps)) == (315, 288)  # the file's 4G and 5G seconds
    assert four.stats()["mean_mbps"] == pytest.approx(159.2067, abs=1e-3)
    drive = read_trace(
        FIVEGOPHERS / "All-Carriers" / "03-User-Mobility" / "car-driving-trace-1.csv",
        select="Verizon",
    )
    assert len(drive.mbps) == 126 and "6 missing seconds" in " ".join(drive.notes)
    rtts = read_rtt(FIVEGOPHERS / "All-Carriers" / "02-Round-Trip-Times" / "data.csv", "VERIZON")
    assert len(rtts) == 240


@needs_5gophers
def test_shipped_files_are_rebuilt_bit_for_bit_from_5gophers(tmp_path):
    derive(FIVEGOPHERS, tmp_path)
    for item in SHIPPED.values():
        for path in (item.path, item.provenance_path):
            assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name


def test_shipped_traces_and_rtts_load_with_provenance():
    assert {n for n, i in SHIPPED.items() if i.kind == "uplink"} == {
        "4g-walking-up",
        "5g-walking-up",
        "5g-driving-up",
    }
    for name, item in SHIPPED.items():
        text = item.provenance_path.read_text()
        assert "CC BY 4.0" in text and "doi:10.1145/3366423.3380169" in text
        if item.kind == "uplink":
            stats = resolve_trace(name).stats()
            assert 1 < stats["mean_mbps"] < 100 and stats["duration_s"] > 200
        else:
            assert 40 < resolve_rtt(name).mean() < 70
    assert resolve_trace("4g-walking-up").stats()["mean_mbps"] == pytest.approx(47.762, abs=1e-3)


# -- the scenario: names, scale, empirical latency -----------------------------------------------


def _network(changes: list[str]) -> FleetNetwork:
    scenario = scenario_from_dict(tiny_scenario_dict(), changes)
    return FleetNetwork(simpy.Environment(), scenario.network, seed=scenario.seed)


def test_uplink_scale_multiplies_trace_and_constant_rates():
    plain = _network(["network.uplink_trace=5g-walking-up"]).uplink(0)
    scaled = _network(["network.uplink_trace=5g-walking-up", "network.uplink_scale=0.01"]).uplink(0)
    for t in (0.0, 7.5, 100.0):
        assert scaled.bandwidth.rate_mbps(t) == pytest.approx(plain.bandwidth.rate_mbps(t) * 0.01)
    const = _network(["network.uplink_mbps=4", "network.uplink_scale=0.25"]).uplink(0)
    assert const.bandwidth.rate_mbps(0.0) == 1.0
    # by hand: 125,000 bytes = 1 Mbit at 1 Mbit/s take 1 s (plus the latency)
    env = const.env
    env.process(const.send(125_000 - 0))
    env.run()
    assert env.now == pytest.approx(1.0 + const.latency.mean_s)


def test_empirical_latency_draws_half_rtts_deterministically_per_seed():
    net = ["network.latency.dist=empirical", "network.latency.samples=5g-rtt"]
    link_a, link_b = _network(net).uplink(3), _network(net).uplink(3)
    a = [link_a.latency.draw() for _ in range(2000)]
    assert a == [link_b.latency.draw() for _ in range(2000)]
    halves = resolve_rtt("5g-rtt") / 2000.0
    assert set(a) <= set(halves.tolist())
    assert np.mean(a) == pytest.approx(halves.mean(), rel=0.03)
    assert link_a.latency.mean_s == pytest.approx(halves.mean())
    other = _network(net).uplink(4)
    assert [other.latency.draw() for _ in range(50)] != a[:50]  # its own stream per device
    scenario = scenario_from_dict(tiny_scenario_dict(), net)
    assert any("latency_ms 10.0 is not used" in w for w in scenario_warnings(scenario))


def test_latency_class_refuses_empirical_without_samples():
    with pytest.raises(ValueError, match="needs samples"):
        Latency(0.0, 0.0, "empirical", np.random.default_rng(0))
    with pytest.raises(ValueError, match="need dist empirical"):
        Latency(0.01, 0.0, "constant", None, samples_s=np.array([0.01]))


@pytest.mark.parametrize(
    ("changes", "path", "hint"),
    [
        (["network.latency.dist=empirical"], "network.latency", "needs samples"),
        (["network.latency.samples=4g-rtt"], "network.latency", "need dist empirical"),
        (
            ["network.latency.dist=empirical", "network.latency.samples=nope.txt"],
            "network.latency.samples",
            "no such file, and not a shipped RTT set (4g-rtt, 5g-rtt)",
        ),
        (["network.uplink_trace=4g-rtt"], "network.uplink_trace", "RTT set, not a bandwidth trace"),
        (["network.uplink_scale=0"], "network.uplink_scale", "greater than 0"),
        (["network.trace_format=pcap"], "network.trace_format", "mahimahi"),
    ],
)
def test_bad_trace_settings_name_the_field(changes, path, hint):
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(tiny_scenario_dict(), changes)
    [problem] = err.value.problems
    assert problem.path == path and hint in problem.message, problem


def test_a_list_of_traces_and_rtt_sets_is_cycled_over_devices():
    network = _network(
        [
            "network.uplink_trace=[4g-walking-up, 5g-driving-up]",
            "network.latency.dist=empirical",
            "network.latency.samples=[4g-rtt, 5g-rtt]",
        ]
    )
    means = [network.uplink(d).bandwidth.mean_mbps() for d in range(3)]
    assert means[0] == means[2] != means[1]
    assert network.uplink(1).latency.mean_s == pytest.approx(resolve_rtt("5g-rtt").mean() / 2000)
    assert math.isfinite(means[1])


# -- CLI ---------------------------------------------------------------------------------------


def test_traces_show_prints_statistics_and_plots(tmp_path):
    out = tmp_path / "plots" / "drive.png"
    result = runner.invoke(
        app, ["traces", "show", "5g-driving-up", "--scale", "0.001", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "outage share" in result.output and "10.3 %" in result.output
    assert out.is_file() and out.stat().st_size > 1000
    bad = runner.invoke(app, ["traces", "show", str(tmp_path / "missing.csv")])
    assert bad.exit_code == 2 and "no such file" in bad.output


def test_list_traces_names_every_shipped_trace():
    result = runner.invoke(app, ["list", "traces"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in SHIPPED:
        assert name in result.output
