"""Hardware profiles: how long a model takes on an edge device (and the energy it costs), and how
long a cloud adaptation step takes on a cloud machine.

A profile turns the edge model's measured work (multiply-accumulates per image, counted by
:func:`simulator.models.flops.count_macs`) into simulated compute time::

    compute_s(batch of n) = batch_overhead_ms / 1000 + n * macs_per_image / (gmacs_per_s * 1e9)

and, with its power figures, into energy: ``active_w`` while computing, plus the radio's marginal
energy per byte sent and received. The built-in profiles are order-of-magnitude figures for
single-stream fp32 CNN inference with a common mobile runtime, not measurements of ours; they are
stated here so that every number a run reports can be traced, and a user's own measured profile
(``edge.profiles`` in a scenario) replaces them:

* ``raspberry_pi4``: Cortex-A72 x4 at 1.5 GHz; about 4 GMAC/s effective (MobileNet-class models in
  ~70-100 ms), ~6.4 W under load; Wi-Fi.
* ``jetson_nano``: 128-core Maxwell GPU (~236 GFLOP/s fp32 peak); ~25 GMAC/s effective at small
  batches, 10 W mode (~7.5 W active); Wi-Fi.
* ``jetson_xavier_nx``: 384-core Volta GPU; ~100 GMAC/s effective, 15 W mode (~12 W active); Wi-Fi.
* ``phone``: a recent flagship SoC through a mobile runtime; ~50 GMAC/s effective, ~3.5 W active;
  LTE.

Radio energy per byte is the marginal term of the linear power model of Huang et al. (MobiSys 2012,
"A close examination of performance and power characteristics of 4G LTE networks"): about 283 mW per
Mbit/s up and 137 down for Wi-Fi, 438 up and 52 down for LTE, i.e. 0.283 uJ per bit sent over Wi-Fi.
Tail and promotion energy of the radio states are not modelled.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BACKWARD_FACTOR",
    "CLOUD_PROFILES",
    "CloudProfile",
    "LTE_NJ_PER_BYTE",
    "PROFILES",
    "HardwareProfile",
    "WIFI_NJ_PER_BYTE",
    "step_macs",
]

#: Marginal radio energy (nJ per byte) from the Huang et al. 2012 power model: mW per Mbit/s
#: equals nJ per bit, times 8.
WIFI_NJ_PER_BYTE = {"tx": 283.17 * 8, "rx": 137.01 * 8}
LTE_NJ_PER_BYTE = {"tx": 438.39 * 8, "rx": 51.97 * 8}


class HardwareProfile(BaseModel):
    """One kind of edge device."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    gmacs_per_s: float = Field(gt=0, description="effective inference throughput, GMAC/s")
    batch_overhead_ms: float = Field(2.0, ge=0, description="fixed cost per edge batch, ms")
    active_w: float = Field(ge=0, description="power while computing, W")
    idle_w: float = Field(0.0, ge=0, description="power while idle, W (reported, not charged)")
    radio_tx_nj_per_byte: float = Field(ge=0, description="marginal radio energy sending, nJ/B")
    radio_rx_nj_per_byte: float = Field(ge=0, description="marginal radio energy receiving, nJ/B")

    def compute_s(self, samples: int, macs_per_image: int) -> float:
        """Simulated seconds to classify a batch of ``samples`` images."""
        return self.batch_overhead_ms / 1000.0 + samples * macs_per_image / (self.gmacs_per_s * 1e9)

    def compute_j(self, seconds: float) -> float:
        return self.active_w * seconds

    def radio_j(self, sent_bytes: float, received_bytes: float) -> float:
        return (
            sent_bytes * self.radio_tx_nj_per_byte + received_bytes * self.radio_rx_nj_per_byte
        ) * 1e-9


