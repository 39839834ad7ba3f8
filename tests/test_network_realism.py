"""Network realism: latency distributions, outages, send queues, bandwidth traces, shared capacity."""

from pathlib import Path

import numpy as np
import pytest
import simpy

from simulator.config import ScenarioError, scenario_from_dict
from simulator.fleet.bandwidth import BandwidthTrace, read_trace_csv
from simulator.fleet.network import Delivery, Latency, Link, SharedCapacity, max_min_fair
from simulator.fleet.outages import GilbertElliott, OutageWindows
from tests.conftest import REPO, tiny_scenario_dict

MBIT = 125_000  # bytes in one megabit


def _send_all(env, sends):
    """Run ``[(link, nbytes, start_s), ...]``; return (delivery time, outcome) per send."""
    out = [None] * len(sends)

    def sender(i, link, nbytes, start_s):
        yield env.timeout(start_s)
        outcome = yield env.process(link.send(nbytes))
        out[i] = (env.now, outcome)

    for i, (link, nbytes, start_s) in enumerate(sends):
        env.process(sender(i, link, nbytes, start_s))
    env.run()
    return out


# -- max-min fair sharing ------------------------------------------------------------------------


def test_max_min_fair_three_flows_two_capped_by_their_own_links():
    # 9 Mbit/s among caps 1, 3, 100: the capped ones get their caps, the third the rest (5).
    assert max_min_fair([1.0, 3.0, 100.0], 9.0) == pytest.approx([1.0, 3.0, 5.0])
    # Caps 2, 10, 10 on 12: 2, then the remaining 10 split equally.
    assert max_min_fair([10.0, 2.0, 10.0], 12.0) == pytest.approx([5.0, 2.0, 5.0])
    # Unlimited capacity: everyone at its cap; nothing to share: nothing.
    assert max_min_fair([1.0, 3.0], float("inf")) == [1.0, 3.0]
    assert max_min_fair([], 5.0) == []


def test_shared_ingress_retimes_transfers_when_flows_end():
    # Caps 1, 3, 100 Mbit/s into a 9 Mbit/s ingress, 6 Mbit each at t=0 (hand-solved):
    # rates 1, 3, 5 -> C done at 1.2 s; then 1, 3 -> B done at 1.2 + 2.4/3 = 2.0 s; A at 6.0 s.
    env = simpy.Environment()
    ingress = SharedCapacity(env, 9.0)
    links = [Link(env, mbps, 0.0, shared=ingress) for mbps in (1.0, 3.0, 100.0)]
    out = _send_all(env, [(link, 6 * MBIT, 0.0) for link in links])
    assert [t for t, _ in out] == pytest.approx([6.0, 2.0, 1.2])
    assert ingress.bits_carried == pytest.approx(18e6)


def test_shared_ingress_retimes_transfers_when_a_flow_starts():
    # Two 10 Mbit transfers share 10 Mbit/s (5 each); at t=1 a 2 Mbit one joins: 10/3 each, it ends
    # at 1.6 s, when the first two have 3 Mbit left at 5 Mbit/s each: both end at 2.2 s.
    env = simpy.Environment()
    ingress = SharedCapacity(env, 10.0)
    links = [Link(env, 100.0, 0.01, shared=ingress) for _ in range(3)]
    out = _send_all(
        env, [(links[0], 10 * MBIT, 0.0), (links[1], 10 * MBIT, 0.0), (links[2], 2 * MBIT, 1.0)]
    )
    assert [t for t, _ in out] == pytest.approx([2.21, 2.21, 1.61])


def test_transfer_takes_bits_over_bandwidth_plus_latency_on_every_path():
    nbytes, mbps, latency_s = 300_000, 3.0, 0.025
    expected = nbytes * 8 / (mbps * 1e6) + latency_s
    for shared in (None, "unlimited", 100.0):
        env = simpy.Environment()
        pool = (
            None
            if shared is None
            else SharedCapacity(env, None if shared == "unlimited" else shared)
        )
        link = Link(env, mbps, latency_s, shared=pool)
        [(t, outcome)] = _send_all(env, [(link, nbytes, 0.0)])
        assert t == pytest.approx(expected, abs=1e-12) and outcome is Delivery.DELIVERED


