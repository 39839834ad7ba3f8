"""Sweeps: many runs of one scenario over a grid (or zipped lists) of dotted overrides and seeds.

A sweep expands ``grid`` (Cartesian product), ``zip`` (lists walked in lock-step) and ``seeds``
(seed = base seed + i) into run specifications, validates every one before anything runs, and runs
them on an executor: a local process pool (the default) or ``dask.distributed`` (a ``LocalCluster``
when no scheduler address is given). Each run writes its folder atomically, named from its overrides,
with ``run.json`` holding the hash of its resolved config; a re-run skips folders whose hash matches
and retries the rest. ``sweep.json`` (the manifest) records what was asked and each run's status
(finished, failed with its traceback, skipped).

On a real dask cluster the workers write the run folders themselves, so the sweep folder must be
on a filesystem they all share; the client only writes the manifest.

The sweep may also live in the scenario YAML::

    sweep:
      grid: {network.uplink_mbps: [0.25, 1, 4], policy.name: [none, all, random, cema]}
      zip: {}
      seeds: 3
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from simulator.config import (
    PATH_KEYS,
    Problem,
    ScenarioError,
    read_scenario_yaml,
    rebase_path,
    scenario_from_dict,
)
from simulator.runs import (
    MANIFEST,
    check_run_dir,
    is_finished,
    remove_leftovers,
    write_json,
    write_run,
)

_NAME_LIMIT = 180
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


# --------------------------------------------------------------------------------------------------
# What to sweep


@dataclass
class SweepSpec:
    """What a sweep asks for: grid and zipped dotted keys (value lists) and a number of seeds."""

    grid: dict[str, list[Any]] = field(default_factory=dict)
    zip: dict[str, list[Any]] = field(default_factory=dict)
    seeds: int | None = None

    def merged(self, other: SweepSpec) -> SweepSpec:
        """``other`` (the command line) over this one (the YAML): a key ``other`` sweeps leaves
        this one's grid; this one's zip is dropped whole when ``other`` has a zip or sweeps one of
        its keys (lists in lock-step only make sense together); grid keys of both multiply."""
        mine = set(other.grid) | set(other.zip)
        grid = {k: v for k, v in self.grid.items() if k not in mine}
        # the YAML's zip goes whole: its lists only make sense together
        keep_zip = not other.zip and not (mine & set(self.zip))
        zipped = dict(self.zip) if keep_zip else {}
        return SweepSpec(
            grid={**grid, **other.grid},
            zip={**zipped, **other.zip},
            seeds=other.seeds if other.seeds is not None else self.seeds,
        )

    def as_dict(self) -> dict[str, Any]:
        return {"grid": self.grid, "zip": self.zip, "seeds": self.seeds}


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its folder name and the overrides (``key=value``) that make it."""

    name: str
    params: dict[str, Any]

    @property
    def overrides(self) -> list[str]:
        return [f"{key}={_yaml_value(value)}" for key, value in self.params.items()]


def _yaml_value(value: Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000)
        .strip()
        .removesuffix("...")
        .strip()
    )


def parse_values(text: str) -> tuple[str, list[Any]]:
    """``"network.uplink_mbps=0.5,1,2"`` -> ``("network.uplink_mbps", [0.5, 1, 2])``.

    Values are YAML; a value starting with ``[`` is read as one YAML list of the values, so a list
    per value (per-device bandwidths) is written ``key=[[1,2],[3,4]]``.
    """
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise ScenarioError(
            [Problem("--grid/--zip", text, "a sweep axis looks like dotted.key=v1,v2,...")]
        )
    try:
        if raw.startswith("["):
            values = yaml.safe_load(raw)
            if not isinstance(values, list):
                raise yaml.YAMLError("expected a list")
        else:
            values = [yaml.safe_load(part) for part in raw.split(",")]
    except yaml.YAMLError as exc:
        raise ScenarioError([Problem(key, raw, f"values are not valid YAML: {exc}")]) from None
    return key, values


def spec_from_yaml(section: Any) -> SweepSpec:
    """The ``sweep:`` section of a scenario YAML as a :class:`SweepSpec` (checked)."""
    if section is None:
        return SweepSpec()
    if not isinstance(section, dict):
        raise ScenarioError([Problem("sweep", section, "must be a mapping with grid, zip, seeds")])
    problems = [
        Problem(f"sweep.{key}", value, "unknown key; allowed: grid, zip, seeds")
        for key, value in section.items()
        if key not in ("grid", "zip", "seeds")
    ]
    axes: dict[str, dict[str, list[Any]]] = {}
    for part in ("grid", "zip"):
        raw = section.get(part) or {}
        if not isinstance(raw, dict):
            problems.append(Problem(f"sweep.{part}", raw, "must map dotted keys to value lists"))
            raw = {}
        axes[part] = {}
        for key, values in raw.items():
            if not isinstance(values, list) or not values:
                problems.append(Problem(f"sweep.{part}.{key}", values, "must be a non-empty list"))
            else:
                axes[part][str(key)] = values
    seeds = section.get("seeds")
    if seeds is not None and (not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1):
        problems.append(Problem("sweep.seeds", seeds, "must be a positive integer"))
        seeds = None
    if problems:
        raise ScenarioError(problems)
    return SweepSpec(grid=axes["grid"], zip=axes["zip"], seeds=seeds)


