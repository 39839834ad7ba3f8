"""EdgeFM routing and uncertainty-first upload: the rule on hand-made numbers, and a tiny whole run
where offloaded samples travel the network and get the cloud foundation model's answers."""

import numpy as np
import pytest
import torch

from policies.routing import ROUTING_POLICIES, margin_uncertainty
from policies.routing.base import CLOUD, EDGE, PROBE, SLO_LIMITED
from policies.routing.edgefm import EdgeFMRouting, Ewma, edgefm_threshold, offload_share
from policies.upload import UPLOAD_POLICIES
from policies.upload.base import LOW_INFO, OVER_BUDGET, UPLOADED
from simulator.config import ScenarioError, scenario_from_dict
from simulator.data.datasets import create_dataset
from simulator.engine import run_scenario
from simulator.models.zoo import create_model
from tests.conftest import tiny_scenario_dict


def _probs_with_uncertainty(u: list[float]) -> torch.Tensor:
    """Two-class-dominant rows (3 classes) whose u = 1 - (p1 - p2) is exactly ``u``."""
    rows = []
    for value in u:
        margin = 1.0 - value
        p2 = (1.0 - margin) / 2.0
        rows.append([p2 + margin, p2, 0.0])
    return torch.tensor(rows, dtype=torch.float64)


# -- the rule ------------------------------------------------------------------------------------


def test_margin_uncertainty_is_one_minus_top1_top2_gap():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [1.0, 0.0, 0.0], [0.1, 0.3, 0.6]])
    assert margin_uncertainty(probs).tolist() == pytest.approx([0.5, 1.0, 0.0, 0.7])
    with pytest.raises(ValueError, match="C >= 2"):
        margin_uncertainty(torch.ones(3, 1))


def test_offload_share_is_the_slack_over_the_delay():
    assert offload_share(0.100, 0.020, 0.040) == 1.0  # 20 + 40 ms fits 100 ms: offload all
    assert offload_share(0.100, 0.020, 0.160) == pytest.approx(0.5)  # 20 + 0.5*160 = 100
    assert offload_share(0.100, 0.020, 0.320) == pytest.approx(0.25)
    assert offload_share(0.100, 0.120, 0.010) == 0.0  # the edge alone misses the objective


def test_threshold_rises_with_the_delay_and_is_the_base_when_everything_fits():
    recent = np.linspace(0.0, 1.0, 101)
    delays = [0.01, 0.08, 0.16, 0.32, 0.64, 5.0]
    taus = [edgefm_threshold(0.3, 0.100, 0.020, d, recent) for d in delays]
    assert taus[0] == taus[1] == 0.3  # 20 + 80 ms <= 100 ms: the base threshold
    assert taus[2] == pytest.approx(0.5)  # half may go: the median of recent uncertainty
    assert taus[3] == pytest.approx(0.75)  # a quarter may go
    assert all(a <= b for a, b in zip(taus, taus[1:], strict=False))
    assert edgefm_threshold(0.3, 0.100, 0.150, 0.01, recent) == 1.0  # no slack: nothing
    # the quantile never lowers the threshold below the base
    assert edgefm_threshold(0.9, 0.100, 0.020, 0.16, recent) == 0.9


@pytest.mark.parametrize("delay_s", [0.05, 0.1, 0.2, 0.4, 0.8, 3.0])
def test_threshold_keeps_the_mean_latency_within_the_objective(delay_s):
    rng = np.random.default_rng(0)
    recent = rng.beta(0.5, 0.8, size=2000)  # a skewed, realistic spread of uncertainties
    slo_s, edge_s = 0.120, 0.030
    tau = edgefm_threshold(0.2, slo_s, edge_s, delay_s, recent)
    offloaded = (recent > tau).mean()
    assert edge_s + offloaded * delay_s <= slo_s + 1e-9
    # as many as the objective allows (to a sample), of those above the base threshold
    allowed = min(offload_share(slo_s, edge_s, delay_s), (recent > 0.2).mean())
    assert offloaded >= allowed - 1 / len(recent)


def test_ewma_takes_the_first_observation_then_weights_the_newest_by_alpha():
    ewma = Ewma(0.25, initial=0.1)
    assert ewma.value == 0.1
    assert ewma.update(0.4) == 0.4
    assert ewma.update(0.8) == pytest.approx(0.25 * 0.8 + 0.75 * 0.4)
    with pytest.raises(ValueError):
        Ewma(0.0, 0.1)


