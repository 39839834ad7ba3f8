"""The test-time-adaptation comparison table: one row per method, one column per corruption.

Runs are read from their folders (``summary.json``, ``config.yaml``, ``run.json``; ``events.parquet``
only when a summary lacks ``per_domain``). Each run contributes, per domain of its stream, the number
of samples and the accuracy; domain keys are ``<corruption>/<severity>`` (``clean`` has none), so the
severity always travels with the numbers and becomes part of each row's key (the ``Sev.`` column).

Two protocols give the same table:

- **reset**: one run per corruption (the stream holds one domain); a row's corruption cells come from
  different runs of the same method and seed;
- **continual**: one run whose stream goes through all corruptions; the cells come from the domains
  inside that run (its per-sample ``domain`` column).

The protocol is read from the data (every run has one domain: reset; every run several: continual)
or asserted with ``protocol=``; a mix is an error. Per row and seed the numbers are: the error (%) of
each corruption, their mean (over the corruption domains, ``clean`` left out), the share of samples
uploaded, and upload and download bytes summed over the row's runs (for reset: the per-corruption
runs together, i.e. the whole benchmark, like one continual run) per device or for the fleet. Over
seeds each cell is the mean and the half-width of the Student-t 95% confidence interval.

:func:`matched_random_p` gives the ``policy.random.p`` at which random upload spends the upload bytes
(or samples) another run, typically CEMA's, measured: the *random at CEMA's budget* baseline.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from analysis.load import config_value
from analysis.methods import method_key, method_label, method_rank
from analysis.stats import t_interval
from analysis.tables import to_latex, to_markdown
from simulator.runs import (
    CONFIG,
    SUMMARY,
    read_config,
    read_events,
    read_run_info,
    read_summary,
    run_dirs,
    write_text,
)

# CIFAR-10-C / ImageNet-C order (Hendrycks & Dietterich, 2019): noise, blur, weather, digital.
BENCHMARK_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
DOMAIN_ORDER = ("clean", *BENCHMARK_CORRUPTIONS, *EXTRA_CORRUPTIONS)
SHORT_NAMES = {
    "clean": "Clean",
    "gaussian_noise": "Gauss.",
    "shot_noise": "Shot",
    "impulse_noise": "Impul.",
    "defocus_blur": "Defoc.",
    "glass_blur": "Glass",
    "motion_blur": "Motion",
    "zoom_blur": "Zoom",
    "snow": "Snow",
    "frost": "Frost",
    "fog": "Fog",
    "brightness": "Brit.",
    "contrast": "Contr.",
    "elastic_transform": "Elastic",
    "pixelate": "Pixel.",
    "jpeg_compression": "JPEG",
    "speckle_noise": "Speckle",
    "gaussian_blur": "G.blur",
    "spatter": "Spatter",
    "saturate": "Satur.",
}

Protocol = Literal["auto", "reset", "continual"]
BytesPer = Literal["device", "total"]
Intervals = Literal["all", "summary"]  # interval in every cell, or only in the summary columns
Match = Literal["bytes", "samples"]


def _check_choice(name: str, value: object, choices: object) -> None:
    """A ValueError naming the allowed values unless ``value`` is one of the Literal ``choices``."""
    if value not in get_args(choices):
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(get_args(choices))}")


class TableError(ValueError):
    """The runs cannot make one honest table (missing, duplicated or mixed); says which and why."""


# --------------------------------------------------------------------------------------------------
# Reading runs


@dataclass(frozen=True)
class DomainResult:
    """One domain of one run: samples classified, accuracy, samples the devices uploaded."""

    samples: int
    accuracy: float
    uploaded_samples: int


@dataclass
class RunRecord:
    """What the table needs of one run folder."""

    path: Path
    seed: int
    devices: int
    config: dict[str, Any]
    params: dict[str, Any]
    summary: dict[str, Any]
    domains: dict[str, DomainResult] = field(default_factory=dict)
    source: str = ""  # the folder named on the command line that holds the run (grouping key)
    source_dir: str = ""  # that folder's resolved path (two given folders may share a name)

    @property
    def name(self) -> str:
        return self.path.name


def split_domain(domain: str) -> tuple[str, int | None]:
    """``"fog/5"`` -> ``("fog", 5)``; ``"clean"`` -> ``("clean", None)`` (see data/streams.py)."""
    corruption, sep, severity = domain.rpartition("/")
    if not sep:
        return domain, None
    try:
        return corruption, int(severity)
    except ValueError:
        return domain, None


def collect_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run folders of the given run or sweep folders, each once, in the order given."""
    return list(collect_sources(paths))


