"""evaluate / compare on real (tiny) data: records, CIs, determinism, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import vitlab
from tests.conftest import write_images
from vitlab.errors import ConfigError, DataError
from vitlab.protocols import KNN, FewShot, Linear
from vitlab.record import RunRecord

FAST = dict(n_resamples=200, progress=False, num_workers=0)
SPECS = {"knn": KNN(ks=(5, 10)), "linear": Linear(Cs=(0.01, 1.0)), "fewshot": FewShot(shots=(1, 2), episodes=3)}


def P(names: str) -> list:
    """The fast configs of the named protocols."""
    return [SPECS[n] for n in names.split(",")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("eval") / "imgs", n_per_class=20, classes=("a", "b", "c", "d"))


def test_evaluate_writes_a_complete_record(folder, tmp_path):
    res = vitlab.evaluate("pixels:8", f"folder:{folder}", protocols=P("knn,linear,fewshot"), cache_dir=tmp_path / "c",
                          out=tmp_path / "runs", **FAST)
    rec = RunRecord.load(res.path)
    assert rec.schema_version == 1 and rec.kind == "eval"
    for proto in ("knn", "linear"):
        for metric in ("top1", "balanced_accuracy", "macro_f1", "auroc", "cohen_kappa"):
            m = rec.metrics[proto][metric]
            assert m["low"] <= m["value"] <= m["high"] and m["n_resamples"] == 200
        assert len(rec.details[proto]["confusion_matrix"]) == 4
    assert "top5" not in rec.metrics["knn"]  # only 4 classes
    assert rec.hparams["knn"]["k"] in (5, 10) and rec.hparams["linear"]["C"] in (0.01, 1.0)
    assert {"simpleshot_1shot", "linear_2shot"} <= set(rec.metrics["fewshot"])
    assert rec.fingerprints["embeddings"] == res.embeddings.digest
    assert rec.versions["torch"] and rec.seeds["bootstrap"] == 0 and rec.timings["knn_s"] >= 0
    assert rec.details["data"]["n_test"] == 16 and rec.details["data"]["classes"] == ["a", "b", "c", "d"]


def test_same_inputs_same_numbers(folder, tmp_path):
    a = vitlab.evaluate("pixels:8", f"folder:{folder}", protocols=P("knn,linear"), cache_dir=tmp_path / "c", **FAST)
    b = vitlab.evaluate("pixels:8", f"folder:{folder}", protocols=P("knn,linear"), cache_dir=tmp_path / "c", **FAST)
    assert json.dumps(a.record.metrics, sort_keys=True) == json.dumps(b.record.metrics, sort_keys=True)
    c = vitlab.evaluate("pixels:8", f"folder:{folder}", protocols=P("knn"), cache_dir=tmp_path / "c", seed=1, **FAST)
    assert c.test_ids != a.test_ids


def test_compare_pairs_and_holm(folder, tmp_path):
    res = vitlab.compare(["pixels:8", "pixels:12", "random:demo:fmnist-vit"], f"folder:{folder}", protocols=P("knn"),
                         cache_dir=tmp_path / "c", out=tmp_path / "runs", **FAST)
    tests = res.record.details["pairwise"][f"folder:{folder}"]["knn"]
    assert len(tests) == 3
    for t in tests:
        assert t["p_bootstrap"] <= t["p_bootstrap_holm"] <= 1 and 0 <= t["p_mcnemar"] <= 1
    board = res.leaderboard(f"folder:{folder}", "knn")
    assert [r["value"] for r in board] == sorted((r["value"] for r in board), reverse=True)
    assert len(list((tmp_path / "runs").glob("*.json"))) == 4
    assert "mean_ranks" in res.record.details["ranks"]["knn"]


def test_k_larger_than_train_set(folder, tmp_path):
    with pytest.raises(ConfigError, match=r"k=500 is larger than the training set \(64 samples\)"):
        vitlab.evaluate("pixels:8", f"folder:{folder}", protocols=[KNN(ks=(10, 500))], cache_dir=tmp_path / "c", **FAST)


def test_nshot_larger_than_class(folder, tmp_path):
    with pytest.raises(ConfigError, match=r"n-shot 50 is larger than the smallest training class \(16 samples\)"):
        vitlab.evaluate("pixels:8", f"folder:{folder}", protocols=[FewShot(shots=(50,))], cache_dir=tmp_path / "c", **FAST)


def test_single_class_and_missing_class(tmp_path):
    one = write_images(tmp_path / "one", n_per_class=6, classes=("only",))
    with pytest.raises(DataError, match=r"only one class \('only'\) is present"):
        vitlab.evaluate("pixels:8", f"folder:{one}", protocols=P("knn"), cache_dir=tmp_path / "c", **FAST)
    write_images(tmp_path / "two", n_per_class=4, classes=("x", "y"))
    manifest = tmp_path / "m.csv"
    rows = [f"two/x/x_0{i}.png,x,train" for i in range(4)] + [f"two/y/y_0{i}.png,y,test" for i in range(4)]
    manifest.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"class\(es\) 'y' have no training samples"):
        vitlab.evaluate("pixels:8", f"csv:{manifest}", protocols=P("knn"), cache_dir=tmp_path / "c", **FAST)


def test_unlabelled_data_is_refused(tmp_path):
    flat = write_images(tmp_path / "flat", flat=True)
    with pytest.raises(DataError, match="has no labels, needed by knn, linear, fewshot: use labelled data"):
        vitlab.evaluate("pixels:8", f"folder:{flat}", cache_dir=tmp_path / "c", **FAST)


def test_unknown_protocol_suggests(folder, tmp_path):
    with pytest.raises(vitlab.errors.UnknownNameError, match=r"unknown protocol 'knnn'\. Did you mean: knn"):
        vitlab.evaluate("pixels:8", f"folder:{folder}", protocols="knnn", cache_dir=tmp_path / "c", **FAST)


def test_group_aware_bootstrap_is_used(tmp_path):
    write_images(tmp_path / "g", n_per_class=12, classes=("a", "b"))
    rows = [f"g/{c}/{c}_{i:02d}.png,{c},{'test' if i % 3 == 0 else 'train'},p{i // 2}"
            for c in ("a", "b") for i in range(12)]
    (tmp_path / "g.csv").write_text("path,label,split,group\n" + "\n".join(rows) + "\n")
    res = vitlab.evaluate("pixels:8", f"csv:{tmp_path / 'g.csv'}", protocols=[KNN(ks=(3,))], cache_dir=tmp_path / "c", **FAST)
    assert res.record.metrics["knn"]["top1"]["method"] == "cluster-percentile"
    assert np.isfinite(res.record.metrics["knn"]["top1"]["low"])
