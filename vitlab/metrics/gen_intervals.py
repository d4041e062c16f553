"""Half-sample confidence intervals of the generative metrics FD, PRDC and Vendi.

Why not the bootstrap. Resampling rows *with* replacement duplicates rows. A duplicated row is its
own nearest neighbour at distance 0, which shrinks every k-NN radius (PRDC) and lowers the Vendi
score; FD, a squared distance with an O(1/n) upward bias, gets that bias a second time. So every
interval here is a half-sample (delete-half jackknife) interval: the method, its derivation and its
caveats are in :mod:`vitlab.stats.halfsample`; this module applies it to each metric.

Per metric (all checked by simulation against a known truth in
``tests/unit/test_gen_interval_coverage.py``):

* FD (:func:`halfsample_fd`): smooth function of means and covariances, so the
  delete-half jackknife is consistent (Shao & Wu 1989, Thm 1); interval for
  ``E[FD_n]`` plus ``bias`` / ``debiased`` with its own interval.
* precision / recall / density / coverage (:func:`halfsample_prdc`): k-NN set
  statistics are not smooth and no consistency theorem covers them. A half has
  k-NN radii about ``2^(1/d)`` times larger, so the half-sample values are
  centred elsewhere: only their *spread* is used, never their location or
  percentiles. Calibrated empirically (see the test).
* Vendi (:func:`halfsample_vendi`): smooth function of the second-moment matrix
  of the (normalised) rows; one set halved. Interval for ``E[Vendi_n]``
  (Vendi is biased low in finite samples; that bias is not corrected).

Every interval is a :class:`vitlab.stats.interval.Interval` (``se`` set, ``samples`` the
half-sample values; FD's also has ``bias`` and ``debiased``, the interval of the debiased value).

Bounds are clipped to the metric's range (FD >= 0, PRDC rates in [0, 1], density
>= 0, Vendi >= 1), which never removes a possible value of the target; the
debiased FD interval is not clipped.

Cost per half-sample: FD half the covariance work and the same ``[d, d]`` eigen
solves; PRDC about a quarter of a full k-NN pass; Vendi one ``[d, d]`` eigen.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> ci = halfsample_fd(rng.standard_normal((400, 4)), rng.standard_normal((400, 4)) + 1,
    ...                    n_resamples=20)
    >>> ci.low <= ci.value <= ci.high and ci.samples.shape == (20,) and ci.method == "half-sample"
    True
"""


from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from vitlab.metrics._validate import (
    SmallSampleWarning,
    check_features,
    check_level,
    check_positive_int,
    check_same_dim,
)
from vitlab.metrics.fd import _fd, _sqrt_factor, _stats, frechet_distance
from vitlab.metrics.prdc import prdc
from vitlab.metrics.vendi import vendi_score
from vitlab.stats.halfsample import check_halves, half_factor, half_indices, halfsample_ci
from vitlab.stats.interval import Interval

__all__ = [
    "halfsample_fd",
    "halfsample_prdc",
    "halfsample_vendi",
]

_INF = math.inf


def _over_halves(
    n_resamples: int, seed: int, sizes: tuple[int, ...], fn: Callable[..., Any]
) -> list[Any]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        for idx in half_indices(sizes, n_resamples, seed):
            out.append(fn(*idx))
    return out


def halfsample_fd(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    n_resamples: int = 100,
    level: float = 0.95,
    seed: int = 0,
    device: Any = None,
) -> Interval:
    """Half-sample CI of the Fréchet distance, with its estimated bias and a debiased value.

    ``low``/``high`` cover ``E[FD_n]`` (FD at these sample sizes); ``debiased.low``/``debiased.high``
    cover the population FD. See the module docstring.

    Args:
        real: ``[n_r, d]`` real features (``n_r >= 4``).
        fake: ``[n_f, d]`` generated features (``n_f >= 4``).
        n_resamples: Random half-samples ``B >= 2`` (default 100).
        level: Confidence level (default 0.95).
        seed: Seed of the half-sample draws.
        device: ``None`` (numpy) or torch device for the eigensolvers.

    Returns:
        :class:`~vitlab.stats.interval.Interval` with ``bias`` and ``debiased`` (an ``Interval``).

    Raises:
        DataError: invalid or mismatched features.
        ConfigError: bad ``n_resamples`` or ``level``, or fewer than 4 rows in a set.

    Example:
        >>> rng = np.random.default_rng(1)   # two samples of one distribution: the true FD is 0
        >>> ci = halfsample_fd(rng.standard_normal((200, 8)), rng.standard_normal((200, 8)), n_resamples=50)
        >>> round(ci.value, 2), round(ci.bias, 2), round(ci.debiased.value, 2)
        (0.21, 0.28, -0.07)
        >>> ci.low <= ci.value <= ci.high, ci.debiased.low <= 0.0 <= ci.debiased.high
        (True, True)
    """
    n_resamples = check_positive_int(n_resamples, "n_resamples", minimum=2)
    level = check_level(level)
    r = check_features(real, "real")
    f = check_features(fake, "fake")
    check_same_dim(r, f, "real", "fake")
    check_halves({"real": r.shape[0], "fake": f.shape[0]}, 2, "a covariance needs 2 rows per half")
    est = frechet_distance(r, f, device=device)

    def one(ir: np.ndarray, jf: np.ndarray) -> float:
        mu1, s1 = _stats(r[ir], "real")
        mu2, s2 = _stats(f[jf], "fake")
        return _fd(mu1, s1, mu2, s2, _sqrt_factor(s1, device), device)

    sizes = (r.shape[0], f.shape[0])
    samples = np.array(_over_halves(n_resamples, seed, sizes, one))
    return halfsample_ci(est, samples, level, factor=half_factor(sizes), debias=True, bounds=(0.0, _INF))


