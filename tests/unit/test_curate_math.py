"""Curation math against references: brute-force numpy, imagehash, scikit-learn, the SemDeDup keep rule."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitlab.curate.calibrate import AUGMENTATIONS, augment, check_edits, pick_threshold
from vitlab.curate.clusters import removal_curve, removed_rows, star_clusters
from vitlab.curate.filters import outlier_filter, prompt_filter, retention, target_filter
from vitlab.curate.hashing import exact_groups, hash_images, perceptual_pairs
from vitlab.curate.leakage import clean_vs_full, crossing_groups, find_leaks
from vitlab.curate.semantic import check_threshold, neighbour_table
from vitlab.errors import ConfigError, DataError


def _unit(X):
    X = np.asarray(X, np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def _clustered(n=120, d=16, seed=0):
    """Points, some with a near copy (cosine > 0.999) at a known partner."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X[n // 2:n // 2 + 10] = X[:10] + 0.001 * rng.normal(size=(10, d))
    return X


def test_exact_groups_and_pixel_digest():
    imgs = [Image.new("RGB", (8, 8), c) for c in ("red", "blue", "red", "red", "green")]
    h = hash_images(imgs)
    assert exact_groups(h.exact) == [[0, 2, 3]]
    assert h.phash.shape == (5, 64)


def test_perceptual_pairs_match_imagehash_hamming_brute_force():
    import imagehash

    rng = np.random.default_rng(0)
    base = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).resize((64, 64)) for _ in range(12)]
    imgs = base + [augment(base[i], "jpeg", rng) for i in range(4)]
    h = hash_images(imgs)
    ph = [imagehash.phash(im) for im in imgs]
    want = {(i, j, ph[i] - ph[j]) for i in range(len(imgs)) for j in range(i + 1, len(imgs)) if ph[i] - ph[j] <= 6}
    assert set(perceptual_pairs(h.phash, max_distance=6, k=len(imgs) - 1)) == want
    assert {(a, b) for a, b, _ in want} >= {(i, 12 + i) for i in range(4)}  # the re-encoded copies are found


