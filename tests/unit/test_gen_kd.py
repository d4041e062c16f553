"""KD/KID against brute-force MMD and dgm-eval's kernel-matrix formula, and its interval's arithmetic.

Coverage of the KD interval by simulation is in ``test_gen_interval_coverage.py``.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics.pairwise import polynomial_kernel as sk_poly

from vitlab.errors import ConfigError, DataError
from vitlab.metrics._validate import SmallSampleWarning
from vitlab.metrics.kd import kernel_distance, mmd2_unbiased, polynomial_kernel


def brute_mmd2(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as explicit pair loops."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m = len(x)
    sxx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2))
    syy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (sxx + syy) / (m * (m - 1)) - 2 * sxy / (m * m)


def dgm_eval_mmd2(x, y):
    """dgm-eval compute_polynomial_mmd/_mmd2_and_variance with sklearn's polynomial_kernel."""
    kxx = sk_poly(x, degree=3, gamma=None, coef0=1)
    kyy = sk_poly(y, degree=3, gamma=None, coef0=1)
    kxy = sk_poly(x, y, degree=3, gamma=None, coef0=1)
    m = kxx.shape[0]
    return ((kxx.sum(1) - np.diagonal(kxx)).sum() + (kyy.sum(1) - np.diagonal(kyy)).sum()) / (
        m * (m - 1)
    ) - 2 * kxy.sum(0).sum() / (m * m)


def test_mmd2_matches_brute_force_and_dgm_eval():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((25, 7)), rng.standard_normal((25, 7)) + 0.4
    got = mmd2_unbiased(x, y)
    assert got == pytest.approx(brute_mmd2(x, y), rel=1e-10)
    assert got == pytest.approx(dgm_eval_mmd2(x, y), rel=1e-10)


def test_polynomial_kernel_matches_sklearn():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((10, 5)), rng.standard_normal((8, 5))
    np.testing.assert_allclose(polynomial_kernel(x, y), sk_poly(x, y, degree=3, coef0=1), rtol=1e-12)
    np.testing.assert_allclose(
        polynomial_kernel(x, y, degree=2, gamma=0.3, coef0=0.5),
        sk_poly(x, y, degree=2, gamma=0.3, coef0=0.5),
        rtol=1e-12,
    )


def test_kernel_distance_reproduces_seeded_subset_loop():
    rng = np.random.default_rng(2)
    real, fake = rng.standard_normal((90, 6)), rng.standard_normal((70, 6)) * 1.3
    res = kernel_distance(real, fake, n_subsets=6, subset_size=30, seed=11)
    draw = np.random.default_rng(11)
    expected = []
    for _ in range(6):
        xs = real[draw.choice(90, 30, replace=False)]
        ys = fake[draw.choice(70, 30, replace=False)]
        expected.append(brute_mmd2(xs, ys))
    np.testing.assert_allclose(res.values, expected, rtol=1e-9)
    assert res.value == pytest.approx(np.mean(expected), rel=1e-9)
    # dgm-eval quirk: "kd_variance" is the population std (ddof = 0) of the subset values
    assert res.kd_variance == res.std == pytest.approx(np.std(expected), rel=1e-9)
    assert res.var == pytest.approx(np.var(expected), rel=1e-9)
    assert res.subset_size == 30


def test_kernel_distance_determinism_and_separation():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((400, 8))
    same = rng.standard_normal((400, 8))
    shifted = rng.standard_normal((400, 8)) + 1.0
    kw = dict(n_subsets=10, subset_size=100)
    a = kernel_distance(real, shifted, seed=5, **kw)
    assert a.value == kernel_distance(real, shifted, seed=5, **kw).value
    assert a.value != kernel_distance(real, shifted, seed=6, **kw).value
    null = kernel_distance(real, same, seed=5, **kw)
    assert abs(null.value) < 0.05 < a.value


Z95 = 1.959963984540054