PROFILES: dict[str, HardwareProfile] = {
    "raspberry_pi4": HardwareProfile(
        description="Raspberry Pi 4 (Cortex-A72 x4, CPU inference), Wi-Fi",
        gmacs_per_s=4.0,
        batch_overhead_ms=5.0,
        active_w=6.4,
        idle_w=2.7,
        radio_tx_nj_per_byte=WIFI_NJ_PER_BYTE["tx"],
        radio_rx_nj_per_byte=WIFI_NJ_PER_BYTE["rx"],
    ),
    "jetson_nano": HardwareProfile(
        description="NVIDIA Jetson Nano (Maxwell GPU, 10 W mode), Wi-Fi",
        gmacs_per_s=25.0,
        batch_overhead_ms=3.0,
        active_w=7.5,
        idle_w=1.5,
        radio_tx_nj_per_byte=WIFI_NJ_PER_BYTE["tx"],
        radio_rx_nj_per_byte=WIFI_NJ_PER_BYTE["rx"],
    ),
    "jetson_xavier_nx": HardwareProfile(
        description="NVIDIA Jetson Xavier NX (Volta GPU, 15 W mode), Wi-Fi",
        gmacs_per_s=100.0,
        batch_overhead_ms=2.0,
        active_w=12.0,
        idle_w=3.0,
        radio_tx_nj_per_byte=WIFI_NJ_PER_BYTE["tx"],
        radio_rx_nj_per_byte=WIFI_NJ_PER_BYTE["rx"],
    ),
    "phone": HardwareProfile(
        description="flagship phone SoC (mobile runtime), LTE",
        gmacs_per_s=50.0,
        batch_overhead_ms=2.0,
        active_w=3.5,
        idle_w=0.5,
        radio_tx_nj_per_byte=LTE_NJ_PER_BYTE["tx"],
        radio_rx_nj_per_byte=LTE_NJ_PER_BYTE["rx"],
    ),
}


# -- the cloud ----------------------------------------------------------------------------------


class CloudProfile(BaseModel):
    """One kind of cloud machine running adaptation steps: how long a step's counted work takes.

    ``step_s = step_overhead_ms / 1000 + macs / (gmacs_per_s * 1e9)`` where ``macs`` is what the step
    computes (:func:`step_macs`). ``gmacs_per_s`` is an *effective* fp32 rate for small CIFAR/ImageNet
    CNN batches (peak x an efficiency), not the spec sheet's peak.
    """

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    gmacs_per_s: float = Field(gt=0, description="effective training/inference throughput, GMAC/s")
    step_overhead_ms: float = Field(
        3.0, ge=0, description="fixed cost per step (kernel launches, optimizer), ms"
    )

    def step_s(self, macs: float, steps: int) -> float:
        """Simulated seconds of ``steps`` steps that together compute ``macs`` MACs."""
        return steps * self.step_overhead_ms / 1000.0 + macs / (self.gmacs_per_s * 1e9)


#: Backward passes here compute input gradients through frozen convolutions (only normalization
#: affines train), about one forward's MACs; a training forward+backward is 2x the forward.
BACKWARD_FACTOR = 1.0


def step_macs(
    teacher_macs: int,
    edge_macs: int,
    teacher_forward: int = 0,
    teacher_backward: int = 0,
    edge_forward: int = 0,
    edge_backward: int = 0,
) -> float:
    """MACs of a cloud step from image counts: forwards, and backwards at :data:`BACKWARD_FACTOR`
    of a forward, of the teacher and of the edge model (per-image MACs by ``count_macs``)."""
    return teacher_macs * (teacher_forward + BACKWARD_FACTOR * teacher_backward) + edge_macs * (
        edge_forward + BACKWARD_FACTOR * edge_backward
    )


# Anchor: fleetsim's own measurement on an H200 (benchmarks/gpu_check_h200.md): the ResNet-20
# forward at large batches reached about 157,000 images/s, 6.5 TMAC/s, about 19 % of the H200's
# 67 TFLOP/s fp32 peak; a forward at batch 1 took about 1.5 ms (launch-bound). The profiles below
# take about that efficiency of each card's fp32 peak (spec sheets), and a few ms per step for the
# launches of a ResNet's forward, backward and optimizer step.
CLOUD_PROFILES: dict[str, CloudProfile] = {
    "a100": CloudProfile(
        description="NVIDIA A100 (19.5 TFLOP/s fp32 peak; ~20 % effective), the default",
        gmacs_per_s=2000.0,
        step_overhead_ms=3.0,
    ),
    "v100": CloudProfile(
        description="NVIDIA V100 (15.7 TFLOP/s fp32 peak; ~20 % effective)",
        gmacs_per_s=1600.0,
        step_overhead_ms=4.0,
    ),
    "cpu_server": CloudProfile(
        description="a 32-core AVX-512 server CPU (~2 TFLOP/s fp32 peak; ~15 % effective)",
        gmacs_per_s=150.0,
        step_overhead_ms=2.0,
    ),
}
