"""Curation math against references: brute-force numpy, imagehash, scikit-learn, the SemDeDup keep rule, cleanlab."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitlab.curation.calibrate import AUGMENTATIONS, augment, check_edits, pick_threshold
from vitlab.curation.pairs import pairs_within
from vitlab.curation.clusters import clique_groups, removal_curve, removed_rows
from vitlab.curation.filters import outlier_filter, prompt_filter, retention, target_filter
from vitlab.curation.hashing import exact_groups, hash_images, perceptual_pairs
from vitlab.curation.leakage import clean_vs_full, crossing_groups, find_leaks
from vitlab.curation.semantic import check_threshold, neighbour_table
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


def _table_groups(X, k, thr):
    t = neighbour_table(X, k=k)
    ps = t.all_pairs(X, thr)
    return clique_groups(ps.i, ps.j, thr, X)


def _brute_pairs(X, thr):
    G = _unit(X) @ _unit(X).T
    i, j = np.nonzero(np.triu(G >= thr, 1))
    return set(zip(i.tolist(), j.tolist()))


def test_groups_are_cliques_every_two_members_above_the_threshold():
    # on the circle: neighbours 10 degrees apart are above cos(12 deg), the ends 20 degrees apart are not
    ang = np.deg2rad([0, 10, 20, 90])
    X = np.c_[np.cos(ang), np.sin(ang)]
    thr = float(np.cos(np.deg2rad(12)))
    groups = _table_groups(X, 3, thr)
    assert [g.members for g in groups] == [[0, 1]]  # a star around 1 would have held 0, 1, 2 (0~2: 20 degrees)
    assert groups[0].centre == 1 and groups[0].min_similarity == pytest.approx(np.cos(np.deg2rad(10)))


@pytest.mark.parametrize("seed", range(5))
def test_groups_on_random_clustered_data_are_pairwise_above_the_threshold(seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, 6))
    X = centres[rng.integers(0, 8, 150)] + 0.25 * rng.normal(size=(150, 6))
    for thr in (0.9, 0.95, 0.98):
        groups = _table_groups(X, 4, thr)
        assert groups, "clustered data has groups"
        seen = set()
        for g in groups:
            Xn = _unit(X[g.members])
            gram = Xn @ Xn.T
            assert gram.min() >= thr and g.min_similarity == pytest.approx(gram.min()) and g.min_similarity >= thr
            assert not seen & set(g.members)  # a row is in one group at most
            seen |= set(g.members)
        # maximal: no item outside every group has a pair above the threshold with another ungrouped item
        free = sorted(set(range(150)) - seen)
        assert not {(a, b) for a, b in _brute_pairs(X, thr) if a in free and b in free}


def test_chain_with_a_tighter_threshold_splits_into_cliques():
    ang = np.deg2rad(np.arange(0, 60, 5.0))  # 12 points 5 degrees apart
    X = np.c_[np.cos(ang), np.sin(ang)]
    thr = float(np.cos(np.deg2rad(6)))
    groups = _table_groups(X, 11, thr)
    assert all(len(g.members) == 2 for g in groups)  # only neighbours 5 degrees apart clear cos(6 deg)
    assert len(groups) >= 4  # connected components would have made one group of 12
    for g in groups:
        assert g.min_similarity >= thr


def test_pairs_within_finds_every_pair_beyond_k_and_matches_brute_force():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 8))
    X[100:130] = X[0] + 1e-3 * rng.normal(size=(30, 8))  # 31 near-identical rows: 465 pairs among them
    ps = pairs_within(X, 0.99, k=4)
    assert set(zip(ps.i.tolist(), ps.j.tolist())) == _brute_pairs(X, 0.99) and ps.capped.size == 0
    G = _unit(X) @ _unit(X).T
    np.testing.assert_allclose(ps.score, G[ps.i, ps.j], atol=1e-5)
    capped = pairs_within(X, 0.99, k=4, max_neighbours=8)
    assert set(capped.capped.tolist()) == {0, *range(100, 130)} and len(capped) < len(ps)


def test_twenty_hash_identical_images_give_every_pair():
    from vitlab.curation.hashing import perceptual_pairs

    bits = np.zeros((25, 64), bool)
    bits[20:] = np.random.default_rng(0).random((5, 64)) < 0.5  # 5 other codes, far from all-zero
    pp = perceptual_pairs(bits, max_distance=0, k=16)
    got = {(a, b) for a, b, d in pp if a < 20 and b < 20}
    assert got == {(a, b) for a in range(20) for b in range(a + 1, 20)} and len(got) == 190  # k=16 used to miss 6
    assert pp.capped.size == 0
    capped = perceptual_pairs(bits, max_distance=0, k=4, max_neighbours=8)
    assert capped.capped.tolist() == list(range(20))


def test_keep_rule_keeps_the_member_least_similar_to_the_centroid():
    X = _clustered()
    groups = _table_groups(X, 5, 0.999)
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


def test_pick_threshold_recall_rule_when_copies_separate():
    rng = np.random.default_rng(0)
    pos, neg = rng.uniform(0.96, 1.0, 1000), rng.uniform(-0.2, 0.95, 5000)
    r = pick_threshold(pos, neg, recall=0.95)
    assert r["separable"] and r["failing_edits"] == []
    assert np.mean(pos >= r["threshold"]) >= 0.95 and np.mean(pos >= np.nextafter(r["threshold"], 2)) < 0.95
    assert r["fpr"] == pytest.approx(np.mean(neg >= r["threshold"])) == 0.0


@pytest.mark.parametrize("max_fpr", [1e-3, 1e-2, 0.05])
def test_pick_threshold_never_lets_more_random_pairs_than_the_bound(max_fpr):
    rng = np.random.default_rng(1)
    neg = rng.normal(0.3, 0.1, 20000)
    pos = np.r_[rng.uniform(0.95, 1.0, 200), rng.uniform(0.4, 1.0, 200)]  # jpeg separates, flip does not
    kinds = ["jpeg"] * 200 + ["flip"] * 200
    r = pick_threshold(pos, neg, kinds=kinds, recall=0.99, max_fpr=max_fpr)
    t = r["threshold"]
    assert r["fpr"] == np.mean(neg >= t) <= max_fpr
    assert np.mean(neg >= np.nextafter(t, -2)) > max_fpr or r["separable"]  # the smallest such t when bounded
    assert not r["separable"] and r["failing_edits"] == ["flip"]
    assert r["recall_by_edit"] == {"jpeg": np.mean(pos[:200] >= t), "flip": np.mean(pos[200:] >= t)}
    assert "flip" in r["rule"] and str(max_fpr) in r["rule"]


def test_pick_threshold_takes_recall_per_edit_not_pooled():
    neg = np.linspace(-1.0, 0.5, 10000)
    pos = np.r_[np.full(99, 0.99), 0.7, np.full(100, 0.99)]  # edit a: one copy at 0.7
    r = pick_threshold(pos, neg, kinds=["a"] * 100 + ["b"] * 100, recall=0.995)
    assert r["separable"] and r["threshold"] == 0.7 and r["recall_by_edit"] == {"a": 1.0, "b": 1.0}


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
    from vitlab.curation.leakage import cross_split_duplicates as _cross_split

    split = np.array(["train", "test", "train", "val", "test"])
    r = _cross_split([[0, 1], [2, 3]], [(0, 4, 2), (2, 3, 1), (1, 4, 0)], split, list("abcde"))
    assert r["exact_cross_split"] == {"n_groups": 1, "n_test_items": 1, "groups": [["a", "b"]]}
    assert r["perceptual_cross_split"]["n_pairs"] == 1 and r["perceptual_cross_split"]["pairs"][0]["b"] == "e"


def test_manifest_refuses_overwrite_and_sources_without_files(tmp_path):
    import vitlab
    from vitlab.curation.manifest import check_has_files, check_new_manifest, write_manifest

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


def test_manifest_refuses_to_drop_more_than_the_bound():
    from vitlab.curation.manifest import check_removed
    from vitlab.curation.options import check_max_removed

    check_removed(64, 320, check_max_removed(None), False)
    with pytest.raises(ConfigError, match=r"would drop 65 of 320 items \(20.3%\), more than the 20% allowed by default"
                                          r".*--max-removed 0.21"):
        check_removed(65, 320, 0.2, False)
    check_removed(65, 320, check_max_removed(0.25), True)
    with pytest.raises(ConfigError, match="must be a fraction in"):
        check_max_removed(1.5)


def test_label_issues_flag_planted_flips_like_cleanlab_on_sklearn_probabilities():
    pytest.importorskip("cleanlab")
    from cleanlab.filter import find_label_issues as cl_find
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from vitlab.curation.label_issues import find_label_issues

    X, y = load_digits(return_X_y=True)
    X, y = X[:600] / 16.0, y[:600].copy()
    rng = np.random.default_rng(0)
    flip = rng.choice(600, 30, replace=False)
    y[flip] = (y[flip] + rng.integers(1, 10, 30)) % 10
    li = find_label_issues(X, y, folds=5, seed=0, method="knn")
    assert li.pred_probs.shape == (600, 10) and np.allclose(li.pred_probs.sum(1), 1)
    assert (li.fold >= 0).all() and len(np.unique(li.fold)) == 5
    np.testing.assert_allclose(li.self_confidence, li.pred_probs[np.arange(600), y])
    assert (li.suggested == li.pred_probs.argmax(1)).all() and (li.given == y).all()
    flagged = set(np.flatnonzero(li.is_issue).tolist())
    planted = set(flip.tolist())
    precision, recall = len(flagged & planted) / len(flagged), len(flagged & planted) / len(planted)
    assert precision >= 0.7 and recall >= 0.7, (precision, recall)
    # ranks: 0..m-1 over the flagged items, by ascending self-confidence (cleanlab's order)
    r = li.ranked
    assert li.rank[r].tolist() == list(range(len(r))) and (np.diff(li.self_confidence[r]) >= 0).all()
    assert (li.rank[~li.is_issue] == -1).all()
    # the same flags as cleanlab on the same out-of-fold probabilities
    same = cl_find(labels=y, pred_probs=li.pred_probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    assert same.tolist() == r.tolist()
    # and about as good as cleanlab on scikit-learn's cross_val_predict over the same features
    P = cross_val_predict(LogisticRegression(max_iter=2000), X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                          method="predict_proba")
    ref = set(cl_find(labels=y, pred_probs=P, n_jobs=1).nonzero()[0].tolist())
    assert len(flagged & planted) >= len(ref & planted) - 3
    assert find_label_issues(X, y, folds=5, seed=0, method="knn").rank.tolist() == li.rank.tolist()  # seeded


def test_linear_label_issue_probabilities_are_out_of_fold():
    pytest.importorskip("cleanlab")
    from vitlab.curation.label_issues import METHODS, check_label_issue_inputs, find_label_issues
    from vitlab.protocols.base import Split, parse_protocols

    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 5))
    y = np.repeat([0, 1, 2], 30)
    X[np.arange(90), y] += 2.0
    spec = "linear:Cs=[0.1,1.0]"  # two values of C: fast, and still a validation split inside each fold
    li = find_label_issues(X, y, folds=3, seed=0, method=spec)
    te = np.flatnonzero(li.fold == 1)
    tr = np.flatnonzero(li.fold != 1)

    def split(r):
        return Split(X[r], y[r], r, None, [f"{i:09d}" for i in r])

    ref = parse_protocols(spec)[0].run(split(tr), split(te), seed=0, n_classes=3).outputs["proba"]
    np.testing.assert_allclose(li.pred_probs[te], ref / ref.sum(1, keepdims=True), rtol=1e-10)
    assert li.method == spec
    assert check_label_issue_inputs(y, folds=3, method="linear").spec() == METHODS["linear"] == "linear:dtype=float64"


def test_label_issues_with_groups_never_split_a_group():
    pytest.importorskip("cleanlab")
    from vitlab.curation.label_issues import find_label_issues

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    y = np.repeat([0, 1, 2], 40)
    X[np.arange(120), y] += 4
    groups = np.array([f"g{i // 4}" for i in range(120)])
    li = find_label_issues(X, y, groups=groups, folds=3, method="knn")
    assert li.grouped
    for g in np.unique(groups):
        assert len(np.unique(li.fold[groups == g])) == 1


@pytest.mark.parametrize("y, folds, msg", [
    (None, 5, "has no labels: --label-issues"),
    (np.array([0] * 10 + [1] * 3), 5, "class 1 has 3 item\\(s\\), fewer than --folds 5"),
    (np.zeros(10, int), 2, "same label"),
])
def test_label_issue_bad_input_is_one_line(y, folds, msg):
    from vitlab.curation.label_issues import check_label_issue_inputs

    with pytest.raises((DataError, ConfigError), match=msg) as e:
        check_label_issue_inputs(y, folds=folds)
    assert "\n" not in str(e.value)


def test_missing_cleanlab_and_imagehash_name_the_extra(monkeypatch):
    import sys

    from vitlab.curation.hashing import require_imagehash
    from vitlab.curation.label_issues import require_cleanlab

    monkeypatch.setitem(sys.modules, "cleanlab", None)
    monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
    monkeypatch.setitem(sys.modules, "imagehash", None)
    with pytest.raises(ConfigError, match=r"needs the cleanlab package .*pip install 'vitlab\[curate\]'"):
        require_cleanlab()
    with pytest.raises(ConfigError, match=r"needs the imagehash package .*pip install 'vitlab\[curate\]'"):
        require_imagehash()


def test_vitlab_curate_is_the_api_function_and_the_package():
    import vitlab
    import vitlab.curation.hashing  # noqa: F401  (importing a submodule must not hide the function)
    from vitlab.curation import curate

    assert callable(vitlab.curate) and callable(curate) and "curate" in vitlab.__all__
    with pytest.raises(ConfigError, match=r"threshold must be a cosine similarity in \[-1, 1\]"):
        vitlab.curate("demo:fmnist-vit", "sample:fashion-mnist", threshold=2.0)