def collect_sources(paths: Iterable[str | Path]) -> dict[Path, Path]:
    """Each run folder of the given run or sweep folders (once, in the order given) -> the folder
    given that holds it, resolved (its name is the ``source`` grouping key)."""
    found: dict[Path, Path] = {}
    seen: set[Path] = set()
    for path in paths:
        for run_dir in run_dirs(path):
            key = run_dir.resolve()
            if key not in seen:
                seen.add(key)
                found[run_dir] = Path(path).resolve()
    if not found:
        raise FileNotFoundError("no run folders given")
    return found


def domain_results(run_dir: str | Path, summary: Mapping[str, Any] | None = None) -> dict:
    """Per-domain samples, accuracy and uploads of a run: from summary.json's ``per_domain``, or
    (for summaries without it) from the ``sample`` rows of events.parquet by their ``domain``."""
    run_dir = Path(run_dir)
    summary = summary if summary is not None else read_summary(run_dir)
    per_domain = summary.get("per_domain")
    if per_domain:
        return {
            str(domain): DomainResult(
                int(d["samples"]), float(d["accuracy"]), int(d["uploaded_samples"])
            )
            for domain, d in per_domain.items()
        }
    return domain_results_from_events(run_dir)


def domain_results_from_events(run_dir: str | Path) -> dict[str, DomainResult]:
    """Per-domain numbers recomputed from the per-sample events (the ``domain`` column)."""
    columns = ["kind", "domain", "correct", "uploaded"]
    events = read_events(run_dir, columns=columns)
    samples = events[events["kind"] == "sample"]
    results = {}
    for domain, group in samples.groupby("domain", observed=True, sort=True):
        results[str(domain)] = DomainResult(
            int(len(group)),
            float(group["correct"].astype(bool).mean()),
            int(group["uploaded"].astype(bool).sum()),
        )
    return results


def _config(run_dir: Path) -> dict[str, Any]:
    """The run's config.yaml, empty for a run without one."""
    return (read_config(run_dir) or {}) if (run_dir / CONFIG).is_file() else {}


def read_run(run_dir: str | Path) -> RunRecord:
    """One run folder as a :class:`RunRecord` (config.yaml and run.json are optional)."""
    run_dir = Path(run_dir)
    try:
        summary = read_summary(run_dir)
    except FileNotFoundError:
        raise FileNotFoundError(f"no {SUMMARY} in {run_dir}") from None
    config = _config(run_dir)
    params = dict(read_run_info(run_dir).get("params", {}))
    seed = summary.get("seed", params.get("seed", config.get("seed")))
    devices = summary.get("devices", config_value(config, "fleet.devices"))
    if seed is None or devices is None:
        raise TableError(f"{run_dir}: summary.json names no seed or devices")
    return RunRecord(
        run_dir, int(seed), int(devices), config, params, summary, domain_results(run_dir, summary)
    )


# --------------------------------------------------------------------------------------------------
# Row keys


def run_method(run: RunRecord) -> tuple[str, str]:
    """The run's method as its key and label (``("cema/cema", "CEMA")``, see
    :func:`analysis.methods.method_label`), from its summary (or config)."""
    adapter = run.summary.get("adapter") or config_value(run.config, "cloud.adapter")
    policy = run.summary.get("policy") or config_value(run.config, "policy.name")
    return method_key(adapter, policy), method_label(adapter, policy, lambda: run.config)


