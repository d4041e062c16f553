"""Kernel distance (KD; "KID" on Inception features): unbiased polynomial MMD^2.

As dgm-eval's ``dgm_eval/metrics/mmd.py::compute_mmd`` (after Bińkowski et al.
2018 / Sutherland's ``opt-mmd``). For real ``X`` and fake ``Y`` subsets of equal
size ``m`` and the cubic polynomial kernel

    k(x, y) = (gamma x.y + coef0)^degree,   defaults gamma = 1/d, coef0 = 1, degree = 3,

the unbiased estimator is

    MMD^2_u = [sum_{i != j} k(x_i, x_j) + sum_{i != j} k(y_i, y_j)] / (m (m - 1))
              - 2 sum_{i, j} k(x_i, y_j) / m^2.

KD repeats this on ``n_subsets = 100`` random pairs of subsets of size
``m = min(subset_size = 1000, n_real, n_fake)`` drawn without replacement and
reports the mean. dgm-eval quirk (``dgm_eval/__main__.py::compute_scores``):
its ``kd_variance`` is ``mmd_values.std()`` -- the population *standard
deviation* (``ddof = 0``) over subsets, not a variance. :class:`KDResult` keeps
that number as ``std`` and exposes it under the dgm-eval name
``kd_variance`` too; ``var`` is the actual variance.

dgm-eval draws subsets with the global, unseeded ``np.random.choice``; here
``np.random.default_rng(seed)`` draws (real subset, then fake subset) per
repetition, so results are reproducible but not bit-identical to a dgm-eval run.
Kernels are evaluated in float64 (dgm-eval keeps the input dtype, float32).

Bias: none. ``MMD^2_u`` is unbiased for the population MMD^2 at every subset
size ``m >= 2`` (Gretton et al. 2012, JMLR 13, eq. 3), so KD, a mean of such
values, is unbiased too: no bias estimate or debiased value is reported (unlike FD).

Interval. ``std`` is the spread of *single-subset* values, not the uncertainty
of their mean: it is far too wide for large sets and exactly 0 when every subset
is the whole set. :func:`kernel_distance` also returns an honest normal interval
``value -/+ z se`` for the population MMD^2. Given the data, the subsets are i.i.d.
and ``E[U_t | data] = U_n``, the complete two-sample U-statistic on all rows
(every within-set pair and every cross pair gets the same weight on average), so

    Var(KD) = Var(U_n) + E[Var(U_t | data)] / T.

The second term is estimated by ``var_t(U_t) / T`` (``ddof = 1``). ``Var(U_n)`` is
estimated by the delete-d jackknife (Shao & Wu 1989, Ann. Statist. 17; Efron &
Tibshirani 1993, section 11.7; random subsets as in Shao 1989, JASA 84):
``f * var(U on random subsets of r rows per set)`` with ``f = max_i r / (n_i - r)``
(the factor ``r / d``; the largest over the two sets is the conservative one):

* ``method = "subset jackknife"`` when ``2 m <= n`` for both sets: the KD subsets
  themselves are those random subsets (``r = m``), at no extra cost;
* ``method = "half-sample"`` otherwise: ``n_resamples`` extra pairs of random subsets
  of ``r = min(n_r, n_f) // 2`` rows, drawn after the KD subsets from the same generator.

Both sets get subsets of the same size ``r`` (the estimator needs equal sizes), so
with very unequal set sizes the larger set's share of the variance is scaled by
the smaller set's factor, i.e. overestimated: wider, never narrower. When the two
distributions (nearly) coincide, ``U_n`` is degenerate and the jackknife
overestimates its second-order variance (Efron & Stein 1981), so the interval is
conservative there too (by up to ``sqrt(n / r)`` in width with ``r = m``).
Coverage is checked by simulation in ``tests/unit/test_gen_interval_coverage.py``.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> res = kernel_distance(rng.standard_normal((500, 8)), rng.standard_normal((500, 8)),
    ...                       n_subsets=10, subset_size=200)
    >>> abs(res.value) < 0.05 and res.low <= res.value <= res.high
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from vitlab.errors import ConfigError
from vitlab.metrics._validate import (
    check_features,
    check_level,
    check_positive_int,
    check_same_dim,
    warn_small_sample,
)
from vitlab.stats.interval import Interval

__all__ = ["KDResult", "polynomial_kernel", "mmd2_unbiased", "kernel_distance"]


@dataclass(frozen=True)
class KDResult:
    """Result of :func:`kernel_distance`.

    Attributes:
        value: Mean MMD^2 over subsets (dgm-eval ``kd_value``); unbiased for the population MMD^2.
        std: Population std (``ddof=0``) of the per-subset MMD^2 (dgm-eval ``kd_variance``):
            the spread of single subsets, not a standard error of ``value``.
        values: ``[n_subsets]`` per-subset MMD^2.
        subset_size: Subset size actually used.
        se: Standard error of ``value`` (module docstring), ``None`` when it cannot be estimated.
        low: Lower bound of the ``level`` interval ``value - z se`` (``None`` with ``se``).
        high: Upper bound ``value + z se``.
        level: Confidence level.
        method: ``"subset jackknife"`` or ``"half-sample"`` (how ``Var(U_n)`` was estimated), or ``""``.
        n_variance: Number of subset values behind the ``Var(U_n)`` estimate.
    """

    value: float
    std: float
    values: np.ndarray
    subset_size: int
    se: float | None = None
    low: float | None = None
    high: float | None = None
    level: float = 0.95
    method: str = ""
    n_variance: int = 0

    @property
    def interval(self) -> Interval | None:
        """``value -/+ z se`` as an :class:`~vitlab.stats.interval.Interval` (``None`` without ``se``).

        ``n_resamples`` is :attr:`n_variance`.

        Example:
            >>> KDResult(0.1, 0.02, np.zeros(3), 10, se=0.01, low=0.08, high=0.12, method="half-sample",
            ...          n_variance=3).interval.to_entry()["se"]
            0.01
        """
        if self.se is None:
            return None
        return Interval(self.value, self.low, self.high, self.method, self.level, self.n_variance, se=self.se)

    @property
    def kd_variance(self) -> float:
        """dgm-eval's ``kd_variance``: despite the name, the standard deviation ``std``."""
        return self.std

    @property
    def var(self) -> float:
        """The actual variance ``std ** 2`` of the per-subset MMD^2 values."""
        return self.std**2


