"""Stream schedules (mixed, gradual, device groups), label shift (Dirichlet class priors, the
correlated class order) and their validation."""

import numpy as np
import pytest

from simulator.checks import scenario_warnings
from simulator.config import ScenarioError, StreamConfig, scenario_from_dict
from simulator.data.streams import (
    Domain,
    build_stream,
    correlated_order,
    stream_domains,
)
from simulator.engine import run_scenario
from tests.conftest import tiny_scenario_dict

THREE = ["gaussian_noise", "contrast", "fog"]


def _stream(device=0, seed=0, dataset_labels=None, dataset_size=1000, **kw):
    """Device ``device``'s stream of ``StreamConfig(**kw)`` (``labels=`` is the config's label
    shift; ``dataset_labels`` the dataset's labels), seeded as a run seeds it."""
    return build_stream(
        StreamConfig(**kw),
        device,
        dataset_size if dataset_labels is None else len(dataset_labels),
        np.random.default_rng([seed, 1, device]),
        labels=dataset_labels,
        label_rng=np.random.default_rng([seed, 4, device]),
    )


def _segments(stream, segment):
    """(corruption, severity) of each segment of a stream."""
    return [
        (stream.domains[d].corruption, stream.domains[d].severity)
        for d in stream.domain_ids[::segment]
    ]


def _balanced_labels(classes=10, per_class=100):
    return np.repeat(np.arange(classes), per_class)


# --- the schedules as they were: bit for bit -----------------------------------------------------