def key_value(run: RunRecord, key: str, labels: Mapping[str, str] | None = None) -> str:
    """The value of grouping key ``key`` for a run, as text: ``method`` (label), ``source`` (the
    name of the folder given that holds the run: one row per sweep folder, e.g. variants of one
    method run into separate folders), a swept override, a dotted config path
    (``network.uplink_mbps``) or a summary scalar. ``labels`` renames values; for ``method`` it
    matches the ``adapter/policy`` key or the derived label."""
    labels = labels or {}
    if key == "method":
        method, derived = run_method(run)
        return labels.get(method, labels.get(derived, derived))
    if key == "source":
        for folder, label in labels.items():  # a label given for a path: that folder only
            if (
                "/" in folder
                and folder != run_method(run)[0]  # cema/cema=CEMA renames the method, not a folder
                and run.source_dir
                and str(Path(folder).resolve()) == run.source_dir
            ):
                return label
        return labels.get(run.source, run.source)
    for source in (run.params, None, run.summary):
        value = config_value(run.config, key) if source is None else source.get(key)
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            return labels.get(text, text)
    raise TableError(
        f"{run.path}: no value for grouping key {key!r} (not in run.json, config, summary)"
    )


def method_names(paths: Iterable[str | Path], labels: Mapping[str, str] | None = None) -> list[str]:
    """The method labels (renamed by ``labels``, as :func:`seed_table` names its rows) of the runs
    under ``paths``, each once; reads only summary.json and config.yaml, so it is cheap."""
    names = []
    for run_dir in collect_run_dirs(paths):
        run = RunRecord(run_dir, 0, 0, _config(run_dir), {}, read_summary(run_dir))
        names.append(key_value(run, "method", labels))
    return sorted(dict.fromkeys(names), key=method_rank)


#: Column headers of the grouping keys that are not config paths.
KEY_HEADERS = {"method": "Method", "source": "Runs"}


def domain_order(domains: Iterable[str]) -> list[str]:
    """Corruption names in the benchmark order (clean first, the 15, the 4 extras, then others)."""
    rank = {name: i for i, name in enumerate(DOMAIN_ORDER)}
    unique = list(dict.fromkeys(domains))
    return sorted(unique, key=lambda d: (rank.get(d, len(rank)), unique.index(d)))


# --------------------------------------------------------------------------------------------------
# Per-seed numbers


def detect_protocol(runs: Sequence[RunRecord], protocol: Protocol = "auto") -> str:
    """``reset`` when every run has one domain, ``continual`` when every run has several."""
    single = [r.name for r in runs if len(r.domains) == 1]
    several = [r.name for r in runs if len(r.domains) > 1]
    if protocol == "reset" and several:
        raise TableError(f"protocol reset needs one domain per run; these have several: {several}")
    if protocol == "continual" and single:
        raise TableError(
            f"protocol continual needs several domains per run; these have one: {single}"
        )
    _check_choice("protocol", protocol, Protocol)
    if protocol != "auto":
        return protocol
    if single and several:
        raise TableError(
            "runs of both protocols: one domain per run (reset) in "
            f"{single[:3]}{' ...' if len(single) > 3 else ''} and several (continual) in "
            f"{several[:3]}{' ...' if len(several) > 3 else ''}; make one table per protocol"
        )
    return "continual" if several else "reset"


def _severity(run: RunRecord) -> int | None:
    severities = {split_domain(d)[1] for d in run.domains} - {None}
    if len(severities) > 1:
        raise TableError(
            f"{run.path}: one run mixes severities {sorted(severities)}; its upload numbers "
            "cannot be split between them"
        )
    return severities.pop() if severities else None


