"""Fréchet distance (FD / "FID" on any encoder) and FD-infinity.

The Fréchet distance between Gaussians fitted to real and generated features is

    FD = ||mu_1 - mu_2||^2 + tr(S_1) + tr(S_2) - 2 tr sqrt(S_1 S_2)

with ``mu = mean(X)`` and ``S = cov(X)`` (unbiased, ``ddof=1``, as ``np.cov`` in
dgm-eval's ``compute_statistics``).

``tr sqrt(S_1 S_2)`` is computed without a non-symmetric matrix square root:
with ``A = S_1^{1/2}`` (from ``eigh(S_1) = V diag(w) V^T``, ``w`` clipped at 0),
``S_1 S_2`` is similar to the symmetric PSD matrix ``A S_2 A``, so

    tr sqrt(S_1 S_2) = sum_i sqrt(lambda_i(A S_2 A))

and, writing ``C = V diag(sqrt(w))`` restricted to the numerically non-zero
``w``, ``A S_2 A`` has the same non-zero eigenvalues as the small symmetric
matrix ``C^T S_2 C``. Tiny negative eigenvalues (rounding) are clipped to 0.
This needs one ``eigh`` and one ``eigvalsh`` of symmetric matrices instead of
the complex Schur decomposition behind ``scipy.linalg.sqrtm(S_1 @ S_2)``
(pytorch-fid / dgm-eval ``compute_FD_with_stats``), and is several times faster
at d = 1024..2048 (see ``bench/bench_fd.py``).

Differences from dgm-eval (``dgm_eval/metrics/fd.py``):

* dgm-eval adds ``eps = 1e-6`` to both diagonals only when ``sqrtm`` returns
  non-finite values; the eigen formulation is always finite, so no ``eps``.
* dgm-eval can return a slightly negative FD from rounding; here the result is
  clipped at 0.
* dgm-eval's ``compute_FD_infinity`` uses an *unseeded* ``np.random.default_rng()``;
  here the generator is ``np.random.default_rng(seed)`` with the same calls, so a
  given seed is reproducible.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> real = rng.standard_normal((2000, 8))
    >>> fake = rng.standard_normal((2000, 8)) + 1.0
    >>> round(frechet_distance(real, fake), 0)   # ~ ||mu||^2 = 8
    8.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vitlab.errors import DataError
from vitlab.metrics._validate import (
    check_features,
    check_positive_int,
    check_same_dim,
    warn_small_sample,
)
from vitlab.metrics.moments import Moments

__all__ = [
    "FDInfinityResult",
    "gaussian_stats",
    "trace_sqrt_product",
    "frechet_distance_from_stats",
    "frechet_distance",
    "fd_infinity",
]


# ----------------------------------------------------------------------------- statistics


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set, in float64.

    Args:
        features: ``[n, d]`` array, ``n >= 2``.

    Returns:
        ``(mu [d], sigma [d, d])`` with ``sigma = (X - mu)^T (X - mu) / (n - 1)``
        (same as ``np.cov(X, rowvar=False)``).

    Raises:
        DataError: bad shape, NaN/inf, or fewer than 2 rows.

    Example:
        >>> mu, sigma = gaussian_stats(np.eye(3))
        >>> mu.shape, sigma.shape
        ((3,), (3, 3))
    """
    x = check_features(features, "input")
    return _stats(x, "input")


