"""Tests of vitlab.stats.bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vitlab.errors import ConfigError, DataError
from vitlab.metrics.classification import auroc, top1
from vitlab.stats.bootstrap import bootstrap_ci


def _bernoulli(n, p, rng):
    """Labels and one-hot 'proba' whose top-1 correctness is Bernoulli(p)."""
    y = rng.integers(0, 2, n)
    correct = rng.random(n) < p
    return y, np.eye(2)[np.where(correct, y, 1 - y)]


def _plain_top1(y, p):  # same metric, no per_sample attribute -> generic loop path
    return float(np.mean(p.argmax(1) == y))


def test_coverage_of_known_p():
    p, hits = 0.7, 0
    for rep in range(200):
        rng = np.random.default_rng(rep)
        y, s = _bernoulli(300, p, rng)
        ci = bootstrap_ci(top1, y, s, n_resamples=500, seed=rep)
        hits += ci.low <= p <= ci.high
        assert ci.method == "percentile" and ci.n_skipped == 0
    assert 0.90 <= hits / 200 <= 0.99


def test_vectorised_equals_loop_plain_and_clustered():
    rng = np.random.default_rng(0)
    y, s = _bernoulli(120, 0.6, rng)
    groups = rng.integers(0, 25, 120)
    for g in (None, groups):
        a = bootstrap_ci(top1, y, s, n_resamples=300, seed=5, groups=g)
        b = bootstrap_ci(_plain_top1, y, s, n_resamples=300, seed=5, groups=g)
        assert (a.value, a.low, a.high) == pytest.approx((b.value, b.low, b.high), abs=1e-12)


def test_cluster_bootstrap_is_wider_for_correlated_groups():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(40), 10)
    y = rng.integers(0, 2, 400)
    correct = np.repeat(rng.random(40) < 0.7, 10)  # whole groups right or wrong
    s = np.eye(2)[np.where(correct, y, 1 - y)]
    iid = bootstrap_ci(top1, y, s, n_resamples=1000, seed=0)
    clu = bootstrap_ci(top1, y, s, n_resamples=1000, seed=0, groups=groups)
    assert clu.method == "cluster-percentile"
    # cluster SE is ~sqrt(10) times the iid SE here
    assert (clu.high - clu.low) > 2.0 * (iid.high - iid.low)


def test_deterministic_and_seed_dependent():
    y, s = _bernoulli(200, 0.8, np.random.default_rng(2))
    assert bootstrap_ci(top1, y, s, seed=3) == bootstrap_ci(top1, y, s, seed=3)
    assert bootstrap_ci(top1, y, s, seed=3) != bootstrap_ci(top1, y, s, seed=4)


def test_undefined_resamples_are_skipped_and_counted():
    rng = np.random.default_rng(3)
    y = np.zeros(30, dtype=int)
    y[:2] = 1  # 2 positives in 30: ~13% of resamples have none
    score = rng.random(30)
    with pytest.warns(RuntimeWarning, match=r"undefined on \d+ of 400 resamples"):
        ci = bootstrap_ci(lambda a, b: roc_auc_score(a, b), y, score, n_resamples=400, seed=0)
    expected = 400 * (28 / 30) ** 30  # P(no positive drawn)
    assert 0.5 * expected < ci.n_skipped < 2.0 * expected
    with pytest.warns(RuntimeWarning):  # NaN-returning metric: same treatment
        ci2 = bootstrap_ci(auroc, y, np.stack([1 - score, score], 1), n_resamples=400, seed=0)
    assert ci2.n_skipped == ci.n_skipped

    def raising_auc(a, b):  # ValueError from a metric is treated as "undefined" too
        if a.min() == a.max():
            raise ValueError("one class")
        return roc_auc_score(a, b)

    with pytest.warns(RuntimeWarning):
        ci3 = bootstrap_ci(raising_auc, y, score, n_resamples=400, seed=0)
    assert ci3.n_skipped == ci.n_skipped and ci3.low == ci.low


def test_errors():
    y, s = _bernoulli(50, 0.5, np.random.default_rng(4))
    with pytest.raises(ConfigError, match="n_resamples=0 must be >= 1"):
        bootstrap_ci(top1, y, s, n_resamples=0)
    with pytest.raises(ConfigError, match="level=1.5 must be in"):
        bootstrap_ci(top1, y, s, level=1.5)
    with pytest.raises(DataError, match="scores have 49 rows but y_true has 50"):
        bootstrap_ci(top1, y, s[:49])
    with pytest.raises(DataError, match="undefined \\(NaN\\) on the full data"):
        bootstrap_ci(auroc, np.zeros(50, int), s)
    with pytest.raises(DataError, match="groups has shape \\(3,\\)"):
        bootstrap_ci(top1, y, s, groups=np.arange(3))
    with pytest.raises(DataError, match="single group"):
        bootstrap_ci(top1, y, s, groups=np.zeros(50))
