"""Event recording (every sample, upload, update and download) and the run summary.

Events are one tidy table (``events.parquet``), one row per event, ``kind`` saying which:

- ``sample``: an edge prediction (device, batch, dataset index, domain, label, prediction, correct,
  entropy, uploaded, reason, the normalization-state version used and its age in simulated seconds);
- ``upload``: a message delivered to the cloud (device, batch, samples, bytes, sent/delivered time);
- ``update``: a cloud adaptation of one scope (steps, samples, new version);
- ``download``: normalization state delivered to a device (bytes, version);
- ``drop``: an upload message the uplink dropped (device, batch, samples, bytes, sent time, and
  ``reason``: ``queue_full`` or ``timeout``, see :mod:`simulator.fleet.network`);
- ``offload``, ``answer``, ``offload_drop``: routing (:mod:`policies.routing`): samples offloaded to
  the cloud foundation model arriving there, the cloud's answer arriving back on the device (with
  the cloud's ``cloud_queue_s`` and ``cloud_compute_s``), and offload messages the uplink dropped.

Where the stream has them (:mod:`simulator.data.streams`), sample rows carry the device's
``stream_group``, the ``class_prior`` of the sample's class on its device and its correlation
``label_slot``.

Sample rows also say who answered (``offloaded``, ``route``, the routing ``threshold`` and the
sample's ``uncertainty``), what was delivered (``delivered_prediction``, ``delivered_correct``) and
the end-to-end ``latency_s`` from batch ready to answer delivered.

Sample rows are collected as per-batch column arrays, so recording costs little per sample.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd


def _ndim(value: Any) -> int:
    """``np.ndim`` without its conversion of Python scalars (called per batch and column)."""
    if isinstance(value, (list, tuple)):
        return 1
    return getattr(value, "ndim", 0)


class EventRecorder:
    """Collects events during a run and turns them into a DataFrame."""

    def __init__(self) -> None:
        # per column, one entry per recorded batch: a 1-d array, or a scalar standing for the
        # whole batch (expanded once, in frame(): one call per batch and column adds up at
        # batches of one image)
        self._samples: dict[str, list[Any]] = defaultdict(list)
        self._sizes: list[int] = []
        self._owned: set[tuple[str, int]] = set()  # (column, batch) arrays amend may write
        self._messages: list[dict[str, Any]] = []

    def samples(self, **columns: Any) -> int:
        """Record one edge batch; every column has one value per sample (scalars are broadcast).
        Returns the batch's handle for :meth:`amend_samples`."""
        lengths = {len(v) for v in columns.values() if _ndim(v)}
        if len(lengths) != 1:
            raise ValueError(f"sample columns need one length (scalars aside), got {lengths}")
        self._sizes.append(lengths.pop())
        for key, value in columns.items():
            self._samples[key].append(np.asarray(value) if _ndim(value) else value)
        return len(self._sizes) - 1

    def amend_samples(self, handle: int, rows: np.ndarray, **columns: Any) -> None:
        """Overwrite ``columns`` at ``rows`` (indices within the batch) of an already recorded
        batch: what is known only later (an offloaded sample's cloud answer and its latency)."""
        for key, value in columns.items():
            if (key, handle) not in self._owned:  # a scalar or a caller's array: copy first
                batch = self._samples[key][handle]
                self._samples[key][handle] = np.array(
                    np.broadcast_to(batch, (self._sizes[handle],))
                )
                self._owned.add((key, handle))
            self._samples[key][handle][rows] = value

    def _column(self, parts: list[Any]) -> np.ndarray:
        if not any(_ndim(p) for p in parts):  # a per-batch scalar column: one repeat
            return np.repeat(np.asarray(parts), self._sizes)
        return np.concatenate(
            [p if _ndim(p) else np.full(n, p) for p, n in zip(parts, self._sizes, strict=True)]
        )

    def message(self, kind: str, **fields: Any) -> None:
        """Record one upload, update or download event."""
        self._messages.append({"kind": kind, **fields})

    def frame(self) -> pd.DataFrame:
        samples = pd.DataFrame({k: self._column(v) for k, v in self._samples.items()})
        if len(samples):
            samples.insert(0, "kind", "sample")
        messages = pd.DataFrame(self._messages)
        frames = [f for f in (samples, messages) if len(f)]
        if not frames:
            return pd.DataFrame({"kind": pd.Series(dtype=str)})
        events = pd.concat(frames, ignore_index=True, sort=False)
        events = events.sort_values(["sim_time_s", "kind"], kind="stable", ignore_index=True)
        for col in ("domain", "reason", "route", "kind"):
            if col in events:
                events[col] = events[col].astype("category")
        return events