PRDC_BOUNDS = {"precision": (0.0, 1.0), "recall": (0.0, 1.0), "density": (0.0, _INF), "coverage": (0.0, 1.0)}


def halfsample_prdc(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    nearest_k: int = 5,
    n_resamples: int = 50,
    level: float = 0.95,
    seed: int = 0,
    dtype: str = "float64",
    device: Any = None,
) -> dict[str, Interval]:
    """Half-sample CIs of precision, recall, density and coverage (intervals for ``E[metric_n]``).

    Each half-sample is a PRDC pass on half of the real and half of the fake rows
    (about a quarter of the cost of a full pass). Only the spread of the half-sample
    values is used: their k-NN radii are larger, so their location differs.

    Args:
        real: ``[n_r, d]`` real features.
        fake: ``[n_f, d]`` generated features.
        nearest_k: k of the k-NN balls (5); each half needs more than k rows.
        n_resamples: Random half-samples ``B >= 2`` (default 50).
        level: Confidence level (0.95).
        seed: Seed of the half-sample draws.
        dtype: Distance arithmetic, ``"float64"`` or ``"float32"``.
        device: torch device (``None`` = CPU).

    Returns:
        ``{"precision": Interval, "recall": ..., "density": ..., "coverage": ...}``.

    Raises:
        ConfigError: a half would have ``<= nearest_k`` rows, bad ``n_resamples`` / ``level``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> cis = halfsample_prdc(rng.standard_normal((200, 3)), rng.standard_normal((200, 3)),
        ...                       n_resamples=5)
        >>> sorted(cis), all(c.low <= c.value <= c.high for c in cis.values())
        (['coverage', 'density', 'precision', 'recall'], True)
    """
    n_resamples = check_positive_int(n_resamples, "n_resamples", minimum=2)
    level = check_level(level)
    r = check_features(real, "real")
    f = check_features(fake, "fake")
    check_same_dim(r, f, "real", "fake")
    k = check_positive_int(nearest_k, "nearest_k")
    check_halves({"real": r.shape[0], "fake": f.shape[0]}, k + 1, f"each half needs more than nearest_k={k}")
    full = prdc(r, f, nearest_k=k, dtype=dtype, device=device)

    def one(ir: np.ndarray, jf: np.ndarray) -> tuple[float, float, float, float]:
        res = prdc(r[ir], f[jf], nearest_k=k, dtype=dtype, device=device)
        return res.precision, res.recall, res.density, res.coverage

    sizes = (r.shape[0], f.shape[0])
    samples = np.array(_over_halves(n_resamples, seed, sizes, one))
    fac = half_factor(sizes)
    return {nm: halfsample_ci(getattr(full, nm), samples[:, i], level, factor=fac, bounds=PRDC_BOUNDS[nm])
            for i, nm in enumerate(PRDC_BOUNDS)}


def halfsample_vendi(
    features: np.ndarray,
    *,
    n_resamples: int = 100,
    level: float = 0.95,
    seed: int = 0,
    q: float | str = 1,
    normalize: bool = True,
) -> Interval:
    """Half-sample CI of the Vendi score of one (generated) feature set (an interval for ``E[Vendi_n]``).

    Args:
        features: ``[n, d]`` features (``n >= 4``).
        n_resamples: Random half-samples ``B >= 2`` (default 100).
        level: Confidence level (0.95).
        seed: Seed of the half-sample draws.
        q: Entropy order (see :func:`~vitlab.metrics.vendi.vendi_score`).
        normalize: L2-normalise rows (cosine kernel).

    Returns:
        :class:`~vitlab.stats.interval.Interval`.

    Example:
        >>> x = np.random.default_rng(0).standard_normal((300, 8))
        >>> ci = halfsample_vendi(x, n_resamples=20)
        >>> 1.0 <= ci.low <= ci.value <= ci.high <= 8.0
        True
    """
    n_resamples = check_positive_int(n_resamples, "n_resamples", minimum=2)
    level = check_level(level)
    x = check_features(features, "input")
    check_halves({"input": x.shape[0]}, 2, "a Vendi score of one row is 1")
    est = vendi_score(x, q=q, normalize=normalize)
    samples = np.array(
        _over_halves(n_resamples, seed, (x.shape[0],), lambda i: vendi_score(x[i], q=q, normalize=normalize))
    )
    return halfsample_ci(est, samples, level, factor=half_factor((x.shape[0],)), bounds=(1.0, _INF))
