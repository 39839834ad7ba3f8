"""EdgeFM-style routing (Yang et al., SenSys 2023): offload uncertain samples to the cloud
foundation model when the network delay leaves room under a latency objective.

EdgeFM answers a sample on the edge when the edge model is confident, and otherwise sends it to the
cloud foundation model, moving its uncertainty threshold with the network conditions so that a
latency requirement holds. The paper's exact threshold rule is not public in code; fleetsim's rule,
stated here and in the README, is:

* **Uncertainty**: ``u(x) = 1 - (p1 - p2)``, one minus the margin between the edge model's top-1
  and top-2 softmax probabilities (:func:`~policies.routing.base.margin_uncertainty`).
* **Latency objective**: ``latency_slo_ms`` bounds the *mean* end-to-end latency per sample, from
  the moment its batch is ready on the device to the moment its answer is delivered. A sample
  answered on the edge costs the batch's edge latency ``e``; an offloaded one ``e + D``, where ``D``
  is the offload round trip (uplink wait and transfer, cloud queue and inference, downlink). If a
  share ``f`` of the samples is offloaded, the mean is ``e + f D``, so the largest share that meets
  the objective is ``f_max = clip((SLO - e) / D, 0, 1)`` (:func:`offload_share`).
* **Delay estimate** ``D``: an EWMA (weight ``ewma_alpha`` on the newest) of the round trips the
  device observes with its own clock (offload message sent -> answer received), ``initial_rtt_ms``
  before the first answer; never less than the age of the oldest offload still unanswered (an
  answer not yet back is a lower bound on today's delay, so an outage or a clogged uplink raises
  ``D`` at once instead of one answer later). A dropped message counts as a round trip of at least
  the current estimate: a loss is never evidence of a faster network.
* **Threshold** ``tau``, re-chosen at the first batch after every ``update_interval_s`` of simulated
  time (:func:`edgefm_threshold`): the base threshold ``threshold`` when ``f_max = 1`` (offloading
  every uncertain sample fits the objective); ``1`` (offload nothing) when ``f_max = 0`` (the
  objective is already spent on the edge, or the network is too slow); otherwise
  ``max(threshold, Q(1 - f_max))`` with ``Q`` the empirical quantile of the uncertainties of the
  last ``window_samples`` samples, so that (for a stationary stream) at most the ``f_max`` most
  uncertain share is offloaded: the samples on which the foundation model helps most go first.
  A sample is offloaded iff ``u > tau``. ``tau`` never falls as ``D`` rises.
* **Per-batch cap**: the window lags a domain shift (a batch of a harder corruption is more
  uncertain than the window says), so each batch also offloads at most ``floor(f_max * B)`` of its
  ``B`` samples, its most uncertain above ``tau`` (the rest are ``slo_limited``).
* **Probe**: with nothing offloaded nothing is measured, so a pessimistic estimate would stick. When
  no offload has been answered for ``probe_interval_s`` and none is in flight, the most uncertain
  sample of a batch (if above the base threshold) is offloaded anyway (route code ``probe``).

Why the mean: a per-sample hard bound would switch offloading fully on or off as ``D`` crosses the
objective; bounding the mean lets the router give the slack to the most uncertain samples and move
smoothly with the network. The p50/p95 latencies in summary.json show what the tail did.

The ``cloud_*`` and ``answer_bytes_per_sample`` parameters (:class:`~policies.routing.base.OffloadConfig`)
describe the cloud's inference service and the answer's size; the engine and devices use them (see
:class:`~simulator.fleet.cloud.FoundationServer`).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from policies.routing.base import (
    CLOUD,
    EDGE,
    PROBE,
    ROUTING_POLICIES,
    SLO_LIMITED,
    OffloadConfig,
    RoutingPolicy,
    margin_uncertainty,
)


def offload_share(latency_slo_s: float, edge_s: float, offload_delay_s: float) -> float:
    """Largest share ``f`` of samples that may be offloaded with mean latency ``edge_s + f *
    offload_delay_s`` within ``latency_slo_s``, in [0, 1]."""
    slack_s = latency_slo_s - edge_s
    if slack_s <= 0:
        return 0.0
    if offload_delay_s <= 0:
        return 1.0
    return min(1.0, slack_s / offload_delay_s)


def edgefm_threshold(
    base_threshold: float,
    latency_slo_s: float,
    edge_s: float,
    offload_delay_s: float,
    recent_uncertainty: np.ndarray,
) -> float:
    """The uncertainty threshold (offload iff ``u > threshold``) for an estimated offload round trip
    ``offload_delay_s`` and a batch edge latency ``edge_s`` (see the module docstring).

    ``recent_uncertainty`` holds recent samples' ``u``; its ``1 - f_max`` quantile caps the share
    offloaded at ``f_max``. Returns ``base_threshold`` when everything uncertain may go, ``1.0``
    (nothing, as ``u <= 1``) when nothing may.
    """
    share = offload_share(latency_slo_s, edge_s, offload_delay_s)
    if share >= 1.0:
        return float(base_threshold)
    if share <= 0.0 or len(recent_uncertainty) == 0:
        return 1.0
    quantile = float(np.quantile(np.asarray(recent_uncertainty, dtype=np.float64), 1.0 - share))
    return max(float(base_threshold), quantile)


class Ewma:
    """Exponentially weighted moving average; ``initial`` stands until the first observation."""

    def __init__(self, alpha: float, initial: float):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha, self.value, self.observations = alpha, float(initial), 0

    def update(self, x: float) -> float:
        """Fold in one observation and return the new average (the first replaces the prior)."""
        if self.observations == 0:
            self.value = float(x)
        else:
            self.value = self.alpha * float(x) + (1 - self.alpha) * self.value
        self.observations += 1
        return self.value


@ROUTING_POLICIES.register("edgefm")
class EdgeFMRouting(RoutingPolicy):
    """Offload samples with u = 1-(p1-p2) above a threshold set from the delay EWMA and the SLO."""

    rank = 8

    offloads = True

    class Config(OffloadConfig):
        model_config = ConfigDict(extra="forbid")

        threshold: float = Field(
            0.5, ge=0, le=1, description="base threshold: offload u > threshold when delay allows"
        )
        latency_slo_ms: float = Field(
            150.0, gt=0, description="objective on the mean end-to-end latency per sample, ms"
        )
        ewma_alpha: float = Field(
            0.3, gt=0, le=1, description="EWMA weight of the newest observed offload round trip"
        )
        initial_rtt_ms: float = Field(
            500.0,
            ge=0,
            description="offload round trip assumed before the first answer, ms (pessimistic: "
            "the first answer replaces it)",
        )
        update_interval_s: float = Field(
            1.0, ge=0, description="re-choose the threshold at most this often (0: every batch)"
        )
        window_samples: int = Field(
            512, gt=0, description="recent uncertainties whose quantile caps the offloaded share"
        )
        probe_interval_s: float | None = Field(
            5.0,
            gt=0,
            description="offload one sample after this long without an answer (null: never)",
        )

    def __init__(self, config: BaseModel | None, num_classes: int):
        super().__init__(config, num_classes)
        cfg: EdgeFMRouting.Config = self.config  # type: ignore[assignment]
        self.rtt = Ewma(cfg.ewma_alpha, cfg.initial_rtt_ms / 1000.0)
        self.threshold = float(cfg.threshold)
        self.share = 1.0  # f_max when the threshold was chosen
        self._chosen_s: float | None = None
        self._recent = np.empty(0, dtype=np.float64)
        self._outstanding: dict[int, float] = {}  # message id -> sent at
        self._last_heard_s = 0.0

    def offload_delay_s(self, now_s: float) -> float:
        """Estimated offload round trip now: the EWMA, or the oldest unanswered offload's age."""
        delay_s = self.rtt.value
        if self._outstanding:
            delay_s = max(delay_s, now_s - min(self._outstanding.values()))
        return delay_s

    def route(self, probs: torch.Tensor, now_s: float, edge_s: float) -> np.ndarray:
        cfg: EdgeFMRouting.Config = self.config  # type: ignore[assignment]
        u = margin_uncertainty(probs).numpy().astype(np.float64)
        self._recent = np.concatenate([self._recent, u])[-cfg.window_samples :]
        if self._chosen_s is None or now_s - self._chosen_s >= cfg.update_interval_s:
            delay_s, slo_s = self.offload_delay_s(now_s), cfg.latency_slo_ms / 1000.0
            self.threshold = edgefm_threshold(cfg.threshold, slo_s, edge_s, delay_s, self._recent)
            self.share = offload_share(slo_s, edge_s, delay_s)
            self._chosen_s = now_s
        offload = u > self.threshold
        cap = len(u) if self.share >= 1.0 else int(np.floor(self.share * len(u) + 1e-9))
        if offload.sum() > cap:  # keep the cap most uncertain (ties: batch order)
            above = np.flatnonzero(offload)
            offload[above[np.argsort(-u[above], kind="stable")[cap:]]] = False
        routes = np.full(len(u), EDGE, dtype=object)
        routes[(u > cfg.threshold) & ~offload] = SLO_LIMITED
        routes[offload] = CLOUD
        if (
            cfg.probe_interval_s is not None
            and not offload.any()
            and not self._outstanding
            and now_s - self._last_heard_s >= cfg.probe_interval_s
            and len(u)
            and u.max() > cfg.threshold
        ):
            probe = int(np.argmax(u))
            offload[probe] = True
            routes[probe] = PROBE
        self.last_uncertainty = u.astype(np.float32)
        self.last_routes = routes
        self.last_threshold = self.threshold
        return offload

    def offload_sent(self, message: int, now_s: float) -> None:
        self._outstanding[message] = now_s

    def offload_answered(self, message: int, now_s: float) -> None:
        sent_s = self._outstanding.pop(message)
        self.rtt.update(now_s - sent_s)
        self._last_heard_s = now_s

    def offload_dropped(self, message: int, now_s: float) -> None:
        sent_s = self._outstanding.pop(message)
        self.rtt.update(max(now_s - sent_s, self.rtt.value))
        self._last_heard_s = now_s