def _edgefm(**params) -> EdgeFMRouting:
    return EdgeFMRouting(EdgeFMRouting.Config(**params), num_classes=3)


def test_router_offloads_above_the_base_threshold_while_the_network_is_fast():
    router = _edgefm(threshold=0.5, latency_slo_ms=100, initial_rtt_ms=20)
    mask = router.route(_probs_with_uncertainty([0.1, 0.6, 0.9, 0.5]), now_s=1.0, edge_s=0.01)
    assert mask.tolist() == [False, True, True, False]
    assert router.last_routes.tolist() == [EDGE, CLOUD, CLOUD, EDGE]
    assert router.last_threshold == 0.5
    assert router.last_uncertainty == pytest.approx([0.1, 0.6, 0.9, 0.5])


def test_router_raises_the_threshold_after_slow_answers_and_while_one_is_outstanding():
    router = _edgefm(threshold=0.2, latency_slo_ms=100, initial_rtt_ms=10, update_interval_s=0)
    batch = _probs_with_uncertainty([0.1, 0.3, 0.5, 0.7, 0.9])
    assert router.route(batch, now_s=0.0, edge_s=0.02).sum() == 4  # all above 0.2 fit
    router.offload_sent(0, now_s=0.0)
    # an answer 0.32 s late is not back: its age is the delay estimate; share 0.08/0.32 = 1/4
    mask = router.route(batch, now_s=0.32, edge_s=0.02)
    assert router.offload_delay_s(0.32) == pytest.approx(0.32)
    assert mask.tolist() == [False, False, False, False, True]
    assert router.last_routes.tolist() == [EDGE, SLO_LIMITED, SLO_LIMITED, SLO_LIMITED, CLOUD]
    router.offload_answered(0, now_s=0.40)  # the first answer replaces the 10 ms prior
    assert router.rtt.value == pytest.approx(0.40)
    router.offload_sent(1, now_s=0.40)
    router.offload_answered(1, now_s=0.41)  # a fast one pulls the EWMA down by alpha = 0.3
    assert router.rtt.value == pytest.approx(0.3 * 0.01 + 0.7 * 0.40)
    assert router.route(batch, now_s=0.5, edge_s=0.02).sum() <= 1


def test_router_caps_each_batch_at_the_allowed_share_when_its_window_lags_a_shift():
    router = _edgefm(threshold=0.2, latency_slo_ms=100, initial_rtt_ms=160, update_interval_s=0)
    router.route(_probs_with_uncertainty([0.1] * 60), now_s=0.0, edge_s=0.02)  # an easy domain
    harder = _probs_with_uncertainty([0.6, 0.7, 0.8, 0.9, 0.95, 0.65, 0.75, 0.85])
    mask = router.route(harder, now_s=1.0, edge_s=0.02)
    assert router.last_threshold == 0.2  # the window's median is still the easy domain's
    assert router.share == pytest.approx(0.5)  # 20 + 0.5 * 160 = 100 ms
    assert mask.tolist() == [False, False, True, True, True, False, False, True]  # 4 of 8, top u
    assert router.last_routes[~mask].tolist() == [SLO_LIMITED] * 4


def test_router_rechooses_the_threshold_only_every_update_interval():
    router = _edgefm(threshold=0.2, latency_slo_ms=100, initial_rtt_ms=10, update_interval_s=2)
    batch = _probs_with_uncertainty([0.1, 0.3, 0.5, 0.7, 0.9])
    router.route(batch, now_s=0.0, edge_s=0.02)
    router.offload_sent(0, now_s=0.0)
    router.route(batch, now_s=1.0, edge_s=0.02)  # outstanding 1 s, but not yet time to re-choose
    assert router.last_threshold == 0.2
    router.route(batch, now_s=2.0, edge_s=0.02)
    assert router.last_threshold > 0.8


def test_router_probes_one_sample_after_a_silent_interval():
    router = _edgefm(threshold=0.2, latency_slo_ms=50, initial_rtt_ms=1000, probe_interval_s=5)
    batch = _probs_with_uncertainty([0.1, 0.9, 0.6])
    assert not router.route(batch, now_s=1.0, edge_s=0.06).any()  # no slack: nothing offloaded
    assert router.last_threshold == 1.0
    mask = router.route(batch, now_s=6.0, edge_s=0.06)
    assert mask.tolist() == [False, True, False]
    assert router.last_routes.tolist() == [EDGE, PROBE, SLO_LIMITED]
    router.offload_sent(0, now_s=6.0)
    assert not router.route(batch, now_s=12.0, edge_s=0.06).any()  # one probe in flight at most
    router.offload_answered(0, now_s=12.5)
    assert not router.route(batch, now_s=13.0, edge_s=0.06).any()  # heard 0.5 s ago


