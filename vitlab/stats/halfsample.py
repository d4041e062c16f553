"""Half-sample (delete-half jackknife) confidence intervals: the method, for any statistic of one or more i.i.d. sets.

Used by the generative metrics (:mod:`vitlab.metrics.gen_intervals`: FD, PRDC, Vendi).

Why not the bootstrap. Resampling rows *with* replacement duplicates rows. A
duplicated row is its own nearest neighbour at distance 0, which shrinks every
k-NN radius (PRDC) and lowers the Vendi score; FD, a squared distance with an
O(1/n) upward bias, gets that bias a second time. The bootstrap distributions
of these metrics therefore sit away from the full-data estimate: on 3,000 x 256
features the old percentile interval of FD was [3.82, 4.10] around FD = 3.09,
and in simulation it contained its own estimate 0 % of the time.

Method. Everything here uses subsets drawn *without* replacement, so no row is
ever duplicated. For a statistic ``theta_n`` of n i.i.d. rows the delete-d
jackknife (Shao & Wu 1989, "A general theory for jackknife variance
estimation", Ann. Statist. 17; Efron & Tibshirani 1993, *An Introduction to the
Bootstrap*, ch. 11, section 11.7) recomputes the statistic on subsets ``s`` of
``r = n - d`` rows and estimates

    v_J(d) = r / (d N) * sum_s (theta_(s) - mean_s theta_(s))^2,    N = C(n, d) subsets,

and Shao (1989, JASA 84, "The efficiency and consistency of approximations to
the jackknife variance estimators") shows that ``B`` random subsets may replace
all ``N``. With ``d = r = n / 2`` (half-samples) the factor ``r / d`` is 1: the
variance of the *full-sample* estimate is estimated by the plain variance of the
half-sample values. It is not half of it: two independent samples of sizes n/2
and n give ``Var(theta_{n/2}) = 2 Var(theta_n)`` for a mean, but a random half of
*the same* sample varies around the full-sample value with the finite-population
variance ``(S^2 / h)(1 - h / n) = S^2 / n`` at ``h = n / 2``, which is the usual
estimate of ``Var(theta_n)``. So, for ``B`` random half-samples (real and fake
each halved, without replacement, independently):

    se       = sqrt(f * var_B(theta_half))                 (ddof = 1)
    interval = theta_n -/+ z_{(1 + level)/2} * se          (normal quantile)

which contains ``theta_n`` by construction. ``f = max_i floor(n_i/2) / ceil(n_i/2)``
over the sets is 1 for even sizes; for an odd size it is ``(n - 1)/(n + 1)``, and
the largest factor over the sets is the conservative one. Two independent sets
(real, fake) add their linear terms, so halving both keeps the scaling.

What the interval covers: the expected value ``E[theta_n]`` of the metric at
this sample size (FD, PRDC and Vendi all depend on n), not a population value.
For FD the finite-sample bias is also estimated. Chong & Forsyth (2020,
"Effectively unbiased FID and Inception Score and where to find them", CVPR)
show ``E[FD_n] = FD + a / n_r + b / n_f + O(n^-2)``; halving both sets doubles the
1/n term, so (Quenouille's 1956 half-sample bias correction)

    bias     = f * (mean_B(theta_half) - theta_n)
    debiased = theta_n - bias        (= 2 theta_n - mean_B(theta_half) for even sizes)
    se_deb   = sqrt(se^2 + f * se^2 / B)

To first order the correction is a constant, so ``debiased`` has the variance
of ``theta_n``; the second term is the Monte-Carlo error of the mean over ``B``
halves. ``debiased -/+ z se_deb`` is an interval for the population FD. The
debiased value can be slightly negative when the sets match.

Caveat: when the two distributions (nearly) coincide FD is not asymptotically
normal and the half-sample variance overestimates its quadratic term (jackknife
variance estimates are conservative in expectation, Efron & Stein 1981, Ann.
Statist. 9), so the interval is wider than needed, not narrower. The relative
Monte-Carlo error of ``se`` is about ``1 / sqrt(2 (B - 1))`` (7 % at B = 100).
When every half-sample gives the same value (e.g. precision 1.0 on near-copies)
``se`` is 0 and the interval is the point: the data show no spread at this n,
which near the ends of [0, 1] says little; read such an interval with care.

Draws: ``rng = np.random.default_rng(seed)``; per half-sample, for each set in
order (real, then fake) ``np.sort(rng.choice(n, n // 2, replace=False))``.
Example:
    >>> [tuple(len(i) for i in h) for h in half_indices((10, 7), 2, seed=0)]
    [(5, 3), (5, 3)]
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from vitlab.errors import ConfigError
from vitlab.stats.interval import Interval, check_level

__all__ = ["METHOD", "half_factor", "half_indices", "halfsample_ci", "check_halves"]

#: Method name recorded with every half-sample interval.
METHOD = "half-sample"
_INF = math.inf


def half_factor(sizes: tuple[int, ...] | list[int]) -> float:
    """The delete-d jackknife factor ``r / d`` for halves of ``r = n // 2`` rows: the largest over the sets.

    Example:
        >>> half_factor((100, 200)), round(half_factor((101, 100)), 4)
        (1.0, 1.0)
        >>> round(half_factor((101, 99)), 4)   # (99 // 2) / (99 - 49) = 49 / 50
        0.9804
    """
    return max((n // 2) / (n - n // 2) for n in sizes)


def half_indices(sizes: tuple[int, ...], n_resamples: int, seed: int) -> list[tuple[np.ndarray, ...]]:
    """``n_resamples`` random halves (without replacement, sorted) of each set, seeded.

    Per half-sample, for each size ``n`` in order: ``np.sort(rng.choice(n, n // 2, replace=False))``
    with ``rng = np.random.default_rng(seed)``.

    Example:
        >>> [tuple(len(i) for i in h) for h in half_indices((10, 7), 2, seed=0)]
        [(5, 3), (5, 3)]
        >>> all(len(np.unique(i)) == len(i) for h in half_indices((10, 7), 5, 1) for i in h)
        True
    """
    rng = np.random.default_rng(seed)
    return [tuple(np.sort(rng.choice(n, n // 2, replace=False)) for n in sizes) for _ in range(n_resamples)]


def halfsample_ci(
    estimate: float,
    samples: np.ndarray,
    level: float,
    *,
    factor: float = 1.0,
    debias: bool = False,
    bounds: tuple[float, float] = (-_INF, _INF),
) -> Interval:
    """The half-sample :class:`~vitlab.stats.interval.Interval` of ``estimate`` given half-sample values.

    ``se = sqrt(factor * var(samples, ddof=1))``, interval ``estimate -/+ z se`` clipped to
    ``bounds``; with ``debias`` also ``bias = factor * (mean(samples) - estimate)`` and
    ``debiased``, the interval ``estimate - bias -/+ z sqrt(se^2 + factor se^2 / B)``
    (not clipped). See the module docstring for the derivation.

    Args:
        estimate: Metric on the full data.
        samples: ``[B]`` metric on ``B >= 2`` random half-samples.
        level: Confidence level in (0, 1).
        factor: Delete-d jackknife factor ``r / d`` (:func:`half_factor`; 1 for even sizes).
        debias: Also estimate the O(1/n) bias and a bias-corrected value.
        bounds: The metric's range; the interval is clipped to it.

    Returns:
        :class:`~vitlab.stats.interval.Interval` with ``value = estimate``, ``se``, ``level``,
        ``n_resamples = B``, ``samples``, method ``"half-sample"`` (and ``bias``, ``debiased``).

    Raises:
        ConfigError: fewer than 2 samples, or a bad ``level``.

    Example:
        >>> ci = halfsample_ci(1.0, np.array([1.2, 1.4, 1.2, 1.4]), 0.95, debias=True)
        >>> round(ci.se, 4), round(ci.low, 4), round(ci.high, 4)
        (0.1155, 0.7737, 1.2263)
        >>> round(ci.bias, 4), round(ci.debiased.value, 4), round(ci.debiased.se, 4)
        (0.3, 0.7, 0.1291)
    """
    level = check_level(level)
    s = np.asarray(samples, dtype=np.float64).ravel()
    if s.size < 2:
        raise ConfigError(f"a half-sample interval needs at least 2 half-samples but got {s.size}.")
    est = float(estimate)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    var = float(factor) * float(s.var(ddof=1))
    se = math.sqrt(var)
    low, high = max(est - z * se, bounds[0]), min(est + z * se, bounds[1])
    bias = debiased = None
    if debias:
        bias = float(factor) * (float(s.mean()) - est)
        deb = est - bias
        se_d = math.sqrt(var + float(factor) * var / s.size)
        debiased = Interval(deb, deb - z * se_d, deb + z * se_d, METHOD, level, int(s.size), se=se_d)
    return Interval(est, float(low), float(high), METHOD, level, int(s.size), se=se, samples=s, bias=bias,
                    debiased=debiased)


def check_halves(sizes: dict[str, int], minimum: int, why: str) -> None:
    for name, n in sizes.items():
        if n // 2 < minimum:
            raise ConfigError(
                f"half-sample intervals need at least {2 * minimum} {name} rows ({why}) but got {n}: "
                "pass more samples or n_resamples=0 (no interval)."
            )