def expand(spec: SweepSpec, base_seed: int = 0) -> list[RunSpec]:
    """Every run of a sweep, in a deterministic order: grid (product) x zip (lock-step) x seeds."""
    lengths = {key: len(values) for key, values in spec.zip.items()}
    if len(set(lengths.values())) > 1:
        counts = ", ".join(f"{k} {n}" for k, n in lengths.items())
        raise ScenarioError(
            [
                Problem(
                    f"sweep.zip.{k}",
                    values,
                    f"zipped lists must have equal lengths (values per key: {counts})",
                )
                for k, values in spec.zip.items()
            ]
        )
    clash = set(spec.grid) & set(spec.zip)
    if clash:
        raise ScenarioError(
            [
                Problem(f"sweep.grid.{k}", spec.grid[k], f"key is also zipped: {spec.zip[k]}")
                for k in sorted(clash)
            ]
        )
    grid_points = list(itertools.product(*spec.grid.values())) if spec.grid else [()]
    zip_points = list(zip(*spec.zip.values(), strict=True)) if spec.zip else [()]
    seeds = [None] if spec.seeds is None else [base_seed + i for i in range(spec.seeds)]
    runs = []
    for g, z, seed in itertools.product(grid_points, zip_points, seeds):
        params = {**dict(zip(spec.grid, g, strict=True)), **dict(zip(spec.zip, z, strict=True))}
        if seed is not None:
            params["seed"] = seed
        runs.append(RunSpec(run_name(params), params))
    if spec.seeds is not None and "seed" in {*spec.grid, *spec.zip}:
        raise ScenarioError(
            [Problem("sweep.seeds", spec.seeds, "seed is swept as an axis too: use one of the two")]
        )
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ScenarioError(
            [Problem("sweep", twice[:3], "these runs would share a folder name (equal values?)")]
        )
    return runs


def _format(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    if isinstance(value, list):
        return "-".join(_format(v) for v in value)
    if isinstance(value, dict):
        return "-".join(f"{k}-{_format(v)}" for k, v in value.items())
    return str(value)


def run_name(params: dict[str, Any]) -> str:
    """Folder name from overrides: ``network.uplink_mbps=2__policy.name=cema__seed=1``.

    Filesystem-safe and deterministic; names longer than 180 characters are cut and end in a short
    hash of the whole so they stay unique.
    """
    if not params:
        return "base"
    name = "__".join(f"{key}={_UNSAFE.sub('-', _format(value))}" for key, value in params.items())
    name = name.lstrip(".") or "run"
    if len(name) > _NAME_LIMIT:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: _NAME_LIMIT - 12]}__{digest}"
    return name