def _reference_stream(config, device, dataset_size, rng):
    """The pre-groups algorithm of continual and random streams (indices, domains, arrivals)."""
    n = config.samples_per_device
    reps = -(-n // dataset_size)
    indices = np.concatenate([rng.permutation(dataset_size) for _ in range(reps)])[:n]
    segments = -(-n // config.segment_samples)
    k = len(config.corruptions)
    if config.schedule == "continual":
        start = device % k if config.stagger else 0
        seq = [(start + s) % k for s in range(segments)]
    else:
        current = int(rng.integers(k))
        seq = [current]
        for _ in range(segments - 1):
            if k > 1:
                current = (current + int(rng.integers(1, k))) % k
            seq.append(current)
    ids = np.repeat(np.asarray(seq, dtype=np.int16), config.segment_samples)[:n]
    rate = (
        config.rate_hz[device % len(config.rate_hz)]
        if isinstance(config.rate_hz, list)
        else (config.rate_hz)
    )
    if config.arrival == "fixed":
        arrival = np.arange(1, n + 1, dtype=np.float64) / rate
    else:
        arrival = np.cumsum(rng.exponential(1.0 / rate, size=n))
    return indices, ids, arrival


@pytest.mark.parametrize("schedule", ["continual", "random"])
@pytest.mark.parametrize("stagger", [True, False])
@pytest.mark.parametrize("arrival", ["fixed", "poisson"])
def test_continual_and_random_streams_are_bit_identical_to_the_earlier_algorithm(
    schedule, stagger, arrival
):
    config = StreamConfig(
        schedule=schedule,
        stagger=stagger,
        arrival=arrival,
        corruptions=THREE,
        samples_per_device=1500,
        segment_samples=100,
        rate_hz=[8.0, 32.0],
    )
    for device in range(3):
        stream = build_stream(config, device, 700, np.random.default_rng([7, 1, device]))
        indices, ids, arrival_s = _reference_stream(
            config, device, 700, np.random.default_rng([7, 1, device])
        )
        np.testing.assert_array_equal(stream.indices, indices)
        np.testing.assert_array_equal(stream.domain_ids, ids)
        np.testing.assert_array_equal(stream.arrival_s, arrival_s)
        assert stream.domains == [Domain(c, 5) for c in THREE]
        assert stream.sample_columns(slice(0, 10)) == {}


# --- mixed ---------------------------------------------------------------------------------------


def test_mixed_draws_every_sample_domain_uniformly_and_independently():
    s = _stream(schedule="mixed", corruptions=THREE, samples_per_device=30_000)
    counts = np.bincount(s.domain_ids, minlength=3) / len(s)
    np.testing.assert_allclose(counts, 1 / 3, atol=0.01)
    same_as_previous = np.mean(s.domain_ids[1:] == s.domain_ids[:-1])
    assert abs(same_as_previous - 1 / 3) < 0.01  # no segments: as often as chance
    assert [d.key for d in s.domains] == ["gaussian_noise/5", "contrast/5", "fog/5"]


def test_mixed_is_seeded_per_device():
    a, b = (
        _stream(schedule="mixed", corruptions=THREE),
        _stream(schedule="mixed", corruptions=THREE),
    )
    c = _stream(device=1, schedule="mixed", corruptions=THREE)
    np.testing.assert_array_equal(a.domain_ids, b.domain_ids)
    assert not np.array_equal(a.domain_ids, c.domain_ids)


def test_mixed_needs_no_segment_warning():
    data = tiny_scenario_dict(stream__schedule="mixed", stream__batch_size=64)
    data["stream"]["segment_samples"] = 32
    assert not any("segment_samples" in w for w in scenario_warnings(scenario_from_dict(data)))


def _segment_warnings(**stream):
    data = tiny_scenario_dict(stream__batch_size=64)
    data["stream"].update(stream)
    return [w for w in scenario_warnings(scenario_from_dict(data)) if "segment_samples" in w]


def test_segment_warning_looks_at_each_group():
    two = dict(devices=[0], corruptions=["fog", "snow"])
    # the stream's own segments are long enough; group 1's are not, and only group 1 is named
    found = _segment_warnings(
        segment_samples=64,
        groups=[two, {**two, "devices": [1], "segment_samples": 32}],
    )
    assert found == [
        "stream.batch_size 64 is larger than stream.groups[1].segment_samples 32 (stream group "
        "1): every batch mixes images of two or more domains"
    ]
    # a group of one domain has no boundary to straddle; one inheriting short segments is named
    # with the stream's key
    found = _segment_warnings(
        segment_samples=32,
        groups=[{**two, "corruptions": ["fog"]}, {**two, "devices": [1]}],
    )
    assert found == [
        "stream.batch_size 64 is larger than stream.segment_samples 32 (stream group 1): every "
        "batch mixes images of two or more domains"
    ]


def test_segment_warning_for_a_gradual_walk_of_one_corruption():
    found = _segment_warnings(schedule="gradual", corruptions=["fog"], segment_samples=32)
    assert found == [
        "stream.batch_size 64 is larger than stream.segment_samples 32: every batch mixes "
        "images of two or more severities"
    ]
    assert not _segment_warnings(corruptions=["fog"], segment_samples=32)


# --- gradual -------------------------------------------------------------------------------------


def test_gradual_starts_at_the_peak_then_walks_every_corruption_up_and_down_as_cotta():
    s = _stream(
        schedule="gradual", corruptions=THREE, segment_samples=10, samples_per_device=10 * 30
    )
    severities = [sev for _, sev in _segments(s, 10)]
    corruptions = [c for c, _ in _segments(s, 10)]
    walk = [1, 2, 3, 4, 5, 4, 3, 2, 1]
    assert severities == [5, 4, 3, 2, 1, *walk, *walk, *walk[:7]]
    assert (
        corruptions
        == ["gaussian_noise"] * 5 + ["contrast"] * 9 + ["fog"] * 9 + ["gaussian_noise"] * 7
    )  # the order cycles, and a corruption met again walks the whole walk


def test_gradual_low_start_walks_the_whole_walk_for_the_first_corruption_too():
    s = _stream(
        schedule="gradual",
        gradual_start="low",
        corruptions=THREE,
        segment_samples=10,
        samples_per_device=10 * 18,
    )
    assert [sev for _, sev in _segments(s, 10)] == [1, 2, 3, 4, 5, 4, 3, 2, 1] * 2
    assert [c for c, _ in _segments(s, 10)][8:10] == ["gaussian_noise", "contrast"]


def test_gradual_walks_up_to_severity_or_an_explicit_walk():
    peak3 = _stream(schedule="gradual", severity=3, corruptions=["fog"], segment_samples=5)
    assert [s for _, s in _segments(peak3, 5)][:8] == [3, 2, 1, 1, 2, 3, 2, 1]
    walk = _stream(
        schedule="gradual",
        severities=[2, 4],
        gradual_start="low",
        corruptions=["fog"],
        segment_samples=5,
    )
    assert [s for _, s in _segments(walk, 5)][:6] == [2, 4, 2, 4, 2, 4]
    assert [d.key for d in walk.domains] == ["fog/2", "fog/4"]


def test_gradual_staggers_the_corruption_order_and_counts_clean_as_one_domain():
    kw = dict(
        schedule="gradual", corruptions=["clean", "fog"], segment_samples=10, samples_per_device=60
    )
    s1 = _stream(device=1, **kw)
    assert [c for c, _ in _segments(s1, 10)] == ["fog"] * 5 + ["clean"]
    keys = {s1.domains[d].key for d in s1.domain_ids}
    assert keys == {"clean", "fog/5", "fog/4", "fog/3", "fog/2", "fog/1"}
    assert s1.severities()[-1] == 0  # clean has no severity


def test_stream_domains_of_gradual_hold_every_severity_of_the_walk():
    config = StreamConfig(schedule="gradual", severity=3, corruptions=["fog", "snow"])
    assert [d.key for d in stream_domains(config)] == [
        "fog/1",
        "fog/2",
        "fog/3",
        "snow/1",
        "snow/2",
        "snow/3",
    ]


# --- groups --------------------------------------------------------------------------------------

GROUPS = dict(
    corruptions=THREE,
    severity=5,
    segment_samples=100,
    samples_per_device=600,
    groups=[
        {"devices": [0, 2], "corruptions": ["fog", "snow"], "severity": 2, "segment_samples": 50},
        {"devices": [1, 3], "stagger": True},
        {"devices": [4], "schedule": "gradual", "severity": 2, "segment_samples": 100},
    ],
)


def test_groups_give_their_devices_their_own_order_severity_and_timing():
    d0, d2 = _stream(0, **GROUPS), _stream(2, **GROUPS)
    assert _segments(d0, 50)[:4] == [("fog", 2), ("snow", 2), ("fog", 2), ("snow", 2)]
    np.testing.assert_array_equal(d0.domain_ids, d2.domain_ids)  # one environment, no stagger
    d1, d3 = _stream(1, **GROUPS), _stream(3, **GROUPS)
    assert [c for c, _ in _segments(d1, 100)][:3] == THREE  # the stream's keys, position 0
    assert [c for c, _ in _segments(d3, 100)][:3] == ["contrast", "fog", "gaussian_noise"]
    d4 = _stream(4, **GROUPS)
    assert _segments(d4, 100)[:4] == [
        ("gaussian_noise", 2),
        ("gaussian_noise", 1),
        ("contrast", 1),
        ("contrast", 2),
    ]
    assert [s.sample_columns(slice(0, 4)) for s in (d0, d1, d4)] == [
        {"stream_group": 0},
        {"stream_group": 1},
        {"stream_group": 2},
    ]


def test_stream_domains_with_groups_are_the_union_of_the_groups():
    keys = [d.key for d in stream_domains(StreamConfig(**GROUPS))]
    assert keys == [
        "fog/2",
        "snow/2",
        "gaussian_noise/5",
        "contrast/5",
        "fog/5",
        "gaussian_noise/1",
        "gaussian_noise/2",
        "contrast/1",
        "contrast/2",
        "fog/1",
    ]


# --- label shift: class priors -------------------------------------------------------------------


def _priors(alpha, devices, classes=10):
    labels = _balanced_labels(classes, 20)
    return np.array(
        [
            _stream(
                d, dataset_labels=labels, samples_per_device=8, labels={"alpha": alpha}
            ).class_priors
            for d in range(devices)
        ]
    )


def test_class_priors_have_the_dirichlet_mean_and_concentration():
    alpha, k = 0.5, 10
    priors = _priors(alpha, 3000, k)
    np.testing.assert_allclose(priors.sum(axis=1), 1.0)
    np.testing.assert_allclose(priors.mean(axis=0), 1 / k, atol=0.01)
    # Var p_i = (1/k)(1 - 1/k) / (k alpha + 1) for a symmetric Dirichlet
    expected_var = (1 / k) * (1 - 1 / k) / (k * alpha + 1)
    np.testing.assert_allclose(priors.var(axis=0), expected_var, rtol=0.12)


def test_small_alpha_gives_each_device_a_dominant_class_and_large_alpha_is_near_uniform():
    assert np.median(_priors(0.01, 200).max(axis=1)) > 0.9
    near_iid = _priors(10_000.0, 50)
    assert np.abs(near_iid - 0.1).max() < 0.01


def test_each_sample_class_follows_its_device_prior():
    labels = _balanced_labels(10, 50)
    s = _stream(dataset_labels=labels, samples_per_device=40_000, labels={"alpha": 1.0})
    seen = np.bincount(labels[s.indices], minlength=10) / len(s)
    np.testing.assert_allclose(seen, s.class_priors, atol=0.01)
    np.testing.assert_array_equal(
        s.class_prior, s.class_priors[labels[s.indices]].astype(np.float32)
    )
    assert s.class_prior.dtype == np.float32


def test_a_class_prior_cycles_through_the_images_of_each_class_before_repeating_one():
    labels = _balanced_labels(4, 30)
    s = _stream(dataset_labels=labels, samples_per_device=400, labels={"alpha": 5.0})
    for c in range(4):
        taken = s.indices[labels[s.indices] == c]
        first = taken[: min(30, len(taken))]
        assert len(np.unique(first)) == len(first)


def test_label_shift_changes_no_domain_or_arrival():
    labels = _balanced_labels(10, 100)
    kw = dict(schedule="random", arrival="poisson", corruptions=THREE, segment_samples=50)
    plain = _stream(dataset_labels=labels, **kw)
    shifted = _stream(dataset_labels=labels, labels={"alpha": 0.1, "correlation": 0.1}, **kw)
    np.testing.assert_array_equal(plain.domain_ids, shifted.domain_ids)
    np.testing.assert_array_equal(plain.arrival_s, shifted.arrival_s)
    assert not np.array_equal(plain.indices, shifted.indices)


# --- label shift: the correlated order -----------------------------------------------------------


def _runs(labels):
    return 1 + int(np.count_nonzero(labels[1:] != labels[:-1]))


def test_correlated_order_is_a_permutation_with_one_run_per_class_in_each_slot():
    rng = np.random.default_rng(3)
    block = rng.integers(0, 10, size=1000)
    order, slot = correlated_order(block, 1.0, 10, np.random.default_rng(0))
    np.testing.assert_array_equal(np.sort(order), np.arange(1000))
    assert np.all(np.diff(slot) >= 0)
    for s in np.unique(slot):
        in_slot = block[order][slot == s]
        assert _runs(in_slot) == len(np.unique(in_slot))


def test_one_slot_sorts_the_block_into_one_run_per_class():
    block = np.array([2, 0, 1, 2, 0, 1, 2, 2])
    order, slot = correlated_order(block, 0.1, 1, np.random.default_rng(0))
    assert _runs(block[order]) == 3 and set(slot) == {0}
    # within a class the samples keep their order
    for c in range(3):
        kept = order[block[order] == c]
        assert list(kept) == sorted(kept)


def test_small_concentration_gives_long_runs_and_large_concentration_spreads_each_class():
    labels = _balanced_labels(10, 100)
    kw = dict(samples_per_device=1000, segment_samples=1000)
    iid = _stream(dataset_labels=labels, **kw)
    tight = _stream(dataset_labels=labels, labels={"correlation": 0.01}, **kw)
    loose = _stream(dataset_labels=labels, labels={"correlation": 1000.0}, **kw)
    assert _runs(labels[iid.indices]) > 800  # random order: a change 9 times in 10
    assert _runs(labels[tight.indices]) <= 25  # one or two runs per class
    runs_loose = _runs(labels[loose.indices])
    assert 80 <= runs_loose <= 100  # every class in each of the 10 slots
    # each class spread evenly over the slots: about 10 samples of it per slot
    per_slot = np.array(
        [np.bincount(loose.label_slot[labels[loose.indices] == c], minlength=10) for c in range(10)]
    )
    assert per_slot.min() >= 7 and per_slot.max() <= 13


def test_correlated_blocks_follow_the_domain_segments_and_number_slots_across_the_stream():
    labels = _balanced_labels(10, 100)
    s = _stream(
        dataset_labels=labels,
        samples_per_device=600,
        segment_samples=200,
        labels={"correlation": 0.1, "slots": 4},
    )
    assert list(np.unique(s.label_slot[:200])) == [0, 1, 2, 3]
    assert s.label_slot[200] == 4 and s.label_slot[-1] == 11
    # a block holds the same images as without correlation, reordered
    plain = _stream(dataset_labels=labels, samples_per_device=600, segment_samples=200)
    for start in range(0, 600, 200):
        rows = slice(start, start + 200)
        np.testing.assert_array_equal(np.sort(s.indices[rows]), np.sort(plain.indices[rows]))


def test_mixed_lays_one_correlated_block_over_the_whole_stream_unless_told():
    labels = _balanced_labels(10, 100)
    whole = _stream(
        dataset_labels=labels, schedule="mixed", samples_per_device=500, labels={"correlation": 0.1}
    )
    assert whole.label_slot.max() == 9
    blocks = _stream(
        dataset_labels=labels,
        schedule="mixed",
        samples_per_device=500,
        labels={"correlation": 0.1, "block_samples": 100},
    )
    assert blocks.label_slot.max() == 49


def test_label_shift_is_deterministic_per_seed_and_device():
    labels = _balanced_labels(10, 100)
    kw = dict(dataset_labels=labels, labels={"alpha": 0.3, "correlation": 0.1})
    a, b = _stream(0, 0, **kw), _stream(0, 0, **kw)
    for field in ("indices", "class_prior", "label_slot", "class_priors"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.class_priors, _stream(0, 1, **kw).class_priors)
    assert not np.array_equal(a.class_priors, _stream(1, 0, **kw).class_priors)


def test_devices_without_a_shift_record_nan_and_minus_one_when_another_group_has_one():
    labels = _balanced_labels(10, 50)
    kw = dict(
        dataset_labels=labels,
        samples_per_device=100,
        groups=[
            {"devices": [0], "labels": {"alpha": 0.5, "correlation": 0.5}},
            {"devices": [1]},
        ],
    )
    shifted, plain = _stream(0, **kw), _stream(1, **kw)
    assert set(shifted.sample_columns(slice(0, 5))) == {"stream_group", "class_prior", "label_slot"}
    columns = plain.sample_columns(slice(0, 5))
    assert np.isnan(columns["class_prior"]).all() and (columns["label_slot"] == -1).all()


def test_label_shift_without_labels_is_an_error():
    with pytest.raises(ValueError, match="needs labels"):
        build_stream(StreamConfig(labels={"alpha": 1.0}), 0, 100, np.random.default_rng(0))


# --- the event record ----------------------------------------------------------------------------


def test_a_run_records_each_sample_group_class_prior_and_slot():
    data = tiny_scenario_dict(policy={"name": "none"})
    data["cloud"]["adapter"] = "none"
    data["stream"]["labels"] = {"alpha": 0.2, "correlation": 0.1}
    data["stream"]["groups"] = [{"devices": [0]}, {"devices": [1], "corruptions": ["fog"]}]
    scenario = scenario_from_dict(data)
    events = run_scenario(scenario).events
    samples = events[events["kind"] == "sample"]
    assert samples.groupby("device")["stream_group"].unique().tolist() == [[0], [1]]
    assert set(samples[samples["device"] == 1]["domain"]) == {"fog/5"}
    from simulator.build import build_device_stream
    from simulator.data.datasets import create_dataset

    dataset = create_dataset("synthetic", split="test", seed=0, size=512)
    for device, rows in samples.groupby("device"):
        stream = build_device_stream(scenario, device, dataset.labels)
        rows = rows.sort_values(["batch", "sim_time_s"], kind="stable")
        np.testing.assert_array_equal(rows["index"], stream.indices)
        np.testing.assert_array_equal(rows["class_prior"], stream.class_prior)
        np.testing.assert_array_equal(rows["label_slot"], stream.label_slot)
        priors = stream.class_priors[rows["label"].to_numpy()]
        np.testing.assert_allclose(rows["class_prior"], priors, rtol=1e-6)


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "fleet", "expected"),
    [
        (
            {"schedule": "gradual", "severity": 1},
            4,
            "stream.severity = 1: schedule gradual walks from severity 1 up to severity and back",
        ),
        (
            {"schedule": "gradual", "severities": [4]},
            4,
            "stream.severities = [4]: schedule gradual needs a walk of two or more different",
        ),
        (
            {"schedule": "gradual", "severities": [1, 5], "severity": 3},
            4,
            "stream.severity = 3: give either severity (gradual walks 1 up to it and back) or",
        ),
        (
            {"schedule": "mixed", "severities": [1, 5]},
            4,
            "stream.severities = [1, 5]: is the severity walk of schedule gradual; schedule mixed",
        ),
        (
            {"gradual_start": "low"},
            4,
            "stream.gradual_start = 'low': has no effect with schedule continual (only gradual)",
        ),
        ({"schedule": "sorted"}, 4, "stream.schedule = 'sorted': Input should be 'continual', "),
        ({"severities": [0, 6]}, 4, "stream.severities = [0, 6]: severities are 1-5, got 0"),
        ({"labels": {"alpha": 0}}, 4, "stream.labels.alpha = 0: must be > 0 and finite"),
        ({"labels": {"alpha": -2.0}}, 4, "stream.labels.alpha = -2.0: must be > 0 and finite"),
        ({"labels": {"correlation": 0}}, 4, "stream.labels.correlation = 0: must be > 0"),
        (
            {"labels": {"block_samples": 64}},
            4,
            "stream.labels.block_samples = 64: has no effect without labels.correlation",
        ),
        (
            {"groups": [{"devices": [0, 1]}, {"devices": [1, 2, 3]}]},
            4,
            "stream.groups.1.devices = [1, 2, 3]: device 1 is also in group 0",
        ),
        (
            {"groups": [{"devices": [0, 1]}]},
            4,
            "stream.groups = [[0, 1]]: devices 2-3 are in no group: with stream.groups every "
            "device of the fleet (fleet.devices 4: ids 0-3) needs one",
        ),
        (
            {"groups": [{"devices": [0, 1, 2, 3, 4]}]},
            4,
            "stream.groups.0.devices = [0, 1, 2, 3, 4]: device 4 does not exist: fleet.devices "
            "is 4 (ids 0-3)",
        ),
        (
            {"groups": [{"devices": [0, 0, 1]}]},
            2,
            "stream.groups.0.devices = [0, 0, 1]: device 0 is listed twice",
        ),
        ({"groups": [{"devices": []}]}, 2, "stream.groups.0.devices = []: List should have at"),
        (
            {"groups": [{"devices": [0, 1], "corruptions": ["smog"]}]},
            2,
            "stream.groups.0.corruptions = ['smog']: unknown corruption 'smog'; allowed: clean,",
        ),
        (
            {"groups": [{"devices": [0, 1], "schedule": "gradual", "severity": 1}]},
            2,
            "stream.groups.0.severity = 1: schedule gradual walks from severity 1 up to "
            "severity and back",
        ),
        (
            {
                "severities": [1, 3, 1],
                "groups": [
                    {"devices": [0], "schedule": "gradual"},
                    {"devices": [1]},
                ],
            },
            2,
            "stream.severities = [1, 3, 1]: is the severity walk of schedule gradual; schedule "
            "continual uses severity (one value) (group 1: devices 1)",
        ),
        (
            {"groups": [{"devices": [0, 1], "seed": 3}]},
            2,
            "stream.groups.0.seed = 3: unknown key; allowed: devices, corruptions,",
        ),
    ],
)
def test_invalid_stream_combinations_name_the_key_the_value_and_what_is_allowed(
    stream, fleet, expected
):
    data = tiny_scenario_dict()
    data["fleet"]["devices"] = fleet
    data["stream"].update(stream)
    with pytest.raises(ScenarioError) as caught:
        scenario_from_dict(data)
    assert expected in str(caught.value)


