"""The plug-in section pattern of the scenario schema (simulator/config.py ``PluginSection``) and the
capability flags that behaviour asks instead of plug-in names."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policies.routing import ROUTING_POLICIES
from policies.selection import SELECTION_POLICIES
from policies.upload import UPLOAD_POLICIES
from simulator.adaptation import ADAPTERS
from simulator.config import (
    CloudConfig,
    PluginSection,
    PolicyConfig,
    RoutingConfig,
    Scenario,
    ScenarioError,
    SelectionConfig,
    plugin_sections,
    scenario_from_dict,
)
from simulator.registry import Registry
from tests.conftest import tiny_scenario_dict

#: A registry of toy plug-ins for a section kind declared in this file.
TOYS: Registry = Registry("toy")


@TOYS.register("small")
class SmallToy:
    """A toy with no parameters."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")


@TOYS.register("big")
class BigToy:
    """A toy with a size."""

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        size: int = Field(2, gt=0)


class ToyConfig(PluginSection):
    """A new kind of plug-in section: the registry, and the field that names the plug-in."""

    registry_at = "tests.test_plugin_sections:TOYS"

    name: str = Field("small", description="toy")
    colour: str = Field("red", description="a field of the section itself")


def test_the_scenario_has_four_plugin_sections_in_its_field_order_each_with_its_registry():
    sections = plugin_sections()
    assert sections == {
        "cloud": CloudConfig,
        "policy": PolicyConfig,
        "routing": RoutingConfig,
        "selection": SelectionConfig,
    }
    assert CloudConfig.registry() is ADAPTERS and CloudConfig.selector == "adapter"
    assert PolicyConfig.registry() is UPLOAD_POLICIES and PolicyConfig.selector == "name"
    assert RoutingConfig.registry() is ROUTING_POLICIES
    assert SelectionConfig.registry() is SELECTION_POLICIES


def test_a_new_kind_of_plugin_section_is_one_declaration():
    assert ToyConfig(name="big").plugin is BigToy
    with pytest.raises(ValidationError, match="unknown toy; allowed: big, small"):
        ToyConfig(name="huge")

    params, problems = ToyConfig.validate_plugins("toy", {"name": "big", "big": {"size": 5}})
    assert problems == [] and set(params) == {"big"} and params["big"].size == 5
    section = ToyConfig(name="big")
    section.adopt_plugins(params)
    assert section.params().size == 5
    assert section.params("small") == SmallToy.Config()  # no sub-section: its defaults
    assert section.resolved() == {"name": "big", "colour": "red", "big": {"size": 5}}

    _, problems = ToyConfig.validate_plugins(
        "toy", {"big": {"size": 0}, "medium": {}, "small": 3, "colour": "blue"}
    )
    assert [str(p) for p in problems] == [
        "toy.big.size = 0: Input should be greater than 0",
        "toy.medium = {}: unknown key; allowed: name, colour, big (parameters), small (parameters)",
        "toy.small = 3: must be a mapping of small parameters",
    ]


def test_every_plugin_section_gives_the_defaults_of_a_plugin_without_a_sub_section():
    scenario = Scenario()  # built directly: no sub-section was validated for any plug-in
    assert scenario.cloud.params() == ADAPTERS.get("cema").Config()
    assert scenario.cloud.params("eata") == ADAPTERS.get("eata").Config()
    assert scenario.policy.params("random").p == UPLOAD_POLICIES.get("random").Config().p
    assert scenario.routing.params("edgefm") == ROUTING_POLICIES.get("edgefm").Config()
    assert scenario.selection.params() == SELECTION_POLICIES.get("fixed").Config()


def test_the_built_in_plugins_declare_their_capabilities():
    def flagged(registry: Registry, flag: str) -> list[str]:
        return [name for name in registry.names() if getattr(registry.get(name), flag)]

    assert flagged(ROUTING_POLICIES, "offloads") == ["edgefm"]
    assert [n for n in UPLOAD_POLICIES.names() if not UPLOAD_POLICIES.get(n).uploads] == ["none"]
    assert flagged(UPLOAD_POLICIES, "wraps_inner_policy") == ["budget"]
    assert flagged(SELECTION_POLICIES, "switches_models") == ["adaptivenet"]
    assert flagged(ADAPTERS, "adapts_edge_state") == ["cema", "eata", "tdmr", "tent"]
    assert flagged(ADAPTERS, "ships_models") == ["tdmr"]


def test_the_teacher_check_follows_the_offloads_flag_not_the_routing_name(monkeypatch):
    monkeypatch.setitem(ROUTING_POLICIES._items, "to_cloud", ROUTING_POLICIES.get("edgefm"))
    data = tiny_scenario_dict(routing__name="to_cloud", cloud__teacher=None)
    data["cloud"]["adapter"] = "none"
    with pytest.raises(ScenarioError, match="routing.name = 'to_cloud': offloads samples"):
        scenario_from_dict(data)


def test_a_selection_policy_that_keeps_one_model_needs_no_profile_or_budget(monkeypatch):
    monkeypatch.setitem(SELECTION_POLICIES._items, "one_model", SELECTION_POLICIES.get("fixed"))
    scenario = scenario_from_dict(tiny_scenario_dict(selection__name="one_model"))
    assert scenario.selection.active is False

    monkeypatch.setitem(UPLOAD_POLICIES._items, "silent", UPLOAD_POLICIES.get("none"))
    monkeypatch.setitem(ADAPTERS._items, "frozen", ADAPTERS.get("none"))
    data = tiny_scenario_dict(
        selection__name="adaptivenet",
        selection__latency_budget_ms=50,
        edge__profile="jetson_nano",
        policy__name="silent",
    )
    data["cloud"]["adapter"] = "frozen"
    assert scenario_from_dict(data).selection.active is True  # no upload, no edge-state update


def test_a_wrapping_upload_policy_cannot_be_a_budget_policy_s_inner_one(monkeypatch):
    monkeypatch.setitem(UPLOAD_POLICIES._items, "cap", UPLOAD_POLICIES.get("budget"))
    with pytest.raises(ScenarioError, match="policy.budget.inner = 'cap': inner cannot be cap"):
        scenario_from_dict(
            tiny_scenario_dict(policy__name="budget", policy__budget={"inner": "cap"})
        )
    with pytest.raises(ScenarioError) as error:
        scenario_from_dict(tiny_scenario_dict(policy__budget={"inner": "nope"}))
    assert "allowed: all, cema, eata, none, random, uncertain" in str(error.value)