def config_hash(resolved: dict[str, Any]) -> str:
    """SHA-256 of the resolved scenario (canonical JSON): equal hashes mean the same run."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Planning: load, expand, validate everything before running anything


@dataclass
class PlannedRun:
    spec: RunSpec
    resolved: dict[str, Any]
    config_hash: str
    warnings: tuple[str, ...] = ()  # simulator.engine.scenario_warnings: likely mistakes


@dataclass
class SweepPlan:
    """A validated sweep: the runs with their resolved configs and what was asked."""

    scenario: str
    overrides: list[str]
    spec: SweepSpec
    runs: list[PlannedRun]


def shadowed_overrides(spec: SweepSpec, overrides: list[str]) -> list[str]:
    """The ``--set`` overrides of keys the sweep also sweeps (which would override them)."""
    swept = {*spec.grid, *spec.zip}
    return [text for text in overrides if text.partition("=")[0].strip() in swept]


def plan_sweep(
    scenario_path: str | Path,
    overrides: list[str] | None = None,
    cli_spec: SweepSpec | None = None,
    *,
    refuse_shadowed: bool = True,
) -> SweepPlan:
    """Read a scenario (with its optional ``sweep:`` section), expand and validate every run.

    Raises :class:`ScenarioError` naming the run and the dotted path of the first invalid config,
    or (``refuse_shadowed``) naming a ``--set`` of a swept key (:func:`shadowed_overrides`).
    """
    from simulator.checks import scenario_warnings

    path = Path(scenario_path)
    data = read_scenario_yaml(path)
    spec = spec_from_yaml(data.pop("sweep", None)).merged(cli_spec or SweepSpec())
    for axis in (spec.grid, spec.zip):  # file paths swept: as in the scenario's own sections
        for key in axis.keys() & {".".join(k) for k in PATH_KEYS}:
            axis[key] = [rebase_path(v, path.parent) for v in axis[key]]
    overrides = list(overrides or [])
    shadowed = shadowed_overrides(spec, overrides)
    if shadowed and refuse_shadowed:
        raise ScenarioError(
            [
                Problem(
                    text.partition("=")[0].strip(),
                    text.partition("=")[2],
                    "is set with --set but also swept (sweep: section or --grid/--zip), which "
                    "would override it in every run; sweep it with --grid/--zip instead (a "
                    "command-line axis replaces the YAML's)",
                )
                for text in shadowed
            ],
            str(path),
        )
    base = scenario_from_dict(data, overrides, source=str(path))
    planned = []
    for run in expand(spec, base_seed=base.seed):
        scenario = scenario_from_dict(
            data, overrides + run.overrides, source=f"{path} [{run.name}]"
        )
        resolved = scenario.resolved()
        warnings = tuple(scenario_warnings(scenario))
        planned.append(PlannedRun(run, resolved, config_hash(resolved), warnings))
    return SweepPlan(str(path), overrides, spec, planned)


# --------------------------------------------------------------------------------------------------
# One run, as a worker executes it


def execute_run(
    resolved: dict[str, Any],
    out_dir: str,
    info: dict[str, Any],
    threads: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run one resolved scenario into ``out_dir`` atomically; never raises for a failing run.

    The run folder (:mod:`simulator.runs`: config.yaml, events.parquet, summary.json and
    ``run.json`` with the config hash) is assembled in a staging sibling and renamed into place, so
    an interrupted run leaves nothing half-written. Returns ``{"status": "finished"|"failed", ...}`` with the traceback.
    """
    from simulator.engine import run_scenario

    if threads:
        import torch

        torch.set_num_threads(threads)
    started = time.perf_counter()
    target = Path(out_dir)
    try:
        check_run_dir(target, "run folder", sweep_run=True)  # never one that is not a run's
        result = run_scenario(scenario_from_dict(resolved), device=device)
        write_run(result, target, run_info=info)
    except Exception as exc:  # one failing run must not stop the sweep
        return {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "wall_time_s": time.perf_counter() - started,
        }
    summary = result.summary
    return {
        "status": "finished",
        "wall_time_s": time.perf_counter() - started,
        "accuracy": summary.get("accuracy"),
        "upload_bytes": summary.get("upload_bytes"),
    }


def _initialise_worker() -> None:
    import torch

    torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------------
# Executors


Task = tuple[str, dict[str, Any], str, dict[str, Any]]  # (name, resolved, out_dir, info)


def _local_results(
    tasks: list[Task], jobs: int, device: str = "cpu"
) -> Iterator[tuple[str, dict[str, Any]]]:
    if jobs <= 1:
        for name, resolved, out_dir, info in tasks:
            yield name, execute_run(resolved, out_dir, info, device=device)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_initialise_worker,
    )
    interrupted = False
    try:
        futures = {pool.submit(execute_run, r, o, i, None, device): n for n, r, o, i in tasks}
        for future in as_completed(futures):
            yield futures[future], _outcome(future)
    except BaseException:  # Ctrl-C or the consumer stopped: stop the workers now
        interrupted = True
        raise
    finally:
        if interrupted:
            # a worker killed mid-write leaves only a hidden staging folder, removed by the sweep
            for process in list((pool._processes or {}).values()):
                process.terminate()
        pool.shutdown(wait=not interrupted, cancel_futures=True)


def _outcome(future: Any) -> dict[str, Any]:
    try:
        return future.result()
    except Exception as exc:  # the worker itself died (e.g. out of memory)
        return {
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": "".join(traceback.format_exception(exc)),
        }


def _dask_results(
    tasks: list[Task], jobs: int, scheduler: str | None, processes: bool, device: str = "cpu"
) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise RuntimeError(
            'the dask executor needs dask.distributed: pip install "fleetsim[dask]"'
        ) from None
    import logging

    with contextlib.ExitStack() as stack:
        # shutting a LocalCluster down on a busy machine logs harmless heartbeat/kill warnings
        quiet = logging.getLogger("distributed")
        stack.callback(quiet.setLevel, quiet.level)
        quiet.setLevel(logging.ERROR)
        if scheduler:
            client = stack.enter_context(Client(scheduler))
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=max(jobs, 1),
                    threads_per_worker=1,
                    processes=processes,
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
        threads = 1 if jobs > 1 or scheduler else None
        futures = {
            client.submit(execute_run, r, o, i, threads, device, key=f"fleetsim-{n}", pure=False): n
            for n, r, o, i in tasks
        }
        try:
            for future in as_completed(futures):
                yield futures[future], _outcome(future)
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:
                client.cancel(pending)