def test_kd_interval_from_its_own_subsets_when_they_are_at_most_half_a_set():
    rng = np.random.default_rng(6)
    real, fake = rng.standard_normal((100, 3)), rng.standard_normal((80, 3)) + 0.5
    res = kernel_distance(real, fake, n_subsets=7, subset_size=30, seed=2)
    draw = np.random.default_rng(2)
    vals = np.array([brute_mmd2(real[draw.choice(100, 30, replace=False)], fake[draw.choice(80, 30, replace=False)])
                     for _ in range(7)])
    np.testing.assert_allclose(res.values, vals, rtol=1e-9)
    # Var(KD) = delete-d jackknife of the complete U-statistic (r = 30 of n = 100, 80: factor max r/d)
    #           + Monte-Carlo variance of the mean over 7 subsets
    var = max(30 / 70, 30 / 50) * vals.var(ddof=1) + vals.var(ddof=1) / 7
    assert res.method == "subset jackknife" and res.n_variance == 7
    assert res.se == pytest.approx(math.sqrt(var), rel=1e-9)
    assert (res.low, res.high) == pytest.approx((res.value - Z95 * res.se, res.value + Z95 * res.se), rel=1e-9)
    assert res.std == pytest.approx(vals.std(), rel=1e-9)  # dgm-eval's std (ddof=0) is kept next to the interval
    assert res.level == 0.95


def test_kd_interval_from_half_size_subsets_when_the_kd_subsets_are_large():
    rng = np.random.default_rng(7)
    real, fake = rng.standard_normal((30, 3)), rng.standard_normal((25, 3)) * 1.5
    res = kernel_distance(real, fake, n_subsets=4, subset_size=20, seed=5, n_resamples=6, level=0.9)
    draw = np.random.default_rng(5)
    vals = np.array([brute_mmd2(real[draw.choice(30, 20, replace=False)], fake[draw.choice(25, 20, replace=False)])
                     for _ in range(4)])
    halves = np.array([brute_mmd2(real[draw.choice(30, 12, replace=False)], fake[draw.choice(25, 12, replace=False)])
                       for _ in range(6)])  # r = min(30, 25) // 2 = 12, drawn after the KD subsets
    var = max(12 / 18, 12 / 13) * halves.var(ddof=1) + vals.var(ddof=1) / 4
    assert res.method == "half-sample" and res.n_variance == 6 and res.level == 0.9
    assert res.se == pytest.approx(math.sqrt(var), rel=1e-9)
    assert res.high - res.value == pytest.approx(1.6448536269514722 * res.se, rel=1e-9)
    np.testing.assert_allclose(res.values, vals, rtol=1e-9)  # the extra draws do not change KD itself
    assert kernel_distance(real, fake, n_subsets=4, subset_size=20, seed=5, n_resamples=0).se is None
    one = kernel_distance(rng.standard_normal((300, 3)), rng.standard_normal((300, 3)), n_subsets=1, subset_size=50)
    assert one.se is None and one.low is None  # one subset of many: its Monte-Carlo error is unknown


def test_small_sets_warn_and_have_zero_spread():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    with pytest.warns(SmallSampleWarning, match="kd_variance\\) is exactly 0"):
        res = kernel_distance(x, y, n_subsets=4, subset_size=1000)
    assert res.subset_size == 40 and res.std == pytest.approx(0.0, abs=1e-12)
    # the whole sets every time: no Monte-Carlo error, and the interval comes from half-samples
    assert res.method == "half-sample" and res.se > 0 and res.low < res.value < res.high
    with pytest.warns(SmallSampleWarning, match="understates"):
        kernel_distance(x, rng.standard_normal((60, 3)), n_subsets=2, subset_size=1000)


def test_kd_errors():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, 4))
    with pytest.raises(DataError, match="real features have dim 4 but fake features have dim 5"):
        kernel_distance(x, rng.standard_normal((30, 5)))
    with pytest.raises(ConfigError, match="n_subsets must be an integer >= 1 but got 0"):
        kernel_distance(x, x, n_subsets=0)
    with pytest.raises(ConfigError, match="at least 2 rows per set"):
        kernel_distance(x, x[:1])
    with pytest.raises(ConfigError, match="same size"):
        mmd2_unbiased(x, x[:10])