# -- uncertainty-first upload ---------------------------------------------------------------------


def test_uncertain_upload_takes_the_most_uncertain_within_the_fraction():
    policy = UPLOAD_POLICIES.get("uncertain")(
        UPLOAD_POLICIES.get("uncertain").Config(fraction=0.5, min_uncertainty=0.15),
        3,
        np.random.default_rng(0),
    )
    u = [0.1, 0.95, 0.3, 0.6, 0.2, 0.8, 0.05]
    probs = _probs_with_uncertainty(u)
    mask = policy.select(probs, torch.zeros(len(u)))
    assert mask.tolist() == [False, True, False, True, False, True, False]  # floor(3.5) = 3 best
    assert policy.last_reasons.tolist() == [
        LOW_INFO,
        UPLOADED,
        OVER_BUDGET,
        UPLOADED,
        OVER_BUDGET,
        UPLOADED,
        LOW_INFO,
    ]


def test_uncertain_upload_budget_applies_per_batch_and_can_be_wrapped_by_budget():
    policy = UPLOAD_POLICIES.get("uncertain")(None, 3, np.random.default_rng(0))  # 25 %
    mask = policy.select(_probs_with_uncertainty(list(np.linspace(0, 1, 8))), torch.zeros(8))
    assert np.flatnonzero(mask).tolist() == [6, 7]
    scenario = scenario_from_dict(
        tiny_scenario_dict(policy={"name": "budget", "budget": {"inner": "uncertain"}})
    )
    assert scenario.policy.params().inner == "uncertain"


# -- config errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("routing", "path", "words"),
    [
        ({"name": "oracle"}, "routing.name", "allowed: edge_only, edgefm"),
        (
            {"name": "edgefm", "edgefm": {"latency_slo_ms": -5}},
            "routing.edgefm.latency_slo_ms",
            "greater than 0",
        ),
        (
            {"name": "edgefm", "edgefm": {"threshold": 1.5}},
            "routing.edgefm.threshold",
            "less than or equal to 1",
        ),
        ({"name": "edgefm", "edgefm": {"slo": 1}}, "routing.edgefm.slo", "unknown key"),
        ({"name": "edgefm", "cema": {}}, "routing.cema", "unknown key"),
    ],
)
def test_bad_routing_config_names_the_dotted_path(routing, path, words):
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(tiny_scenario_dict(routing=routing))
    problems = {p.path: p.message for p in err.value.problems}
    assert path in problems and words in problems[path]


def test_offloading_without_a_foundation_model_is_a_config_error():
    data = tiny_scenario_dict(
        routing={"name": "edgefm"}, cloud={"teacher": None, "adapter": "none"}
    )
    with pytest.raises(ScenarioError, match=r"routing.name = 'edgefm': .*cloud.teacher"):
        scenario_from_dict(data)
    with pytest.raises(ScenarioError, match=r"policy.uncertain.fraction"):
        scenario_from_dict(
            tiny_scenario_dict(policy={"name": "uncertain", "uncertain": {"fraction": 2}})
        )


def test_routing_parameters_are_resolved_into_the_run_config():
    scenario = scenario_from_dict(tiny_scenario_dict(), ["routing.name=edgefm"])
    resolved = scenario.resolved()["routing"]
    assert resolved["name"] == "edgefm" and resolved["edgefm"]["latency_slo_ms"] == 150.0
    assert scenario_from_dict(tiny_scenario_dict()).routing.name == "edge_only"


# -- whole runs -----------------------------------------------------------------------------------

UP_MBPS, DOWN_MBPS, LATENCY_MS = 8.0, 20.0, 15.0


def _offload_scenario(name: str = "edgefm", **routing):
    """Clean images, no uploads, no adaptation: the uplink carries only offloads, and the frozen
    teacher answers them."""
    data = tiny_scenario_dict(
        fleet={"devices": 2},
        stream={
            "samples_per_device": 64,
            "batch_size": 32,
            "corruptions": ["clean"],
            "segment_samples": 64,
            "rate_hz": 32,
        },
        network={"uplink_mbps": UP_MBPS, "downlink_mbps": DOWN_MBPS, "latency_ms": LATENCY_MS},
        edge={"model": "synthetic_edge", "ms_per_sample": 2.0, "ms_per_batch": 5.0},
        cloud={"teacher": "synthetic_teacher", "adapter": "none"},
        policy={"name": "none"},
        routing={"name": name, name: routing},
    )
    return scenario_from_dict(data)


