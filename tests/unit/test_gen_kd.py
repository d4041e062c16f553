"""KD/KID against brute-force MMD and dgm-eval's kernel-matrix formula."""

from __future__ import annotations

import itertools

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


def test_small_sets_warn_and_have_zero_spread():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    with pytest.warns(SmallSampleWarning, match="kd_variance\\) is exactly 0"):
        res = kernel_distance(x, y, n_subsets=4, subset_size=1000)
    assert res.subset_size == 40 and res.std == pytest.approx(0.0, abs=1e-12)
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