def summarize(events: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers of a run, computed from its events."""
    samples = events[events["kind"] == "sample"]
    uploads = events[events["kind"] == "upload"]
    updates = events[events["kind"] == "update"]
    downloads = events[events["kind"] == "download"]
    drops = events[events["kind"] == "drop"]
    n = len(samples)
    correct = samples["correct"].astype(bool)
    uploaded = samples["uploaded"].astype(bool)

    per_domain = {}
    for domain, group in samples.groupby("domain", observed=True, sort=True):
        per_domain[str(domain)] = {
            "samples": int(len(group)),
            "accuracy": float(group["correct"].mean()),
            "uploaded_samples": int(group["uploaded"].sum()),
        }

    per_device = []
    for device, group in samples.groupby("device", sort=True):
        dev_up = uploads[uploads["device"] == device]
        dev_down = downloads[downloads["device"] == device]
        dev_drop = drops[drops["device"] == device]
        per_device.append(
            {
                "device": int(device),
                "samples": int(len(group)),
                "accuracy": float(group["correct"].mean()),
                "uploaded_samples": int(group["uploaded"].sum()),
                "upload_bytes": int(dev_up["bytes"].sum()) if len(dev_up) else 0,
                "download_bytes": int(dev_down["bytes"].sum()) if len(dev_down) else 0,
                "downloads": int(len(dev_down)),
                **_dropped(dev_drop),
                **_delivered(group),
            }
        )

    return {
        "samples": int(n),
        "accuracy": float(correct.mean()) if n else float("nan"),
        "uploaded_samples": int(uploaded.sum()),
        "upload_fraction": float(uploaded.mean()) if n else 0.0,
        "upload_messages": int(len(uploads)),
        "upload_bytes": int(uploads["bytes"].sum()) if len(uploads) else 0,
        "download_bytes": int(downloads["bytes"].sum()) if len(downloads) else 0,
        "downloads": int(len(downloads)),
        **_dropped(drops),
        "dropped_by_reason": {
            str(reason): int(count)
            for reason, count in drops["reason"].astype(str).value_counts().sort_index().items()
        }
        if len(drops)
        else {},
        "updates": int(len(updates)),
        "cloud_steps": int(updates["steps"].sum()) if len(updates) else 0,
        "mean_entropy": float(samples["entropy"].mean()) if n else float("nan"),
        **_staleness(samples),
        **_queue(events[events["kind"] == "queue"]),
        **_delivered(samples),
        **_offloads(events),
        "per_domain": per_domain,
        "per_device": per_device,
    }


def _delivered(samples: pd.DataFrame) -> dict[str, Any]:
    """The answers actually delivered (edge or cloud): accuracy, end-to-end latency (from batch
    ready to answer delivered; percentiles over samples) and the share offloaded."""
    if "latency_s" not in samples or not len(samples):
        return {}
    latency = samples["latency_s"].to_numpy(dtype=float)
    latency = latency[np.isfinite(latency)]
    offloaded = samples["offloaded"].astype(bool)
    cloud = samples[offloaded]
    return {
        "delivered_accuracy": float(samples["delivered_correct"].astype(bool).mean()),
        "latency_mean_s": float(latency.mean()) if len(latency) else None,
        "latency_p50_s": float(np.percentile(latency, 50)) if len(latency) else None,
        "latency_p95_s": float(np.percentile(latency, 95)) if len(latency) else None,
        "offloaded_samples": int(offloaded.sum()),
        "offload_fraction": float(offloaded.mean()),
        "offloaded_delivered_accuracy": (
            float(cloud["delivered_correct"].astype(bool).mean()) if len(cloud) else None
        ),
    }


def _offloads(events: pd.DataFrame) -> dict[str, int]:
    """Offload traffic: messages and bytes up (images) and down (answers), samples dropped."""
    offloads = events[events["kind"] == "offload"]
    answers = events[events["kind"] == "answer"]
    lost = events[events["kind"] == "offload_drop"]
    return {
        "offload_messages": int(len(offloads)),
        "offload_bytes": int(offloads["bytes"].sum()) if len(offloads) else 0,
        "answer_bytes": int(answers["bytes"].sum()) if len(answers) else 0,
        "offload_dropped_samples": int(lost["samples"].sum()) if len(lost) else 0,
    }


def _dropped(drops: pd.DataFrame) -> dict[str, int]:
    """Upload messages, bytes and samples lost to a full send queue or a queue timeout."""
    if not len(drops):
        return {"dropped_messages": 0, "dropped_bytes": 0, "dropped_samples": 0}
    return {
        "dropped_messages": int(len(drops)),
        "dropped_bytes": int(drops["bytes"].sum()),
        "dropped_samples": int(drops["samples"].sum()),
    }


def _finite_mean(values: pd.Series) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else None


def _staleness(samples: pd.DataFrame) -> dict[str, Any]:
    """How stale the states behind the predictions were: age of the newest samples a state learnt
    from (s; only predictions made with an adapted state) and cloud updates not yet received."""
    if "state_staleness_s" not in samples or not len(samples):
        return {}
    stale = samples["state_staleness_s"].to_numpy(dtype=float)
    finite = stale[np.isfinite(stale)]
    return {
        "state_staleness_mean_s": float(finite.mean()) if len(finite) else None,
        "state_staleness_p95_s": float(np.percentile(finite, 95)) if len(finite) else None,
        "state_lag_mean_updates": _finite_mean(samples["state_lag"].astype(float)),
    }


def _queue(queue: pd.DataFrame) -> dict[str, Any]:
    """Cloud queue length over time: time-weighted mean and maximum."""
    if not len(queue):
        return {"cloud_queue_mean": 0.0, "cloud_queue_max": 0}
    t = queue["sim_time_s"].to_numpy(dtype=float)
    q = queue["queue"].to_numpy(dtype=float)
    span = t[-1] - t[0]
    mean = float((q[:-1] * np.diff(t)).sum() / span) if span > 0 else float(q.mean())
    return {"cloud_queue_mean": mean, "cloud_queue_max": int(q.max())}


def summarize_selection(events: pd.DataFrame, group_of: dict[int, str]) -> dict[str, Any]:
    """Model-selection figures (policies/selection): which member answered the samples, edge
    compute per batch against the latency budget, and the switches, for the fleet, per group of
    devices (``group_of``: device -> hardware profile name) and per device.

    ``compute`` is the simulated edge compute of the batch that answered a sample (slowdowns
    included; ``compute_s`` column), ``within_budget`` the share of samples whose batch met the
    budget in force (``budget_s``; samples without a budget left out), ``fallback`` the share
    answered by the fastest member because no member was predicted to meet the budget, ``latency``
    the time from the batch being ready to the answer (``latency_s``, with any wait behind earlier
    batches).
    """
    samples = events[events["kind"] == "sample"]
    if "model" not in samples:
        return {}
    switches = events[events["kind"] == "switch"]
    switches = switches[switches["from_model"].astype(str) != ""]  # not the initial choices

    def figures(group: pd.DataFrame) -> dict[str, Any]:
        compute_ms = group["compute_s"].to_numpy(dtype=float) * 1000.0
        budget_ms = group["budget_s"].to_numpy(dtype=float) * 1000.0
        budgeted = np.isfinite(budget_ms)
        out: dict[str, Any] = {
            "compute_mean_ms": float(compute_ms.mean()) if len(group) else None,
            "compute_p95_ms": float(np.percentile(compute_ms, 95)) if len(group) else None,
            "within_budget": float((compute_ms[budgeted] <= budget_ms[budgeted]).mean())
            if budgeted.any()
            else None,
            "fallback": float(group["fallback"].astype(bool).mean()) if len(group) else None,
            "models": {
                str(m): float(share)
                for m, share in group["model"].astype(str).value_counts(normalize=True).items()
            },
        }
        if "latency_s" in group:
            latency_ms = group["latency_s"].to_numpy(dtype=float) * 1000.0
            latency_ms = latency_ms[np.isfinite(latency_ms)]
            if len(latency_ms):
                out["latency_mean_ms"] = float(latency_ms.mean())
                out["latency_p95_ms"] = float(np.percentile(latency_ms, 95))
        return out

    def switch_count(devices: set[int]) -> int:
        return int(switches["device"].isin(devices).sum()) if len(switches) else 0

    per_model = {
        str(model): {
            "samples": int(len(g)),
            "accuracy": float(g["correct"].mean()),
            "devices": int(g["device"].nunique()),
        }
        for model, g in samples.groupby(samples["model"].astype(str), sort=True)
    }
    group_names = samples["device"].map(lambda d: group_of.get(int(d), "none"))
    per_profile = {}
    for name, g in samples.groupby(group_names, sort=True):
        devices = {int(d) for d in g["device"].unique()}
        per_profile[str(name)] = {
            "samples": int(len(g)),
            "accuracy": float(g["correct"].mean()),
            **figures(g),
            "model_switches": switch_count(devices),
        }
    per_device = {
        int(d): {
            "compute_mean_ms": float(g["compute_s"].mean() * 1000.0),
            "models": sorted(g["model"].astype(str).unique()),
            "model_switches": switch_count({int(d)}),
        }
        for d, g in samples.groupby("device", sort=True)
    }
    fleet = figures(samples)
    return {
        "model_switches": int(len(switches)),
        "switches_by_reason": {
            str(r): int(c) for r, c in switches["reason"].astype(str).value_counts().items()
        }
        if len(switches)
        else {},
        "within_budget": fleet["within_budget"],
        "fallback": fleet["fallback"],
        "compute_mean_ms": fleet["compute_mean_ms"],
        "compute_p95_ms": fleet["compute_p95_ms"],
        "per_model": per_model,
        "per_profile": per_profile,
        "per_device": per_device,
    }


def merge_selection(summary: dict[str, Any], selection: dict[str, Any]) -> None:
    """Model-selection figures (:func:`summarize_selection`) into the summary: headline keys, per
    profile and per device."""
    per_profile = selection.pop("per_profile")
    per_device = selection.pop("per_device")
    summary.update(selection)
    groups = summary.setdefault("per_profile", {})
    for name, figures in per_profile.items():
        groups.setdefault(name, {}).update(figures)
    for row in summary["per_device"]:
        row.update(per_device.get(row["device"], {}))


def summarize_energy(per_device: list[dict[str, Any]], samples: int, macs: int) -> dict[str, Any]:
    """Fleet energy from the devices' own rows (``profile``, ``compute_s`` and the energies each
    device reports, :meth:`simulator.fleet.device.EdgeDevice.energy_summary`): totals, energy per
    inference, and per hardware profile. ``macs`` is the edge model's MACs per image."""
    totals = {"compute_s": 0.0, "energy_compute_j": 0.0, "energy_radio_j": 0.0}
    per_profile: dict[str, dict[str, float]] = {}
    for row in per_device:
        group = per_profile.setdefault(
            str(row["profile"]), {"devices": 0, "samples": 0, "correct": 0.0, "energy_j": 0.0}
        )
        group["devices"] += 1
        group["samples"] += row["samples"]
        group["correct"] += row["accuracy"] * row["samples"]
        group["energy_j"] += row["energy_j"]
        for key in totals:
            totals[key] += row[key]
    energy = totals["energy_compute_j"] + totals["energy_radio_j"]
    return {
        "edge_macs_per_image": macs,
        "energy_j": energy,
        "energy_compute_j": totals["energy_compute_j"],
        "energy_radio_j": totals["energy_radio_j"],
        "energy_per_inference_j": energy / max(samples, 1),
        "per_profile": {
            name: {
                "devices": g["devices"],
                "samples": g["samples"],
                "accuracy": g["correct"] / max(g["samples"], 1),
                "energy_j": g["energy_j"],
                "energy_per_inference_j": g["energy_j"] / max(g["samples"], 1),
            }
            for name, g in sorted(per_profile.items())
        },
    }
