"""The retrieval protocol: rankings against brute force, leave-one-out mode, approximate backend, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from vitlab.errors import ConfigError, DataError
from vitlab.protocols import Retrieval, Split
from vitlab.scorers import scorer_for


def _data(seed=0, n=120, d=6, c=4):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    X = rng.normal(size=(c, d))[y] + rng.normal(size=(n, d))
    ids = [f"img{i}" for i in range(n)]
    tr, te = np.arange(0, 80), np.arange(80, n)
    side = lambda r: Split(X[r], y[r], r, ids=[ids[i] for i in r])  # noqa: E731
    return X, y, side(tr), side(te)


def test_split_mode_matches_brute_force_average_precision_and_recall():
    X, y, train, test = _data()
    res = Retrieval(ks=(1, 5)).run(train, test, seed=0, n_classes=4)
    qn = test.X / np.linalg.norm(test.X, axis=1, keepdims=True)
    gn = train.X / np.linalg.norm(train.X, axis=1, keepdims=True)
    sims = qn @ gn.T
    ap = [average_precision_score(train.y == yq, s) for yq, s in zip(test.y, sims)]
    np.testing.assert_allclose(res.outputs["per_query"]["map"], ap, atol=1e-9)
    top1 = train.y[sims.argmax(1)] == test.y
    np.testing.assert_array_equal(res.outputs["per_query"]["recall@1"], top1.astype(float))
    assert res.units == list(test.ids) and res.details["backend"] == "exact"
    assert res.details["examples"] and len(res.details["examples"][0]["results"]) == 5


def test_all_mode_never_retrieves_the_query_itself():
    X, y, train, test = _data(1)
    dup = Split(np.vstack([test.X, test.X[:1]]), np.append(test.y, test.y[0]), np.append(test.rows, 999),
                ids=list(test.ids) + ["copy-of-first"])
    res = Retrieval(ks=(1,), mode="all").run(train, dup, seed=0, n_classes=4)
    # the first query's exact copy is its nearest other item: recall@1 = 1 for it, and it is never itself
    assert res.outputs["per_query"]["recall@1"][0] == 1.0
    ex = {e["id"]: e for e in res.details["examples"]}
    for qid, e in ex.items():
        assert qid not in [r["id"] for r in e["results"]]


def test_scores_with_query_level_intervals_that_contain_the_estimate():
    _, _, train, test = _data(2)
    res = Retrieval().run(train, test, seed=0, n_classes=4)
    metrics, _ = scorer_for("retrieval").score(res, n_resamples=200, seed=0)
    for name, m in metrics.items():
        assert m["low"] <= m["value"] <= m["high"], name
    assert metrics["recall@1"]["value"] == pytest.approx(res.outputs["per_query"]["recall@1"].mean())


def test_paired_test_between_two_feature_sets():
    X, y, train, test = _data(3)
    good = Retrieval().run(train, test, seed=0, n_classes=4)
    noise = np.random.default_rng(9).normal(size=X.shape) * 5
    bad_tr = Split(train.X + noise[train.rows], train.y, train.rows, ids=train.ids)
    bad_te = Split(test.X + noise[test.rows], test.y, test.rows, ids=test.ids)
    bad = Retrieval().run(bad_tr, bad_te, seed=0, n_classes=4)
    t = scorer_for("retrieval").paired(good, bad, n_resamples=500, seed=0)
    assert t["metric"] == "recall@1" and t["diff"] > 0 and t["low"] <= t["diff"] <= t["high"]
    assert "p_mcnemar" in t and t["p_bootstrap"] < 0.05


def test_approximate_backend_reports_its_measured_recall():
    pytest.importorskip("faiss")
    _, _, train, test = _data(4)
    res = Retrieval(ks=(1, 5), backend="faiss", ann_sample=20).run(train, test, seed=0, n_classes=4)
    ann = res.details["ann"]
    assert res.details["backend"] == "faiss-ivf" and ann["sampled_queries"] == 20 and 0 < ann["recall_at_k"] <= 1
    assert ann["index"].startswith("faiss IVF-Flat (nlist=") and ann["index_params"]["index"] == "ivf"
    assert "map" not in res.outputs["per_query"] and "recall@5" in res.outputs["per_query"]


def test_bad_inputs():
    X, y, train, test = _data()
    with pytest.raises(ConfigError, match="retrieval: mode must be 'split'"):
        Retrieval(mode="both")
    lonely = Split(test.X[:2], np.array([0, 9]), test.rows[:2], ids=["a", "b"])
    with pytest.raises(DataError, match=r"no relevant item in the gallery \(first: b\)"):
        Retrieval().run(train, lonely, seed=0, n_classes=10)
    with pytest.raises(DataError, match="NaN or inf"):
        Retrieval().run(Split(np.full_like(train.X, np.nan), train.y, train.rows), test, seed=0, n_classes=4)


def test_manifest_role_and_positives_columns_are_validated_with_their_line():
    import pandas as pd
    from pathlib import Path

    from vitlab.data.manifest import _retrieval_columns

    ids = ["a", "b", "c"]
    roles, pos = _retrieval_columns(pd.DataFrame({"role": ["query", "gallery", ""], "positives": ["b;c", "", ""]}),
                                    ids, Path("m.csv"))
    assert roles == ["query", "gallery", "both"] and pos == {"a": ["b", "c"]}
    with pytest.raises(DataError, match=r"m.csv: line 3: role 'probe' is not one of query, gallery, both"):
        _retrieval_columns(pd.DataFrame({"role": ["query", "probe", ""]}), ids, Path("m.csv"))
    with pytest.raises(DataError, match=r"line 2: positive 'z' is not an id in the manifest"):
        _retrieval_columns(pd.DataFrame({"positives": ["b;z", "", ""]}), ids, Path("m.csv"))
    with pytest.raises(DataError, match=r"line 3: a gallery-only row lists positives"):
        _retrieval_columns(pd.DataFrame({"role": ["query", "gallery", "both"], "positives": ["", "a", ""]}),
                           ids, Path("m.csv"))
