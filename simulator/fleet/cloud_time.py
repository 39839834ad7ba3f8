"""How long a cloud adaptation step takes in simulated time.

Either a fixed ``cloud.ms_per_step`` per optimisation step (an explicit override, as fleetsim did
before cloud profiles), or the counted work of what the step computed on a cloud hardware profile
(``cloud.profile``, :data:`simulator.hardware.CLOUD_PROFILES`): the adapter reports how many images
went forward and backward through the teacher and the edge model (:class:`AdaptStats`), each
image costs its model's MACs (``count_macs``), a backward a forward's MACs
(:data:`simulator.hardware.BACKWARD_FACTOR`), and the profile turns MACs into seconds plus a fixed
overhead per step. A larger teacher, a larger replay batch or a slower machine then makes
updates slower, and the devices' states staler.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.adaptation.base import AdaptStats
from simulator.hardware import CloudProfile, step_macs


@dataclass(frozen=True)
class CloudTime:
    """Simulated seconds of an ``observe`` call's steps: fixed per step, or from MACs."""

    ms_per_step: float | None = None
    profile: CloudProfile | None = None
    profile_name: str | None = None
    teacher_macs: int = 0
    edge_macs: int = 0

    def __post_init__(self) -> None:
        if (self.ms_per_step is None) == (self.profile is None):
            raise ValueError("give exactly one of ms_per_step and profile")
        if self.ms_per_step is not None and self.ms_per_step < 0:
            raise ValueError(f"ms_per_step must be >= 0, got {self.ms_per_step}")

    def __call__(self, stats: AdaptStats) -> float:
        if self.ms_per_step is not None:
            return stats.steps * self.ms_per_step / 1000.0
        assert self.profile is not None
        if not stats.steps:
            return 0.0
        macs = step_macs(
            self.teacher_macs,
            self.edge_macs,
            teacher_forward=stats.teacher_forward,
            teacher_backward=stats.teacher_backward,
            edge_forward=stats.edge_forward,
            edge_backward=stats.edge_backward,
        )
        return self.profile.step_s(macs, stats.steps)

    def describe(self) -> str:
        """``ms_per_step`` or the profile's name, for summaries."""
        return "ms_per_step" if self.ms_per_step is not None else str(self.profile_name)
