"""Tests of vitlab.protocols.knn against sklearn and a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from vitlab.errors import ConfigError, DataError
from vitlab.protocols.knn import knn_predict, knn_predict_proba


def _data(n_train=300, n_test=80, d=16, n_cls=5, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_cls, d))
    ytr = rng.integers(0, n_cls, n_train)
    yte = rng.integers(0, n_cls, n_test)
    xtr = (centers[ytr] + rng.normal(size=(n_train, d))).astype(np.float32)
    xte = (centers[yte] + rng.normal(size=(n_test, d))).astype(np.float32)
    return xtr, ytr, xte, yte


def _brute_softmax(xtr, ytr, xte, k, T, n_cls):
    a = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    b = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    sims = b.astype(np.float64) @ a.T.astype(np.float64)
    out = np.zeros((len(xte), n_cls))
    for i, row in enumerate(sims):
        nn = np.argsort(-row)[:k]
        w = np.exp(row[nn] / T)  # DINOv2: (sims / T).exp(), summed per class
        np.add.at(out[i], ytr[nn], w)
    return out / out.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_uniform_matches_sklearn_cosine(k):
    xtr, ytr, xte, _ = _data()
    ours = knn_predict_proba(xtr, ytr, xte, ks=(k,), weighting="uniform")[k]
    sk = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="uniform", algorithm="brute")
    sk.fit(xtr, ytr)
    np.testing.assert_allclose(ours, sk.predict_proba(xte), atol=1e-6)
    np.testing.assert_array_equal(knn_predict(xtr, ytr, xte, ks=(k,), weighting="uniform")[k],
                                  sk.predict(xte))


@pytest.mark.parametrize("T", [0.07, 0.5])
def test_softmax_matches_bruteforce(T):
    xtr, ytr, xte, _ = _data(seed=1)
    ks = (3, 10, 50)
    ours = knn_predict_proba(xtr, ytr, xte, ks=ks, temperature=T)
    for k in ks:
        np.testing.assert_allclose(ours[k], _brute_softmax(xtr, ytr, xte, k, T, 5), atol=1e-5)


def test_chunking_does_not_change_results():
    xtr, ytr, xte, _ = _data(n_train=500, n_test=97, seed=2)
    ref = knn_predict_proba(xtr, ytr, xte, ks=(7, 40))
    for cs, tcs in [(1, 500), (13, 64), (97, 41), (1000, 7)]:
        got = knn_predict_proba(xtr, ytr, xte, ks=(7, 40), chunk_size=cs, train_chunk_size=tcs)
        for k in (7, 40):
            np.testing.assert_allclose(got[k], ref[k], atol=1e-6)


def test_num_classes_pads_and_rows_sum_to_one():
    xtr, ytr, xte, _ = _data(n_cls=3)
    p = knn_predict_proba(xtr, ytr, xte, ks=(10,), num_classes=6)[10]
    assert p.shape == (80, 6)
    assert np.all(p[:, 3:] == 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_deterministic_and_accurate():
    xtr, ytr, xte, yte = _data(d=32, seed=3)
    a = knn_predict_proba(xtr, ytr, xte, ks=(10,))[10]
    b = knn_predict_proba(xtr, ytr, xte, ks=(10,))[10]
    np.testing.assert_array_equal(a, b)
    assert (a.argmax(1) == yte).mean() > 0.8


def test_errors():
    xtr, ytr, xte, _ = _data(n_train=150)
    with pytest.raises(ConfigError, match=r"k=200 is larger than the training set \(150 samples\)"):
        knn_predict_proba(xtr, ytr, xte, ks=(10, 200))
    with pytest.raises(ConfigError, match="unknown weighting 'gaussian'.*softmax, uniform"):
        knn_predict_proba(xtr, ytr, xte, weighting="gaussian")
    with pytest.raises(DataError, match="dimension mismatch: train_x has d=16, test_x has d=8"):
        knn_predict_proba(xtr, ytr, xte[:, :8], ks=(5,))
    with pytest.raises(DataError, match="empty feature array: train_x has 0 rows"):
        knn_predict_proba(xtr[:0], ytr[:0], xte, ks=(5,))
    with pytest.raises(ConfigError, match="temperature=0 must be > 0"):
        knn_predict_proba(xtr, ytr, xte, ks=(5,), temperature=0)
    with pytest.raises(ConfigError, match="num_classes=3 but train_y contains label 4"):
        knn_predict_proba(xtr, ytr, xte, ks=(5,), num_classes=3)
    with pytest.raises(ConfigError, match="contains k < 1"):
        knn_predict_proba(xtr, ytr, xte, ks=(0,))
    with pytest.raises(DataError, match="integer class ids"):
        knn_predict_proba(xtr, ytr.astype(float), xte, ks=(5,))
