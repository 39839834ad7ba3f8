"""Statistics over seeds, for figures, tables and paired comparisons alike.

Runs differ by their seed only, so every interval and test here is Student's t over a handful of
values: the 95% interval of a mean (figures' error bars and bands, tables' ``mean ± half-width``
cells) and the two-sided paired t-test of a mean difference (``fleetsim compare``). Quantiles and
p-values come from the regularized incomplete beta function of mpmath (installed with torch via
sympy), so no SciPy is needed.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["paired_t_p_value", "student_t_quantile", "student_t_two_sided_p", "t_interval"]


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (0 for a single value)."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return mean, 0.0
    quantile = student_t_quantile(0.5 + confidence / 2, n - 1)
    return mean, quantile * float(values.std(ddof=1)) / math.sqrt(n)


def student_t_quantile(p: float, dof: int) -> float:
    """Quantile of Student's t: solves 1 - I_x(dof/2, 1/2) / 2 = p, x = dof / (dof + t^2)."""
    import mpmath

    def cdf_minus_p(t: float) -> float:
        x = dof / (dof + t * t)
        return 1 - 0.5 * mpmath.betainc(dof / 2, 0.5, 0, x, regularized=True) - p

    return float(mpmath.findroot(cdf_minus_p, NormalDist().inv_cdf(p)))


def student_t_two_sided_p(t: float, dof: int) -> float:
    """Two-sided p-value of Student's t statistic ``t``: I_x(dof/2, 1/2), x = dof / (dof + t^2)."""
    import mpmath

    if dof < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof}")
    if math.isinf(t):
        return 0.0
    x = dof / (dof + t * t)
    return float(mpmath.betainc(dof / 2, 0.5, 0, x, regularized=True))


def paired_t_p_value(differences: np.ndarray) -> float | None:
    """Two-sided paired t-test of a zero mean over per-seed ``differences`` (None for one seed;
    with no spread, 1 for a zero mean and 0 otherwise)."""
    values = np.asarray(differences, dtype=float)
    n = len(values)
    if n < 2:
        return None
    sd = float(values.std(ddof=1))
    mean = float(values.mean())
    if sd == 0:
        return 1.0 if mean == 0 else 0.0
    return student_t_two_sided_p(mean / (sd / math.sqrt(n)), n - 1)
