"""Tests of vitlab.stats.paired: paired bootstrap, McNemar, DeLong."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from vitlab.errors import DataError
from vitlab.metrics.classification import top1
from vitlab.stats.paired import delong_auc_cov, delong_test, mcnemar, paired_bootstrap


def _systems(n, pa, pb, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    u = rng.random(n)  # shared difficulty -> correlated errors, as for real paired systems
    ca, cb = u < pa, u < pb
    wrong = (y + 1) % 3
    return y, np.eye(3)[np.where(ca, y, wrong)], np.eye(3)[np.where(cb, y, wrong)]


def test_paired_bootstrap_detects_planted_difference():
    y, a, b = _systems(1000, 0.80, 0.74, seed=0)
    r = paired_bootstrap(top1, y, a, b, n_resamples=1000, seed=0)
    assert r.diff == pytest.approx(top1(y, a) - top1(y, b))
    assert r.p_value < 0.01 and r.low > 0
    assert r.p_value == pytest.approx(2 / 1001)  # no replicate <= 0


def test_paired_bootstrap_no_difference():
    y, a, _ = _systems(500, 0.7, 0.7, seed=1)
    same = paired_bootstrap(top1, y, a, a.copy(), n_resamples=300, seed=0)
    assert same.diff == 0 and same.p_value == 1.0 and same.low == same.high == 0
    # two independent systems with the same accuracy: not flagged in most seeds
    ps = []
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        y = rng.integers(0, 3, 400)
        a = np.eye(3)[np.where(rng.random(400) < 0.7, y, (y + 1) % 3)]
        b = np.eye(3)[np.where(rng.random(400) < 0.7, y, (y + 1) % 3)]
        ps.append(paired_bootstrap(top1, y, a, b, n_resamples=300, seed=seed).p_value)
    assert np.mean(np.array(ps) > 0.05) >= 0.7


def test_paired_bootstrap_clustered_runs():
    y, a, b = _systems(300, 0.8, 0.7, seed=2)
    r = paired_bootstrap(top1, y, a, b, n_resamples=200, seed=0, groups=np.arange(300) // 3)
    assert r.low <= r.diff <= r.high


def _mcnemar_reference(b, c, exact):
    """statsmodels.stats.contingency_tables.mcnemar(table, exact, correction=True), written out."""
    if exact:
        k, n = min(b, c), b + c
        return k, min(1.0, 2 * sum(stats.binom.pmf(i, n, 0.5) for i in range(k + 1)))
    chi = (abs(b - c) - 1) ** 2 / (b + c)
    return chi, 1 - stats.chi2.cdf(chi, 1)


@pytest.mark.parametrize("b,c", [(3, 10), (12, 12), (40, 20), (0, 0), (5, 0)])
def test_mcnemar_matches_reference(b, c):
    both = 50
    ca = np.array([1] * b + [0] * c + [1] * both + [0] * 7, bool)
    cb = np.array([0] * b + [1] * c + [1] * both + [0] * 7, bool)
    exact = b + c < 25
    stat, p = mcnemar(ca, cb)
    rs, rp = _mcnemar_reference(b, c, exact)
    assert stat == pytest.approx(rs) and p == pytest.approx(rp)
    if b + c:
        stat2, p2 = mcnemar(ca, cb, exact=not exact)
        rs2, rp2 = _mcnemar_reference(b, c, not exact)
        assert stat2 == pytest.approx(rs2) and p2 == pytest.approx(rp2)


def _brute_delong(y, scores):
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    auc = psi.mean(axis=(1, 2))
    v10 = psi.mean(axis=2)  # [k, m]
    v01 = psi.mean(axis=1)  # [k, n]
    k = scores.shape[0]
    cov = np.empty((k, k))
    for r in range(k):
        for s in range(k):
            s10 = ((v10[r] - auc[r]) * (v10[s] - auc[s])).sum() / (m - 1)
            s01 = ((v01[r] - auc[r]) * (v01[s] - auc[s])).sum() / (n - 1)
            cov[r, s] = s10 / m + s01 / n
    return auc, cov


def test_delong_matches_sklearn_and_bruteforce():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    sa = np.round(y + rng.normal(size=40), 1)  # rounded: ties exercise the midranks
    sb = np.round(0.5 * y + rng.normal(size=40), 1)
    auc, cov = delong_auc_cov(y, np.stack([sa, sb]))
    assert auc == pytest.approx([roc_auc_score(y, sa), roc_auc_score(y, sb)])
    bauc, bcov = _brute_delong(y, np.stack([sa, sb]))
    np.testing.assert_allclose(auc, bauc)
    np.testing.assert_allclose(cov, bcov, rtol=1e-10)


def test_delong_test_planted_and_null():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 600)
    good = y + 0.6 * rng.normal(size=600)
    bad = y + 2.0 * rng.normal(size=600)
    z, p = delong_test(y, good, bad)
    assert z > 0 and p < 0.01
    assert delong_test(y, good, good) == (0.0, 1.0)
    z2, p2 = delong_test(y, good, good + 1e-3 * rng.normal(size=600))
    assert p2 > 0.05
    # p-value from z
    _, cov = delong_auc_cov(y, np.stack([good, bad]))
    assert p == pytest.approx(2 * stats.norm.sf(abs(z)))


def test_errors():
    with pytest.raises(DataError, match="equal-length non-empty 1-D"):
        mcnemar(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(DataError, match="binary labels 0/1"):
        delong_test(np.array([0, 1, 2, 1]), np.arange(4.0), np.arange(4.0))
    with pytest.raises(DataError, match="got 1 positive"):
        delong_test(np.array([0, 0, 0, 1]), np.arange(4.0), np.arange(4.0))
    with pytest.raises(DataError, match="same samples"):
        delong_test(np.array([0, 0, 1, 1]), np.arange(4.0), np.arange(3.0))
    y = np.zeros(10, int)
    s = np.eye(3)[y]
    with pytest.raises(DataError, match="undefined \\(NaN\\)"):
        paired_bootstrap(lambda a, b: float("nan"), y, s, s)
