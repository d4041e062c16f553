"""Early exit: per-layer heads on frozen embeddings, the confidence rule, the threshold sweep."""

from __future__ import annotations

import numpy as np
import pytest

from vitlab.accel.early_exit import exit_decisions, exit_probabilities, fit_exit_heads, threshold_sweep
from vitlab.errors import ConfigError, DataError
from vitlab.protocols.linear import fit_logistic


def _data(n=120, L=3, C=6, K=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    X = rng.normal(size=(n, L, C))
    for l in range(L):  # deeper layers separate the classes better
        X[np.arange(n), l, y] += 1.5 * (l + 1)
    return X, y


def test_heads_are_fit_per_layer_with_fit_logistic():
    X, y = _data()
    heads = fit_exit_heads(X, y, C=0.5)
    assert len(heads) == 3
    W, b = fit_logistic(X[:, 1], y, 0.5)
    np.testing.assert_allclose(heads[1].W, W)
    P = exit_probabilities(heads, X)
    assert P.shape == (120, 3, 3)
    np.testing.assert_allclose(P.sum(-1), 1.0)
    acc = (P.argmax(-1) == y[:, None]).mean(0)
    assert acc[2] >= acc[0]


def test_exit_rule():
    p = np.array([[[0.6, 0.4], [0.3, 0.7], [0.1, 0.9]],
                  [[0.99, 0.01], [0.5, 0.5], [0.5, 0.5]]])
    layer, pred = exit_decisions(p, 0.8)
    assert layer.tolist() == [2, 0] and pred.tolist() == [1, 0]
    layer, _ = exit_decisions(p, 0.0)
    assert layer.tolist() == [0, 0]
    layer, _ = exit_decisions(p, 1.01)  # never confident: everyone runs to the end
    assert layer.tolist() == [2, 2]


def test_threshold_sweep_accuracy_and_time():
    X, y = _data()
    P = exit_probabilities(fit_exit_heads(X, y), X)
    t = [1.0, 2.0, 3.0]
    sw = threshold_sweep(P, y, t, thresholds=[0.0, 0.5, 0.9, 1.01])
    assert sw["expected_time"][0] == 1.0 and sw["expected_time"][-1] == 3.0
    assert np.all(np.diff(sw["expected_time"]) >= 0)
    assert sw["accuracy"][0] == pytest.approx((P[:, 0].argmax(-1) == y).mean())
    assert sw["accuracy"][-1] == pytest.approx((P[:, -1].argmax(-1) == y).mean())
    np.testing.assert_allclose(sw["exit_fraction"].sum(1), 1.0)
    np.testing.assert_allclose(sw["expected_time"], sw["exit_fraction"] @ np.array(t))
    assert sw["speedup"][0] == pytest.approx(3.0)
    assert len(threshold_sweep(P, y, t)["threshold"]) == 21


def test_errors():
    X, y = _data()
    P = exit_probabilities(fit_exit_heads(X, y), X)
    with pytest.raises(DataError, match=r"expected per-layer embeddings \[n, L, C\]"):
        fit_exit_heads(X[:, 0], y)
    with pytest.raises(ConfigError, match="cum_time must hold 3 non-negative, non-decreasing"):
        threshold_sweep(P, y, [1.0, 3.0, 2.0])
    with pytest.raises(ConfigError, match="2 heads for 3 layers"):
        exit_probabilities(fit_exit_heads(X, y)[:2], X)
