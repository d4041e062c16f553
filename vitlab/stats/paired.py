"""Paired comparisons of two classifiers on the same test samples.

- :func:`paired_bootstrap`: bootstrap distribution of ``metric(a) - metric(b)``
  on shared resamples (any metric; clustered with ``groups``).
- :func:`mcnemar`: McNemar's test on per-sample correctness (exact binomial or
  chi-squared with continuity correction, as ``statsmodels`` ``mcnemar``).
- :func:`delong_test`: DeLong's test for two correlated binary ROC AUCs, using
  the fast midrank algorithm of Sun & Xu (2014), written here because neither
  scipy nor sklearn provides it.

Example:
    >>> import numpy as np
    >>> a = np.array([True] * 30 + [False] * 5); b = np.array([True] * 10 + [False] * 25)
    >>> mcnemar(a, b).p_value < 0.01
    True
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import stats

from vitlab.errors import DataError
from vitlab.stats.bootstrap import MetricFn, Resampler, bootstrap_replicates, check_inputs
from vitlab.stats.interval import percentile_interval

__all__ = ["PairedResult", "TestResult", "paired_bootstrap", "mcnemar", "delong_test", "delong_auc_cov"]


@dataclass(frozen=True)
class PairedResult:
    """Bootstrap comparison of ``metric(a) - metric(b)``.

    Attributes:
        diff: difference on the full data. low, high: percentile CI of the difference.
        p_value: two-sided, ``2 * min(P*(d <= 0), P*(d >= 0))`` with the +1 correction.
        n_resamples, n_skipped: as in :class:`vitlab.stats.interval.Interval`. level: the interval's confidence.
    """

    diff: float
    low: float
    high: float
    p_value: float
    n_resamples: int = 0
    n_skipped: int = 0
    level: float = 0.95


class TestResult(NamedTuple):
    """``(statistic, p_value)`` of a hypothesis test."""

    statistic: float
    p_value: float


def paired_bootstrap(
    metric_fn: MetricFn,
    y_true: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> PairedResult:
    """Paired bootstrap of the difference ``metric(y, score_a) - metric(y, score_b)``.

    Both systems are scored on the same resamples. The two-sided p-value is
    ``min(1, 2 * min(1 + #{d* <= 0}, 1 + #{d* >= 0}) / (B + 1))`` over the ``B``
    valid replicates ``d*`` (so it is never exactly 0 and equals 1 when the
    two systems always tie).

    Args:
        metric_fn: ``f(y_true, score) -> float`` (NaN / ``ValueError`` = undefined).
        y_true: ``[n]`` labels.
        score_a, score_b: ``[n]`` or ``[n, C]`` scores of the two systems.
        n_resamples: Number of resamples.
        level: confidence level of the interval, e.g. 0.95.
        seed: Seed of the resampling.
        groups: Optional ``[n]`` cluster ids for a cluster bootstrap.

    Returns:
        :class:`PairedResult`.

    Example:
        >>> from vitlab.metrics.classification import top1
        >>> y = np.arange(200) % 2; a = np.eye(2)[y]; b = np.eye(2)[np.zeros(200, int)]
        >>> paired_bootstrap(top1, y, a, b, n_resamples=200).diff
        0.5
    """
    y_true, (score_a, score_b) = check_inputs(y_true, [score_a, score_b], n_resamples, level)
    a, b = float(metric_fn(y_true, score_a)), float(metric_fn(y_true, score_b))
    if np.isnan(a) or np.isnan(b):
        raise DataError(
            "the metric is undefined (NaN) on the full data for "
            f"{'system a' if np.isnan(a) else 'system b'}; no comparison is possible. "
            "Check the labels, e.g. AUROC needs every class present."
        )
    res = Resampler(y_true.size, groups, seed)
    reps = bootstrap_replicates(metric_fn, y_true, [score_a, score_b], res, n_resamples)
    d = reps[:, 0] - reps[:, 1]
    d = d[~np.isnan(d)]
    n_skipped = n_resamples - d.size
    if d.size == 0:
        raise DataError(f"the metric was undefined on all {n_resamples} resamples; use more samples.")
    if n_skipped:
        warnings.warn(
            f"paired bootstrap: metric undefined on {n_skipped} of {n_resamples} resamples; "
            "they were skipped (recorded in PairedResult.n_skipped).",
            RuntimeWarning,
            stacklevel=2,
        )
    B = d.size
    p = min(1.0, 2.0 * min(1 + np.sum(d <= 0), 1 + np.sum(d >= 0)) / (B + 1))
    ci = percentile_interval(a - b, d, level=level, method=res.method, n_resamples=n_resamples, n_skipped=n_skipped)
    return PairedResult(ci.value, ci.low, ci.high, float(p), n_resamples, n_skipped, level)


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray, *, exact: bool | None = None) -> TestResult:
    """McNemar's test on paired per-sample correctness ``[n]`` (bool).

    With ``b = #(a right, b wrong)`` and ``c = #(a wrong, b right)``:
    exact: statistic ``min(b, c)``, ``p = min(1, 2 * Binom(b + c, 0.5).cdf(min(b, c)))``;
    otherwise ``(|b - c| - 1)^2 / (b + c)`` against chi-squared(1). ``exact=None``
    picks exact when ``b + c < 25``. Same as statsmodels ``mcnemar(table, exact, correction=True)``.

    Example:
        >>> mcnemar(np.array([1, 1, 0], bool), np.array([1, 1, 0], bool))
        TestResult(statistic=0.0, p_value=1.0)
    """
    a, b_ = np.asarray(correct_a), np.asarray(correct_b)
    if a.shape != b_.shape or a.ndim != 1 or a.size == 0:
        raise DataError(
            f"correct_a {a.shape} and correct_b {b_.shape} must be equal-length non-empty 1-D "
            "arrays of per-sample correctness on the same test samples."
        )
    a, b_ = a.astype(bool), b_.astype(bool)
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    if exact is None:
        exact = b + c < 25
    if exact:
        return TestResult(float(min(b, c)), float(min(1.0, 2 * stats.binom.cdf(min(b, c), b + c, 0.5))))
    if b + c == 0:
        return TestResult(0.0, 1.0)
    stat = (abs(b - c) - 1) ** 2 / (b + c)
    return TestResult(float(stat), float(stats.chi2.sf(stat, 1)))


def _midrank(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based, ties averaged) of ``x [..., m]`` along the last axis."""
    return stats.rankdata(x, axis=-1)


def delong_auc_cov(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance for ``k`` score vectors on the same binary labels.

    Fast DeLong (Sun & Xu 2014): with ``m`` positives and ``n`` negatives, the
    structural components are ``V10 = (T_z - T_x) / n`` for positives and
    ``V01 = 1 - (T_z - T_y) / m`` for negatives, where ``T_z``, ``T_x``, ``T_y`` are
    midranks in the pooled, positive-only and negative-only samples;
    ``cov = S10 / m + S01 / n``.

    Args:
        y_true: ``[N]`` binary labels (1 = positive).
        scores: ``[k, N]`` (or ``[N]``) scores, higher = more positive.

    Returns:
        ``(aucs [k], cov [k, k])``.

    Example:
        >>> auc, cov = delong_auc_cov(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        >>> float(auc[0])
        0.75
    """
    y = np.asarray(y_true)
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if s.shape[1] != y.shape[0] or y.ndim != 1:
        raise DataError(f"scores {s.shape} must be [k, N] with N = len(y_true) = {y.shape}.")
    uniq = np.unique(y)
    if not np.isin(uniq, [0, 1]).all():
        raise DataError(f"DeLong needs binary labels 0/1; got values {uniq[:10].tolist()}.")
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m < 2 or n < 2:
        raise DataError(
            f"DeLong needs >= 2 positives and >= 2 negatives; got {m} positive(s) and {n} "
            "negative(s). Use a larger test set."
        )
    x, yv = s[:, pos], s[:, neg]
    tx, ty, tz = _midrank(x), _midrank(yv), _midrank(np.concatenate([x, yv], axis=1))
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def delong_test(y_true: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> TestResult:
    """DeLong's two-sided test of ``AUC(a) == AUC(b)`` for correlated binary ROC curves.

    Returns ``z = (AUC_a - AUC_b) / sqrt(var_a + var_b - 2 cov_ab)`` and its
    two-sided normal p-value; ``(0, 1)`` when the variance of the difference is 0.

    Example:
        >>> y = np.array([0, 0, 0, 1, 1, 1]); s = np.array([.1, .2, .6, .5, .8, .9])
        >>> delong_test(y, s, s)
        TestResult(statistic=0.0, p_value=1.0)
    """
    score_a, score_b = np.asarray(score_a), np.asarray(score_b)
    if score_a.shape != score_b.shape or score_a.ndim != 1:
        raise DataError(
            f"score_a {score_a.shape} and score_b {score_b.shape} must be 1-D scores of the same "
            "samples (for probabilities pass the positive-class column)."
        )
    aucs, cov = delong_auc_cov(y_true, np.stack([score_a, score_b]))
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    if var <= 1e-15:
        return TestResult(0.0, 1.0)
    z = diff / np.sqrt(var)
    return TestResult(float(z), float(2 * stats.norm.sf(abs(z))))


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given).

    Example:
        >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
        [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = np.argsort(p_values)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adj[i] = running
    return adj.tolist()
