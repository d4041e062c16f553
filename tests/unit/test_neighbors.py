"""vitlab.neighbors: the one blocked exact search, against brute force and scikit-learn; the faiss backend."""

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


def _expected(full, k):
    return np.stack([_rank(row, k) for row in full])


def _tied(n, d, seed, dup=True):
    """Small-integer rows: inner products are exact in float32 and float64, so ties are exact ties."""
    x = np.random.default_rng(seed).integers(-2, 3, size=(n, d)).astype(np.float64)
    if dup:
        x[n // 3] = x[1]
        x[n - 1] = x[1]  # exact duplicates far apart: in different tiles
    return x


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("block", [3, 7, 1000])
def test_matches_brute_force_for_any_block_size(metric, block):
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(23, 5)), rng.normal(size=(31, 5))
    res = search(q, r, 6, metric=metric, block=block, dtype="float64")
    full = _brute(q, r, metric)
    expected = _expected(full, 6)
    np.testing.assert_array_equal(res.indices, expected)
    want = np.take_along_axis(full, expected, 1)
    np.testing.assert_allclose(res.scores, -want if metric == "l2" else want, atol=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("block,ref_block", [(1, 1), (5, 16), (64, 97), (64, 160), (40, 400), (500, 2048)])
def test_ties_go_to_the_smaller_index_in_every_tile_layout(dtype, block, ref_block):
    """Many exact ties (integer rows): the wide tiles take the column-group merge, narrow ones the whole merge."""
    g, q = _tied(400, 6, 1), _tied(37, 6, 2, dup=False)
    if block == 1:
        g, q = g[:60], q[:5]  # one-row tiles: a few, for speed
    for k in (1, 4, 13):
        res = search(q, g, k, metric="ip", block=block, ref_block=ref_block, dtype=dtype)
        full = q @ g.T
        np.testing.assert_array_equal(res.indices, _expected(full, k), err_msg=f"k={k}")
        np.testing.assert_array_equal(res.scores, np.take_along_axis(full, res.indices, 1))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("block", [1, 16, 50, 64, 300, 4096])
def test_self_search_excludes_itself_and_keeps_the_tie_rule(dtype, block):
    """float32 reuses each tile for both row blocks (symmetric); float64 computes both orientations."""
    x = _tied(300 if block > 1 else 40, 5, 3)
    full = x @ x.T
    np.fill_diagonal(full, -np.inf)
    for k in (1, 3, 17):
        res = search(x, x, k, metric="ip", exclude_self=True, block=block, dtype=dtype)
        np.testing.assert_array_equal(res.indices, _expected(full, k), err_msg=f"k={k}")
        assert not (res.indices == np.arange(len(x))[:, None]).any()


def test_duplicates_tie_in_a_self_search_across_tiles():
    """Two exact copies of row 1 in other tiles: equal scores, so the smaller index comes first."""
    x = np.random.default_rng(4).normal(size=(257, 8)).astype(np.float32)
    x[85] = x[1]
    x[256] = x[1]
    res = search(x, x, 3, metric="cosine", exclude_self=True, block=64)
    assert res.indices[1, :2].tolist() == [85, 256] and res.scores[1, 0] == res.scores[1, 1]
    assert res.indices[256, :2].tolist() == [1, 85] and res.indices[85, :2].tolist() == [1, 256]


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_float32_self_search_agrees_with_brute_force_on_continuous_data(metric):
    x = np.random.default_rng(5).normal(size=(700, 12)).astype(np.float32)
    res = search(x, x, 9, metric=metric, exclude_self=True, block=96)
    full = _brute(x.astype(np.float64), x.astype(np.float64), metric)
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_array_equal(res.indices, _expected(full, 9))  # no near-ties at float32 precision here
    want = np.take_along_axis(full, res.indices, 1)
    np.testing.assert_allclose(res.scores, -want if metric == "l2" else want, rtol=1e-5, atol=1e-5)


def test_k_larger_than_the_reference_is_padded():
    x = np.array([[0.0], [0.0], [1.0], [5.0]])
    res = search(x, x, 2, metric="l2", exclude_self=True, block=2)
    assert res.indices.tolist() == [[1, 2], [0, 2], [0, 1], [2, 0]]  # the duplicate still counts
    assert res.scores[0].tolist() == [0.0, 1.0]
    padded = search(x[:2], x[:2], 3, metric="l2", exclude_self=True)
    assert padded.indices.tolist() == [[1, -1, -1], [0, -1, -1]]
    assert np.isnan(padded.scores[:, 1:]).all()
    more = search(x[:1], x, 6, metric="l2")
    assert more.indices.tolist() == [[0, 1, 2, 3, -1, -1]]


def test_agrees_with_scikit_learn_on_euclidean_neighbours():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8))
    res = search(x, x, 5, metric="l2", exclude_self=True, block=64, dtype="float64")
    d, i = NearestNeighbors(n_neighbors=6).fit(x).kneighbors(x)
    np.testing.assert_array_equal(res.indices, i[:, 1:])
    np.testing.assert_allclose(np.sqrt(res.scores), d[:, 1:], atol=1e-9)


