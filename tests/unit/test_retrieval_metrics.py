"""Retrieval metrics against scikit-learn and the definitions in Musgrave et al. (2020)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, ndcg_score

from vitlab.errors import ConfigError, DataError
from vitlab.metrics.retrieval import (ap_at_r, average_precision, check_relevance, ndcg_at_k, precision_at_k,
                                      recall_at_k, retrieval_metrics)


def _random_case(seed, m=30, n=40):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(m, n))  # continuous: no ties
    truth = rng.random((m, n)) < 0.2
    truth[np.arange(m), rng.integers(0, n, m)] = True  # every query has a positive
    order = np.argsort(-scores, axis=1)
    rel = np.take_along_axis(truth, order, 1)
    return scores, truth, rel, truth.sum(1)


@pytest.mark.parametrize("seed", range(3))
def test_average_precision_matches_scikit_learn(seed):
    scores, truth, rel, n_rel = _random_case(seed)
    want = [average_precision_score(t, s) for t, s in zip(truth, scores)]
    np.testing.assert_allclose(average_precision(rel, n_rel), want, atol=1e-12)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_ndcg_matches_scikit_learn(k):
    scores, truth, rel, n_rel = _random_case(7)
    want = [ndcg_score(t[None].astype(float), s[None], k=k) for t, s in zip(truth, scores)]
    np.testing.assert_allclose(ndcg_at_k(rel, n_rel, k), want, atol=1e-12)


def test_recall_precision_and_map_at_r_by_hand():
    rel = np.array([[False, True, False, True, False],
                    [True, True, False, False, False],
                    [False, False, False, False, True]])
    n_rel = np.array([2, 2, 1])
    assert recall_at_k(rel, 1).tolist() == [0.0, 1.0, 0.0]
    assert recall_at_k(rel, 2).tolist() == [1.0, 1.0, 0.0]
    assert precision_at_k(rel, 2).tolist() == [0.5, 1.0, 0.0]
    # MAP@R: query 0, R=2: ranks 1..2 hold one hit at rank 2 -> (1/2) * (1/2) = 0.25
    assert ap_at_r(rel, n_rel).tolist() == [0.25, 1.0, 0.0]
    # AP: query 0 hits at ranks 2 and 4 -> (1/2 + 2/4) / 2 = 0.5; query 2 at rank 5 -> 0.2
    np.testing.assert_allclose(average_precision(rel, n_rel), [0.5, 1.0, 0.2])


def test_all_metrics_and_bad_input():
    _, _, rel, n_rel = _random_case(1)
    out = retrieval_metrics(rel, n_rel, ks=(1, 5, 10))
    assert set(out) == {f"{m}@{k}" for m in ("recall", "precision", "ndcg") for k in (1, 5, 10)} | {"map", "map@r"}
    assert all(v.shape == (30,) and ((v >= 0) & (v <= 1)).all() for v in out.values())
    assert set(retrieval_metrics(rel[:, :5], n_rel, ks=(1, 5, 10), full_ranking=False)) == {
        "recall@1", "precision@1", "ndcg@1", "recall@5", "precision@5", "ndcg@5"}
    with pytest.raises(DataError, match=r"1 query\(ies\) have no relevant item in the gallery \(first: q7\)"):
        check_relevance(np.zeros((2, 3), bool), np.array([1, 0]), ["q0", "q7"])
    with pytest.raises(ConfigError, match="k=6 is larger than the ranking length 5"):
        recall_at_k(rel[:, :5], 6)