def _differences(a: RunRecord, b: RunRecord) -> list[str]:
    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(node, Mapping):
            out: dict[str, Any] = {}
            for k, v in node.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: node}

    fa, fb = flat(a.config), flat(b.config)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def seed_table(
    paths: Iterable[str | Path],
    by: Sequence[str] = ("method",),
    labels: Mapping[str, str] | None = None,
    protocol: Protocol = "auto",
    bytes_per: BytesPer = "device",
    allow_missing: bool = False,
) -> pd.DataFrame:
    """One row per (row key, severity, seed) with numbers (not text): the ``by`` keys, ``severity``,
    ``seed``, ``runs``, each corruption's error in % (columns named by corruption), ``mean_error``
    (%), ``upload_pct``, ``upload_bytes`` and ``download_bytes`` (per device or total).

    ``attrs`` hold ``domains`` (corruption columns in order), ``protocol``, ``bytes_per``, ``by``.
    Raises :class:`TableError` when two runs give the same cell or a row lacks a cell others have;
    with ``allow_missing`` (a sweep still running) a missing cell is NaN, and so are that seed's
    mean error and upload numbers, which would otherwise cover a different set of corruptions.
    """
    _check_choice("bytes_per", bytes_per, BytesPer)
    by = list(by)
    if not by:
        raise ValueError("need at least one grouping key")
    runs = [
        replace(read_run(d), source=s.name, source_dir=str(s))
        for d, s in collect_sources(paths).items()
    ]
    empty = [r.name for r in runs if not r.domains]
    if empty:
        raise TableError(f"runs without any classified sample: {empty}")
    protocol = detect_protocol(runs, protocol)

    cells: dict[tuple, dict[str, tuple[RunRecord, DomainResult]]] = {}
    members: dict[tuple, list[RunRecord]] = {}
    ranks: dict[tuple, int] = {}  # canonical method order, from the label before renaming
    for run in runs:
        key = (*(key_value(run, k, labels) for k in by), _severity(run), run.seed)
        members.setdefault(key, []).append(run)
        ranks[key] = method_rank(run_method(run)[1]) if by[0] == "method" else 0
        row = cells.setdefault(key, {})
        for domain, result in run.domains.items():
            corruption = split_domain(domain)[0]
            if corruption in row:
                other = row[corruption][0]
                differ = _differences(other, run)
                hint = (
                    f"; they differ in {', '.join(differ[:6])}: add the key to --by"
                    if differ
                    else "; the same run twice?"
                )
                if "method" not in by and run_method(other) != run_method(run):
                    hint = (  # the usual slip: --by replaces the default key, method
                        f"; they are two methods ({' and '.join(run_method(r)[1] for r in (other, run))})"
                        f": keep method among the keys, --by method {' '.join('--by ' + k for k in by)}"
                    )
                if (  # one group only because two folders share a name nobody relabelled
                    "source" in by
                    and other.source_dir != run.source_dir
                    and other.source == run.source
                    and key_value(run, "source", labels) == run.source
                ):
                    hint = (
                        f"; they come from two folders named {run.source!r} "
                        f"({other.source_dir} and {run.source_dir}): name them apart with "
                        "--label PATH=NAME for each"
                    )
                raise TableError(
                    f"runs {other.name} and {run.name} both give {corruption!r} for "
                    f"{_describe(by, key)}{hint}"
                )
            row[corruption] = (run, result)

    domains = domain_order(c for row in cells.values() for c in row)
    corruptions = [d for d in domains if d != "clean"]
    if not allow_missing:
        _check_complete(by, cells, domains)

    records = []
    for key, row in cells.items():
        group = members[key]
        samples = sum(int(r.summary.get("samples", 0)) for r in group)
        uploaded = sum(int(r.summary.get("uploaded_samples", 0)) for r in group)
        per = (lambda r: r.devices) if bytes_per == "device" else (lambda r: 1)
        record: dict[str, Any] = dict(zip(by, key[:-2], strict=True))
        record.update(severity=key[-2], seed=key[-1], runs=len(group), _order=ranks[key])
        for domain in domains:
            record[domain] = 100.0 * (1.0 - row[domain][1].accuracy) if domain in row else np.nan
        complete = all(d in row for d in domains)
        mean_error = np.mean([record[c] for c in corruptions]) if corruptions else np.nan
        record["mean_error"] = float(mean_error) if complete else np.nan
        # an incomplete reset row lacks runs, so its sums would be too small: NaN as well
        record["upload_pct"] = 100.0 * uploaded / samples if samples and complete else np.nan
        for metric in ("upload_bytes", "download_bytes"):
            total = sum(float(r.summary.get(metric, 0)) / per(r) for r in group)
            record[metric] = total if complete else np.nan
        records.append(record)
    frame = pd.DataFrame(records)
    # folders (``source``) keep the order they were given in; other keys sort by value, as
    # numbers when every value is one (batch sizes 2 < 16, not "16" < "2")
    frame["_sev"] = -frame["severity"].fillna(-1)
    sort_cols = ["_sev", "_order"]
    helpers = list(sort_cols)
    for i, k in enumerate(by):
        helper = f"_by{i}"
        if k == "source":
            sources = dict.fromkeys(key_value(run, "source", labels) for run in runs)
            frame[helper] = frame["source"].map({name: j for j, name in enumerate(sources)})
        elif k != "method":
            numbers = pd.to_numeric(frame[k], errors="coerce")  # "NaN" too; it sorts last
            if (numbers.notna() | frame[k].astype(str).str.lower().eq("nan")).all():
                frame[helper] = numbers
        if helper in frame:
            helpers.append(helper)
        sort_cols.append(helper if helper in frame else k)
    sort_cols.append("seed")
    frame = frame.sort_values(sort_cols, kind="stable").drop(columns=helpers)
    frame = frame.reset_index(drop=True)
    frame.attrs.update(domains=domains, protocol=protocol, bytes_per=bytes_per, by=by)
    return frame


