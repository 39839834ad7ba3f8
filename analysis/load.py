"""Run folders -> tidy pandas DataFrames.

``load_runs`` gives one row per run: the run's swept overrides as columns named by their dotted key
(``network.uplink_mbps``, ``policy.name``, ``seed``) and every scalar number of its summary.json.
``load_events`` concatenates the runs' events.parquet with the same identifying columns.

A swept key may take list values (``stream.corruptions=[[fog],[contrast]]``); such a value is a
:class:`ListValue`, a tuple that pandas can hash (group, sort, count) and that prints as the list it
came from (``[fog]``), so it labels figures and tables readably.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from simulator.runs import (
    MANIFEST,
    SUMMARY,
    read_events,
    read_run_info,
    read_summary,
    run_dirs,
)

RunsArg = str | Path | Sequence[str | Path]


def named_runs(paths: RunsArg) -> list[tuple[str, Path]]:
    """``(name, folder)`` of every run under ``paths`` (one sweep or run folder, or several), in
    the order given. A run is named by its folder; where two sweep folders hold runs of the same
    name, each is prefixed with its sweep folder (its name, or its path where names clash too:
    ``weather/seed=0``), so that every name is unique. A run given twice is refused."""
    roots = [Path(paths)] if isinstance(paths, str | Path) else [Path(p) for p in paths]
    if not roots:
        raise FileNotFoundError("no run or sweep folders given")
    found = [(root, run) for root in roots for run in run_dirs(root)]
    resolved: set[Path] = set()
    for _, run in found:
        if run.resolve() in resolved:
            raise ValueError(f"run folder {run} is given twice")
        resolved.add(run.resolve())
    counts: dict[str, int] = {}
    for _, run in found:
        counts[run.name] = counts.get(run.name, 0) + 1
    root_names = [root.name for root in roots]
    named = []
    for root, run in found:
        if counts[run.name] == 1 or run == root:
            named.append((run.name, run))
        else:
            prefix = root.name if root_names.count(root.name) == 1 else str(root)
            named.append((f"{prefix}/{run.name}", run))
    return named


def unlisted_runs(runs_dir: str | Path) -> list[str]:
    """Run folders under a sweep folder that its ``sweep.json`` does not list (left by another
    sweep into the same folder, or by an earlier grid); empty without a readable sweep.json."""
    root = Path(runs_dir)
    try:
        listed = {e["name"] for e in json.loads((root / MANIFEST).read_text())["runs"]}
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if (root / SUMMARY).is_file():
        return []
    return [p.name for p in run_dirs(root) if p.name not in listed]


class ListValue(tuple):
    """A list-valued swept override as a hashable tuple that prints like the list: ``[0.5, 2]``."""

    __slots__ = ()

    def __str__(self) -> str:
        return "[" + ", ".join(str(v) for v in self) + "]"

    __repr__ = __str__


def hashable(value: Any) -> Any:
    """``value`` with lists as :class:`ListValue` (nested too) and mappings as sorted JSON text,
    so that a column of swept values can be grouped, sorted and counted."""
    if isinstance(value, (list, tuple)):
        return ListValue(hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _params(run_dir: Path) -> dict[str, Any]:
    params = dict(read_run_info(run_dir).get("params", {}))
    return {key: hashable(value) for key, value in params.items()}


def config_value(config: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` (``policy.budget.inner``) of a run's config, None if absent."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def swept_keys(runs: pd.DataFrame) -> list[str]:
    """The dotted keys a sweep varied (columns ``load_runs`` took from run.json), in order."""
    return list(runs.attrs.get("swept", []))


def load_runs(runs_dir: RunsArg) -> pd.DataFrame:
    """One row per run: ``run`` (folder name, see :func:`named_runs`), swept overrides, summary
    scalars; ``runs_dir`` is a sweep or run folder, or several (their runs together).

    Lists in the summary (per_device) and mappings (per_domain) are left out; numbers are exactly
    those of summary.json. ``df.attrs["swept"]`` lists the swept keys.
    """
    rows = []
    swept: list[str] = []
    for name, run_dir in named_runs(runs_dir):
        summary = read_summary(run_dir)
        params = _params(run_dir)
        for key in params:
            if key not in swept:
                swept.append(key)
        scalars = {
            k: v for k, v in summary.items() if not isinstance(v, (dict, list)) and k not in params
        }
        rows.append({"run": name, "path": str(run_dir), **params, **scalars})
    runs = pd.DataFrame(rows)
    if "policy.name" not in runs and "policy" in runs:
        runs["policy.name"] = runs["policy"]
    runs.attrs["swept"] = swept
    return runs


def load_events(
    runs_dir: RunsArg, runs: list[str] | None = None, kinds: list[str] | None = None
) -> pd.DataFrame:
    """Events of the runs (all, or those named as :func:`load_runs` names them) with ``run``,
    swept overrides and ``policy``."""
    frames = []
    for name, run_dir in named_runs(runs_dir):
        if runs is not None and name not in runs:
            continue
        events = read_events(run_dir)
        if kinds is not None:
            events = events[events["kind"].isin(kinds)]
        summary = read_summary(run_dir)
        events = events.assign(run=name, policy=summary.get("policy"))
        for key, value in _params(run_dir).items():
            if key not in events:
                events[key] = str(value) if isinstance(value, tuple) else value
        frames.append(events)
    if not frames:
        raise FileNotFoundError(f"no events for runs {runs} in {runs_dir}")
    return pd.concat(frames, ignore_index=True)
