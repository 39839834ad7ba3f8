"""Tables for papers: Markdown and LaTeX (booktabs) from the tidy run DataFrame.

:func:`runs_table` prints every run's numbers exactly as summary.json holds them (Python's shortest
round-trip float repr), so a reader can trace each cell to a file. :func:`aggregate_table` gives
mean +- 95% t-interval over seeds per sweep point, in the figures' units (%, MB).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.plots import quantity
from analysis.stats import t_interval

RUN_METRICS = [
    "accuracy",
    "uploaded_samples",
    "upload_fraction",
    "upload_bytes",
    "download_bytes",
    "updates",
    "cloud_steps",
    "sim_time_s",
]
AGGREGATE_METRICS = [
    "accuracy",
    "upload_fraction",
    "upload_bytes",
    "download_bytes",
    "dropped_samples",
    "updates",
    "state_staleness_mean_s",
    "stale_model_s",  # whole-model adapters (TDMR) only: absent, so no column, for the others
    "rebuild_ms_mean",
]


def _exact(value: object) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return str(value)


def runs_table(runs: pd.DataFrame, metrics: list[str] | None = None) -> pd.DataFrame:
    """One row per run: swept keys, then metrics as exact strings equal to summary.json values."""
    swept = [k for k in runs.attrs.get("swept", []) if k in runs]
    keys = swept or ["run"]
    metrics = [m for m in (metrics or RUN_METRICS) if m in runs]
    table = runs.sort_values(keys)[keys + metrics].reset_index(drop=True)
    return table.map(_exact)


def aggregate_table(
    runs: pd.DataFrame, metrics: list[str] | None = None, decimals: int = 2
) -> pd.DataFrame:
    """Mean +- 95% t-interval over seeds for each sweep point, in display units."""
    keys = [k for k in runs.attrs.get("swept", []) if k in runs and k != "seed"]
    metrics = [m for m in (metrics or AGGREGATE_METRICS) if m in runs]
    rows = []
    grouped = runs.groupby(keys, sort=True, dropna=False) if keys else [((), runs)]
    for values, group in grouped:
        values = values if isinstance(values, tuple) else (values,)
        row = {k: _exact(v) for k, v in zip(keys, values, strict=True)}
        row["seeds"] = str(len(group))
        for metric in metrics:
            label, scale = quantity(metric)
            values = group[metric].to_numpy(dtype=float) * scale
            if np.isnan(values).all():  # e.g. the age of a state never sent
                row[label] = "–"
                continue
            mean, half = t_interval(values)
            row[label] = (
                f"{mean:.{decimals}f} ± {half:.{decimals}f}" if half else f"{mean:.{decimals}f}"
            )
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (text left, numbers right aligned)."""
    cols = list(table.columns)
    align = ["---:" if _numeric(table[c]) else ":---" for c in cols]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _latex(text: object) -> str:
    out = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))
    return out.replace("±", r"$\pm$")


def to_latex(table: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A LaTeX ``table`` with a booktabs ``tabular`` (\\toprule, \\midrule, \\bottomrule)."""
    cols = list(table.columns)
    spec = "".join("r" if _numeric(table[c]) else "l" for c in cols)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{_latex(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(map(_latex, cols)) + r" \\"]
    lines.append(r"\midrule")
    lines += [" & ".join(map(_latex, row)) + r" \\" for row in table.itertuples(False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _numeric(column: pd.Series) -> bool:
    def is_number(value: object) -> bool:
        head = str(value).split(" ± ")[0]
        try:
            float(head)
        except ValueError:
            return False
        return True

    return bool(len(column)) and all(is_number(v) for v in column)
