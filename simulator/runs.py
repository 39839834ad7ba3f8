"""The run folder: what a run writes, how it is written, which ``--out`` it may take, how it is
read back. The one owner of these names and rules for the CLI, sweeps and analysis alike.

A run folder holds:

- ``config.yaml``: the resolved scenario (every value in force);
- ``events.parquet``: one row per event (:mod:`simulator.metrics`);
- ``summary.json``: the run's figures;
- ``run.json``: only in a sweep's run folders, the overrides the sweep set (``params``) and the
  hash of the resolved config, by which a re-run skips a finished run;
- ``figures/`` and ``report/``: what ``fleetsim plot`` and ``report`` write into a single run's
  folder by default; they go with it.

A sweep folder holds run folders and ``sweep.json`` (the manifest). Everything is written into a
hidden staging folder beside its target first and renamed into place, so an interrupted write never
leaves a half-written run folder; staging names (``.<name>.tmp-*``, ``.<name>.old-*``) let a later
sweep remove what a killed one left.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

if TYPE_CHECKING:
    import pandas as pd

    from simulator.config import Scenario

__all__ = [
    "CONFIG",
    "EVENTS",
    "FinishedRun",
    "MANIFEST",
    "RUN_FILES",
    "RUN_INFO",
    "SUMMARY",
    "OutputError",
    "check_out_folder",
    "check_run_dir",
    "check_writable",
    "is_finished",
    "make_staging_dir",
    "read_config",
    "read_events",
    "read_run_info",
    "read_summary",
    "remove_leftovers",
    "replace_dir",
    "run_dirs",
    "write_json",
    "write_run",
    "write_text",
]

CONFIG = "config.yaml"
EVENTS = "events.parquet"
SUMMARY = "summary.json"
#: A sweep's run folders also hold this (its overrides and config hash); only the sweep replaces
#: such a folder.
RUN_INFO = "run.json"
#: A sweep folder's manifest: what was asked and each run's status.
MANIFEST = "sweep.json"
#: What a run folder holds; anything else in a folder given as ``--out`` means it is not a run
#: folder, and a run never replaces it.
RUN_FILES = frozenset({CONFIG, EVENTS, SUMMARY, "figures", "report"})
_LEFTOVER = re.compile(r"\.(run|tmp|old)-")


class FinishedRun(Protocol):
    """What a run folder is written from (:class:`simulator.engine.RunResult`)."""

    scenario: Scenario
    events: pd.DataFrame
    summary: dict[str, Any]


class OutputError(ValueError):
    """An output folder that cannot or must not be written (checked before any simulating)."""


# --------------------------------------------------------------------------------------------------
# Checks on --out


def _probe(folder: Path, what: str, path: str | Path) -> None:
    """Make and remove a folder in ``folder``: the real test of writing there (permissions alone
    miss read-only filesystems and /proc)."""
    try:
        os.rmdir(make_staging_dir(".fleetsim-probe-", folder))
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot write in {folder} ({exc.strerror})") from None


def _existing_folder(start: Path, what: str, path: str | Path) -> Path:
    """The nearest existing ancestor of ``start`` (itself included), which must be a folder."""
    ancestor = start
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{what} {path}: {ancestor} is a file, so no folder can be made under it")
    return ancestor


def check_writable(path: str | Path, what: str = "--out") -> Path:
    """``path`` (a folder written *into*, e.g. a sweep's) as an absolute path, after checking it is
    not a file and that this process can write in it or its nearest existing ancestor (raises
    :class:`OutputError`)."""
    out = Path(os.path.abspath(path))
    if out.exists() and not out.is_dir():
        raise OutputError(f"{what} {path}: is a file, not a folder")
    _probe(_existing_folder(out, what, path), what, path)
    return out


def check_run_dir(out_dir: str | Path, what: str = "--out", *, sweep_run: bool = False) -> Path:
    """Check, before a run, that ``out_dir`` can take it and returns it absolute: not a file, a
    symbolic link, the working directory or above it; new, empty or a run folder (a run replaces
    its folder whole: it is written next to it, then renamed, so its parent must be writable). A
    sweep's run folder (with ``run.json``) is replaced only by its sweep (``sweep_run``)."""
    out = Path(os.path.abspath(out_dir))
    if out.is_symlink():
        raise OutputError(f"{what} {out_dir}: is a symbolic link; give the folder it points to")
    if out.exists() and not out.is_dir():
        raise OutputError(f"{what} {out_dir}: is a file, not a folder")
    cwd = Path.cwd().resolve()
    if out.exists() and (out.resolve() == cwd or out.resolve() in cwd.parents):
        raise OutputError(
            f"{what} {out_dir}: is the working directory or above it, which a run would replace"
        )
    if out.is_dir():
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir())
        allowed = RUN_FILES | ({RUN_INFO} if sweep_run else set())
        others = [name for name in names if name.rstrip("/") not in allowed]
        if others == [RUN_INFO]:
            raise OutputError(
                f"{what} {out_dir}: is a run of a sweep (it holds {RUN_INFO}), which only "
                "`fleetsim sweep` replaces; give a new or empty folder"
            )
        if others:
            shown = ", ".join(others[:4]) + (
                f" and {len(others) - 4} more" if len(others) > 4 else ""
            )
            raise OutputError(
                f"{what} {out_dir}: holds {shown}, which a fleetsim run folder does not; a run "
                "replaces its folder whole, so give a new or empty folder (or an earlier run's)"
            )
    _probe(_existing_folder(out.parent, what, out_dir), what, out_dir)
    return out