def _describe(by: Sequence[str], key: tuple) -> str:
    parts = [f"{k}={v}" for k, v in zip(by, key[:-2], strict=True)]
    parts += [f"severity={key[-2]}", f"seed={key[-1]}"]
    return ", ".join(parts)


def _check_complete(by: Sequence[str], cells: Mapping[tuple, Mapping[str, Any]], domains) -> None:
    """Every (row, seed) must have every corruption column: a mean over different sets of
    corruptions would compare unlike numbers."""
    missing = []
    for key, row in cells.items():
        lacking = [d for d in domains if d not in row]
        if lacking:
            missing.append(f"{_describe(by, key)} lacks {', '.join(lacking)}")
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise TableError("missing runs: " + "; ".join(missing[:5]) + more)


# --------------------------------------------------------------------------------------------------
# Display table


def human_mb(value_bytes: float) -> float:
    """Bytes -> MB (10^6 bytes)."""
    return value_bytes / 1e6


def _decimals(value: float) -> int:
    """Decimals that show three significant digits of ``value`` (0 for 0 and values >= 100)."""
    if value == 0 or not math.isfinite(value):
        return 0
    return min(max(2 - math.floor(math.log10(abs(value))), 0), 6)


def format_interval(
    values: Sequence[float], decimals: int | None = None, seeds: int | None = None
) -> str:
    """``"mean ± half-width"`` of the 95% t-interval over seeds; just the mean for one seed.

    Missing values (NaN) are left out; when fewer than ``seeds`` remain the cell says how many
    (``"(n=2)"``), and with none it is ``"–"``. ``decimals`` None: three significant digits.
    """
    array = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    if not len(array):
        return "–"
    mean, half = t_interval(array)
    digits = _decimals(mean) if decimals is None else decimals
    text = f"{mean:.{digits}f} ± {half:.{digits}f}" if len(array) > 1 else f"{mean:.{digits}f}"
    return text + (f" (n={len(array)})" if seeds is not None and len(array) < seeds else "")


def tta_table(
    per_seed: pd.DataFrame,
    decimals: int = 1,
    short_names: bool = True,
    ci: Intervals = "all",
) -> pd.DataFrame:
    """Text table over seeds: key columns, ``Sev.``, ``Seeds``, each corruption's error %, mean
    error %, uploaded samples %, upload and download MB; cells ``mean ± 95% t half-width``.

    ``ci="summary"`` leaves the interval out of the corruption cells (means only) and keeps it on
    the mean error, upload and byte columns: 15 corruptions with intervals rarely fit a page.
    """
    _check_choice("ci", ci, Intervals)
    by: list[str] = per_seed.attrs["by"]
    domains: list[str] = per_seed.attrs["domains"]
    bytes_per = per_seed.attrs["bytes_per"]
    unit = "MB/dev" if bytes_per == "device" else "MB"
    rows = []
    for key, group in per_seed.groupby([*by, "severity"], sort=False, dropna=False):
        row: dict[str, str] = {}
        for k, v in zip(by, key[:-1], strict=True):
            row[KEY_HEADERS.get(k, k)] = str(v)
        severity = key[-1]
        row["Sev."] = "–" if pd.isna(severity) else str(int(severity))
        row["Seeds"] = str(len(group))
        for domain in domains:
            name = SHORT_NAMES.get(domain, domain) if short_names else domain
            values = group[domain] if ci == "all" else [group[domain].mean()]
            cell = format_interval(values, decimals, seeds=len(group) if ci == "all" else None)
            available = int(group[domain].notna().sum())
            if ci == "summary" and available < len(group):
                cell = f"{cell} (n={available})" if available else "–"
            row[name] = cell
        row["Mean err. %"] = format_interval(group["mean_error"], decimals, seeds=len(group))
        row["Upload %"] = format_interval(group["upload_pct"], decimals, seeds=len(group))
        for metric, name in (("upload_bytes", "Up"), ("download_bytes", "Down")):
            row[f"{name} {unit}"] = format_interval(group[metric].map(human_mb), seeds=len(group))
        rows.append(row)
    table = pd.DataFrame(rows)
    table.attrs.update(per_seed.attrs, ci=ci)
    return table


