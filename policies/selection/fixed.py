"""One model for the whole fleet: ``edge.model`` on every device (the default; today's behaviour)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from policies.selection.base import SELECTION_POLICIES, Decision, SelectionPolicy


@SELECTION_POLICIES.register("fixed")
class FixedSelection(SelectionPolicy):
    """One model for all: every device runs edge.model, whatever its budget or latency."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

    switches_models = False

    @classmethod
    def candidates(cls, config: BaseModel, edge_model: str) -> list[str]:
        return [edge_model]

    def choose(self, budget_s: float | None, nominal_s: Mapping[str, float]) -> Decision:
        predicted = nominal_s[self.edge_model] * self.latency_ratio
        fits = budget_s is None or predicted <= budget_s
        reason = self._reason(self.edge_model, budget_s, fits, downward=False)
        return Decision(self.edge_model, reason, predicted, fits)
