"""Fréchet distance and FD-infinity against scipy.sqrtm references and analytic cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import linalg

from vitlab.errors import DataError
from vitlab.metrics._validate import SmallSampleWarning
from vitlab.metrics.fd import (
    fd_infinity,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    trace_sqrt_product,
)


# --------------------------------------------------------------------------- references
def ref_fd_stats(mu1, mu2, sigma1, sigma2, eps=1e-6):
    """pytorch-fid / dgm-eval compute_FD_with_stats (sqrtm of the non-symmetric product)."""
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def ref_fd_reps(x, y):
    return ref_fd_stats(x.mean(0), y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False))


def ref_fd_infinity(reps1, reps2, seed, num_points=15):
    """dgm-eval compute_FD_infinity with its unseeded default_rng() replaced by default_rng(seed)."""
    from sklearn.linear_model import LinearRegression

    fd_batches = np.linspace(min(5000, max(len(reps2) // 10, 2)), len(reps2), num_points).astype("int32")
    mu1, sigma1 = reps1.mean(0), np.cov(reps1, rowvar=False)
    rng = np.random.default_rng(seed)
    fds = []
    for b in fd_batches:
        act = rng.choice(reps2, b, replace=False)
        fds.append(ref_fd_stats(mu1, act.mean(0), sigma1, np.cov(act, rowvar=False)))
    reg = LinearRegression().fit(1 / fd_batches.reshape(-1, 1), np.array(fds).reshape(-1, 1))
    return reg.predict(np.array([[0]]))[0, 0], np.array(fds)


def random_spd(rng, d, cond=10.0):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    w = np.geomspace(1.0, cond, d)
    return (q * w) @ q.T


# --------------------------------------------------------------------------- tests
def test_fast_fd_matches_sqrtm_on_well_conditioned_features():
    rng = np.random.default_rng(0)
    d = 48
    x = rng.standard_normal((3000, d)) @ rng.standard_normal((d, d)) * 0.3
    y = rng.standard_normal((2500, d)) @ rng.standard_normal((d, d)) * 0.3 + 0.2
    ref = ref_fd_reps(x, y)
    got = frechet_distance(x, y)
    assert got == pytest.approx(ref, rel=1e-6)


def test_fast_fd_matches_sqrtm_from_stats_and_torch_cpu_path():
    rng = np.random.default_rng(1)
    d = 32
    s1, s2 = random_spd(rng, d, 50.0), random_spd(rng, d, 20.0)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    ref = ref_fd_stats(mu1, mu2, s1, s2)
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance_from_stats(mu1, s1, mu2, s2, device="cpu") == pytest.approx(ref, rel=1e-6)


def test_analytic_gaussians_with_known_covariances():
    rng = np.random.default_rng(2)
    d = 16
    s1, s2 = random_spd(rng, d, 5.0), random_spd(rng, d, 8.0)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    r1 = linalg.sqrtm(s1).real
    expected = (
        np.sum((mu1 - mu2) ** 2)
        + np.trace(s1 + s2 - 2 * linalg.sqrtm(r1 @ s2 @ r1).real)
    )
    assert frechet_distance_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # commuting (diagonal) covariances: FD = ||dmu||^2 + sum (sqrt a - sqrt b)^2
    a, b = rng.uniform(0.5, 3, d), rng.uniform(0.5, 3, d)
    exp_diag = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exp_diag, rel=1e-10)


def test_shifted_gaussian_exact_params_and_samples():
    d = 8
    mu = np.linspace(-1, 1, d)
    assert frechet_distance_from_stats(mu, np.eye(d), np.zeros(d), np.eye(d)) == pytest.approx(mu @ mu, rel=1e-12)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40000, d)) + mu
    y = rng.standard_normal((40000, d))
    # sampling std of ||mean diff||^2 is ~ 2 ||mu|| sqrt(2 / n) ~ 0.026
    assert frechet_distance(x, y) == pytest.approx(mu @ mu, abs=0.1)


def test_identical_sets_give_zero():
    x = np.random.default_rng(4).standard_normal((500, 20))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, x.copy()) == pytest.approx(0.0, abs=1e-9)


def test_trace_sqrt_product_matches_definition():
    rng = np.random.default_rng(5)
    s1, s2 = random_spd(rng, 12), random_spd(rng, 12)
    expected = np.trace(linalg.sqrtm(s1 @ s2)).real
    assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-9)


def test_gaussian_stats_matches_numpy():
    x = np.random.default_rng(6).standard_normal((50, 5)).astype(np.float32)
    mu, sigma = gaussian_stats(x)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-10)


def test_rank_deficient_warns_with_needed_samples_and_stays_close_to_eig_reference():
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((20, 32)), rng.standard_normal((20, 32)) + 0.1
    with pytest.warns(SmallSampleWarning, match=r"at least d \+ 1 = 33 samples"):
        got = frechet_distance(x, y)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # dgm-eval's compute_efficient_FD_with_reps formula (eigvals of the product)
    sqrt_tr = np.real(linalg.eigvals(s1 @ s2).astype(complex) ** 0.5).sum()
    eff = np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * sqrt_tr
    assert np.isfinite(got) and got == pytest.approx(eff, rel=1e-4)


def test_fd_errors():
    rng = np.random.default_rng(8)
    with pytest.raises(DataError, match="real features have dim 16 but fake features have dim 12: both sets must come from the same encoder"):
        frechet_distance(rng.standard_normal((30, 16)), rng.standard_normal((30, 12)))
    with pytest.raises(DataError, match="fake features are empty"):
        frechet_distance(rng.standard_normal((30, 4)), np.zeros((0, 4)))
    bad = rng.standard_normal((30, 4))
    bad[[3, 9], 1] = np.nan
    bad[11, 0] = np.inf
    with pytest.raises(DataError, match=r"real features contain NaN or inf in 3 of 30 rows \(first bad rows: \[3, 9, 11\]\)"):
        frechet_distance(bad, rng.standard_normal((30, 4)))
    with pytest.raises(DataError, match="only 1 row"):
        frechet_distance(rng.standard_normal((1, 4)), rng.standard_normal((30, 4)))
    with pytest.raises(DataError, match="real statistics have dim 3 but fake statistics have dim 4"):
        frechet_distance_from_stats(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(DataError, match=r"covariance has shape \(3, 3\) but its mean has dim 4"):
        frechet_distance_from_stats(np.zeros(4), np.eye(3), np.zeros(4), np.eye(4))


def test_fd_infinity_matches_dgm_eval_transcription_and_is_seeded():
    rng = np.random.default_rng(9)
    d = 6
    real = rng.standard_normal((600, d))
    fake = rng.standard_normal((400, d)) * 1.1 + 0.3
    res = fd_infinity(real, fake, seed=123)
    ref_val, ref_fds = ref_fd_infinity(real, fake, seed=123)
    np.testing.assert_allclose(res.fds, ref_fds, rtol=1e-8)
    assert res.value == pytest.approx(ref_val, rel=1e-8)
    assert res.ns[0] == 40 and res.ns[-1] == 400 and res.ns.size == 15
    again = fd_infinity(real, fake, seed=123)
    assert again.value == res.value
    other = fd_infinity(real, fake, seed=124)
    assert other.value != res.value


def test_fd_infinity_needs_enough_fake_rows_and_warns_when_rank_deficient():
    rng = np.random.default_rng(10)
    with pytest.raises(DataError, match="FD-infinity"):
        fd_infinity(rng.standard_normal((50, 3)), rng.standard_normal((2, 3)))
    with pytest.warns(SmallSampleWarning, match="smallest fake subset has N = 10 <= d = 16"):
        fd_infinity(rng.standard_normal((200, 16)), rng.standard_normal((100, 16)))


def test_no_warning_for_large_enough_sets():
    rng = np.random.default_rng(11)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallSampleWarning)
        frechet_distance(rng.standard_normal((100, 4)), rng.standard_normal((100, 4)))
