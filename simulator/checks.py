"""Checks on a valid scenario: what is likely a mistake, one sentence each.

``fleetsim validate``, ``run``, ``sweep`` and ``data stream`` show them before any work, and a
run keeps them in its summary.json (``warnings``). Validation proper (what is not allowed at all)
lives in :mod:`simulator.config`; these are the scenarios that run but probably not as meant.
"""

from __future__ import annotations

from simulator.adaptation import ADAPTERS
from simulator.config import Scenario
from simulator.models.zoo import trained_on, weights_status

__all__ = ["MIN_BATCH_FOR_STATISTICS", "scenario_warnings"]


#: Below this many images per edge batch, normalising with the batch's own statistics costs
#: accuracy (benchmarks/cifar10c.md, "Edge batch size under batch statistics").
MIN_BATCH_FOR_STATISTICS = 16


def scenario_warnings(scenario: Scenario) -> list[str]:
    """What in a valid scenario is likely a mistake, one sentence each (empty: nothing): shown by
    ``fleetsim validate`` and ``run`` and kept in the run's summary.json (``warnings``)."""
    found: list[str] = []
    batch, samples = scenario.stream.batch_size, scenario.stream.samples_per_device
    if batch > samples:
        found.append(
            f"stream.batch_size {batch} is larger than stream.samples_per_device {samples}: "
            f"each device classifies one batch of {samples}"
        )
    else:
        found += _segment_warnings(scenario)
    network = scenario.network
    if network.latency.dist == "empirical" and "latency_ms" in network.model_fields_set:
        found.append(
            f"network.latency_ms {network.latency_ms} is not used: latency.dist empirical draws "
            f"each latency from the measured RTTs ({network.latency.samples})"
        )
    adapter = ADAPTERS.get(scenario.cloud.adapter)
    data = scenario.dataset.name
    models = [("edge.model", scenario.edge.model, scenario.edge.checkpoint)]
    answers = adapter.needs_teacher or scenario.routing.plugin.offloads
    if answers and scenario.cloud.teacher is not None:
        models.append(("cloud.teacher", scenario.cloud.teacher, scenario.cloud.teacher_checkpoint))
    for key, name, checkpoint in models:
        if checkpoint is not None:
            continue
        origin = trained_on(name)
        if origin is not None and origin != data:
            found.append(
                f"{key} {name} was trained on {origin}, but dataset.name is {data}: its "
                f"predictions will be near chance (pick a {data} model, fleetsim list models)"
            )
        where = weights_status(name)
        if where.startswith("missing"):
            found.append(f"{key} {name}: its weights are not on this machine ({where})")
    if adapter.edge_norm_for(scenario.cloud.params()) != "batch":
        return found
    last = samples % batch  # a stream's last batch is short unless batches divide it
    if batch >= MIN_BATCH_FOR_STATISTICS and 0 < last < MIN_BATCH_FOR_STATISTICS:
        found.append(
            f"stream.samples_per_device {samples} with stream.batch_size {batch} leaves each "
            f"device a last batch of {last} image{'s' if last > 1 else ''}, which the edge "
            f"normalises with its own statistics (cloud.adapter {scenario.cloud.adapter!r}); "
            f"a multiple of {batch} avoids it"
        )
    if batch < MIN_BATCH_FOR_STATISTICS:
        how = (
            f"set cloud.{scenario.cloud.adapter}.edge_norm: eval, or raise stream.batch_size"
            if "edge_norm" in adapter.Config.model_fields  # the adapter lets the edge choose
            else "raise stream.batch_size"
        )
        found.append(
            f"stream.batch_size {batch}: with cloud.adapter {scenario.cloud.adapter!r} the edge "
            f"normalises each batch with its own statistics, which are noisy below "
            f"{MIN_BATCH_FOR_STATISTICS} images (CIFAR-10-C, ResNet-20: BN adaptation's mean "
            f"error is 81 % at batches of 1, 42 % at 4, 28 % at 32, against 47 % unadapted); {how}"
        )
    return found


def _segment_warnings(scenario: Scenario) -> list[str]:
    """Edge batches longer than a domain segment, for the stream or each group of devices."""
    stream = scenario.stream
    if stream.groups is None:
        streams = [(stream, "", "stream.segment_samples")]
    else:
        streams = [
            (
                stream.for_group(i),
                f" (stream group {i})",
                f"stream.groups[{i}].segment_samples"
                if "segment_samples" in group.model_fields_set
                else "stream.segment_samples",
            )
            for i, group in enumerate(stream.groups)
        ]
    found = []
    batch, samples = stream.batch_size, stream.samples_per_device
    for config, where, key in streams:
        segment = config.segment_samples
        if config.schedule == "mixed" or batch <= segment or samples <= segment:
            continue  # mixed draws each sample's domain: no segments
        if config.schedule == "gradual":
            what = "two or more severities"
        elif len(set(config.corruptions)) > 1:
            what = "two or more domains"
        else:
            continue  # one domain at one severity: segments change nothing
        found.append(
            f"stream.batch_size {batch} is larger than {key} {segment}{where}: every batch "
            f"mixes images of {what}"
        )
    return found