def _stats(x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    if n < 2:
        raise DataError(
            f"{name} features have only {n} row: a covariance needs at least 2 samples "
            f"(and more than d = {x.shape[1]} for a full-rank one)."
        )
    return Moments.of(x).gaussian()  # the one home of the mean/covariance math (mergeable per chunk)


# ----------------------------------------------------------------------------- trace sqrt


def _check_stats(mu: Any, sigma: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.atleast_1d(np.asarray(mu, dtype=np.float64))
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    if mu.ndim != 1:
        raise DataError(f"{name} mean must be 1-D [d] but got shape {mu.shape}.")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise DataError(
            f"{name} covariance has shape {sigma.shape} but its mean has dim {d}: "
            f"pass a [{d}, {d}] covariance (np.cov(features, rowvar=False))."
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise DataError(
            f"{name} statistics contain NaN or inf: recompute them from finite features."
        )
    return mu, 0.5 * (sigma + sigma.T)


def _sqrt_factor(sigma1: np.ndarray, device: Any) -> Any:
    """``C = V diag(sqrt(w))`` over the numerically non-zero eigenvalues of ``sigma1``.

    ``C C^T = sigma1^{1/2} sigma1^{1/2}`` restricted to its range, as a float64 torch
    tensor on ``device`` (``None`` = CPU). torch's CPU ``eigh`` measured 1.3-6x faster
    than numpy's on the same LAPACK problem here (BENCHMARKS.md), so there is one path.
    """
    import torch

    d = sigma1.shape[0]
    s1 = torch.as_tensor(sigma1, dtype=torch.float64, device=device or "cpu")
    w, v = torch.linalg.eigh(s1)
    tol = max(float(w.max()), 0.0) * d * float(np.finfo(np.float64).eps)
    keep = w > tol
    return v[:, keep] * torch.sqrt(w[keep])


def _trace_sqrt_from_factor(c: Any, sigma2: np.ndarray, device: Any) -> float:
    """``sum sqrt(eig(C^T sigma2 C))`` = ``tr sqrt(sigma1 sigma2)``."""
    import torch

    if c.shape[1] == 0:
        return 0.0
    s2 = torch.as_tensor(sigma2, dtype=torch.float64, device=c.device)
    m = c.T @ (s2 @ c)
    lam = torch.linalg.eigvalsh(0.5 * (m + m.T))
    return float(torch.sqrt(torch.clamp(lam, min=0.0)).sum().item())


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray, *, device: Any = None) -> float:
    """``tr sqrt(S_1 S_2)`` for symmetric PSD ``S_1, S_2`` via symmetric eigensolvers.

    ``tr sqrt(S_1 S_2) = sum_i sqrt(lambda_i(A S_2 A))`` with ``A = S_1^{1/2}``
    from ``eigh``; negative rounding noise in the eigenvalues is clipped to 0.

    Args:
        sigma1: ``[d, d]`` covariance.
        sigma2: ``[d, d]`` covariance.
        device: torch device (``None`` = ``"cpu"``, or ``"cuda"``, ``"cuda:1"``) on which
            float64 ``torch.linalg.eigh``/``eigvalsh`` run.

    Returns:
        The trace as a Python float.

    Example:
        >>> round(trace_sqrt_product(4 * np.eye(2), np.eye(2)), 6)
        4.0
    """
    d = np.asarray(sigma1).shape[0] if np.ndim(sigma1) else 1
    _, s1 = _check_stats(np.zeros(d), sigma1, "first")
    _, s2 = _check_stats(np.zeros(d), sigma2, "second")
    return _trace_sqrt_from_factor(_sqrt_factor(s1, device), s2, device)


# ----------------------------------------------------------------------------- FD


def frechet_distance_from_stats(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    device: Any = None,
) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``FD = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr sqrt(sigma1 sigma2)``,
    clipped at 0. Argument order is pytorch-fid's ``(mu1, sigma1, mu2, sigma2)``
    (dgm-eval's ``compute_FD_with_stats`` takes ``(mu1, mu2, sigma1, sigma2)``).

    Args:
        mu1: ``[d]`` mean of the first (real) set.
        sigma1: ``[d, d]`` covariance of the first set.
        mu2: ``[d]`` mean of the second (generated) set.
        sigma2: ``[d, d]`` covariance of the second set.
        device: ``None`` (numpy) or a torch device for the eigensolvers.

    Returns:
        FD as a float.

    Raises:
        DataError: shapes disagree or statistics hold NaN/inf.

    Example:
        >>> frechet_distance_from_stats(np.zeros(2), np.eye(2), np.ones(2), np.eye(2))
        2.0
    """
    mu1, sigma1 = _check_stats(mu1, sigma1, "real")
    mu2, sigma2 = _check_stats(mu2, sigma2, "fake")
    if mu1.shape != mu2.shape:
        raise DataError(
            f"real statistics have dim {mu1.shape[0]} but fake statistics have dim "
            f"{mu2.shape[0]}: both sets must come from the same encoder."
        )
    return _fd(mu1, sigma1, mu2, sigma2, _sqrt_factor(sigma1, device), device)


def _fd(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
        factor1: Any, device: Any) -> float:
    diff = mu1 - mu2
    tr_covmean = _trace_sqrt_from_factor(factor1, sigma2, device)
    fd = float(diff @ diff) + float(np.trace(sigma1)) + float(np.trace(sigma2)) - 2.0 * tr_covmean
    return max(fd, 0.0)


def _warn_rank(n: int, d: int, name: str) -> None:
    if n <= d:
        warn_small_sample(
            f"FD with {n} {name} samples in d = {d} dims: the covariance has rank <= {n - 1} "
            f"< d, so FD is dominated by estimation error. Use at least d + 1 = {d + 1} "
            f"samples (ideally >= 10 * d = {10 * d}), or reduce the dimension.",
            stacklevel=4,
        )


def frechet_distance(real: np.ndarray, fake: np.ndarray, *, device: Any = None) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    ``FD = ||mu_r - mu_f||^2 + tr(S_r) + tr(S_f) - 2 tr sqrt(S_r S_f)`` with
    ``mu = mean(X)``, ``S = cov(X)`` (``ddof = 1``). Equals dgm-eval's
    ``compute_FD_with_reps(real, fake)`` up to rounding.

    Args:
        real: ``[n_r, d]`` reference features.
        fake: ``[n_f, d]`` generated features.
        device: ``None`` (numpy/LAPACK) or a torch device for the eigensolvers.

    Returns:
        FD as a float (>= 0).

    Raises:
        DataError: mismatched dims, empty sets, fewer than 2 rows, or NaN/inf.

    Warns:
        SmallSampleWarning: a set has ``n <= d`` rows (rank-deficient covariance).

    Example:
        >>> x = np.random.default_rng(0).standard_normal((100, 4))
        >>> round(frechet_distance(x, x), 9)
        0.0
    """
    r = check_features(real, "real")
    f = check_features(fake, "fake")
    check_same_dim(r, f, "real", "fake")
    d = r.shape[1]
    mu1, s1 = _stats(r, "real")
    mu2, s2 = _stats(f, "fake")
    _warn_rank(r.shape[0], d, "real")
    _warn_rank(f.shape[0], d, "fake")
    return _fd(mu1, s1, mu2, s2, _sqrt_factor(s1, device), device)


# ----------------------------------------------------------------------------- FD-infinity


@dataclass(frozen=True)
class FDInfinityResult:
    """Result of :func:`fd_infinity`.

    Attributes:
        value: FD extrapolated to ``1/N = 0`` (dgm-eval's ``fd_infinity_value``).
        slope: Fitted slope of FD against ``1/N``.
        ns: ``[num_points]`` subset sizes ``N`` of the fake set.
        fds: ``[num_points]`` FD at each ``N``.
    """

    value: float
    slope: float
    ns: np.ndarray
    fds: np.ndarray


def fd_infinity(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    num_points: int = 15,
    seed: int = 0,
    device: Any = None,
) -> FDInfinityResult:
    """FD-infinity (Chong & Forsyth 2020), as dgm-eval's ``compute_FD_infinity``.

    The real statistics use all real rows. For each
    ``N in linspace(min(5000, max(n_f // 10, 2)), n_f, num_points).astype(int32)``
    a subset of ``N`` fake rows is drawn without replacement
    (``rng.choice(n_f, N, replace=False)``, ``rng = np.random.default_rng(seed)``)
    and ``FD_N`` computed; ordinary least squares ``FD_N = a + b / N`` is fitted
    and ``FD_inf = a`` (the prediction at ``1/N = 0``).

    The real covariance's square root factor is computed once and reused for all
    ``num_points`` subsets.

    Args:
        real: ``[n_r, d]`` reference features.
        fake: ``[n_f, d]`` generated features, ``n_f >= 3``.
        num_points: Number of subset sizes (dgm-eval default 15), ``>= 2``.
        seed: Seed for the subset draws.
        device: ``None`` (numpy) or a torch device for the eigensolvers.

    Returns:
        :class:`FDInfinityResult`.

    Raises:
        DataError: invalid features, or too few fake rows for two distinct sizes.
        ConfigError: ``num_points < 2``.

    Warns:
        SmallSampleWarning: the smallest subset has ``N <= d`` rows (once).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> res = fd_infinity(rng.standard_normal((500, 4)), rng.standard_normal((500, 4)))
        >>> res.ns.shape, abs(res.value) < 0.1
        ((15,), True)
    """
    num_points = check_positive_int(num_points, "num_points", minimum=2)
    r = check_features(real, "real")
    f = check_features(fake, "fake")
    check_same_dim(r, f, "real", "fake")
    n_f, d = f.shape
    ns = np.linspace(min(5000, max(n_f // 10, 2)), n_f, num_points).astype("int32")
    if np.unique(ns).size < 2:
        raise DataError(
            f"fake features have only {n_f} rows: FD-infinity fits FD against 1/N over "
            "subset sizes from min(5000, max(n // 10, 2)) to n, which needs at least 3 "
            "fake rows (and in practice thousands)."
        )
    _warn_rank(r.shape[0], d, "real")
    if ns[0] <= d:
        warn_small_sample(
            f"FD-infinity: the smallest fake subset has N = {int(ns[0])} <= d = {d} rows, "
            f"so its covariance is rank-deficient. Use at least {10 * (d + 1)} fake samples "
            f"(smallest subset n // 10 > d).",
            stacklevel=3,
        )
    mu1, s1 = _stats(r, "real")
    factor = _sqrt_factor(s1, device)
    rng = np.random.default_rng(seed)
    fds = np.empty(num_points, dtype=np.float64)
    for i, n_sub in enumerate(ns):
        idx = rng.choice(n_f, int(n_sub), replace=False)
        mu2, s2 = _stats(f[idx], "fake subset")
        fds[i] = _fd(mu1, s1, mu2, s2, factor, device)
    design = np.stack([np.ones(num_points), 1.0 / ns.astype(np.float64)], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(design, fds, rcond=None)
    return FDInfinityResult(value=float(intercept), slope=float(slope), ns=ns, fds=fds)
