"""A small labelled target set held by the cloud (TDMR's "limited target data").

Drawn from (a subsample of) the dataset's *train* split, never from the images the devices' streams show (those come
from the test split), so labelled data cannot leak test labels: ``per_domain`` images for each domain
the stream visits, chosen by a generator seeded from the scenario seed (distinct images per domain),
corrupted as that domain is (``clean``: untouched).
"""

from __future__ import annotations

import numpy as np
import torch

from simulator.config import Scenario
from simulator.data.corruptions import corrupt
from simulator.data.datasets import create_dataset
from simulator.data.streams import stream_domains

__all__ = ["labelled_target_set"]

#: The train images the labelled set is chosen from: this many times what is wanted, at least
#: ``MIN_POOL`` (the dataset's own subsample of its train split, as ``dataset.size`` takes one).
POOL_FACTOR, MIN_POOL = 4, 1024
#: The generator's purpose number (the engine's streams use 1-3, the network 11-14).
_LABELLED = 21


def labelled_target_set(scenario: Scenario, per_domain: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_domain`` labelled train-split images per stream domain: uint8 (n, 3, H, W), labels."""
    if per_domain < 1:
        raise ValueError(f"per_domain must be >= 1, got {per_domain}")
    data = scenario.dataset
    domains = stream_domains(scenario.stream)
    wanted = per_domain * len(domains)
    train = create_dataset(  # a pool of a few times what is wanted, not the whole split
        data.name,
        split="train",
        root=data.root,
        variant="auto",
        seed=scenario.seed,
        size=max(POOL_FACTOR * wanted, MIN_POOL),
    )
    if wanted > len(train):
        raise ValueError(
            f"cloud.tdmr.labelled_per_domain {per_domain} x {len(domains)} domains needs "
            f"{wanted} train images; the train split has {len(train)}"
        )
    rng = np.random.default_rng([scenario.seed, _LABELLED])
    chosen = rng.permutation(len(train))[:wanted].reshape(len(domains), per_domain)
    images, labels = [], []
    for domain, indices in zip(domains, chosen, strict=True):
        pixels = torch.from_numpy(train.images[indices]).permute(0, 3, 1, 2).contiguous()
        if domain.corruption != "clean":
            pixels = corrupt(
                pixels,
                domain.corruption,
                domain.severity,
                seed=scenario.seed,
                indices=torch.from_numpy(indices),
            )
        images.append(pixels)
        labels.append(torch.from_numpy(np.asarray(train.labels[indices], dtype=np.int64)))
    return torch.cat(images), torch.cat(labels)
