"""Mergeable float64 moments: equal to the one-pass result (np.cov) to 1e-10 over partitions and merge orders;
gen-stats over the store's memory-mapped array equals the in-memory statistics."""

from __future__ import annotations

import numpy as np
import pytest

import vitlab
from tests.conftest import write_images
from vitlab.errors import DataError
from vitlab.generative import gen_stats, load_stats
from vitlab.metrics.fd import gaussian_stats
from vitlab.metrics.moments import Moments, chunked_moments, merge_all


def _data(n=1500, d=24, offset=50.0, seed=0):
    """Features with a mean far from 0 (like ViT features): the case where raw sums lose digits."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / np.sqrt(d)
    return (rng.standard_normal((n, d)) @ a + offset + rng.standard_normal(d)).astype(np.float64)


def _close(m: Moments, x: np.ndarray) -> None:
    np.testing.assert_allclose(m.mean, x.mean(axis=0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(m.covariance(), np.cov(x, rowvar=False), rtol=0, atol=1e-10)
    assert m.n == len(x)


def test_one_block_matches_numpy():
    x = _data()
    _close(Moments.of(x), x)


@pytest.mark.parametrize("cuts", [[1], [750], [1, 2, 3, 1000], [499, 500, 1499], list(range(100, 1500, 100))])
def test_any_partition_merges_to_the_one_pass_result(cuts):
    x = _data()
    parts = [Moments.of(p) for p in np.split(x, cuts)]
    _close(merge_all(parts), x)


def test_merge_order_does_not_matter():
    x = _data(seed=3)
    parts = [Moments.of(p) for p in np.array_split(x, 9)]
    rng = np.random.default_rng(0)
    for _ in range(5):  # random orders, left folds
        order = rng.permutation(len(parts))
        _close(merge_all(parts[i] for i in order), x)
    tree = parts  # a pairwise tree, as a distributed all-reduce would merge
    while len(tree) > 1:
        tree = [tree[i].merge(tree[i + 1]) if i + 1 < len(tree) else tree[i] for i in range(0, len(tree), 2)]
    _close(tree[0], x)


def test_row_order_and_empty_parts():
    x = _data(n=400)
    perm = np.random.default_rng(1).permutation(len(x))
    _close(chunked_moments(x[perm], 33), x)
    m = Moments.empty(x.shape[1]).merge(Moments.of(x[:0])).merge(Moments.of(x)).merge(Moments.empty(x.shape[1]))
    _close(m, x)


def test_chunked_over_a_memmap_equals_gaussian_stats(tmp_path):
    x = _data(n=3000, d=16).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    mu, sigma = gaussian_stats(x)  # the one-pass reference on the whole matrix
    for rows in (1, 7, 512, 4096):
        got_mu, got_sigma = chunked_moments(mm, rows).gaussian()
        np.testing.assert_allclose(got_mu, mu, rtol=0, atol=1e-10)
        np.testing.assert_allclose(got_sigma, sigma, rtol=0, atol=1e-10)


def test_raw_sums_would_lose_digits_where_centred_merge_does_not():
    """Why the state is (n, mean, centred scatter): with mean 1e4 and unit spread, the textbook
    (sum x x^T - n mu mu^T) / (n - 1) in float64 is off by far more than 1e-10."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 4)) + 1e4
    ref = np.cov(x, rowvar=False)
    raw = (x.T @ x - len(x) * np.outer(x.mean(0), x.mean(0))) / (len(x) - 1)
    assert np.abs(raw - ref).max() > 1e-8  # measured ~5e-7: 3,000x the 1e-10 target
    merged = merge_all(Moments.of(p) for p in np.array_split(x, 7))
    np.testing.assert_allclose(merged.covariance(), ref, rtol=0, atol=1e-10)


def test_bad_input_is_named():
    x = _data(n=50, d=3)
    x[37, 1] = np.nan
    with pytest.raises(DataError, match=r"NaN or inf \(first in row 37\)"):
        chunked_moments(x, 10)
    with pytest.raises(DataError, match="only 1 row"):
        Moments.of(x[:1]).covariance()
    with pytest.raises(DataError, match="3-d and 4-d"):
        Moments.of(x[:5]).merge(Moments.of(np.ones((3, 4))))
    with pytest.raises(DataError, match="chunk_rows"):
        chunked_moments(x, 0)


def test_gen_stats_from_the_store_equals_in_memory_stats(tmp_path, monkeypatch):
    """gen-stats over images reads the store's memmap in chunks; the file equals np.cov of the cached array."""
    import vitlab.generative.stats_file as stats_file

    seen = []

    def spy(x, chunk_rows=8):
        seen.append(type(x))
        return chunked_moments(x, chunk_rows)  # 60 rows: 8 chunks

    monkeypatch.setattr(stats_file, "chunked_moments", spy)
    data = f"folder:{write_images(tmp_path / 'imgs', n_per_class=20)}"
    cache = tmp_path / "cache"
    st = gen_stats(data, tmp_path / "ref.stats", encoder="demo:fmnist-vit", cache_dir=cache, progress=False,
                   num_workers=0)
    assert seen == [np.memmap]  # the store's array, not an in-memory copy
    emb = vitlab.embed("demo:fmnist-vit", data, cache_dir=cache, progress=False, num_workers=0)
    assert emb.from_cache
    x = np.asarray(emb.get(), dtype=np.float64)
    back = load_stats(st.path)
    assert back.n == 60 and back.header["data"]["embeddings"] == emb.digest
    np.testing.assert_allclose(back.mu, x.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(back.sigma, np.cov(x, rowvar=False), rtol=0, atol=1e-10)
