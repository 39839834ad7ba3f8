"""How analysis names a method (analysis/methods.py) and its statistics over seeds (analysis/stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.methods import method_key, method_label, method_order, method_rank, series_styles
from analysis.plots import _ordered, figure_styles
from analysis.stats import paired_t_p_value, t_interval


def test_a_known_pair_is_named_as_in_the_literature_without_reading_the_config():
    def unread() -> dict:
        raise AssertionError("the config of a named method is not read")

    assert method_label("cema", "cema", unread) == "CEMA"
    assert method_label("bn_stats", "none", unread) == "BN adapt"
    assert method_key("cema", "cema") == "cema/cema"


def test_other_methods_are_their_key_plus_the_inner_policy_their_section_names():
    config = {"policy": {"budget": {"inner": "random"}, "cema": {"e_min": 0.02}}}
    assert method_label("cema", "budget", lambda: config) == "cema/budget (random)"
    assert method_label("tent", "cema", lambda: config) == "tent/cema"
    assert method_label("cema", "budget", lambda: None) == "cema/budget"  # no config.yaml
    assert method_label("cema", "budget") == "cema/budget"
    assert method_label(None, None) == "None/None"


def test_labels_rank_in_the_table_order_with_suffixes_and_others_last():
    order = method_order()
    assert order == (
        "Source", "BN adapt", "Tent", "EATA", "Upload-all", "Random", "Uncertain", "CEMA",
        "TDMR", "TDMR (upload-all)",
    )  # fmt: skip
    # a suffixed label ranks as its method: TDMR behind upload-all is TDMR
    assert [method_rank(label) for label in order] == [*range(len(order) - 1), len(order) - 2]
    assert method_rank("CEMA (w/o replay)") == order.index("CEMA")
    assert method_rank("cema/budget (random)") == len(order)


def test_every_built_in_method_name_comes_from_its_plugin_class():
    pairs = {
        ("none", "none"): "Source",
        ("bn_stats", "none"): "BN adapt",
        ("tent", "all"): "Tent",
        ("eata", "eata"): "EATA",
        ("cema", "all"): "Upload-all",
        ("cema", "random"): "Random",
        ("cema", "uncertain"): "Uncertain",
        ("cema", "cema"): "CEMA",
        ("tdmr", "cema"): "TDMR",
        ("tdmr", "all"): "TDMR (upload-all)",
    }
    assert {pair: method_label(*pair) for pair in pairs} == pairs
    assert method_label("eata", "all") == "eata/all"  # not Tent's name: styles are not inherited


def test_policies_and_their_methods_share_the_colour_and_marker_their_class_declares():
    fixed = {
        "none": ("#000000", "x"),
        "all": ("#0072B2", "s"),
        "random": ("#E69F00", "^"),
        "cema": ("#D55E00", "o"),
    }
    for name, style in fixed.items():
        assert figure_styles([name])[name] == style
    for label, policy in (("Source", "none"), ("Upload-all", "all"), ("CEMA", "cema")):
        assert figure_styles([label])[label] == fixed[policy]
    others = {colour for colour, _ in figure_styles(["BN adapt", "Tent", "EATA"]).values()}
    assert not others & {colour for colour, _ in fixed.values()}
    assert series_styles()["edgefm"]["rank"] < series_styles()["cema"]["rank"]


def test_series_are_ordered_policies_by_rank_methods_by_rank_others_by_text():
    policies = ["cema", "zeta", "uncertain", "eata", "budget", "random", "all", "none"]
    assert _ordered(pd.Series(policies)) == [
        "none", "all", "random", "budget", "eata", "uncertain", "cema", "zeta",
    ]  # fmt: skip
    labels = ["CEMA", "x/y", "Tent", "Source", "EATA", "Upload-all", "BN adapt", "Random"]
    labels += ["Uncertain", "TDMR", "TDMR (upload-all)"]
    assert _ordered(pd.Series(labels)) == [*method_order(), "x/y"]


def test_paired_t_test_of_three_differences():
    # t = mean / (sd / sqrt(n)) = 2 / (1 / sqrt(3)); with 2 dof, p = 1 - t / sqrt(t^2 + 2)
    t = 2 * math.sqrt(3)
    assert paired_t_p_value(np.array([1.0, 2.0, 3.0])) == pytest.approx(
        1 - t / math.sqrt(t * t + 2)
    )
    assert paired_t_p_value(np.array([0.5])) is None
    assert paired_t_p_value(np.array([0.0, 0.0])) == 1.0
    assert paired_t_p_value(np.array([0.3, 0.3])) == 0.0
    mean, half = t_interval(np.array([1.0, 2.0, 3.0]))
    assert (mean, half) == (2.0, pytest.approx(4.302653 / math.sqrt(3), rel=1e-6))
