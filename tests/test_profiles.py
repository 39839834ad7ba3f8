"""Hardware profiles: model work counted by hand, compute time and energy from the profile."""

import pytest
from torch import nn

from simulator.fleet.profiles import PROFILES, HardwareProfile
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


def test_resnet20_counts_the_published_41_million_macs():
    assert count_macs(create_model("resnet20")) == pytest.approx(40.55e6, rel=1e-3)


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