def check_out_folder(out: str | Path, option: str = "--out") -> Path:
    """``out`` as a folder to write figures or a report into: refused (ValueError) when it, or a
    folder above it, is an existing file, so a command fails before computing anything."""
    out = Path(out)
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            what = "is an existing file" if path == out else f"lies under {path}, a file"
            raise ValueError(
                f"{option} {out} {what}, not a folder: give a folder path (created if missing)"
            )
    return out


# --------------------------------------------------------------------------------------------------
# Atomic writing


def make_staging_dir(prefix: str, parent: Path) -> Path:
    """A new hidden folder in ``parent`` with the permissions of a plain ``mkdir`` (``mkdtemp``
    makes it private, and a run folder renamed from it would stay unreadable to the group)."""
    for _ in range(100):
        path = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=0o777)  # the umask applies, as for any folder
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free name for a staging folder {prefix}* in {parent}")


def replace_dir(source: Path, target: Path) -> None:
    """Put folder ``source`` at ``target`` by renames, replacing any folder already there."""
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


def write_text(path: Path, text: str) -> None:
    """Write ``path`` by a rename from a sibling, so a reader never sees it half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, atomically (:func:`write_text`)."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def write_run(
    result: FinishedRun,
    out_dir: str | Path,
    run_info: dict[str, Any] | None = None,
) -> Path:
    """Write config.yaml, events.parquet and summary.json (and, for a sweep's run, ``run_info``
    as run.json) atomically into ``out_dir``.

    Everything goes to a staging sibling folder first, which then replaces ``out_dir`` by rename.
    ``out_dir`` must be new, empty or an earlier run's folder (:func:`check_run_dir`; with
    ``run_info``, an earlier run of a sweep too); returns it as an absolute path.
    """
    from simulator.config import dump_scenario

    sweep_run = run_info is not None
    # checked again: it may have changed since the run started
    out_dir = check_run_dir(out_dir, "run folder", sweep_run=sweep_run)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_staging_dir(f".{out_dir.name}.tmp-", out_dir.parent)
    try:
        (tmp / CONFIG).write_text(dump_scenario(result.scenario))
        result.events.to_parquet(tmp / EVENTS, index=False)
        (tmp / SUMMARY).write_text(json.dumps(result.summary, indent=2) + "\n")
        if run_info is not None:
            (tmp / RUN_INFO).write_text(json.dumps(run_info, indent=2) + "\n")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def remove_leftovers(folder: Path) -> None:
    """Staging folders of runs killed mid-write (e.g. ``kill -9``) from an earlier attempt."""
    for child in folder.glob(".*"):
        if child.is_dir() and _LEFTOVER.search(child.name):
            shutil.rmtree(child, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Reading back


def run_dirs(runs_dir: str | Path) -> list[Path]:
    """The run folders under ``runs_dir`` (or ``runs_dir`` itself when it is one run), by name."""
    root = Path(runs_dir)
    if (root / SUMMARY).is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    found = sorted(
        p for p in root.iterdir() if not p.name.startswith(".") and (p / SUMMARY).is_file()
    )
    if not found:
        raise FileNotFoundError(f"no run folders (with {SUMMARY}) in {root}")
    return found


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run's summary.json (FileNotFoundError without one)."""
    return json.loads((Path(run_dir) / SUMMARY).read_text())


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """The run's resolved scenario, config.yaml (FileNotFoundError without one)."""
    return yaml.safe_load((Path(run_dir) / CONFIG).read_text())


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """A sweep run's run.json (``params``, ``config_hash``); empty for a run outside a sweep or
    one whose run.json cannot be read."""
    try:
        info = json.loads((Path(run_dir) / RUN_INFO).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def read_events(run_dir: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """The run's events.parquet (only ``columns`` when given)."""
    import pandas as pd

    path = Path(run_dir) / EVENTS
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the run kept no events (a record of summaries only?); "
            "figures of single runs (timeline, devices, cloud) need them"
        )
    return pd.read_parquet(path, columns=columns)


def is_finished(run_dir: Path, expected_hash: str) -> bool:
    """Whether ``run_dir`` holds a complete run of the config with ``expected_hash``."""
    info = read_run_info(run_dir)
    return (run_dir / SUMMARY).is_file() and info.get("config_hash") == expected_hash