@pytest.fixture(scope="module")
def offload_run():
    return run_scenario(
        _offload_scenario(
            threshold=0.0,
            latency_slo_ms=10_000,
            cloud_workers=2,
            cloud_ms_per_request=4.0,
            cloud_ms_per_sample=0.5,
        )
    )


def test_offloaded_samples_are_answered_with_the_teachers_prediction(offload_run):
    events = offload_run.events
    samples = events[events.kind == "sample"]
    offloaded = samples[samples.offloaded.astype(bool)]
    assert len(offloaded) > 0.9 * len(samples)  # threshold 0: every sample with any doubt
    dataset = create_dataset("synthetic", size=512, seed=0)
    teacher = create_model("synthetic_teacher", num_classes=dataset.num_classes).eval()
    pixels = dataset.images[offloaded["index"].to_numpy(dtype=int)]
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    with torch.no_grad():
        expected = teacher(images.float() / 255.0).argmax(1).numpy()
    assert (offloaded.delivered_prediction.to_numpy() == expected).all()
    labels = offloaded.label.to_numpy()
    assert (offloaded.delivered_correct.to_numpy() == (expected == labels)).all()
    kept = samples[~samples.offloaded.astype(bool)]
    assert (kept.delivered_prediction == kept.prediction).all()
    s = offload_run.summary
    assert s["delivered_accuracy"] == pytest.approx(samples.delivered_correct.mean())
    assert s["offloaded_samples"] == len(offloaded)
    assert s["offload_fraction"] == pytest.approx(len(offloaded) / len(samples))


def test_offload_latency_is_edge_uplink_cloud_and_downlink_on_a_constant_network(offload_run):
    events = offload_run.events
    samples = events[events.kind == "sample"]
    offloads = events[events.kind == "offload"].set_index(["device", "batch"])
    answers = events[events.kind == "answer"].set_index(["device", "batch"])
    assert len(answers) == len(offloads) == 4  # one message per batch, two batches per device
    assert (answers.cloud_queue_s == 0).all()  # two inference workers for two devices
    for (device, batch), answer in answers.iterrows():
        rows = samples[(samples.device == device) & (samples.batch == batch)]
        k = int(rows.offloaded.sum())
        up_bytes = int(offloads.loc[(device, batch), "bytes"])
        assert answer.bytes == 64 + 4 * k  # header + one int32 class index per sample
        expected_s = (
            (5.0 + 2.0 * 32) / 1000  # edge compute of the batch
            + up_bytes * 8 / (UP_MBPS * 1e6)
            + LATENCY_MS / 1000  # uplink
            + (4.0 + 0.5 * k) / 1000  # foundation-model inference
            + answer.bytes * 8 / (DOWN_MBPS * 1e6)
            + LATENCY_MS / 1000  # downlink
        )
        got = rows[rows.offloaded.astype(bool)].latency_s.to_numpy()
        assert got == pytest.approx(np.full(k, expected_s), abs=1e-9)
        edge = rows[~rows.offloaded.astype(bool)].latency_s.to_numpy()
        assert edge == pytest.approx(np.full(32 - k, 0.069), abs=1e-9)
    s = offload_run.summary
    assert s["offload_bytes"] == offloads.bytes.sum() and s["upload_bytes"] == 0
    assert s["answer_bytes"] == answers.bytes.sum()
    latency = samples.latency_s.to_numpy()
    assert s["latency_p50_s"] == pytest.approx(np.percentile(latency, 50))
    assert s["latency_p95_s"] == pytest.approx(np.percentile(latency, 95))


def test_edge_only_routing_answers_on_the_edge_at_edge_latency():
    run = run_scenario(_offload_scenario())
    assert run.summary["offloaded_samples"] > 0  # edgefm with defaults offloads some
    edge = run_scenario(_offload_scenario("edge_only")).summary
    assert edge["offloaded_samples"] == 0 and edge["offload_bytes"] == 0
    assert edge["delivered_accuracy"] == edge["accuracy"]
    assert edge["latency_p50_s"] == pytest.approx(0.069) == edge["latency_p95_s"]
    assert run.summary["accuracy"] == edge["accuracy"]  # routing never changes the edge answers
    assert ROUTING_POLICIES.names() == ["edge_only", "edgefm"]