# -- outages and the send queue ------------------------------------------------------------------


def test_outage_pauses_the_message_on_the_wire_and_loses_nothing():
    # 1 Mbit at 1 Mbit/s, down from 0.5 s to 2 s: half sent, paused 1.5 s, done at 2.5 s (+0.1 s).
    # The second message, queued behind it, takes the wire at 2.5 s: 3.5 s (+0.1 s).
    env = simpy.Environment()
    link = Link(env, 1.0, 0.1, outages=OutageWindows([(0.5, 2.0)]))
    out = _send_all(env, [(link, MBIT, 0.0), (link, MBIT, 0.0)])
    assert out == [
        (pytest.approx(2.6), Delivery.DELIVERED),
        (pytest.approx(3.6), Delivery.DELIVERED),
    ]
    assert link.messages_sent == 2 and link.messages_dropped == 0


def test_gilbert_elliott_outages_delay_but_deliver_every_message():
    env = simpy.Environment()
    outages = GilbertElliott(2.0, 1.0, np.random.default_rng(7))
    link = Link(env, 2.0, 0.01, outages=outages)
    out = _send_all(env, [(link, MBIT // 4, 0.5 * i) for i in range(40)])
    assert all(outcome is Delivery.DELIVERED for _, outcome in out)
    assert link.messages_sent == 40
    # 10 Mbit at 2 Mbit/s is 5 s of wire time; the outages make the last delivery later than that.
    down_s = outages.down_s(out[-1][0])
    assert down_s > 0 and out[-1][0] > 19.5 + 0.125
    # The process is reproducible from its seed and spends about 1/3 of the time down.
    again = GilbertElliott(2.0, 1.0, np.random.default_rng(7))
    assert again.down_s(out[-1][0]) == down_s
    assert GilbertElliott(2.0, 1.0, np.random.default_rng(1)).down_s(30_000) / 30_000 == (
        pytest.approx(1 / 3, abs=0.02)
    )


def test_full_send_queue_drops_and_counts():
    # Down for the first 10 s: the first message waits on the wire, one waits in the queue
    # (max 1), the next two are dropped on arrival.
    env = simpy.Environment()
    link = Link(env, 1.0, 0.0, outages=OutageWindows([(0.0, 10.0)]), max_queue=1)
    out = _send_all(env, [(link, 1000 * (i + 1), 0.1 * i) for i in range(4)])
    assert [outcome for _, outcome in out] == [
        Delivery.DELIVERED,
        Delivery.DELIVERED,
        Delivery.QUEUE_FULL,
        Delivery.QUEUE_FULL,
    ]
    assert out[2][0] == pytest.approx(0.2) and out[0][0] == pytest.approx(10.008)
    assert link.messages_dropped == 2 and link.bytes_dropped == 3000 + 4000
    assert link.messages_sent == 2 and link.bytes_sent == 1000 + 2000


def test_queue_timeout_drops_a_message_still_waiting():
    env = simpy.Environment()
    link = Link(env, 1.0, 0.0, outages=OutageWindows([(0.0, 10.0)]), queue_timeout_s=3.0)
    out = _send_all(env, [(link, 1000, 0.0), (link, 1000, 1.0)])
    assert out[0] == (pytest.approx(10.008), Delivery.DELIVERED)  # on the wire: never dropped
    assert out[1] == (pytest.approx(4.0), Delivery.TIMEOUT)
    assert link.messages_dropped == 1 and link.bytes_dropped == 1000


# -- bandwidth traces ----------------------------------------------------------------------------


def _trace_link(end="loop", offset_s=0.0):
    env = simpy.Environment()
    # 2 Mbit/s on [0, 1), 4 on [1, 3), 1 on [3, 5) (the last row lasts as long as the step before).
    trace = BandwidthTrace([0.0, 1.0, 3.0], [2.0, 4.0, 1.0], end=end, offset_s=offset_s)
    return env, Link(env, trace, 0.0)


@pytest.mark.parametrize(
    ("mbit", "end", "offset_s", "expected_s"),
    [
        (1, "loop", 0.0, 0.5),  # within the first row
        (11, "loop", 0.0, 4.0),  # 2 + 8 by t=3, then 1 Mbit at 1 Mbit/s
        (15, "loop", 0.0, 6.25),  # 12 by t=5; loop: 2 more by t=6; 1 at 4 Mbit/s
        (15, "hold", 0.0, 8.0),  # 12 by t=5; hold 1 Mbit/s: 3 more
        (9, "loop", 1.0, 3.0),  # starts at trace time 1: 8 by t=2, 1 more at 1 Mbit/s
    ],
)
def test_trace_is_replayed_exactly_across_rate_changes(mbit, end, offset_s, expected_s):
    env, link = _trace_link(end, offset_s)
    [(t, _)] = _send_all(env, [(link, mbit * MBIT, 0.0)])
    assert t == pytest.approx(expected_s, abs=1e-9)


def test_trace_rate_lookup_loops_or_holds():
    loop = BandwidthTrace([0.0, 1.0, 3.0], [2.0, 4.0, 1.0], end="loop")
    hold = BandwidthTrace([0.0, 1.0, 3.0], [2.0, 4.0, 1.0], end="hold")
    assert [loop.rate_mbps(t) for t in (0, 0.99, 1, 4.9, 5, 6, 13.5)] == [2, 2, 4, 1, 2, 4, 1]
    assert [hold.rate_mbps(t) for t in (4.9, 5, 100)] == [1, 1, 1]
    assert loop.next_change_s(3.5) == 5.0 and loop.next_change_s(5.0) == 6.0
    assert hold.next_change_s(3.5) == float("inf")
    assert loop.mean_mbps() == pytest.approx((2 + 8 + 2) / 5)


def test_shipped_traces_load_and_match_their_generator():
    from scenarios.traces.generate_traces import PROFILES, generate

    for name, params in PROFILES.items():
        times_s, mbps = read_trace_csv(REPO / "scenarios" / "traces" / f"{name}.csv")
        assert times_s == list(range(600))
        assert mbps == pytest.approx(generate(**params).tolist())
        assert min(mbps) > 0


# -- latency -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dist", ["normal", "lognormal"])
def test_latency_draws_are_deterministic_per_seed_and_never_negative(dist):
    def draws(seed, mean_s=0.02, jitter_s=0.03):
        latency = Latency(mean_s, jitter_s, dist, np.random.default_rng(seed))
        return np.array([latency.draw() for _ in range(5000)])

    a, b, c = draws(3), draws(3), draws(4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0
    if dist == "lognormal":  # exactly the configured mean and standard deviation
        assert a.mean() == pytest.approx(0.02, rel=0.1) and a.std() == pytest.approx(0.03, rel=0.25)
    else:  # clipping at 0 happens (about a quarter of the draws here) and never goes below
        assert 0.1 < np.mean(a == 0) < 0.4


def test_jittered_latency_keeps_delivery_in_order():
    env = simpy.Environment()
    link = Link(env, 100.0, Latency(0.05, 0.05, "lognormal", np.random.default_rng(0)))
    out = _send_all(env, [(link, 1000, 0.001 * i) for i in range(200)])
    times = [t for t, _ in out]
    assert times == sorted(times)
    assert len(set(np.round(np.diff(times), 9))) > 10  # the latencies do vary


# -- configuration -------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("override", "path", "hint"),
    [
        ("network.latency.dist=gamma", "network.latency.dist", "lognormal"),
        ("network.latency.jitter_ms=5", "network.latency", "normal or lognormal"),
        ("network.latency.jitter_ms=-1", "network.latency.jitter_ms", ">= 0"),
        ("network.outage.mean_bad_s=0", "network.outage.mean_bad_s", "> 0"),
        ("network.outage.often=1", "network.outage.often", "mean_good_s"),
        ("network.queue.max_messages=-1", "network.queue.max_messages", "greater than or equal"),
        ("network.queue.timeout_s=0", "network.queue.timeout_s", "greater than 0"),
        ("network.cloud_ingress_mbps=0", "network.cloud_ingress_mbps", "greater than 0"),
        ("network.trace_end=rewind", "network.trace_end", "loop"),
        ("network.uplink_trace=missing.csv", "network.uplink_trace", "no such file"),
        ("network.trace_offset_s=-2", "network.trace_offset_s", ">= 0"),
    ],
)
def test_bad_network_input_names_path_value_and_what_is_allowed(override, path, hint):
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(tiny_scenario_dict(), [override])
    [problem] = err.value.problems
    assert problem.path == path and hint in problem.message


def test_lognormal_latency_with_zero_mean_is_rejected():
    with pytest.raises(ScenarioError, match="lognormal needs latency_ms > 0"):
        scenario_from_dict(
            tiny_scenario_dict(), ["network.latency.dist=lognormal", "network.latency_ms=[0, 5]"]
        )


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("t,rate\n0,1\n", "header must be 'time_s,mbps'"),
        ("time_s,mbps\n0,2\n2,3\n1,3\n", "line 4: time must increase, got 1 after 2"),
        ("time_s,mbps\n0,2\n1,-3\n", "line 3: throughput must be >= 0"),
        ("time_s,mbps\n0,2\n1,fast\n", "line 3: mbps must be a number, got 'fast'"),
        ("time_s,mbps\n0,0\n1,0\n", "every throughput is 0"),
    ],
)
def test_bad_trace_file_is_reported_with_its_row(tmp_path, text, hint):
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(tiny_scenario_dict(), [f"network.uplink_trace={_write(tmp_path, text)}"])
    [problem] = err.value.problems
    assert problem.path == "network.uplink_trace" and hint in problem.message


def test_holding_a_trace_that_ends_at_zero_is_rejected(tmp_path):
    path = _write(tmp_path, "time_s,mbps\n0,2\n1,0\n")
    with pytest.raises(ScenarioError, match="last row's mbps must be > 0"):
        scenario_from_dict(
            tiny_scenario_dict(), ["network.trace_end=hold", f"network.uplink_trace={path}"]
        )


def test_default_network_section_resolves_to_todays_fixed_links():
    net = scenario_from_dict(tiny_scenario_dict()).network
    assert net.latency.dist == "constant" and net.latency.jitter_ms == 0
    assert net.outage is None and net.uplink_trace is None and net.downlink_trace is None
    assert net.cloud_ingress_mbps is None and net.cloud_egress_mbps is None
    assert net.queue.max_messages is None and net.queue.timeout_s is None


# -- a whole run ---------------------------------------------------------------------------------


def test_run_with_outages_shared_ingress_and_bounded_queue_accounts_for_every_upload():
    from simulator.engine import run_scenario

    # Upload every batch (no cloud learning, to keep it fast) over LTE-like uplinks that are down
    # three quarters of the time, into a 1.5 Mbit/s ingress, with a send queue of one.
    data = tiny_scenario_dict(
        network__outage={"mean_good_s": 1.0, "mean_bad_s": 3.0},
        network__cloud_ingress_mbps=1.5,
        network__queue={"max_messages": 1, "timeout_s": 1.5},
        network__latency={"dist": "lognormal", "jitter_ms": 5.0},
        network__uplink_trace=str(REPO / "scenarios" / "traces" / "lte_uplink.csv"),
        network__trace_offset_s=[0.0, 200.0],
        policy__name="all",
        cloud__adapter="none",
    )
    result = run_scenario(scenario_from_dict(data))
    s, ev = result.summary, result.events
    samples = ev[ev.kind == "sample"]
    sent = samples[samples.uploaded.astype(bool)].groupby(["device", "batch"]).size()
    # Never lost silently: every message is either delivered or counted as dropped.
    assert s["upload_messages"] + s["dropped_messages"] == len(sent)
    assert s["dropped_messages"] > 0
    drops = ev[ev.kind == "drop"]
    assert s["dropped_bytes"] == drops.bytes.sum() and s["dropped_samples"] == drops.samples.sum()
    assert sum(s["dropped_by_reason"].values()) == s["dropped_messages"]
    assert set(s["dropped_by_reason"]) <= {"queue_full", "timeout"}
    assert sum(d["dropped_messages"] for d in s["per_device"]) == s["dropped_messages"]
    assert s["uploaded_samples"] == ev[ev.kind == "upload"].samples.sum() + s["dropped_samples"]
    assert all(d["uplink_outage_s"] > 0 for d in s["per_device"])
    assert s["per_device"][0]["uplink_mbps"] == pytest.approx(7.61, abs=0.01)  # the trace's mean