def test_neighbour_table_matches_dense_cosine():
    X = _clustered()
    t = neighbour_table(X, k=5, backend="exact")
    G = _unit(X) @ _unit(X).T
    np.fill_diagonal(G, -np.inf)
    want = np.sort(G, axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(t.scores, want, atol=1e-5)
    pairs = t.pairs(0.999)
    assert [(a, b) for a, b, _ in pairs] == [(i, 60 + i) for i in range(10)]


def test_faiss_backend_reports_recall_against_exact():
    pytest.importorskip("faiss")
    X = _clustered(n=400)
    t = neighbour_table(X, k=4, backend="faiss", recall_sample=100)
    assert t.backend == "faiss" and t.recall_queries == 100 and 0.9 <= t.recall <= 1.0


def test_star_clusters_report_their_minimum_internal_similarity():
    # on the circle: neighbours 10 degrees apart are above cos(12 deg), the ends 20 degrees apart are not
    ang = np.deg2rad([0, 10, 20, 90])
    X = np.c_[np.cos(ang), np.sin(ang)]
    t = neighbour_table(X, k=3)
    thr = float(np.cos(np.deg2rad(12)))
    groups = star_clusters(t.indices, t.scores, thr, X)
    assert [g.members for g in groups] == [[0, 1, 2]]  # every member within thr of its centre
    for g in groups:
        Xn = _unit(X[g.members])
        assert g.min_to_centre >= thr - 1e-9
        assert g.min_similarity == pytest.approx((Xn @ Xn.T).min())
    # the centre (1) has both others within 10 degrees; the ends are 20 degrees apart: reported, not hidden
    assert groups[0].centre == 1 and groups[0].min_similarity == pytest.approx(np.cos(np.deg2rad(20)))


def test_chain_with_a_tighter_threshold_splits_into_stars():
    ang = np.deg2rad(np.arange(0, 60, 5.0))  # 12 points 5 degrees apart
    X = np.c_[np.cos(ang), np.sin(ang)]
    t = neighbour_table(X, k=11)
    thr = float(np.cos(np.deg2rad(6)))
    groups = star_clusters(t.indices, t.scores, thr, X)
    assert all(len(g.members) <= 3 for g in groups)  # a centre and its two neighbours at most
    assert len(groups) >= 4  # connected components would have made one group of 12
    for g in groups:
        assert g.min_similarity >= np.cos(np.deg2rad(10)) - 1e-9


def test_keep_rule_keeps_the_member_least_similar_to_the_centroid():
    X = _clustered()
    t = neighbour_table(X, k=5)
    groups = star_clusters(t.indices, t.scores, 0.999, X)
    c = _unit(_unit(X).mean(0)[None])[0]
    for g in groups:
        sims = _unit(X[g.members]) @ c
        assert g.keep == g.members[int(np.argmin(sims))]
    removed = removed_rows(groups)
    assert len(removed) == 10 and not set(removed) & {g.keep for g in groups}


def test_removal_curve_is_monotone_in_the_threshold():
    X = _clustered()
    t = neighbour_table(X, k=8)
    curve = removal_curve(t.indices, t.scores, X, [0.0, 0.3, 0.6, 0.9, 0.999, 1.0])
    fr = [c["fraction"] for c in curve]
    assert fr == sorted(fr, reverse=True) and fr[-2] == pytest.approx(10 / 120)


def test_pick_threshold_recall_rule_and_fpr_cap():
    rng = np.random.default_rng(0)
    pos, neg = rng.uniform(0.9, 1.0, 1000), rng.uniform(-0.2, 0.95, 5000)
    r = pick_threshold(pos, neg, recall=0.95)
    assert np.mean(pos >= r["threshold"]) >= 0.95 and np.mean(pos >= np.nextafter(r["threshold"], 2)) < 0.95
    assert r["fpr"] == pytest.approx(np.mean(neg >= r["threshold"]))
    capped = pick_threshold(pos, neg, recall=0.95, max_fpr=0.001)
    assert capped["fpr"] <= 0.001 and capped["threshold"] > r["threshold"] and "false-positive" in capped["rule"]


def test_augmentations_make_new_images_and_edits_are_checked():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    before = img.tobytes()
    for kind in AUGMENTATIONS:
        out = augment(img, kind, np.random.default_rng(1))
        assert out is not img and out.mode == "RGB"
    assert img.tobytes() == before
    assert check_edits("jpeg, flip") == ("jpeg", "flip")
    with pytest.raises(ConfigError, match="edits must be some of"):
        check_edits("blur")


@pytest.mark.parametrize("bad", [1.5, -1.01, float("nan"), "high"])
def test_threshold_outside_minus_one_one_is_one_clear_line(bad):
    with pytest.raises(ConfigError, match=r"threshold must be a cosine similarity in \[-1, 1\]") as e:
        check_threshold(bad)
    assert "\n" not in str(e.value)


def test_find_leaks_matches_brute_force_and_groups_crossing():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 8))
    split = np.array(["train"] * 40 + ["test"] * 20)
    X[45] = X[3] * 2.0  # a scaled copy: cosine 1
    groups = np.array([f"p{i // 2}" for i in range(60)])
    groups[50] = "p0"  # p0 now has train rows 0, 1 and test row 50
    ids = [f"i{i}" for i in range(60)]
    leak = find_leaks(X, split, 0.99, ids=ids, groups=groups)
    G = _unit(X[40:]) @ _unit(X[:40]).T
    np.testing.assert_allclose(leak.similarity, G.max(1), atol=1e-5)
    assert leak.pairs[0]["test_id"] == "i45" and leak.pairs[0]["train_id"] == "i3"
    assert np.flatnonzero(leak.near_dup).tolist() == np.flatnonzero(G.max(1) >= 0.99).tolist()
    assert crossing_groups(groups, split) == [{"group": "p0", "splits": {"test": 1, "train": 2}}]
    assert leak.in_crossing_group[50 - 40] and leak.leaked.sum() == leak.near_dup.sum() + 1


