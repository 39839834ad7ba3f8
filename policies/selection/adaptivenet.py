"""AdaptiveNet-style selection (Wen et al., MobiCom 2023): per device, the most accurate family
member that meets the device's latency budget, re-chosen when the budget or the measured latency
changes.

Rule, before every edge batch, with ``pred(m) = nominal(m) x ratio`` (nominal: one full edge batch
on the device's profile; ratio: the EWMA of observed / nominal compute time, see
:mod:`policies.selection.base`):

1. while the model in use still meets the budget (``pred <= budget``), only members predicted
   within ``(1 - headroom) x budget`` may replace it (hysteresis: a latency estimate hovering at the
   budget does not flip the choice batch after batch); otherwise every member with
   ``pred <= budget`` may;
2. among those, the highest measured accuracy wins; ties go to fewer MACs, then to the name;
3. if none meets the budget, the fastest member runs (``none_fits``), ties to the more accurate.

AdaptiveNet itself adapts a super-net's paths on the device; here the space is a family of separately
trained models (the CIFAR ResNets), the post-deployment choice among them is the same problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from policies.selection.base import SELECTION_POLICIES, Decision, SelectionPolicy
from policies.selection.family import FamilyMember, ModelFamily, load_family


@lru_cache(maxsize=16)
def _family(name_or_path: str) -> ModelFamily:
    return load_family(name_or_path)


class AdaptiveNetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family: str = Field(
        "cifar10_resnet",
        description="model family: a shipped family name or a family JSON file "
        "(fleetsim zoo family writes one)",
    )
    members: list[str] | None = Field(
        None, min_length=1, description="only these members of the family (null: all)"
    )
    ewma_alpha: float = Field(
        0.5, gt=0, le=1, description="weight of the newest batch in the measured-latency EWMA"
    )
    headroom: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="a member replaces one that still meets the budget only when predicted "
        "within (1 - headroom) x budget",
    )

    @field_validator("family")
    @classmethod
    def _known_family(cls, v: str) -> str:
        from simulator.models.zoo import check_model_name

        family = _family(v)
        for member in family.members:
            check_model_name(member.model)
        return v

    @field_validator("members")
    @classmethod
    def _members_in_family(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if v is not None and "family" in info.data:  # a bad family is reported by itself
            known = _family(info.data["family"]).models
            bad = [m for m in v if m not in known]
            if bad:
                raise ValueError(
                    f"{bad[0]!r} is not in family {info.data['family']!r}; allowed: "
                    f"{', '.join(known)}"
                )
        return v

    def table(self) -> list[FamilyMember]:
        """The members in use, as listed in the family file."""
        family = _family(self.family)
        wanted = set(self.members or family.models)
        return [m for m in family.members if m.model in wanted]


def _rank(member: FamilyMember) -> tuple[float, int, str]:
    return (-member.accuracy, member.macs, member.model)


@SELECTION_POLICIES.register("adaptivenet")
class AdaptiveNetSelection(SelectionPolicy):
    """AdaptiveNet: the most accurate family member meeting the device's latency budget."""

    Config = AdaptiveNetConfig

    def __init__(self, config: BaseModel | None, edge_model: str):
        super().__init__(config, edge_model)
        assert isinstance(self.config, AdaptiveNetConfig)
        self.members = {m.model: m for m in self.config.table()}
        self.headroom = self.config.headroom

    @classmethod
    def candidates(cls, config: BaseModel, edge_model: str) -> list[str]:
        assert isinstance(config, AdaptiveNetConfig)
        return [m.model for m in config.table()]

    def choose(self, budget_s: float | None, nominal_s: Mapping[str, float]) -> Decision:
        predicted = {name: nominal_s[name] * self.latency_ratio for name in self.members}
        members = list(self.members.values())
        current = self.current
        if budget_s is None:
            eligible = members
        elif current is not None and predicted[current] <= budget_s:
            limit = (1.0 - self.headroom) * budget_s
            eligible = [m for m in members if m.model == current or predicted[m.model] <= limit]
        else:
            eligible = [m for m in members if predicted[m.model] <= budget_s]
        fits = bool(eligible)
        if fits:
            best = min(eligible, key=_rank)
        else:
            best = min(members, key=lambda m: (predicted[m.model], *_rank(m)))
        downward = current is not None and _rank(best) > _rank(self.members[current])
        reason = self._reason(best.model, budget_s, fits, downward)
        return Decision(best.model, reason, predicted[best.model], fits)
