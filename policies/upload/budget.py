"""Bandwidth-aware upload: another policy's choice, trimmed to a byte budget per device.

A token bucket holds the bytes the device may still send. It fills at ``fraction`` of the
*currently available* uplink rate (the device's own link rate now: its trace, and 0 during an
outage), up to ``burst_s`` seconds' worth of that rate. On each batch the inner policy (``inner``,
configured in its own section, e.g. ``policy.cema.*``) proposes samples; the most uncertain of them
(highest entropy first, the most informative to the cloud among those the inner policy trusts) are
kept while their estimated bytes fit the bucket; the rest are marked ``over_budget``. The device then
charges the bucket with the bytes actually encoded, so the budget holds on real payloads; the
per-sample estimate is a running mean of those real sizes (``initial_sample_bytes`` until the first
upload).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from policies.upload.base import OVER_BUDGET, UPLOAD_POLICIES, UPLOADED, UploadPolicy, check_batch


@UPLOAD_POLICIES.register("budget")
class BudgetUpload(UploadPolicy):
    """Token bucket on the available uplink rate around an inner policy (see module docstring)."""

    rank = 6

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        inner: str = Field("cema", description="policy proposing samples (its own section applies)")
        fraction: float = Field(
            0.5, gt=0, le=1, description="share of the available uplink rate uploads may use"
        )
        burst_s: float = Field(
            4.0, gt=0, description="bucket depth: seconds of that rate that can be saved up"
        )
        initial_sample_bytes: float = Field(
            2000.0, gt=0, description="bytes per sample assumed before the first real upload"
        )

        @field_validator("inner")
        @classmethod
        def _known_inner(cls, v: str) -> str:
            """A policy that picks samples itself: a wrapping one (this one) cannot be inner."""
            if v in UPLOAD_POLICIES and UPLOAD_POLICIES.get(v).wraps_inner_policy:
                raise ValueError(f"inner cannot be {v} itself")
            if v not in UPLOAD_POLICIES:
                names = UPLOAD_POLICIES.names()
                allowed = ", ".join(
                    n for n in names if not UPLOAD_POLICIES.get(n).wraps_inner_policy
                )
                raise ValueError(f"unknown upload policy {v!r}; allowed: {allowed}")
            return v

    wraps_inner_policy = True

    def __init__(self, config: BaseModel | None, num_classes: int, rng: np.random.Generator):
        super().__init__(config, num_classes, rng)
        self.inner: UploadPolicy | None = None
        self.tokens = 0.0
        self.rate_bytes_s = 0.0
        self._now_s = 0.0
        self._sent_bytes = 0.0
        self._sent_samples = 0

    def bind_inner(self, inner: UploadPolicy) -> None:
        self.inner = inner

    def context(self, now_s: float, uplink_mbps: float) -> None:
        """Refill for the time since the last batch at the rate then, then take the rate now."""
        cfg: BudgetUpload.Config = self.config  # type: ignore[assignment]
        self.tokens += self.rate_bytes_s * max(0.0, now_s - self._now_s)
        self.rate_bytes_s = cfg.fraction * uplink_mbps * 1e6 / 8.0
        self.tokens = min(self.tokens, max(self.rate_bytes_s * cfg.burst_s, 0.0))
        self._now_s = now_s

    def charge(self, nbytes: int, samples: int) -> None:
        """The device sent ``samples`` samples as ``nbytes`` bytes (payload plus header)."""
        self.tokens -= nbytes
        self._sent_bytes += nbytes
        self._sent_samples += samples

    @property
    def sample_bytes(self) -> float:
        cfg: BudgetUpload.Config = self.config  # type: ignore[assignment]
        if self._sent_samples:
            return self._sent_bytes / self._sent_samples
        return cfg.initial_sample_bytes

    def select(self, probs: torch.Tensor, entropy: torch.Tensor) -> np.ndarray:
        if self.inner is None:
            raise RuntimeError("budget policy has no inner policy: call bind_inner first")
        check_batch(probs, entropy)
        proposed = np.asarray(self.inner.select(probs, entropy), dtype=bool)
        reasons = np.asarray(self.inner.last_reasons, dtype=object).copy()
        affordable = int(max(self.tokens, 0.0) // self.sample_bytes)
        candidates = np.flatnonzero(proposed)
        if len(candidates) > affordable:
            order = np.argsort(-entropy.numpy()[candidates], kind="stable")
            dropped = candidates[order[affordable:]]
            proposed[dropped] = False
            reasons[dropped] = OVER_BUDGET
        reasons[proposed] = UPLOADED
        self.last_reasons = reasons
        return proposed
