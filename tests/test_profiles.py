"""Hardware profiles: model work counted by hand, compute time and energy from the profile."""

import pytest
from torch import nn

from simulator.hardware import PROFILES, HardwareProfile
from simulator.models.flops import count_macs
from simulator.models.zoo import create_model


def test_macs_of_a_small_net_match_the_hand_count():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 32*32 outputs x 8 channels x (3*3*3)
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),  # 16*16 x 8 x (4*3*3)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),  # 10 x 8
    )
    assert count_macs(net) == 32 * 32 * 8 * 27 + 16 * 16 * 8 * 36 + 80


class _SameDeviceNet(nn.Module):
    """Refuses an input on another device than its weights (as a GPU convolution would)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        if x.device != self.conv.weight.device:
            raise RuntimeError(f"input on {x.device}, weights on {self.conv.weight.device}")
        return self.conv(x)


def test_macs_are_counted_on_the_models_own_device():
    # a cloud teacher may sit on a GPU when its MACs are counted; "meta" stands in for a device
    # other than the CPU (no GPU in CI): the count needs shapes only
    assert count_macs(_SameDeviceNet().to("meta")) == 32 * 32 * 8 * 27


def test_resnet20_counts_the_published_41_million_macs():
    assert count_macs(create_model("resnet20", pretrained=False)) == pytest.approx(
        40.55e6, rel=1e-3
    )


def test_compute_time_and_energy_follow_the_profile_formula():
    pi = PROFILES["raspberry_pi4"]
    macs = 40_551_040
    # 5 ms per batch + 16 images x 40.55 MMAC / 4 GMAC/s
    assert pi.compute_s(16, macs) == pytest.approx(0.005 + 16 * macs / 4e9)
    assert pi.compute_j(2.0) == pytest.approx(12.8)
    # 1 MB sent over Wi-Fi at 283.17 nJ/bit
    assert pi.radio_j(1e6, 0) == pytest.approx(1e6 * 8 * 283.17e-9)
    assert PROFILES["phone"].radio_j(0, 1e6) == pytest.approx(1e6 * 8 * 51.97e-9)


def test_faster_hardware_takes_less_time_for_the_same_batch():
    times = {name: p.compute_s(64, 40_000_000) for name, p in PROFILES.items()}
    assert times["raspberry_pi4"] > times["jetson_nano"] > times["jetson_xavier_nx"]


def test_a_profile_refuses_bad_figures():
    with pytest.raises(ValueError, match="gmacs_per_s"):
        HardwareProfile(gmacs_per_s=0, active_w=1, radio_tx_nj_per_byte=1, radio_rx_nj_per_byte=1)
    with pytest.raises(ValueError, match="extra"):
        HardwareProfile(
            gmacs_per_s=1, active_w=1, radio_tx_nj_per_byte=1, radio_rx_nj_per_byte=1, tops=3
        )


def _profiled(**changes) -> dict:
    from tests.conftest import tiny_scenario_dict

    settings = {
        "stream__samples_per_device": 64,
        "stream__segment_samples": 32,
        "stream__arrival": "fixed",
        "stream__rate_hz": [16.0, 32.0],
        "edge__profile": ["raspberry_pi4", "jetson_xavier_nx"],
        "cloud__adapter": "none",
        "policy__name": "random",
    }
    return tiny_scenario_dict(**(settings | changes))


def test_a_mixed_fleet_computes_and_spends_energy_by_its_profiles():
    from simulator.config import scenario_from_dict
    from simulator.engine import run_scenario

    result = run_scenario(scenario_from_dict(_profiled()))
    s, ev = result.summary, result.events
    macs = count_macs(create_model("synthetic_edge"))
    assert s["edge_macs_per_image"] == macs
    samples = ev[ev.kind == "sample"]
    for d, (name, rate) in enumerate([("raspberry_pi4", 16.0), ("jetson_xavier_nx", 32.0)]):
        p = PROFILES[name]
        first = samples[(samples.device == d) & (samples.batch == 0)]
        # the batch is ready when its 32nd sample arrives (fixed arrivals), then computes
        assert first.sim_time_s.iloc[0] == pytest.approx(32 / rate + p.compute_s(32, macs))
        row = s["per_device"][d]
        assert row["profile"] == name
        assert row["compute_s"] == pytest.approx(2 * p.compute_s(32, macs))
        assert row["energy_compute_j"] == pytest.approx(p.active_w * row["compute_s"])
        radio = p.radio_j(row["upload_bytes"], row["download_bytes"])
        assert row["energy_radio_j"] == pytest.approx(radio) and radio > 0
    assert s["energy_j"] == pytest.approx(sum(r["energy_j"] for r in s["per_device"]))
    assert set(s["per_profile"]) == {"raspberry_pi4", "jetson_xavier_nx"}
    assert s["per_profile"]["raspberry_pi4"]["samples"] == 64


def test_a_users_own_profile_replaces_the_builtin_one():
    from simulator.config import scenario_from_dict

    mine = {
        "gmacs_per_s": 1.0,
        "active_w": 2.0,
        "radio_tx_nj_per_byte": 0,
        "radio_rx_nj_per_byte": 0,
    }
    scenario = scenario_from_dict(_profiled(edge__profiles={"raspberry_pi4": mine}))
    assert scenario.edge.hardware(0).gmacs_per_s == 1.0
    assert scenario.edge.hardware(1) is PROFILES["jetson_xavier_nx"]


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"edge__profile": "toaster"}, "edge", "unknown profile 'toaster'; allowed: jetson_nano"),
        ({"edge__profile": []}, "edge", "non-empty list"),
        ({"edge__profiles": {"x": {"gmacs_per_s": 1}}}, "edge.profiles.x.active_w", "required"),
        ({"stream__rate_hz": [16.0, 0]}, "stream.rate_hz", "> 0 Hz"),
        ({"stream__rate_hz": -3}, "stream.rate_hz", "> 0 Hz"),
    ],
)
def test_bad_profiles_and_rates_are_refused_with_their_path(changes, path, message):
    from simulator.config import ScenarioError, scenario_from_dict

    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(_profiled(**changes))
    text = str(err.value)
    assert path in text and message in text
