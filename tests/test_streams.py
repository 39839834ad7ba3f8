import numpy as np

from simulator.config import StreamConfig
from simulator.data.streams import build_stream


def _stream(device=0, seed=0, **kw):
    cfg = StreamConfig(**kw)
    return build_stream(cfg, device, 1000, np.random.default_rng([seed, 1, device]))


def test_continual_schedule_cycles_corruptions_in_segments_and_staggers_devices():
    kw = dict(
        corruptions=["gaussian_noise", "contrast", "clean"],
        samples_per_device=700,
        segment_samples=100,
        batch_size=50,
    )
    s0, s1 = _stream(0, **kw), _stream(1, **kw)
    assert list(s0.domain_ids[::100]) == [0, 1, 2, 0, 1, 2, 0]
    assert list(s1.domain_ids[::100]) == [1, 2, 0, 1, 2, 0, 1]
    assert s0.num_batches == 14 and s0.batch(13) == slice(650, 700)


def test_fixed_arrivals_make_batches_ready_at_their_last_sample():
    s = _stream(samples_per_device=128, batch_size=64, rate_hz=32.0, arrival="fixed")
    assert s.ready_s(0) == 64 / 32.0
    assert s.ready_s(1) == 128 / 32.0


def test_poisson_arrivals_have_the_configured_mean_rate_and_are_seeded():
    a = _stream(samples_per_device=20_000, rate_hz=10.0, arrival="poisson")
    b = _stream(samples_per_device=20_000, rate_hz=10.0, arrival="poisson")
    c = _stream(seed=1, samples_per_device=20_000, rate_hz=10.0, arrival="poisson")
    assert np.all(np.diff(a.arrival_s) > 0)
    assert abs(a.arrival_s[-1] / 20_000 - 0.1) < 0.003
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    assert not np.array_equal(a.arrival_s, c.arrival_s)


def test_random_schedule_always_switches_to_another_domain():
    cfg = StreamConfig(
        schedule="random",
        corruptions=["gaussian_noise", "contrast", "clean"],
        samples_per_device=5000,
        segment_samples=10,
    )
    s = build_stream(cfg, 0, 1000, np.random.default_rng(0))
    seq = s.domain_ids[::10]
    assert np.all(seq[1:] != seq[:-1])
    assert set(np.unique(seq)) == {0, 1, 2}


def test_indices_cover_the_dataset_before_repeating():
    s = _stream(samples_per_device=1500)
    assert len(np.unique(s.indices[:1000])) == 1000
