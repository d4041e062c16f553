"""Seeded half-sample (delete-half jackknife) CIs for FD, PRDC and Vendi, and the shared input checks.

Coverage by simulation is in ``test_gen_interval_coverage.py``; here: the exact draws, the arithmetic
of the interval, the bias correction, determinism and the errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg

from vitlab.errors import ConfigError, DataError
from vitlab.metrics._validate import check_features
from vitlab.metrics.gen_intervals import halfsample_fd, halfsample_prdc, halfsample_vendi
from vitlab.stats.halfsample import half_factor, half_indices, halfsample_ci
from vitlab.metrics.fd import frechet_distance
from vitlab.metrics.prdc import prdc
from vitlab.metrics.vendi import vendi_score

pytestmark = pytest.mark.filterwarnings("ignore::vitlab.metrics._validate.SmallSampleWarning")
Z95 = 1.959963984540054


def sqrtm_fd(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)


def manual_halves(sizes, b, seed):
    draw = np.random.default_rng(seed)
    return [[np.sort(draw.choice(n, n // 2, replace=False)) for n in sizes] for _ in range(b)]


def test_halfsample_fd_matches_a_manual_loop_without_replacement():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((120, 5)), rng.standard_normal((90, 5)) + 0.5
    ci = halfsample_fd(real, fake, n_resamples=8, seed=3)
    halves = manual_halves((120, 90), 8, 3)
    assert all(len(np.unique(i)) == len(i) for h in halves for i in h)  # no row twice
    manual = np.array([sqrtm_fd(real[ir], fake[jf]) for ir, jf in halves])
    np.testing.assert_allclose(ci.samples, manual, rtol=1e-8)
    assert ci.value == pytest.approx(frechet_distance(real, fake), rel=1e-12)
    # even sizes: the delete-half jackknife factor r/d is 1, so se is the plain sd of the half values
    se = manual.std(ddof=1)
    assert ci.se == pytest.approx(se, rel=1e-8)
    assert (ci.low, ci.high) == pytest.approx((ci.value - Z95 * se, ci.value + Z95 * se), rel=1e-8)
    bias = manual.mean() - ci.value
    assert ci.bias == pytest.approx(bias, rel=1e-8)
    assert ci.debiased.value == pytest.approx(2 * ci.value - manual.mean(), rel=1e-8)
    se_d = se * math.sqrt(1 + 1 / 8)
    assert ci.debiased.se == pytest.approx(se_d, rel=1e-8)
    assert (ci.debiased.low, ci.debiased.high) == pytest.approx(
        (ci.debiased.value - Z95 * se_d, ci.debiased.value + Z95 * se_d), rel=1e-8)
    assert ci.n_resamples == 8 and ci.level == 0.95 and ci.method == "half-sample"


def test_every_interval_contains_its_estimate():
    rng = np.random.default_rng(4)
    for n, shift in ((40, 0.0), (41, 0.2), (120, 1.0)):
        real, fake = rng.standard_normal((n, 3)), rng.standard_normal((n + 7, 3)) + shift
        ci = halfsample_fd(real, fake, n_resamples=6, seed=n)
        assert ci.low <= ci.value <= ci.high and ci.low >= 0.0
        assert ci.debiased.low <= ci.debiased.value <= ci.debiased.high
        for name, c in halfsample_prdc(real, fake, n_resamples=4, seed=n).items():
            assert c.low <= c.value <= c.high, name
            assert 0.0 <= c.low and (name == "density" or c.high <= 1.0)
        v = halfsample_vendi(fake, n_resamples=5, seed=n)
        assert 1.0 <= v.low <= v.value <= v.high


def test_halfsample_ci_arithmetic_factor_and_bounds():
    s = np.array([2.0, 2.5, 3.0, 2.5])
    ci = halfsample_ci(2.0, s, 0.9, factor=0.5, debias=True)
    var = 0.5 * s.var(ddof=1)
    z90 = 1.6448536269514722
    assert ci.se == pytest.approx(math.sqrt(var)) and ci.high == pytest.approx(2.0 + z90 * math.sqrt(var))
    assert ci.bias == pytest.approx(0.5 * (2.5 - 2.0)) and ci.debiased.value == pytest.approx(1.75)
    assert ci.debiased.se == pytest.approx(math.sqrt(var * (1 + 0.5 / 4)))
    clipped = halfsample_ci(0.99, np.array([0.9, 1.0, 0.95]), 0.95, bounds=(0.0, 1.0))
    assert clipped.high == 1.0 and clipped.low < 0.99
    # odd sizes: halves of floor(n/2) rows; factor floor(n/2) / ceil(n/2), the largest over the sets
    assert half_factor((11,)) == pytest.approx(5 / 6) and half_factor((11, 10)) == 1.0
    assert [len(i) for i in half_indices((11, 10), 1, 0)[0]] == [5, 5]
    real = np.random.default_rng(5).standard_normal((11, 2))
    odd = halfsample_fd(real, real[::-1] + 1.0, n_resamples=5, seed=1)
    assert odd.se == pytest.approx(math.sqrt(5 / 6 * odd.samples.var(ddof=1)), rel=1e-12)


def test_halfsample_is_deterministic_under_seed():
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((100, 4)), rng.standard_normal((100, 4))
    a = halfsample_fd(real, fake, n_resamples=5, seed=7)
    b = halfsample_fd(real, fake, n_resamples=5, seed=7)
    c = halfsample_fd(real, fake, n_resamples=5, seed=8)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def test_halfsample_prdc_and_vendi_match_manual_loops():
    rng = np.random.default_rng(2)
    real, fake = rng.standard_normal((150, 4)), rng.standard_normal((130, 4)) + 0.3
    cis = halfsample_prdc(real, fake, n_resamples=4, seed=1, level=0.9)
    assert set(cis) == {"precision", "recall", "density", "coverage"}
    manual = []
    for ir, jf in manual_halves((150, 130), 4, 1):
        r = prdc(real[ir], fake[jf])
        manual.append([r.precision, r.recall, r.density, r.coverage])
    manual = np.array(manual)
    full = prdc(real, fake)
    for i, name in enumerate(("precision", "recall", "density", "coverage")):
        ci = cis[name]
        np.testing.assert_allclose(ci.samples, manual[:, i], rtol=1e-12)
        assert ci.value == getattr(full, name) and ci.level == 0.9
        assert ci.se == pytest.approx(manual[:, i].std(ddof=1), rel=1e-12)
        assert ci.bias is None and ci.debiased is None  # PRDC gets no bias correction
    again = halfsample_prdc(real, fake, n_resamples=4, seed=1, level=0.9)
    np.testing.assert_array_equal(cis["density"].samples, again["density"].samples)

    v = halfsample_vendi(fake, n_resamples=6, seed=2)
    manual_v = [vendi_score(fake[i]) for (i,) in manual_halves((130,), 6, 2)]
    np.testing.assert_allclose(v.samples, manual_v, rtol=1e-12)
    assert v.value == pytest.approx(vendi_score(fake))
    assert v.se == pytest.approx(np.std(manual_v, ddof=1), rel=1e-10)


def test_config_errors():
    x = np.random.default_rng(3).standard_normal((20, 3))
    with pytest.raises(ConfigError, match="level must be in \\(0, 1\\), e.g. 0.95, but got 95"):
        halfsample_fd(x, x, level=95)
    with pytest.raises(ConfigError, match="n_resamples must be an integer >= 2 but got 1"):
        halfsample_vendi(x, n_resamples=1)
    with pytest.raises(ConfigError, match="need at least 12 real rows \\(each half needs more than nearest_k=5\\) "
                                          "but got 11"):
        halfsample_prdc(x[:11], x, n_resamples=3)
    with pytest.raises(ConfigError, match="need at least 4 fake rows"):
        halfsample_fd(x, x[:3], n_resamples=3)
    with pytest.raises(ConfigError, match="at least 2 half-samples"):
        halfsample_ci(1.0, np.array([1.0]), 0.95)


def test_check_features_messages():
    with pytest.raises(DataError, match=r"must be a 2-D array \[n, d\] but got shape \(5,\)"):
        check_features(np.zeros(5), "real")
    with pytest.raises(DataError, match="real features are empty"):
        check_features(np.zeros((0, 3)), "real")
    with pytest.raises(DataError, match="have dimension 0"):
        check_features(np.zeros((3, 0)), "real")
    with pytest.raises(DataError, match="dtype <U1"):
        check_features(np.array([["a"]]), "real")
    x = np.zeros((10, 2), dtype=np.float32)
    x[4, 0] = np.inf
    with pytest.raises(DataError, match=r"NaN or inf in 1 of 10 rows \(first bad rows: \[4\]\)"):
        check_features(x, "fake")
