"""The explorer's map: PCA / t-SNE / UMAP layouts (seeded, fitted on a sample, the rest placed) and their cache."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from vitlab.errors import ConfigError, DataError
from vitlab.exploration import cache as layout_cache
from vitlab.exploration.cache import layout_key, load_or_compute_layout
from vitlab.exploration.layout import LayoutConfig, compute_layout, fit_sample_rows


def _blobs(n_per: int = 40, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(d)[:3] * 8.0
    X = np.concatenate([rng.normal(0, 1, (n_per, d)) + c for c in centres])
    return X.astype(np.float32), np.repeat(np.arange(3), n_per)


def test_pca_matches_the_svd_of_the_centred_rows():
    X, _ = _blobs()
    lay = compute_layout(X, LayoutConfig(method="pca", metric="euclidean"))
    Xc = X.astype(np.float64) - X.mean(0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    ref = Xc @ vt[:2].T
    for j in range(2):  # each principal axis is defined up to its sign
        assert min(np.abs(lay.xy[:, j] - ref[:, j]).max(), np.abs(lay.xy[:, j] + ref[:, j]).max()) < 1e-4


def test_cosine_pca_projects_unit_vectors():
    X, _ = _blobs()
    a = compute_layout(X, LayoutConfig(method="pca"))
    b = compute_layout(X * np.linspace(1, 5, len(X))[:, None].astype(np.float32), LayoutConfig(method="pca"))
    np.testing.assert_allclose(a.xy, b.xy, atol=1e-5)  # row norms do not move a point on a cosine map


def test_rows_outside_the_fit_sample_are_projected_by_the_fitted_pca():
    from sklearn.decomposition import PCA

    X, _ = _blobs(n_per=50)
    cfg = LayoutConfig(method="pca", metric="euclidean", fit_sample=40, seed=3)
    lay = compute_layout(X, cfg)
    rows = fit_sample_rows(len(X), 40, 3)
    assert lay.fit_rows.tolist() == rows.tolist() and lay.info["fitted"] == 40 and lay.info["transformed"] == 110
    ref = PCA(n_components=2, svd_solver="full").fit(X[rows]).transform(X)
    np.testing.assert_allclose(lay.xy, ref, atol=1e-4)
    again = compute_layout(X, cfg)
    assert np.array_equal(lay.xy, again.xy)
    other = compute_layout(X, LayoutConfig(method="pca", metric="euclidean", fit_sample=40, seed=4))
    assert other.fit_rows.tolist() != lay.fit_rows.tolist()


def test_tsne_places_rows_outside_the_sample_by_their_nearest_fitted_rows():
    X, y = _blobs(n_per=30)
    cfg = LayoutConfig(method="tsne", perplexity=10, fit_sample=60, seed=0)
    lay = compute_layout(X, cfg)
    assert lay.info["transformed"] == 30 and "weighted mean" in lay.info["placement"]
    assert np.array_equal(lay.xy, compute_layout(X, cfg).xy)
    rest = np.setdiff1d(np.arange(len(X)), lay.fit_rows)
    # reference: the same weighted mean from scikit-learn's neighbour search on unit vectors
    from sklearn.neighbors import NearestNeighbors

    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    nn = NearestNeighbors(n_neighbors=10).fit(U[lay.fit_rows])
    dist, idx = nn.kneighbors(U[rest])
    w = np.clip(1 - dist ** 2 / 2, 0, None) + 1e-6
    ref = (w[:, :, None] * lay.xy[lay.fit_rows][idx]).sum(1) / w.sum(1, keepdims=True)
    np.testing.assert_allclose(lay.xy[rest], ref, atol=1e-3)
    # placed rows land in their own cluster: their nearest fitted point on the map has their label
    d2 = ((lay.xy[rest][:, None, :] - lay.xy[lay.fit_rows][None]) ** 2).sum(-1)
    assert (y[lay.fit_rows][d2.argmin(1)] == y[rest]).mean() >= 0.9


class _FakeUMAP:
    """Stands in for umap.UMAP: records what it is fitted on and what it transforms."""

    calls: list = []

    def __init__(self, **kw):
        self.kw = kw
        _FakeUMAP.calls.append(("init", kw))

    def fit_transform(self, X):
        _FakeUMAP.calls.append(("fit", X.copy()))
        return X[:, :2] * 2.0

    def transform(self, X):
        _FakeUMAP.calls.append(("transform", X.copy()))
        return X[:, :2] * 2.0


def test_umap_is_fitted_on_the_sample_and_transforms_the_rest(monkeypatch):
    fake = types.ModuleType("umap")
    fake.UMAP = _FakeUMAP
    _FakeUMAP.calls = []
    monkeypatch.setitem(sys.modules, "umap", fake)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "umap" else None)
    X, _ = _blobs(n_per=20)
    lay = compute_layout(X, LayoutConfig(method="umap", n_neighbors=5, min_dist=0.3, fit_sample=25, seed=7,
                                         metric="euclidean"))
    (_, kw), (_, fitted), (_, moved) = _FakeUMAP.calls
    assert kw["random_state"] == 7 and kw["n_neighbors"] == 5 and kw["min_dist"] == 0.3 and kw["metric"] == "euclidean"
    rows = fit_sample_rows(60, 25, 7)
    np.testing.assert_array_equal(fitted, X[rows])
    np.testing.assert_array_equal(moved, X[np.setdiff1d(np.arange(60), rows)])
    np.testing.assert_allclose(lay.xy, X[:, :2] * 2.0)  # every row back in its own place
    assert lay.info["placement"] == "UMAP.transform"


def test_umap_missing_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real(name, *a))
    with pytest.raises(ConfigError, match=r"--layout umap needs umap-learn, which is not installed: pip install "
                                          r"'vitlab\[explore\]' \(or use --layout pca\)"):
        compute_layout(np.zeros((30, 3)), LayoutConfig())


@pytest.mark.parametrize("kw, message", [
    ({"method": "mds"}, "unknown layout 'mds'; choose one of umap, pca, tsne"),
    ({"metric": "manhattan"}, "unknown layout metric 'manhattan'"),
    ({"n_neighbors": 1}, "n_neighbors must be an integer >= 2"),
    ({"min_dist": 2.0}, r"min_dist must be in \[0, 1\]"),
    ({"fit_sample": 10, "n_neighbors": 15}, "fit_sample=10 must be larger than UMAP's n_neighbors=15"),
    ({"method": "tsne", "perplexity": 0}, "perplexity must be > 0"),
])
def test_bad_layout_settings_are_one_line(kw, message):
    with pytest.raises(ConfigError, match=message):
        LayoutConfig(**kw)


def test_too_few_items_for_umap_or_tsne():
    with pytest.raises(DataError, match=r"csv:m.csv has 15 items, fewer than UMAP needs \(more than n_neighbors=15\)"
                                        r"\. Pass --neighbors 14 or less, or --layout pca"):
        LayoutConfig().check_size(15, "csv:m.csv")
    with pytest.raises(DataError, match="not more than t-SNE's perplexity=30"):
        LayoutConfig(method="tsne").check_size(20)
    LayoutConfig().check_size(16)


# ------------------------------------------------------------------------------------------- the cache
def _cached(root, X, cfg=LayoutConfig(method="pca"), **kw):
    args = {"embeddings": "abc", "layer": 5, "pool": "cls", **kw}
    return load_or_compute_layout(root, X, cfg, **args)


def test_cache_hit_returns_the_same_layout(tmp_path):
    X, _ = _blobs()
    a, b = _cached(tmp_path, X), _cached(tmp_path, X)
    assert (a.info["from_cache"], b.info["from_cache"]) == (False, True)
    assert np.array_equal(a.xy, b.xy) and np.array_equal(a.fit_rows, b.fit_rows)
    files = sorted(p.name for p in (tmp_path / "layouts").iterdir())
    assert len(files) == 1 and files[0].endswith(".npz")  # no temporary file left behind
    assert layout_cache.describe_layout(tmp_path / "layouts" / files[0])["n"] == len(X)


@pytest.mark.parametrize("change", ["value", "seed", "digest", "layer", "pool", "method"])
def test_a_layout_whose_inputs_changed_is_never_reused(tmp_path, change):
    X, _ = _blobs()
    first = _cached(tmp_path, X)
    Y, cfg, kw = X.copy(), LayoutConfig(method="pca"), {}
    if change == "value":
        Y[3, 2] += 1e-3
    elif change == "seed":
        cfg = LayoutConfig(method="pca", seed=1)
    elif change == "digest":
        kw = {"embeddings": "other"}
    elif change == "layer":
        kw = {"layer": 4}
    elif change == "pool":
        kw = {"pool": "mean"}
    else:
        cfg = LayoutConfig(method="tsne", perplexity=5)
    second = _cached(tmp_path, Y, cfg, **kw)
    assert second.info["from_cache"] is False
    assert len(list((tmp_path / "layouts").iterdir())) == 2
    assert first.info["from_cache"] is False


def test_an_entry_with_another_key_or_unreadable_is_recomputed(tmp_path):
    X, _ = _blobs()
    a = _cached(tmp_path, X)
    path = Path(a.info["cache_file"])
    with np.load(path) as z:
        parts = dict(z)
    key = json.loads(bytes(parts["key"]).decode())
    key["rows_blake2b"] = "0" * 32  # same file name, other inputs inside
    parts["key"] = np.frombuffer(json.dumps(key).encode(), np.uint8)
    parts["xy"] = parts["xy"] + 100.0
    with open(path, "wb") as fh:
        np.savez(fh, **parts)
    b = _cached(tmp_path, X)
    assert b.info["from_cache"] is False and np.array_equal(a.xy, b.xy)
    path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable"):
        c = _cached(tmp_path, X)
    assert c.info["from_cache"] is False and np.array_equal(a.xy, c.xy)
    assert _cached(tmp_path, X).info["from_cache"] is True


def test_the_key_names_what_shapes_the_map():
    X, _ = _blobs()
    k = layout_key(X, LayoutConfig(method="umap", seed=2), embeddings="e", layer=1, pool="mean")
    assert k["layout"] == {"method": "umap", "n_neighbors": 15, "min_dist": 0.1, "metric": "cosine",
                           "fit_sample": 20000, "seed": 2}
    assert set(k) == {"format", "embeddings", "layer", "pool", "shape", "rows_blake2b", "layout", "library"}
    assert "umap-learn" in k["library"]


@pytest.mark.slow
def test_real_umap_is_seeded_faithful_and_transforms_the_rest():
    """umap-learn itself (JIT compilation makes this slow): seeded, trustworthy, placed rows in their cluster."""
    pytest.importorskip("umap", reason="umap-learn not installed (pip install 'vitlab[explore]')")
    from sklearn.manifold import trustworthiness

    X, y = _blobs(n_per=60, d=8)
    cfg = LayoutConfig(method="umap", fit_sample=120, seed=0)
    a = compute_layout(X, cfg)
    b = compute_layout(X, cfg)
    assert np.array_equal(a.xy, b.xy)
    assert a.info["fitted"] == 120 and a.info["transformed"] == 60 and a.info["library"] == "umap-learn"
    U = X / np.linalg.norm(X, axis=1, keepdims=True)
    assert trustworthiness(U, a.xy, n_neighbors=10) > 0.9
    rest = np.setdiff1d(np.arange(len(X)), a.fit_rows)
    d2 = ((a.xy[rest][:, None, :] - a.xy[a.fit_rows][None]) ** 2).sum(-1)
    assert (y[a.fit_rows][d2.argmin(1)] == y[rest]).mean() >= 0.95
