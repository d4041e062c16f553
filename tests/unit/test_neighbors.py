"""vitlab.neighbors: the one blocked exact search, against brute force and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from vitlab.errors import ConfigError, DataError
from vitlab.neighbors import kth_sq_dist, recall_at_k, search


def _brute(q, r, metric):
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        rn = r / np.linalg.norm(r, axis=1, keepdims=True)
        return qn @ rn.T
    if metric == "ip":
        return q @ r.T
    return -((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)  # larger is nearer


def _rank(scores_row, k):
    """Best k by score, ties to the smaller index (lexsort: last key is primary)."""
    order = np.lexsort((np.arange(len(scores_row)), -scores_row))
    return order[:k]


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("block", [3, 7, 1000])
def test_matches_brute_force_for_any_block_size(metric, block):
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(23, 5)), rng.normal(size=(31, 5))
    res = search(q, r, 6, metric=metric, block=block, dtype="float64")
    full = _brute(q, r, metric)
    expected = np.stack([_rank(row, 6) for row in full])
    np.testing.assert_array_equal(res.indices, expected)
    want = np.take_along_axis(full, expected, 1)
    np.testing.assert_allclose(res.scores, -want if metric == "l2" else want, atol=1e-10)


def test_ties_go_to_the_smaller_index_across_blocks():
    r = np.array([[1.0, 0.0]] * 5 + [[0.0, 1.0]] * 3)  # 5 identical rows, then 3 others
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    for block in (1, 2, 3, 8):
        res = search(q, r, 4, metric="cosine", block=block)
        assert res.indices.tolist() == [[0, 1, 2, 3], [5, 6, 7, 0]], block


def test_exclude_self_and_duplicates():
    x = np.array([[0.0], [0.0], [1.0], [5.0]])
    res = search(x, x, 2, metric="l2", exclude_self=True, block=2)
    assert res.indices.tolist() == [[1, 2], [0, 2], [0, 1], [2, 0]]  # the duplicate still counts
    assert res.scores[0].tolist() == [0.0, 1.0]
    padded = search(x[:2], x[:2], 3, metric="l2", exclude_self=True)
    assert padded.indices.tolist() == [[1, -1, -1], [0, -1, -1]]


def test_agrees_with_scikit_learn_on_euclidean_neighbours():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8))
    res = search(x, x, 5, metric="l2", exclude_self=True, block=64, dtype="float64")
    d, i = NearestNeighbors(n_neighbors=6).fit(x).kneighbors(x)
    np.testing.assert_array_equal(res.indices, i[:, 1:])
    np.testing.assert_allclose(np.sqrt(res.scores), d[:, 1:], atol=1e-9)


def test_kth_sq_dist_is_the_prdc_radius():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(150, 4))
    full = ((x[:, None] - x[None]) ** 2).sum(-1)
    for k in (1, 3, 5):
        want = np.sort(full, axis=1)[:, k]  # get_kth_value(distances, k + 1) of the prdc package
        np.testing.assert_allclose(kth_sq_dist(x, k, block=32), want, atol=1e-9)
    with pytest.raises(ConfigError, match=r"k must be an integer in \[1, 149\]"):
        kth_sq_dist(x, 150)


def test_float32_and_float64_give_the_same_neighbours_on_separated_data():
    rng = np.random.default_rng(3)
    q, r = rng.normal(size=(40, 16)), rng.normal(size=(300, 16))
    a = search(q, r, 10, dtype="float32").indices
    b = search(q, r, 10, dtype="float64").indices
    assert (a == b).mean() > 0.99


def test_recall_at_k_and_bad_inputs():
    assert recall_at_k(np.array([[0, 1, 2]]), np.array([[2, 1, 0]])) == 1.0
    assert recall_at_k(np.array([[0, 9]]), np.array([[0, -1]])) == 1.0
    with pytest.raises(DataError, match="contains NaN or inf"):
        search(np.array([[np.nan, 0.0]]), np.ones((3, 2)), 1)
    with pytest.raises(DataError, match="query has d=2 but the reference has d=3"):
        search(np.ones((1, 2)), np.ones((3, 3)), 1)
    with pytest.raises(ConfigError, match="unknown metric 'manhattan'"):
        search(np.ones((1, 2)), np.ones((3, 2)), 1, metric="manhattan")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        search(np.ones((1, 2)), np.ones((3, 2)), 0)


def test_faiss_hnsw_is_approximate_and_its_recall_is_measurable():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    g, q = rng.normal(size=(3000, 16)), rng.normal(size=(200, 16))
    exact = search(q, g, 10, metric="cosine")
    approx = search(q, g, 10, metric="cosine", backend="faiss")
    assert approx.backend == "faiss" and approx.indices.shape == (200, 10)
    r = recall_at_k(approx.indices, exact.indices)
    assert 0.8 < r <= 1.0  # HNSW finds most, not necessarily all, of the exact neighbours
    self_ = search(g[:50], g[:50], 3, metric="l2", exclude_self=True, backend="faiss")
    assert not (self_.indices == np.arange(50)[:, None]).any()


@pytest.mark.parametrize("exclude_self", [False, True])
def test_a_whole_ranking_is_one_stable_sort_with_the_same_ties(exclude_self):
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=(40, 3)), 1)  # rounded: many exact ties
    x[7] = x[3]  # and an exact duplicate
    full = _brute(x, x, "cosine")
    if exclude_self:
        np.fill_diagonal(full, -np.inf)
    n = 40 - int(exclude_self)
    res = search(x, x, n, metric="cosine", exclude_self=exclude_self, block=16, dtype="float64")
    expected = np.stack([_rank(row, n) for row in full])
    np.testing.assert_array_equal(res.indices, expected)
    partial = search(x, x, n - 1, metric="cosine", exclude_self=exclude_self, block=16, dtype="float64")
    np.testing.assert_array_equal(partial.indices, expected[:, :n - 1])  # the merge path agrees
