"""Comparing several methods over several datasets (Demšar 2006): ranks, Friedman, Nemenyi CD.

``scores`` is always ``[n_datasets, n_methods]`` (one row per dataset). Rank 1
is the best method on a dataset; tied methods share the average rank.

Example:
    >>> import numpy as np
    >>> s = np.array([[0.9, 0.8, 0.7], [0.85, 0.8, 0.6], [0.7, 0.75, 0.5]])
    >>> mean_ranks(s).tolist()
    [1.3333333333333333, 1.6666666666666667, 3.0]
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from vitlab.errors import ConfigError, DataError

__all__ = ["rank_matrix", "mean_ranks", "friedman_test", "nemenyi_cd", "nemenyi_q"]


def _check(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 2:
        raise DataError(
            f"scores must be [n_datasets, n_methods] with >= 2 methods; got shape {s.shape}. "
            "Put one row per dataset, one column per method."
        )
    if not np.isfinite(s).all():
        rows, cols = np.nonzero(~np.isfinite(s))
        raise DataError(
            f"scores contain NaN/inf at (dataset, method) {list(zip(rows.tolist(), cols.tolist()))[:5]}. "
            "Fill in every method's score on every dataset, or drop that dataset."
        )
    return s


def rank_matrix(scores: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Per-dataset ranks ``[n_datasets, n_methods]`` (1 = best, ties averaged).

    Example:
        >>> rank_matrix(np.array([[0.5, 0.7, 0.7]])).tolist()
        [[3.0, 1.5, 1.5]]
    """
    s = _check(scores)
    return stats.rankdata(-s if higher_is_better else s, axis=1)


def mean_ranks(scores: np.ndarray, higher_is_better: bool = True) -> np.ndarray:
    """Average rank of each method over datasets, ``[n_methods]`` (lower = better).

    Example:
        >>> mean_ranks(np.array([[1.0, 2.0], [3.0, 1.0]])).tolist()
        [1.5, 1.5]
    """
    return rank_matrix(scores, higher_is_better).mean(axis=0)


def friedman_test(scores: np.ndarray) -> tuple[float, float]:
    """Friedman's chi-squared test that all methods perform alike.

    ``chi2 = 12 / (N k (k+1)) * sum_j R_j^2 - 3 N (k+1)`` with ``R_j`` the rank sums,
    divided by the tie correction ``1 - sum(t^3 - t) / (N k (k^2 - 1))``; p from
    chi-squared(k - 1). Equals ``scipy.stats.friedmanchisquare(*scores.T)``.

    Args:
        scores: ``[n_datasets, n_methods]``, ``n_methods >= 3``, ``n_datasets >= 2``.

    Returns:
        ``(statistic, p_value)``.

    Example:
        >>> stat, p = friedman_test(np.array([[1, 2, 3], [1, 2, 3], [1, 3, 2.]]))
        >>> round(stat, 3)
        4.667
    """
    s = _check(scores)
    N, k = s.shape
    if k < 3:
        raise ConfigError(
            f"the Friedman test needs >= 3 methods, got {k}. For two methods use a paired test "
            "(scipy.stats.wilcoxon on the per-dataset scores)."
        )
    if N < 2:
        raise DataError(f"the Friedman test needs >= 2 datasets, got {N}. Add datasets.")
    r = stats.rankdata(s, axis=1)
    R = r.sum(axis=0)
    chi2 = 12.0 / (N * k * (k + 1)) * np.sum(R**2) - 3.0 * N * (k + 1)
    ties = 0.0
    for row in r:
        _, t = np.unique(row, return_counts=True)
        ties += np.sum(t**3 - t)
    corr = 1.0 - ties / (N * k * (k * k - 1))
    if corr <= 0:  # every dataset ties all methods
        return 0.0, 1.0
    chi2 /= corr
    return float(chi2), float(stats.chi2.sf(chi2, k - 1))


def nemenyi_q(n_methods: int, alpha: float = 0.05) -> float:
    """Critical value ``q_alpha = studentized_range.ppf(1 - alpha, k, inf) / sqrt(2)``.

    Example:
        >>> round(nemenyi_q(3), 3)
        2.344
    """
    if n_methods < 2:
        raise ConfigError(f"n_methods={n_methods}: the Nemenyi test needs >= 2 methods.")
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"alpha={alpha} must be in (0, 1), e.g. 0.05.")
    return float(stats.studentized_range.ppf(1.0 - alpha, n_methods, np.inf) / np.sqrt(2.0))


def nemenyi_cd(n_methods: int, n_datasets: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of mean ranks: ``q_alpha * sqrt(k (k+1) / (6 N))``.

    Two methods differ significantly when their mean ranks differ by at least this much.

    Example:
        >>> round(nemenyi_cd(3, 10), 3)
        1.048
    """
    if n_datasets < 1:
        raise ConfigError(f"n_datasets={n_datasets} must be >= 1.")
    k = n_methods
    return nemenyi_q(k, alpha) * float(np.sqrt(k * (k + 1) / (6.0 * n_datasets)))