# --------------------------------------------------------------------------------------------------
# The sweep


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


ProgressHook = Callable[[str, dict[str, Any]], None]


def run_sweep(
    plan: SweepPlan,
    out: str | Path,
    *,
    jobs: int = 1,
    executor: str = "local",
    scheduler: str | None = None,
    dask_processes: bool = True,
    progress: bool = False,
    on_result: ProgressHook | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run every planned run not already finished into ``out/<run name>``; returns the manifest.

    Finished runs with the same config hash are skipped; failed ones are run again. The manifest
    (``out/sweep.json``) is rewritten after every run, so an interrupted sweep still says where it
    stood; Ctrl-C stops the workers and marks unfinished runs ``interrupted``. ``device`` is where
    every run computes (:mod:`simulator.compute`); a device this machine lacks raises
    ``ValueError`` before any run starts (with a remote ``scheduler``, each worker checks its own).
    """
    if executor not in ("local", "dask"):
        raise ValueError(f"unknown executor {executor!r}; allowed: local, dask")
    if scheduler is None:  # the runs compute on this machine: check it has the device now
        from simulator.compute import resolve_device

        resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out)
    try:  # an earlier attempt's manifest: what it knew of the runs skipped now
        before = json.loads((out / MANIFEST).read_text())
        earlier = {e["name"]: e for e in before.get("runs", []) if isinstance(e, dict)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        before, earlier = {}, {}
    entries: dict[str, dict[str, Any]] = {}
    tasks: list[Task] = []
    for run in plan.runs:
        run_dir = out / run.spec.name
        entry: dict[str, Any] = {
            "name": run.spec.name,
            "params": run.spec.params,
            "overrides": run.spec.overrides,
            "config_hash": run.config_hash,
        }
        if is_finished(run_dir, run.config_hash):
            known = earlier.get(run.spec.name, {})
            if known.get("config_hash") == run.config_hash:  # keep its accuracy, times, ...
                entry.update({k: v for k, v in known.items() if k not in entry})
            entry["status"] = "skipped"
        else:
            entry["status"] = "pending"
            info = {k: entry[k] for k in ("name", "params", "overrides", "config_hash")}
            tasks.append((run.spec.name, run.resolved, str(run_dir), info))
        entries[run.spec.name] = entry
    manifest: dict[str, Any] = {
        "scenario": plan.scenario,
        "overrides": plan.overrides,
        "sweep": plan.spec.as_dict(),
        "executor": executor,
        "scheduler": scheduler,
        "device": device,
        "jobs": jobs,
        "started": _now(),
        "finished": None,
        "counts": {},
        "runs": list(entries.values()),
    }
    if (
        isinstance(before, dict)
        and before.get("started")
        and before.get("scenario") == plan.scenario  # the same sweep, resumed: keep its start
    ):
        manifest["first_started"] = before.get("first_started", before["started"])

    def save() -> None:
        counts: dict[str, int] = {}
        for e in entries.values():
            counts[e["status"]] = counts.get(e["status"], 0) + 1
        manifest["counts"] = counts
        write_json(out / MANIFEST, manifest)

    save()
    if executor == "dask":
        results: Iterable[tuple[str, dict[str, Any]]] = _dask_results(
            tasks, jobs, scheduler, dask_processes, device
        )
    else:
        results = _local_results(tasks, jobs, device)
    with _progress_bar(progress, len(plan.runs), len(plan.runs) - len(tasks)) as advance:
        try:
            for name, outcome in results:
                entries[name].update(outcome, finished=_now())
                save()
                advance(name, outcome)
                if on_result:
                    on_result(name, outcome)
        except KeyboardInterrupt:
            close = getattr(results, "close", None)
            if close:
                close()
            remove_leftovers(out)
            for e in entries.values():
                if e["status"] == "pending":
                    e["status"] = "interrupted"
            manifest["finished"] = _now()
            save()
            raise
        finally:
            close = getattr(results, "close", None)
            if close:
                close()
    manifest["finished"] = _now()
    save()
    return manifest


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, done: int) -> Iterator[ProgressHook]:
    if not enabled:
        yield lambda name, outcome: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    failed = 0
    with Progress(
        TextColumn("[bold]sweep"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("sweep", total=total, completed=0, failed=0, last="")
        # skipped runs count as done but not towards the rate, so the ETA reflects real runs
        bar.update(task, total=total - done)

        def advance(name: str, outcome: dict[str, Any]) -> None:
            nonlocal failed
            failed += outcome.get("status") == "failed"
            bar.update(task, advance=1, failed=failed, last=name)

        yield advance
