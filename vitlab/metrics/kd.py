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

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> res = kernel_distance(rng.standard_normal((500, 8)), rng.standard_normal((500, 8)),
    ...                       n_subsets=10, subset_size=200)
    >>> abs(res.value) < 0.05
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vitlab.errors import ConfigError
from vitlab.metrics._validate import (
    check_features,
    check_positive_int,
    check_same_dim,
    warn_small_sample,
)

__all__ = ["KDResult", "polynomial_kernel", "mmd2_unbiased", "kernel_distance"]


@dataclass(frozen=True)
class KDResult:
    """Result of :func:`kernel_distance`.

    Attributes:
        value: Mean MMD^2 over subsets (dgm-eval ``kd_value``).
        std: Population std (``ddof=0``) of the per-subset MMD^2 (dgm-eval ``kd_variance``).
        values: ``[n_subsets]`` per-subset MMD^2.
        subset_size: Subset size actually used.
    """

    value: float
    std: float
    values: np.ndarray
    subset_size: int

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
) -> KDResult:
    """KD/KID: mean unbiased polynomial MMD^2 over random subsets (dgm-eval ``compute_mmd``).

    For ``t = 1..n_subsets``: draw ``m = min(subset_size, n_r, n_f)`` real rows and
    ``m`` fake rows without replacement, compute :func:`mmd2_unbiased`; report
    mean and population std (dgm-eval's ``kd_variance``) of the values.

    Args:
        real: ``[n_r, d]`` real features.
        fake: ``[n_f, d]`` generated features.
        n_subsets: Number of subset pairs (dgm-eval default 100).
        subset_size: Requested subset size (dgm-eval default 1000).
        degree: Kernel degree (3).
        gamma: Kernel scale (``None`` -> ``1/d``).
        coef0: Kernel offset (1).
        seed: Seed for the subset draws.

    Returns:
        :class:`KDResult`.

    Raises:
        DataError: mismatched dims, empty sets, NaN/inf.
        ConfigError: bad ``n_subsets``/``subset_size``, or fewer than 2 rows in a set.

    Warns:
        SmallSampleWarning: ``min(n_r, n_f) <= subset_size``: subsets cannot reach the
            requested size, and when ``m == min(n_r, n_f)`` every subset is the whole
            set, so ``std`` (``kd_variance``) is 0 and says nothing about uncertainty.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> kernel_distance(rng.standard_normal((300, 4)), rng.standard_normal((300, 4)) + 2,
        ...                 n_subsets=5, subset_size=100).value > 1
        True
    """
    n_subsets = check_positive_int(n_subsets, "n_subsets")
    subset_size = check_positive_int(subset_size, "subset_size", minimum=2)
    x = check_features(real, "real")
    y = check_features(fake, "fake")
    check_same_dim(x, y, "real", "fake")
    n_min = min(x.shape[0], y.shape[0])
    if n_min < 2:
        raise ConfigError(
            f"KD needs at least 2 rows per set but the smaller set has {n_min}: pass more samples."
        )
    m = min(subset_size, n_min)
    if n_min <= subset_size:
        both = x.shape[0] == y.shape[0] == m
        effect = (
            "every subset is the whole set, so the spread (kd_variance) is exactly 0"
            if both
            else "every subset of the smaller set is the whole set, so kd_variance understates "
            "the uncertainty"
        )
        warn_small_sample(
            f"KD: the smaller set has {n_min} rows <= subset_size={subset_size}: {effect}. "
            f"Use more than {subset_size} samples per set (dgm-eval compares 50000 vs 50000).",
        )
    rng = np.random.default_rng(seed)
    vals = np.empty(n_subsets, dtype=np.float64)
    for t in range(n_subsets):
        xs = x[rng.choice(x.shape[0], m, replace=False)]
        ys = y[rng.choice(y.shape[0], m, replace=False)]
        vals[t] = mmd2_unbiased(xs, ys, degree=degree, gamma=gamma, coef0=coef0)
    return KDResult(value=float(vals.mean()), std=float(vals.std()), values=vals, subset_size=m)