def test_valid_combinations_pass():
    data = tiny_scenario_dict()
    data["fleet"]["devices"] = 4
    del data["stream"]["severity"]
    data["stream"].update(
        severities=[1, 3, 5, 3, 1],
        schedule="gradual",
        labels={"alpha": 0.1, "correlation": 0.1, "slots": 5, "block_samples": 64},
        groups=[
            {"devices": [0, 1], "stagger": True, "gradual_start": "low"},
            {"devices": [3, 2], "schedule": "mixed", "severity": 2, "labels": {"alpha": 1}},
        ],
    )
    scenario = scenario_from_dict(data)
    mixed, group, position = scenario.stream.for_device(2)
    assert (group, position, mixed.schedule, mixed.severity) == (1, 1, "mixed", 2)
    assert mixed.severities is None and mixed.labels.alpha == 1 and not mixed.stagger
    gradual, group, position = scenario.stream.for_device(1)
    assert (group, position, gradual.walk(), gradual.gradual_start) == (
        0,
        1,
        [1, 3, 5, 3, 1],
        "low",
    )
    assert gradual.stagger and gradual.labels.slots == 5


def test_new_stream_keys_stay_out_of_the_resolved_config_at_their_defaults():
    plain = scenario_from_dict(tiny_scenario_dict()).resolved()["stream"]
    assert not {"severities", "gradual_start", "labels", "groups"} & set(plain)
    data = tiny_scenario_dict()
    data["stream"].update(labels={"alpha": 0.5}, groups=[{"devices": [0, 1], "severity": 2}])
    shifted = scenario_from_dict(data)
    resolved = shifted.resolved()
    assert resolved["stream"]["labels"]["alpha"] == 0.5
    assert resolved["stream"]["groups"] == [{"devices": [0, 1], "severity": 2, "stagger": False}]
    assert scenario_from_dict(resolved) == shifted  # config.yaml loads back to the same scenario
