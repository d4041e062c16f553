"""Blocked PRDC / realism against the prdc-package reference and sklearn k-NN radii."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.metrics
import torch
from sklearn.neighbors import NearestNeighbors

import vitlab.metrics.prdc as prdc_mod
from vitlab.errors import ConfigError, DataError
from vitlab.metrics._validate import SmallSampleWarning
from vitlab.metrics.prdc import prdc, realism_score
from vitlab.neighbors import kth_nn_sq_dists, kth_sq_dist, search, to_tensors

pytestmark = pytest.mark.filterwarnings("ignore::vitlab.metrics._validate.SmallSampleWarning")


# ------------------------------------------------ reference: prdc package (as vendored by dgm-eval)
def _pairwise(data_x, data_y=None):
    if data_y is None:
        data_y = data_x
    return sklearn.metrics.pairwise_distances(data_x, data_y, metric="euclidean")


def _kth(unsorted, k, axis=-1):
    indices = np.argpartition(unsorted, k, axis=axis)[..., :k]
    return np.take_along_axis(unsorted, indices, axis=axis).max(axis=axis)


def ref_prdc(real_features, fake_features, nearest_k, realism=False):
    real_nn = _kth(_pairwise(real_features), nearest_k + 1)
    fake_nn = _kth(_pairwise(fake_features), nearest_k + 1)
    d_rf = _pairwise(real_features, fake_features)
    precision = (d_rf < np.expand_dims(real_nn, axis=1)).any(axis=0).mean()
    recall = (d_rf < np.expand_dims(fake_nn, axis=0)).any(axis=1).mean()
    density = (1.0 / float(nearest_k)) * (d_rf < np.expand_dims(real_nn, axis=1)).sum(axis=0).mean()
    coverage = (d_rf.min(axis=1) < real_nn).mean()
    out = dict(precision=precision, recall=recall, density=density, coverage=coverage)
    if realism:
        mask = real_nn < np.median(real_nn)
        out["realism"] = (np.expand_dims(real_nn[mask], axis=1) / d_rf[mask]).max(axis=0)
    return out


def _sets(seed, n=400, m=350, d=12):
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, d))
    fake = rng.standard_normal((m, d)) * 1.2 + 0.25
    return real, fake


@pytest.mark.parametrize("block", [37, 128, 4096])
@pytest.mark.parametrize("k", [1, 5])
def test_prdc_matches_reference(block, k):
    real, fake = _sets(0)
    got = prdc(real, fake, nearest_k=k, realism=True, block_size=block)
    ref = ref_prdc(real, fake, k, realism=True)
    assert got.precision == pytest.approx(ref["precision"], abs=1e-12)
    assert got.recall == pytest.approx(ref["recall"], abs=1e-12)
    assert got.density == pytest.approx(ref["density"], abs=1e-12)
    assert got.coverage == pytest.approx(ref["coverage"], abs=1e-12)
    np.testing.assert_allclose(got.realism, ref["realism"], rtol=1e-9)


def test_prdc_float32_agrees_with_reference():
    real, fake = _sets(1)
    got = prdc(real.astype(np.float32), fake.astype(np.float32), dtype="float32", block_size=100)
    ref = ref_prdc(real.astype(np.float32), fake.astype(np.float32), 5)
    for key in ("precision", "recall", "density", "coverage"):
        assert getattr(got, key) == pytest.approx(ref[key], abs=2.0 / 350)


def test_kth_radii_match_sklearn_nearest_neighbors():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 9))
    for k in (1, 3, 7):
        nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
        dist, _ = nn.kneighbors(x)
        (xt,) = to_tensors(x)
        sq = kth_nn_sq_dists(xt, k, block=64).numpy()
        np.testing.assert_allclose(np.sqrt(sq), dist[:, -1], rtol=1e-9)
        np.testing.assert_array_equal(kth_sq_dist(x, k, block=64), sq)  # the array-level radii are the same numbers


def test_nearest_with_and_without_self():
    """The l2 k=1 search the memorisation metrics use: sklearn's distances, argmin's ties (smallest index)."""
    rng = np.random.default_rng(3)
    x, q = rng.standard_normal((120, 5)), rng.standard_normal((70, 5))
    x[60:90] = x[:30]  # exact duplicates: ties go to the smaller index
    q[:10] = x[:10]
    res = search(q, x, 1, metric="l2", block=32, dtype="float64")
    full = _pairwise(q, x)
    np.testing.assert_array_equal(res.indices[:, 0], full.argmin(1))
    np.testing.assert_allclose(np.sqrt(res.scores[:, 0]), full.min(1), rtol=1e-9, atol=1e-7)  # copies: sqrt of rounding
    self_res = search(x, x, 1, metric="l2", exclude_self=True, block=32, dtype="float64")
    fs = _pairwise(x)
    np.fill_diagonal(fs, np.inf)
    np.testing.assert_array_equal(self_res.indices[:, 0], fs.argmin(1))


def test_identical_sets_precision_recall_coverage_one():
    x = np.random.default_rng(4).standard_normal((300, 10))
    res = prdc(x, x.copy(), nearest_k=5)
    assert (res.precision, res.recall, res.coverage) == (1.0, 1.0, 1.0)
    assert res.density == pytest.approx(ref_prdc(x, x, 5)["density"], abs=1e-12)


def test_disjoint_far_sets_score_zero():
    rng = np.random.default_rng(5)
    res = prdc(rng.standard_normal((200, 6)), rng.standard_normal((150, 6)) + 1000.0)
    assert (res.precision, res.recall, res.density, res.coverage) == (0.0, 0.0, 0.0, 0.0)


def test_never_builds_a_full_distance_matrix(monkeypatch):
    seen = []
    real_tile = prdc_mod.sq_dist_tile

    def spy(a, b, a_sq, b_sq):
        seen.append((a.shape[0], b.shape[0]))
        return real_tile(a, b, a_sq, b_sq)

    monkeypatch.setattr(prdc_mod, "sq_dist_tile", spy)
    monkeypatch.setattr("vitlab.neighbors.sq_dist_tile", spy)  # the radii (kth_nn_sq_dists)
    real, fake = _sets(6, n=300, m=260)
    prdc(real, fake, block_size=64, realism=True)
    assert seen and max(a for a, _ in seen) <= 64 and max(b for _, b in seen) <= 64


def test_realism_score_function_and_reduced_n():
    real, fake = _sets(7)
    got = realism_score(real, fake[:3], nearest_k=5)
    ref = ref_prdc(real, fake, 5, realism=True)["realism"][:3]
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    a = prdc(real, fake, reduced_n=100, seed=1)
    b = prdc(real, fake, reduced_n=100, seed=1)
    c = prdc(real, fake, reduced_n=100, seed=2)
    assert a == b and a != c


def test_prdc_errors_and_warnings():
    real, fake = _sets(8, n=50, m=5, d=4)
    with pytest.raises(ConfigError, match=r"nearest_k=5 but fake features have only 5 rows: k must be < n \(need at least k\+1 = 6 samples\)"):
        prdc(real, fake, nearest_k=5)
    with pytest.raises(ConfigError, match="nearest_k must be an integer >= 1 but got 0"):
        prdc(real, real, nearest_k=0)
    with pytest.raises(DataError, match="real features have dim 4 but fake features have dim 3"):
        prdc(real, real[:, :3])
    with pytest.raises(ConfigError, match="dtype must be 'float64' or 'float32'"):
        prdc(real, real, dtype="float16")
    with pytest.warns(SmallSampleWarning, match="PRDC with only 50 real samples"):
        prdc(real, real)
    dup = np.repeat(real[:1], 20, axis=0)
    with pytest.raises(DataError, match="realism score is undefined"):
        prdc(dup, real, realism=True)
