"""Tests of vitlab.protocols.fewshot."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from vitlab.errors import ConfigError, DataError
from vitlab.protocols.fewshot import cl2n, fewshot_eval, sample_episode
from vitlab.stats.interval import t_interval


def _data(n_cls=4, per=30, n_test=200, d=12, seed=0, sep=2.0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n_cls, d)) * sep + 5.0  # offset: CL2N centring matters
    ytr = np.repeat(np.arange(n_cls), per)
    yte = rng.integers(0, n_cls, n_test)
    return mu[ytr] + rng.normal(size=(len(ytr), d)), ytr, mu[yte] + rng.normal(size=(n_test, d)), yte


def test_simpleshot_equals_reference_nearest_centroid():
    xtr, ytr, xte, yte = _data()
    res = fewshot_eval(xtr, ytr, xte, yte, shots=(3,), episodes=4, seed=7, classifiers=("simpleshot",))
    mean = xtr.mean(0)
    for e, acc in enumerate(res.results["simpleshot"][3].accuracies):
        idx = sample_episode(ytr, 3, 4, np.random.default_rng((7, 3, e)))
        f = lambda x: (x - mean) / np.linalg.norm(x - mean, axis=1, keepdims=True)  # noqa: E731
        s, q = f(xtr[idx]), f(xte)
        protos = np.stack([s[ytr[idx] == c].mean(0) for c in range(4)])
        d = ((q[:, None, :] - protos[None]) ** 2).sum(-1)
        assert acc == pytest.approx((d.argmin(1) == yte).mean())


def test_interval_is_student_t():
    xtr, ytr, xte, yte = _data(seed=1, sep=0.7)
    r = fewshot_eval(xtr, ytr, xte, yte, shots=(1,), episodes=6, seed=0).results["linear"][1]
    a = np.array(r.accuracies)
    half = stats.t.ppf(0.975, 5) * a.std(ddof=1) / np.sqrt(6)
    assert r.mean == pytest.approx(a.mean())
    assert (r.low, r.high) == pytest.approx((a.mean() - half, a.mean() + half))
    assert t_interval([0.5]).low is None and np.isnan(fewshot_eval(xtr, ytr, xte, yte, shots=(1,), episodes=1,
                                                                  seed=0).results["linear"][1].low)


def test_more_shots_help_and_determinism():
    xtr, ytr, xte, yte = _data(seed=2, sep=0.6)
    r1 = fewshot_eval(xtr, ytr, xte, yte, shots=(1, 16), episodes=5, seed=3)
    r2 = fewshot_eval(xtr, ytr, xte, yte, shots=(16,), episodes=5, seed=3)
    for clf in ("simpleshot", "linear"):
        assert r1.results[clf][16].mean > r1.results[clf][1].mean
        assert r1.results[clf][16].accuracies == r2.results[clf][16].accuracies  # same episodes
    assert len(set(r1.results["simpleshot"][1].accuracies)) > 1  # episodes differ
    d = r1.to_dict()
    assert set(d) == {"simpleshot", "linear"} and set(d["linear"]) == {"1", "16"}


def test_sample_episode_balanced_without_replacement():
    y = np.repeat(np.arange(3), 5)
    idx = sample_episode(y, 4, 3, np.random.default_rng(0))
    assert np.bincount(y[idx]).tolist() == [4, 4, 4] and len(set(idx)) == 12


def test_cl2n_unit_norm():
    z = cl2n(np.random.default_rng(0).normal(size=(5, 3)), np.ones(3))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0)


def test_errors():
    xtr, ytr, xte, yte = _data(per=5)
    ytr = ytr.copy()
    ytr[:2] = 1  # class 0 now has 3 samples
    with pytest.raises(ConfigError,
                       match="8-shot needs 8 training samples per class, but class 0 has only 3"):
        fewshot_eval(xtr, ytr, xte, yte, shots=(1, 8))
    with pytest.raises(ConfigError, match="episodes=0 must be >= 1"):
        fewshot_eval(xtr, ytr, xte, yte, shots=(1,), episodes=0)
    with pytest.raises(ConfigError, match="unknown few-shot classifier.*protonet"):
        fewshot_eval(xtr, ytr, xte, yte, shots=(1,), classifiers=("protonet",))
    with pytest.raises(DataError, match=r"test labels must lie in 0..3"):
        fewshot_eval(xtr, ytr, xte, yte + 1, shots=(1,))
    with pytest.raises(DataError, match="do not match train features d=12"):
        fewshot_eval(xtr, ytr, xte[:, :5], yte, shots=(1,))
