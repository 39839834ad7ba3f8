"""Selection policies: which model of a family a device runs, given its latency budget.

A policy sees numbers only: the device's current latency budget and each candidate's nominal
latency on the device's hardware (one full edge batch, from the profile and the member's MACs); it
learns the device's measured latency through ``observe``. It knows nothing of SimPy, executors or
time. One instance per device (policies keep state: the model in use and the latency estimate).

Measured latency: devices slow down (thermal throttling, background load) and speed up again, so a
policy keeps an exponentially weighted moving average of ``observed / nominal`` compute time of the
batches it ran, and predicts every member's latency as ``nominal x that ratio``: a slowdown of the
hardware stretches every member's compute alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel

from simulator.registry import Registry, Styled

#: Why a device runs a different model than before (the ``reason`` of a ``switch`` event).
INITIAL = "initial"  # the first choice of the run
BUDGET_CHANGE = "budget_change"  # the device's latency budget changed
SLOWDOWN = "slowdown"  # measured latency rose: the model in use no longer meets the budget
RECOVERY = "recovery"  # measured latency fell: a more accurate model meets the budget again
NONE_FITS = "none_fits"  # no member meets the budget: the fastest one runs
KEPT = "kept"  # no switch
SWITCH_REASONS = (INITIAL, BUDGET_CHANGE, SLOWDOWN, RECOVERY, NONE_FITS)

#: Selection policies by name; ``policies.selection`` registers the built-in ones.
SELECTION_POLICIES: Registry = Registry("selection policy")


@dataclass(frozen=True)
class Decision:
    """The model to run next, why, its predicted latency (s) and whether that meets the budget."""

    model: str
    reason: str
    predicted_s: float
    fits: bool


class SelectionPolicy(Styled, ABC):
    """Base of all selection policies (registered in ``SELECTION_POLICIES``)."""

    Config: ClassVar[type[BaseModel]]
    #: True if devices may run different models (then the cloud cannot adapt one edge state for
    #: them, and the run needs hardware profiles and a latency budget); False for one model for all.
    switches_models: ClassVar[bool] = True

    def __init__(self, config: BaseModel | None, edge_model: str):
        self.config = config if config is not None else self.Config()
        self.edge_model = edge_model
        self.current: str | None = None
        self.latency_ratio = 1.0  # EWMA of observed / nominal compute time
        self.ewma_alpha = float(getattr(self.config, "ewma_alpha", 0.5))
        self._last_budget_s: float | None = None

    @classmethod
    @abstractmethod
    def candidates(cls, config: BaseModel, edge_model: str) -> list[str]:
        """Zoo names this policy may choose from (the engine builds these models)."""

    @abstractmethod
    def choose(self, budget_s: float | None, nominal_s: Mapping[str, float]) -> Decision:
        """The model for the next batch, from the budget (s; None: no budget) and each
        candidate's nominal latency (s). Sets ``current``."""

    def observe(self, observed_s: float, nominal_s: float) -> None:
        """Feed the measured compute time of the batch just run with ``current`` (and what it
        would have taken at nominal speed): ``ratio += ewma_alpha * (observed / nominal - ratio)``."""
        if nominal_s > 0:
            self.latency_ratio += self.ewma_alpha * (observed_s / nominal_s - self.latency_ratio)

    def _reason(self, model: str, budget_s: float | None, fits: bool, downward: bool) -> str:
        """Why ``model`` replaces ``current`` (``KEPT`` when it does not)."""
        previous, last_budget = self.current, self._last_budget_s
        self.current, self._last_budget_s = model, budget_s
        if model == previous:
            return KEPT
        if previous is None:
            return INITIAL if fits else NONE_FITS
        if not fits:
            return NONE_FITS
        if budget_s != last_budget:
            return BUDGET_CHANGE
        return SLOWDOWN if downward else RECOVERY
