"""A device's model choice during a run: which family member answers its next batch, on which
executor, with which normalization state, and how long the batch takes.

The decision itself belongs to a selection policy (:mod:`policies.selection`); this glue feeds it
the device's budget at the moment and each member's nominal latency on the device's profile, applies
the device's slowdown to the compute time, reports the measured time back to the policy, and records
every switch as an event (time, device, from, to, reason). On a switch the device's state becomes
the new member's source normalization state: states are not portable between architectures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from policies.selection import SelectionPolicy
from simulator.fleet.executor import FleetExecutor

__all__ = ["BatchPlan", "DeviceSelector", "Member"]


@dataclass(frozen=True)
class Member:
    """A model a device may run: its executor (shared by the fleet), source normalization state,
    and nominal compute seconds for ``n`` images on this device's hardware."""

    name: str
    executor: FleetExecutor
    source_state: dict[str, torch.Tensor]
    compute_s: Callable[[int], float]


@dataclass(frozen=True)
class BatchPlan:
    """How the next batch runs: member, executor, the state to switch to (None: keep the one held),
    simulated compute seconds (slowdown included), the budget in force (s, None: no budget), and
    whether the member runs as a fallback (no member was predicted to meet the budget)."""

    model: str
    executor: FleetExecutor
    switch_to: dict[str, torch.Tensor] | None
    compute_s: float
    budget_s: float | None
    fallback: bool = False


class DeviceSelector:
    """One device's model selection; ``plan`` before a batch, ``measured`` after it."""

    def __init__(
        self,
        device: int,
        policy: SelectionPolicy,
        members: Mapping[str, Member],
        budget_s: Callable[[float], float | None],
        slowdown: Callable[[float], float],
        batch_size: int,
        record: Callable[..., None],
    ):
        self.device, self.policy, self.members = device, policy, dict(members)
        self.budget_at, self.slowdown_at, self.record = budget_s, slowdown, record
        # the budget is for a full edge batch, so members are compared at that size
        self.nominal_s = {name: m.compute_s(batch_size) for name, m in self.members.items()}
        self.compute_total_s = 0.0  # simulated compute of every batch so far (energy)
        self.switches = 0
        self._nominal_batch_s = 0.0

    def plan(self, now_s: float, samples: int) -> BatchPlan:
        """Choose the member for a batch of ``samples`` images starting at ``now_s``."""
        budget = self.budget_at(now_s)
        previous = self.policy.current
        decision = self.policy.choose(budget, self.nominal_s)
        member = self.members[decision.model]
        switched = decision.model != previous
        if switched:
            if previous is not None:
                self.switches += 1
            self.record(
                "switch",
                sim_time_s=now_s,
                device=self.device,
                from_model=previous or "",
                to_model=decision.model,
                reason=decision.reason,
                latency_budget_s=float("nan") if budget is None else budget,
                predicted_s=decision.predicted_s,
            )
        self._nominal_batch_s = member.compute_s(samples)
        compute = self._nominal_batch_s * self.slowdown_at(now_s)
        self.compute_total_s += compute
        return BatchPlan(
            decision.model,
            member.executor,
            member.source_state if switched else None,
            compute,
            budget,
            not decision.fits,
        )

    def measured(self, observed_s: float) -> None:
        """The batch just planned took ``observed_s`` of simulated compute."""
        self.policy.observe(observed_s, self._nominal_batch_s)
