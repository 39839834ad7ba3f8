"""A figure of one device's stream over simulated time (``fleetsim data stream``): which
corruption each edge batch holds, at which severity, and which classes, from the scenario alone
(nothing is run)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from simulator.data.streams import DeviceStream


def batch_shares(stream: DeviceStream, values: np.ndarray, categories: int) -> np.ndarray:
    """Share of each category (rows) in each edge batch (columns) of per-sample ``values``."""
    shares = np.zeros((categories, stream.num_batches))
    for b in range(stream.num_batches):
        counts = np.bincount(values[stream.batch(b)], minlength=categories)
        shares[:, b] = counts / counts.sum()
    return shares


def batch_severity(stream: DeviceStream) -> np.ndarray:
    """Mean severity of each batch's corrupted samples (NaN for an all-clean batch)."""
    severity = stream.severities().astype(float)
    severity[severity == 0] = np.nan
    out = np.full(stream.num_batches, np.nan)
    for b in range(stream.num_batches):
        values = severity[stream.batch(b)]
        if not np.isnan(values).all():
            out[b] = np.nanmean(values)
    return out


def _batch_edges_s(stream: DeviceStream) -> np.ndarray:
    """Time edges of the batches: each opens at its first sample's arrival, the last closes at
    the stream's last arrival."""
    starts = stream.arrival_s[:: stream.batch_size]
    return np.append(starts, stream.arrival_s[-1])


def stream_figure(
    stream: DeviceStream, labels: np.ndarray, class_names: list[str], title: str = ""
) -> Figure:
    """Three panels sharing simulated time: the corruption mix of each edge batch (rows: the
    device's corruptions), the batch's mean severity, and its class mix (rows: classes), with the
    device's class prior beside it when it has one (``stream.labels.alpha``)."""
    corruptions = list(dict.fromkeys(d.corruption for d in stream.domains))
    corruption_of = np.array([corruptions.index(d.corruption) for d in stream.domains])
    domain_mix = batch_shares(stream, corruption_of[stream.domain_ids], len(corruptions))
    classes = len(class_names)
    class_mix = batch_shares(stream, labels[stream.indices], classes)
    edges = _batch_edges_s(stream)
    class_h = min(0.18 * classes, 4.5)
    heights = [max(0.3 * len(corruptions), 0.9), 1.1, max(class_h, 1.2)]
    figure = Figure(figsize=(10.0, sum(heights) + 1.3), layout="constrained")
    grid = figure.add_gridspec(3, 2, height_ratios=heights, width_ratios=[16, 1])
    ax_domain = figure.add_subplot(grid[0, 0])
    ax_severity = figure.add_subplot(grid[1, 0], sharex=ax_domain)
    ax_class = figure.add_subplot(grid[2, 0], sharex=ax_domain)
    shade = dict(cmap="Greys", vmin=0.0, vmax=1.0, shading="flat")

    ax_domain.pcolormesh(edges, np.arange(len(corruptions) + 1), domain_mix, **shade)
    ax_domain.set_yticks(np.arange(len(corruptions)) + 0.5, corruptions, fontsize=8)
    ax_domain.invert_yaxis()
    ax_domain.set_ylabel("corruption", fontsize=9)
    ax_domain.tick_params(labelbottom=False)

    severity = batch_severity(stream)
    ax_severity.stairs(severity, edges, color="tab:red", linewidth=1.5, baseline=None)
    ax_severity.set_ylim(0.5, 5.5)
    ax_severity.set_yticks([1, 2, 3, 4, 5])
    ax_severity.set_ylabel("severity", fontsize=9)
    ax_severity.grid(axis="y", linewidth=0.4, alpha=0.5)
    ax_severity.tick_params(labelbottom=False, labelsize=8)

    mesh = ax_class.pcolormesh(edges, np.arange(classes + 1), class_mix, **shade)
    shown = classes <= 20
    ax_class.set_yticks(
        np.arange(classes) + 0.5 if shown else [],
        class_names if shown else [],
        fontsize=7,
    )
    ax_class.invert_yaxis()
    ax_class.set_ylabel("class" if shown else f"class (0-{classes - 1})", fontsize=9)
    ax_class.set_xlabel("simulated time (s); one column per edge batch", fontsize=9)
    ax_class.tick_params(labelsize=8)
    bar = figure.colorbar(mesh, cax=figure.add_subplot(grid[0:2, 1]))
    bar.set_label("share of the batch", fontsize=8)
    bar.ax.tick_params(labelsize=7)

    if stream.class_priors is not None:
        ax_prior = figure.add_subplot(grid[2, 1], sharey=ax_class)
        prior = np.zeros(classes)
        prior[: len(stream.class_priors)] = stream.class_priors
        ax_prior.barh(np.arange(classes) + 0.5, prior, height=0.8, color="tab:blue")
        ax_prior.set_xlim(0, 1)
        ax_prior.set_xticks([0, 1])
        ax_prior.set_title("prior", fontsize=8)
        ax_prior.tick_params(labelleft=False, labelsize=7)
    figure.suptitle(title, fontsize=10)
    return figure


def stream_summary(stream: DeviceStream, labels: np.ndarray, class_names: list[str]) -> list[str]:
    """A few lines saying what the figure shows: segments, domains and the class mix."""
    keys = [stream.domains[d].key for d in stream.domain_ids]
    changes = 1 + sum(a != b for a, b in zip(keys[:-1], keys[1:], strict=True))
    visited = list(dict.fromkeys(keys))
    shown = ", ".join(visited[:8]) + (f" and {len(visited) - 8} more" if len(visited) > 8 else "")
    counts = np.bincount(labels[stream.indices], minlength=len(class_names)) / len(stream)
    top = np.argsort(-counts, kind="stable")[:3]
    mix = ", ".join(f"{class_names[c]} {counts[c]:.0%}" for c in top)
    runs = 1 + int(np.count_nonzero(np.diff(labels[stream.indices])))
    shuffled = 1 + (len(stream) - 1) * (1 - float(np.sum(counts**2)))
    lines = [
        f"{len(stream):,} samples in {stream.num_batches} batches over "
        f"{stream.arrival_s[-1]:.1f} simulated s; {changes} domain runs through {len(visited)} "
        f"domains: {shown}",
        f"classes: most seen {mix}; {runs:,} runs of one class (about {shuffled:,.0f} in a "
        "random order of the same samples)",
    ]
    if stream.class_priors is not None:
        top_prior = np.argsort(-stream.class_priors, kind="stable")[:3]
        lines.append(
            "class prior: "
            + ", ".join(f"{class_names[c]} {stream.class_priors[c]:.2f}" for c in top_prior)
        )
    return lines