def test_clean_vs_full_is_paired_and_matches_direct_top1():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.7, y, (y + 1) % 3)
    proba = np.eye(3)[pred]
    leaked = np.zeros(300, bool)
    leaked[:60] = True
    proba[:60] = np.eye(3)[y[:60]]  # leaked items are all right: removing them lowers top-1
    r = clean_vs_full(y, proba, leaked, n_resamples=400, seed=0)
    full, clean = np.mean(proba.argmax(1) == y), np.mean(proba[60:].argmax(1) == y[60:])
    assert r["full"]["value"] == pytest.approx(full) and r["clean"]["value"] == pytest.approx(clean)
    assert r["diff"] == pytest.approx(clean - full) and r["low"] <= r["diff"] <= r["high"] < 0
    for e in (r["full"], r["clean"]):
        assert e["low"] <= e["value"] <= e["high"]
    assert r == clean_vs_full(y, proba, leaked, n_resamples=400, seed=0)  # seeded
    with pytest.raises(DataError, match="all 300 test items are leaked"):
        clean_vs_full(y, proba, np.ones(300, bool))


def test_filters_against_references():
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(0)
    X, T = rng.normal(size=(80, 6)), rng.normal(size=(15, 6))
    f = target_filter(X, T, minimum=0.5)
    want = (_unit(X) @ _unit(T).T).max(1)
    np.testing.assert_allclose(f.scores, want, atol=1e-5)
    assert (f.kept == (f.scores >= 0.5)).all()
    o = outlier_filter(X, k=3, drop=0.1)
    dist, _ = NearestNeighbors(n_neighbors=4, metric="cosine").fit(X).kneighbors(X)
    np.testing.assert_allclose(o.scores, dist[:, 3], atol=1e-5)
    assert (~o.kept).sum() == 8 and o.scores[~o.kept].min() >= o.scores[o.kept].max()
    text = rng.normal(size=(3, 2, 6))
    labels = rng.integers(0, 3, 80)
    p = prompt_filter(X, labels, text)
    W = _unit(_unit(text.reshape(6, 6)).reshape(3, 2, 6).mean(1))
    np.testing.assert_allclose(p.scores, (_unit(X) * W[labels]).sum(1), atol=1e-6)


def test_retention_counts_and_kept_fraction():
    s = np.array([0.1, 0.2, 0.2, 0.7, 0.9])
    r = retention(s, True, bins=4)
    assert r["counts"] == np.histogram(s, bins=4)[0].tolist()
    assert r["kept_fraction"] == [np.mean(s >= e) for e in r["edges"]]
    r2 = retention(s, False, bins=4)
    assert r2["kept_fraction"] == [np.mean(s <= e) for e in r2["edges"]]


def test_exact_and_perceptual_duplicates_across_the_split():
    from vitlab.curate.run import _cross_split

    split = np.array(["train", "test", "train", "val", "test"])
    r = _cross_split([[0, 1], [2, 3]], [(0, 4, 2), (2, 3, 1), (1, 4, 0)], split, list("abcde"))
    assert r["exact_cross_split"] == {"n_groups": 1, "n_test_items": 1, "groups": [["a", "b"]]}
    assert r["perceptual_cross_split"]["n_pairs"] == 1 and r["perceptual_cross_split"]["pairs"][0]["b"] == "e"


def test_manifest_refuses_overwrite_and_sources_without_files(tmp_path):
    import vitlab
    from vitlab.curate.manifest import check_has_files, check_new_manifest, write_manifest

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (i * 90, 0, 0)).save(tmp_path / "imgs" / c / f"{i}.png")
    src = vitlab.load_source(f"folder:{tmp_path / 'imgs'}")
    m = write_manifest(tmp_path / "clean.csv", src, np.array([0, 3]), split=np.array(["train", "x", "y", "test"]))
    back = vitlab.load_source(f"csv:{m}")
    assert len(back) == 2 and back.classes == ["a", "b"] and back.split_column == ["train", "test"]
    with pytest.raises(ConfigError, match="already exists and is not overwritten") as e:
        check_new_manifest(m)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="--write-manifest needs folder: or csv: data"):
        check_has_files(vitlab.load_source("sample:fashion-mnist"))


def test_vitlab_curate_is_the_api_function_and_the_package():
    import vitlab
    import vitlab.curate.hashing  # noqa: F401  (importing a submodule must not hide the function)
    from vitlab.curate import curate

    assert callable(vitlab.curate) and callable(curate) and "curate" in vitlab.__all__
    with pytest.raises(ConfigError, match=r"threshold must be a cosine similarity in \[-1, 1\]"):
        vitlab.curate("demo:fmnist-vit", "sample:fashion-mnist", threshold=2.0)