@pytest.mark.parametrize("block", [7, 32, 150])
def test_kth_sq_dist_is_the_prdc_radius(block):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(150, 4))
    x[100] = x[3]  # a duplicate: distance 0
    full = ((x[:, None] - x[None]) ** 2).sum(-1)
    for k in (1, 3, 5):
        want = np.sort(full, axis=1)[:, k]  # get_kth_value(distances, k + 1) of the prdc package
        np.testing.assert_allclose(kth_sq_dist(x, k, block=block), want, atol=1e-9)
    with pytest.raises(ConfigError, match=r"k must be an integer in \[1, 149\]"):
        kth_sq_dist(x, 150)


def test_float32_and_float64_give_the_same_neighbours_on_separated_data():
    rng = np.random.default_rng(3)
    q, r = rng.normal(size=(40, 16)), rng.normal(size=(300, 16))
    a = search(q, r, 10, dtype="float32").indices
    b = search(q, r, 10, dtype="float64").indices
    assert (a == b).mean() > 0.99


def test_bad_inputs_are_one_clear_error():
    with pytest.raises(DataError, match=r"query contains NaN or inf values \(1 row\(s\), first: row 2\)"):
        search(np.array([[0.0, 0.0], [1.0, 0.0], [np.nan, 0.0]]), np.ones((3, 2)), 1)
    with pytest.raises(DataError, match=r"reference contains NaN or inf values .* first: row 0"):
        search(np.ones((1, 2)), np.array([[np.inf, 1.0]]), 1)
    with pytest.raises(DataError, match=r"query must be a non-empty 2-D array \[n, d\]; got shape \(0, 3\)"):
        search(np.zeros((0, 3)), np.ones((3, 3)), 1)
    with pytest.raises(DataError, match=r"reference must be a non-empty 2-D array"):
        search(np.ones((2, 3)), np.ones(3), 1)
    with pytest.raises(DataError, match="query has d=2 but the reference has d=3"):
        search(np.ones((1, 2)), np.ones((3, 3)), 1)
    with pytest.raises(ConfigError, match="unknown metric 'manhattan'"):
        search(np.ones((1, 2)), np.ones((3, 2)), 1, metric="manhattan")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        search(np.ones((1, 2)), np.ones((3, 2)), 0)
    with pytest.raises(ConfigError, match="unknown backend 'annoy'"):
        search(np.ones((1, 2)), np.ones((3, 2)), 1, backend="annoy")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="contains NaN or inf"):
        kth_sq_dist(np.array([[0.0], [np.nan], [1.0]]), 1)


def test_recall_at_k():
    assert recall_at_k(np.array([[0, 1, 2]]), np.array([[2, 1, 0]])) == 1.0
    assert recall_at_k(np.array([[0, 9]]), np.array([[0, -1]])) == 1.0
    assert recall_at_k(np.array([[0, 1], [2, 5]]), np.array([[0, 1], [2, 3]])) == 0.75


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
    expected = _expected(full, n)
    np.testing.assert_array_equal(res.indices, expected)
    partial = search(x, x, n - 1, metric="cosine", exclude_self=exclude_self, block=16, dtype="float64")
    np.testing.assert_array_equal(partial.indices, expected[:, :n - 1])  # the merge path agrees


def _clustered(n, d, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d)) * 3
    return (centres[rng.integers(0, 20, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_faiss_ivf_records_the_recall_it_measured():
    pytest.importorskip("faiss")
    g, q = _clustered(4000, 16, 4), _clustered(300, 16, 5)
    res = search(q, g, 10, metric="cosine", backend="faiss", recall_sample=120, seed=3)
    assert res.backend == "faiss" and res.indices.shape == (300, 10) and res.index["index"] == "ivf"
    assert res.index["nlist"] == 4000 // 39 and res.index["nprobe"] == 8 and res.recall_queries == 120
    rows = np.sort(np.random.default_rng(3).choice(300, 120, replace=False))  # the sample search() drew
    exact = search(q[rows], g, 10, metric="cosine")
    assert res.recall == recall_at_k(res.indices[rows], exact.indices)
    assert 0.5 < res.recall <= 1.0
    everything = search(q, g, 10, metric="cosine", backend="faiss", nprobe=102, recall_sample=300)
    assert everything.recall == 1.0  # every list scanned: the exact neighbours
    assert search(q, g, 10, backend="faiss", recall_sample=0).recall is None


def test_faiss_self_search_drops_itself_and_other_indexes_run():
    pytest.importorskip("faiss")
    x = _clustered(600, 8, 6)
    for index in ("ivf", "hnsw", "flat"):
        res = search(x, x, 5, metric="l2", exclude_self=True, backend="faiss", index=index, recall_sample=50)
        assert not (res.indices == np.arange(600)[:, None]).any() and res.index["index"] == index
        assert res.recall > 0.8
    flat = search(x, x, 5, metric="l2", exclude_self=True, backend="faiss", index="flat", recall_sample=600)
    exact = search(x, x, 5, metric="l2", exclude_self=True)
    np.testing.assert_allclose(flat.scores, exact.scores, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="index='ivfpq' needs at least 9,984 reference rows"):
        search(x, x, 5, backend="faiss", index="ivfpq")
    with pytest.raises(ConfigError, match="unknown faiss index 'lsh'"):
        search(x, x, 5, backend="faiss", index="lsh")
