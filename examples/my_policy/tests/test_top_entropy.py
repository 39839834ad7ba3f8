"""The top_entropy policy picks each batch's k most uncertain samples, and a scenario finds it."""

import numpy as np
import torch
from my_policy.top_entropy import TopEntropy

from simulator.config import scenario_from_dict


def test_uploads_the_k_highest_entropies_and_says_why_not_the_others():
    policy = TopEntropy(TopEntropy.Config(k=2), num_classes=10, rng=np.random.default_rng(0))
    entropy = torch.tensor([0.1, 2.0, 0.5, 1.5, 0.3])
    probs = torch.full((5, 10), 0.1)
    mask = policy.select(probs, entropy)
    assert mask.tolist() == [False, True, False, True, False]
    assert policy.last_reasons.tolist() == [
        "low_info",
        "uploaded",
        "low_info",
        "uploaded",
        "low_info",
    ]


def test_a_scenario_names_it_and_sets_its_k():
    scenario = scenario_from_dict({"policy": {"name": "top_entropy", "top_entropy": {"k": 4}}})
    assert scenario.policy.plugin is TopEntropy
    assert scenario.policy.params().k == 4
