"""Seeded bootstrap CIs for FD, PRDC and Vendi, and the shared input checks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from vitlab.errors import ConfigError, DataError
from vitlab.metrics._validate import check_features
from vitlab.metrics.bootstrap_gen import bootstrap_fd, bootstrap_prdc, bootstrap_vendi, percentile_ci
from vitlab.metrics.fd import frechet_distance
from vitlab.metrics.vendi import vendi_score

pytestmark = pytest.mark.filterwarnings("ignore::vitlab.metrics._validate.SmallSampleWarning")


def sqrtm_fd(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)


def test_bootstrap_fd_resamples_match_manual_loop():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((120, 5)), rng.standard_normal((90, 5)) + 0.5
    ci = bootstrap_fd(real, fake, n_resamples=8, seed=3)
    draw = np.random.default_rng(3)
    manual = []
    for _ in range(8):
        ir, jf = draw.integers(0, 120, 120), draw.integers(0, 90, 90)
        manual.append(sqrtm_fd(real[ir], fake[jf]))
    np.testing.assert_allclose(ci.samples, manual, rtol=1e-8)
    assert ci.estimate == pytest.approx(frechet_distance(real, fake), rel=1e-12)
    lo, hi = np.quantile(manual, [0.025, 0.975])
    assert (ci.low, ci.high) == pytest.approx((lo, hi), rel=1e-8)
    assert ci.n_resamples == 8 and ci.level == 0.95


def test_bootstrap_is_deterministic_under_seed():
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((100, 4)), rng.standard_normal((100, 4))
    a = bootstrap_fd(real, fake, n_resamples=5, seed=7)
    b = bootstrap_fd(real, fake, n_resamples=5, seed=7)
    c = bootstrap_fd(real, fake, n_resamples=5, seed=8)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def test_bootstrap_prdc_and_vendi():
    rng = np.random.default_rng(2)
    real, fake = rng.standard_normal((150, 4)), rng.standard_normal((130, 4)) + 0.3
    cis = bootstrap_prdc(real, fake, n_resamples=4, seed=1, level=0.9)
    assert set(cis) == {"precision", "recall", "density", "coverage"}
    for ci in cis.values():
        assert ci.samples.shape == (4,) and ci.low <= ci.high and ci.level == 0.9
    again = bootstrap_prdc(real, fake, n_resamples=4, seed=1, level=0.9)
    np.testing.assert_array_equal(cis["density"].samples, again["density"].samples)

    v = bootstrap_vendi(fake, n_resamples=6, seed=2)
    draw = np.random.default_rng(2)
    manual = [vendi_score(fake[draw.integers(0, 130, 130)]) for _ in range(6)]
    np.testing.assert_allclose(v.samples, manual, rtol=1e-12)
    assert v.estimate == pytest.approx(vendi_score(fake))


def test_percentile_ci_and_config_errors():
    ci = percentile_ci(1.0, np.arange(101.0), 0.9)
    assert (ci.low, ci.high) == pytest.approx((5.0, 95.0), rel=1e-12)
    x = np.random.default_rng(3).standard_normal((20, 3))
    with pytest.raises(ConfigError, match="level must be in \\(0, 1\\), e.g. 0.95, but got 95"):
        bootstrap_fd(x, x, level=95)
    with pytest.raises(ConfigError, match="n_resamples must be an integer >= 1 but got 0"):
        bootstrap_vendi(x, n_resamples=0)


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