def caption(table: pd.DataFrame) -> str:
    """What the table shows, for the LaTeX caption and the Markdown file's first line."""
    per = "per device" if table.attrs.get("bytes_per") == "device" else "for the whole fleet"
    protocol = table.attrs.get("protocol", "")
    how = (
        "one run per corruption (reset protocol)"
        if protocol == "reset"
        else "one stream through the corruptions (continual protocol)"
    )
    cells = (
        "Cells: mean ± half-width of the 95% Student-t interval over seeds."
        if table.attrs.get("ci", "all") == "all"
        else "Corruption cells: mean over seeds; the other cells: mean ± half-width of the 95% "
        "Student-t interval over seeds."
    )
    return (
        f"Error (%) per corruption and mean over corruptions, {how}; uploaded samples (%), "
        f"upload and download MB (1 MB = 1,000,000 bytes) {per}, summed over the stream. {cells}"
    )


def table_paths(out: str | Path) -> tuple[Path, Path]:
    """``<out>.md`` and ``<out>.tex``; an ``out`` ending in ``.md`` or ``.tex`` names the same
    pair (``t.md`` -> t.md, t.tex)."""
    out = Path(out)
    if out.suffix in (".md", ".tex"):
        out = out.with_suffix("")
    return out.with_name(out.name + ".md"), out.with_name(out.name + ".tex")


def write_table(
    table: pd.DataFrame, out: str | Path, caption_text: str | None = None, label: str = "tab:tta"
) -> tuple[Path, Path]:
    """``<out>.md`` (caption line, blank line, table) and ``<out>.tex`` (booktabs), atomically
    (paths: :func:`table_paths`)."""
    text = caption_text if caption_text is not None else caption(table)
    md, tex = table_paths(out)
    write_text(md, f"{text}\n\n{to_markdown(table)}")
    write_text(tex, to_latex(table, caption=text, label=label))
    return md, tex


# --------------------------------------------------------------------------------------------------
# Random upload at another run's budget


@dataclass(frozen=True)
class BudgetMatch:
    """The random-upload probability that spends what the reference runs spent.

    ``p`` pools all reference runs; ``per_domain`` (corruption -> p) pools the runs of each
    single-domain (reset) run's corruption, for a sweep that zips corruptions with ``p``.
    """

    p: float
    match: str
    samples: int
    uploaded_samples: int
    sent_bytes: int
    per_domain: dict[str, float]

    def set_args(self) -> list[str]:
        """``fleetsim run/sweep`` arguments for the pooled p."""
        return ["--set", "policy.name=random", "--set", f"policy.random.p={self.p:.6g}"]

    def zip_args(self) -> list[str]:
        """``fleetsim sweep`` arguments pairing each corruption with its own p (reset protocol)."""
        if not self.per_domain:
            raise TableError("no single-domain (reset) runs: no per-corruption p to zip")
        names = ",".join(f"[{d}]" for d in self.per_domain)
        ps = ",".join(f"{p:.6g}" for p in self.per_domain.values())
        return [
            "--set",
            "policy.name=random",
            "--zip",
            f"stream.corruptions=[{names}]",
            "--zip",
            f"policy.random.p={ps}",
        ]


def _expected_messages(p: float, batch_size: int, batches: float) -> float:
    return batches * (1.0 - (1.0 - p) ** batch_size)


