"""Upload policies: which samples of an edge batch a device sends to the cloud.

A policy sees only the edge model's softmax probabilities and entropies of one batch; it knows
nothing of SimPy, time or the network. One instance per device (policies may keep state), and all
randomness comes from the ``numpy.random.Generator`` it is given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch
from pydantic import BaseModel

from simulator.registry import Registry, Styled

#: Per-sample reason codes written to ``last_reasons`` (for the event log).
UPLOADED = "uploaded"
UNRELIABLE = "unreliable"
LOW_INFO = "low_info"
REDUNDANT = "redundant"
NOT_SAMPLED = "not_sampled"
DISABLED = "disabled"
OVER_BUDGET = "over_budget"
REASONS = (UPLOADED, UNRELIABLE, LOW_INFO, REDUNDANT, NOT_SAMPLED, DISABLED, OVER_BUDGET)

#: Upload policies by name; ``policies.upload`` registers the built-in ones.
UPLOAD_POLICIES: Registry = Registry("upload policy")


class UploadPolicy(Styled, ABC):
    """Base of all upload policies (registered in ``UPLOAD_POLICIES``).

    ``select`` returns a bool mask (True = upload) and sets ``last_reasons``, one code of
    ``REASONS`` per sample.
    """

    Config: ClassVar[type[BaseModel]]
    #: False for a policy that never uploads: the cloud then has nothing to adapt on.
    uploads: ClassVar[bool] = True
    #: True for a policy that trims another policy's choice (its ``Config`` names it in ``inner``,
    #: and the engine binds it with ``bind_inner``): the inner one is what picks the samples.
    wraps_inner_policy: ClassVar[bool] = False

    def __init__(self, config: BaseModel | None, num_classes: int, rng: np.random.Generator):
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.config = config if config is not None else self.Config()
        self.num_classes = num_classes
        self.rng = rng
        self.last_reasons: np.ndarray = np.empty(0, dtype=object)

    def context(self, now_s: float, uplink_mbps: float) -> None:
        """Called before each ``select`` with the time and the device's available uplink rate
        (0 while the link is down). Most policies ignore it."""
        return None

    def charge(self, nbytes: int, samples: int) -> None:
        """Called after each selection that uploads, with the bytes actually sent."""
        return None

    @abstractmethod
    def select(self, probs: torch.Tensor, entropy: torch.Tensor) -> np.ndarray:
        """Bool mask (B,) of samples to upload, from softmax ``probs`` (B, C) and entropy (B,) in
        nats."""


def check_batch(probs: torch.Tensor, entropy: torch.Tensor) -> int:
    """Validate shapes of one edge batch and return its size B."""
    if probs.ndim != 2 or entropy.ndim != 1 or probs.shape[0] != entropy.shape[0]:
        raise ValueError(
            f"expected probs (B, C) and entropy (B,), got {tuple(probs.shape)} and "
            f"{tuple(entropy.shape)}"
        )
    return int(entropy.shape[0])


def reasons_for(mask: np.ndarray, rejected: str) -> np.ndarray:
    """``"uploaded"`` where ``mask`` else ``rejected``, as an object array of str."""
    return np.where(mask, UPLOADED, rejected).astype(object)