def polynomial_kernel(
    x: np.ndarray,
    y: np.ndarray,
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> np.ndarray:
    """``K[i, j] = (gamma x_i . y_j + coef0)^degree`` in float64 (``gamma=None`` -> ``1/d``).

    Args:
        x: ``[n, d]``.
        y: ``[m, d]``.
        degree: Polynomial degree.
        gamma: Scale; ``None`` means ``1 / d`` (sklearn's default).
        coef0: Offset.

    Returns:
        ``[n, m]`` float64 kernel matrix.

    Example:
        >>> polynomial_kernel(np.ones((1, 2)), np.ones((1, 2)))
        array([[8.]])
    """
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    k = np.asarray(x, dtype=np.float64) @ np.asarray(y, dtype=np.float64).T
    k *= g
    k += coef0
    return k**degree


def mmd2_unbiased(
    x: np.ndarray,
    y: np.ndarray,
    *,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> float:
    """Unbiased MMD^2 between equal-size samples with the polynomial kernel.

    ``(sum_{i!=j} Kxx + sum_{i!=j} Kyy) / (m (m-1)) - 2 sum Kxy / m^2``, as
    dgm-eval's ``compute_polynomial_mmd`` / ``_mmd2_and_variance``.

    Args:
        x: ``[m, d]`` real subset.
        y: ``[m, d]`` fake subset (same ``m``; ``m >= 2``).
        degree: Kernel degree.
        gamma: Kernel scale (``None`` -> ``1/d``).
        coef0: Kernel offset.

    Returns:
        MMD^2 estimate (can be slightly negative).

    Example:
        >>> x = np.random.default_rng(0).standard_normal((50, 4))
        >>> round(mmd2_unbiased(x, x), 6) < 0   # unbiased: identical sets give a small negative value
        True
    """
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ConfigError(
            f"mmd2_unbiased needs two subsets of the same size >= 2 but got {m} and {y.shape[0]} "
            "rows: draw equal-size subsets (kernel_distance does this for you)."
        )
    kxx = polynomial_kernel(x, x, degree=degree, gamma=gamma, coef0=coef0)
    kyy = polynomial_kernel(y, y, degree=degree, gamma=gamma, coef0=coef0)
    kxy = polynomial_kernel(x, y, degree=degree, gamma=gamma, coef0=coef0)
    sum_xx = kxx.sum() - np.trace(kxx)
    sum_yy = kyy.sum() - np.trace(kyy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def kernel_distance(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    n_subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
    level: float = 0.95,
    n_resamples: int = 100,
) -> KDResult:
    """KD/KID: mean unbiased polynomial MMD^2 over random subsets (dgm-eval ``compute_mmd``), with a CI.

    For ``t = 1..n_subsets``: draw ``m = min(subset_size, n_r, n_f)`` real rows and
    ``m`` fake rows without replacement, compute :func:`mmd2_unbiased`; report
    mean and population std (dgm-eval's ``kd_variance``) of the values, and the
    interval ``mean -/+ z se`` of the module docstring.

    Args:
        real: ``[n_r, d]`` real features.
        fake: ``[n_f, d]`` generated features.
        n_subsets: Number of subset pairs (dgm-eval default 100).
        subset_size: Requested subset size (dgm-eval default 1000).
        degree: Kernel degree (3).
        gamma: Kernel scale (``None`` -> ``1/d``).
        coef0: Kernel offset (1).
        seed: Seed for the subset draws.
        level: Confidence level of the interval (0.95).
        n_resamples: Extra half-size subset pairs for ``Var(U_n)``, used only when
            ``2 m > min(n_r, n_f)`` (the KD subsets then overlap too much); ``0`` = no interval then.

    Returns:
        :class:`KDResult` (``se``/``low``/``high`` are ``None`` when there is too little data:
        ``n_subsets = 1`` with subsets smaller than the sets, fewer than 4 rows, or ``n_resamples = 0``
        where it is needed).

    Raises:
        DataError: mismatched dims, empty sets, NaN/inf.
        ConfigError: bad ``n_subsets``/``subset_size``/``level``/``n_resamples``, or fewer than 2 rows in a set.

    Warns:
        SmallSampleWarning: ``min(n_r, n_f) <= subset_size``: subsets cannot reach the
            requested size, and when ``m == min(n_r, n_f)`` every subset is the whole
            set, so ``std`` (``kd_variance``) is 0 and says nothing about uncertainty.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> res = kernel_distance(rng.standard_normal((300, 4)), rng.standard_normal((300, 4)) + 2,
        ...                       n_subsets=5, subset_size=100)
        >>> res.value > 1, res.method, res.low < res.value < res.high
        (True, 'subset jackknife', True)
    """
    n_subsets = check_positive_int(n_subsets, "n_subsets")
    subset_size = check_positive_int(subset_size, "subset_size", minimum=2)
    n_resamples = check_positive_int(n_resamples, "n_resamples", minimum=0)
    level = check_level(level)
    x = check_features(real, "real")
    y = check_features(fake, "fake")
    check_same_dim(x, y, "real", "fake")
    n_r, n_f = x.shape[0], y.shape[0]
    n_min = min(n_r, n_f)
    if n_min < 2:
        raise ConfigError(
            f"KD needs at least 2 rows per set but the smaller set has {n_min}: pass more samples."
        )
    m = min(subset_size, n_min)
    if n_min <= subset_size:
        both = n_r == n_f == m
        effect = (
            "every subset is the whole set, so the spread (kd_variance) is exactly 0"
            if both
            else "every subset of the smaller set is the whole set, so kd_variance understates "
            "the uncertainty"
        )
        warn_small_sample(
            f"KD: the smaller set has {n_min} rows <= subset_size={subset_size}: {effect} "
            "(the KD interval accounts for this). "
            f"Use more than {subset_size} samples per set (dgm-eval compares 50000 vs 50000).",
        )
    rng = np.random.default_rng(seed)
    kw = dict(degree=degree, gamma=gamma, coef0=coef0)

    def draw(r: int) -> float:
        xs = x[rng.choice(n_r, r, replace=False)]
        ys = y[rng.choice(n_f, r, replace=False)]
        return mmd2_unbiased(xs, ys, **kw)

    vals = np.array([draw(m) for _ in range(n_subsets)], dtype=np.float64)
    value = float(vals.mean())
    var_sub = float(vals.var(ddof=1)) if n_subsets > 1 else None
    whole = n_r == n_f == m  # every subset is all the data: no Monte-Carlo error
    var_mc = 0.0 if whole else (None if var_sub is None else var_sub / n_subsets)
    var_data, method, n_var = None, "", 0
    if 2 * m <= n_min:
        if var_sub is not None:
            var_data = max(m / (n_r - m), m / (n_f - m)) * var_sub
            method, n_var = "subset jackknife", n_subsets
    elif n_min >= 4 and n_resamples >= 2:
        r = n_min // 2
        halves = np.array([draw(r) for _ in range(n_resamples)], dtype=np.float64)
        var_data = max(r / (n_r - r), r / (n_f - r)) * float(halves.var(ddof=1))
        method, n_var = "half-sample", n_resamples
    if var_data is None or var_mc is None:
        return KDResult(value, float(vals.std()), vals, m, level=level)
    se = math.sqrt(var_data + var_mc)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    return KDResult(value, float(vals.std()), vals, m, se=se, low=value - z * se, high=value + z * se,
                    level=level, method=method, n_variance=n_var)
