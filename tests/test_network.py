import pytest
import simpy

from simulator.fleet.network import Link, serialization_time_s, transfer_time_s


def test_transfer_time_is_bits_over_bandwidth_plus_latency():
    # 1,000,000 bytes at 8 Mbit/s: 8e6 bits / 8e6 bit/s = 1 s, plus 20 ms latency.
    assert transfer_time_s(1_000_000, 8.0, 0.020) == pytest.approx(1.020)
    assert serialization_time_s(125_000, 1.0) == pytest.approx(1.0)


def _deliver_times(sizes, bandwidth_mbps, latency_s, start_times=None):
    env = simpy.Environment()
    link = Link(env, bandwidth_mbps, latency_s)
    delivered = {}

    def sender(i, nbytes, at):
        yield env.timeout(at)
        yield env.process(link.send(nbytes))
        delivered[i] = env.now

    for i, nbytes in enumerate(sizes):
        env.process(sender(i, nbytes, (start_times or [0.0] * len(sizes))[i]))
    env.run()
    return delivered, link


def test_link_delivers_one_message_after_serialisation_and_latency():
    delivered, link = _deliver_times([250_000], 2.0, 0.05)
    assert delivered[0] == pytest.approx(250_000 * 8 / 2e6 + 0.05)
    assert link.bytes_sent == 250_000 and link.messages_sent == 1


def test_link_serialises_fifo_and_pipelines_latency():
    # Two 1 Mbit messages at 1 Mbit/s sent together: the second waits for the wire (1 s) but not
    # for the first one's propagation delay.
    delivered, _ = _deliver_times([125_000, 125_000], 1.0, 0.5)
    assert delivered[0] == pytest.approx(1.5)
    assert delivered[1] == pytest.approx(2.5)


def test_link_rejects_non_positive_bandwidth():
    env = simpy.Environment()
    with pytest.raises(ValueError, match="bandwidth"):
        Link(env, 0.0, 0.0)