def _p_for(runs: Sequence[RunRecord], match: str) -> tuple[float, int, int, int]:
    samples = sum(int(r.summary["samples"]) for r in runs)
    uploaded = sum(int(r.summary["uploaded_samples"]) for r in runs)
    sent_bytes = sum(
        int(r.summary.get("upload_bytes", 0)) + int(r.summary.get("dropped_bytes", 0)) for r in runs
    )
    if samples <= 0:
        raise TableError("the reference runs classified no samples")
    share = uploaded / samples
    if match == "samples" or uploaded == 0:
        return share, samples, uploaded, sent_bytes
    # bytes = header * messages + payload per sample * samples; a random policy with p sends a
    # message from every batch with at least one pick, so p solves
    # header * E[messages](p) + payload * p * samples = the reference's sent bytes.
    messages = sum(
        int(r.summary.get("upload_messages", 0)) + int(r.summary.get("dropped_messages", 0))
        for r in runs
    )
    headers = [int(config_value(r.config, "network.header_bytes") or 0) for r in runs]
    batch_sizes = [int(config_value(r.config, "stream.batch_size") or 0) for r in runs]
    if len(set(headers)) > 1 or len(set(batch_sizes)) > 1 or not batch_sizes[0]:
        raise TableError(
            "reference runs differ in network.header_bytes or stream.batch_size (or lack "
            "config.yaml); use match='samples'"
        )
    header, batch_size = headers[0], batch_sizes[0]
    payload = (sent_bytes - header * messages) / uploaded
    batches = samples / batch_size

    def spent(p: float) -> float:
        return header * _expected_messages(p, batch_size, batches) + payload * p * samples

    if spent(1.0) <= sent_bytes:
        return 1.0, samples, uploaded, sent_bytes
    lo, hi = 0.0, 1.0
    for _ in range(60):  # bisection: spent(p) increases with p
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if spent(mid) < sent_bytes else (lo, mid)
    return (lo + hi) / 2, samples, uploaded, sent_bytes


def matched_random_p(
    paths: Iterable[str | Path],
    match: Match = "bytes",
    method: str | None = None,
) -> BudgetMatch:
    """``policy.random.p`` at which random upload matches the reference runs' budget.

    ``match="samples"``: p = uploaded samples / samples. ``match="bytes"`` (default): p such that
    the expected sent bytes (upload + dropped, headers included) equal the reference's, with the
    payload per sample measured on the reference's own uploads (so images that encode larger or
    smaller than average shift it slightly). Seeds and runs are pooled; ``per_domain`` gives one p
    per corruption of single-domain runs. ``method`` (``cema/cema`` or a label such as ``CEMA``)
    keeps only that method's runs, so a whole benchmark sweep can be passed. Runs at several
    severities are refused.
    """
    _check_choice("match", match, Match)
    runs = [read_run(d) for d in collect_run_dirs(paths)]
    if method is not None:
        runs = [r for r in runs if method in run_method(r)]
        if not runs:
            raise TableError(f"no runs of method {method!r} (adapter/policy or label)")
    methods = {label: key for key, label in map(run_method, runs)}
    if len(methods) > 1:  # pooling e.g. Source's zero uploads with CEMA's would give a wrong p
        found = [name if name == key else f"{name} ({key})" for name, key in methods.items()]
        raise TableError(
            f"the runs hold {len(methods)} methods: {', '.join(found)}; keep the reference "
            f"method's runs with --method ADAPTER/POLICY (method= in Python), one of: "
            f"{', '.join(dict.fromkeys(methods.values()))}"
        )
    severities = {_severity(r) for r in runs} - {None}
    if len(severities) > 1:
        raise TableError(
            f"reference runs at several severities {sorted(severities)}: one at a time"
        )
    p, samples, uploaded, sent = _p_for(runs, match)
    by_domain: dict[str, list[RunRecord]] = {}
    for run in runs:
        if len(run.domains) == 1:
            by_domain.setdefault(split_domain(next(iter(run.domains)))[0], []).append(run)
    per_domain = {d: _p_for(by_domain[d], match)[0] for d in domain_order(by_domain)}
    if not math.isfinite(p):
        raise TableError("could not match the budget")
    return BudgetMatch(p, match, samples, uploaded, sent, per_domain)
