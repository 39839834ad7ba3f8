"""How analysis names a method (analysis/methods.py) and its statistics over seeds (analysis/stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.methods import METHOD_ORDER, method_key, method_label, method_rank
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
    assert [method_rank(label) for label in METHOD_ORDER] == list(range(len(METHOD_ORDER)))
    assert method_rank("CEMA (w/o replay)") == METHOD_ORDER.index("CEMA")
    assert method_rank("cema/budget (random)") == len(METHOD_ORDER)


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
