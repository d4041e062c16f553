"""evaluate / compare beyond classification: retrieval, dense probes on the mosaic sample, zero-shot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import vitlab
from tests.conftest import write_images
from vitlab.errors import ConfigError, DataError
from vitlab.record import RunRecord

FAST = dict(n_resamples=200, progress=False, num_workers=0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("tasks") / "imgs", n_per_class=15, classes=("a", "b", "c"), size=64)


def test_retrieval_through_evaluate_and_compare(folder, tmp_path):
    res = vitlab.compare(["pixels:8", "pixels:16"], f"folder:{folder}", protocols="retrieval,knn",
                         cache_dir=tmp_path / "c", out=tmp_path / "runs", **FAST)
    ev = res.runs[(f"folder:{folder}", "pixels:8")]
    m = ev.record.metrics["retrieval"]
    assert {"recall@1", "recall@5", "map", "map@r", "ndcg@10"} <= set(m)
    assert all(v["low"] <= v["value"] <= v["high"] for v in m.values())
    assert ev.record.details["retrieval"]["task"] == "retrieval"
    tests = res.record.details["pairwise"][f"folder:{folder}"]["retrieval"]
    assert len(tests) == 1 and tests[0]["metric"] == "recall@1" and "p_bootstrap_holm" in tests[0]
    board = res.leaderboard(f"folder:{folder}", "retrieval")
    assert board[0]["metric"] == "recall@1"
    back = RunRecord.load(ev.path)
    assert back.metrics["retrieval"] == json.loads(json.dumps(m))


@pytest.fixture(scope="module")
def mosaic_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mosaic")
    return vitlab.compare(["demo:fmnist-vit", "random:demo:fmnist-vit"], "sample:fashion-mnist-mosaic",
                          protocols="seg-linear:Cs=[0.1,1.0],max_train_pixels=20000,seg-knn",
                          cache_dir=tmp / "c", out=tmp / "runs", **FAST), tmp


def test_dense_probes_on_the_mosaic_sample(mosaic_runs):
    res, _ = mosaic_runs
    demo = res.runs[("sample:fashion-mnist-mosaic", "demo:fmnist-vit")].record
    rand = res.runs[("sample:fashion-mnist-mosaic", "random:demo:fmnist-vit")].record
    src = vitlab.load_source("sample:fashion-mnist-mosaic")
    labelled = np.concatenate([src.mask(i).ravel() for i in range(len(src))])
    labelled = labelled[labelled != src.ignore_index]
    background_share = float((labelled == 0).mean())  # accuracy of painting every pixel background
    for proto in ("seg-linear", "seg-knn"):
        m = demo.metrics[proto]
        assert {"miou", "mdice", "pixel_accuracy"} == set(m)
        assert all(v["low"] <= v["value"] <= v["high"] for v in m.values())
        d = demo.details[proto]
        assert d["mask_sizes"] == [[56, 56]] and d["grid"] == [7, 7] and len(d["per_class_iou"]) == 11
        assert m["pixel_accuracy"]["low"] > background_share
        assert len(d["examples"]) == 6 and np.asarray(d["examples"][0]["pred"]).shape == (56, 56)
    # training-free label transfer: the trained demo ViT's patch tokens beat a random-init copy of it,
    # significantly (measured: +0.028 mIoU, 95% CI [0.014, 0.037] at 200 resamples)
    t = res.record.details["pairwise"]["sample:fashion-mnist-mosaic"]["seg-knn"][0]
    assert t["metric"] == "miou" and t["a"] == "demo:fmnist-vit" and t["low"] > 0 and t["significant"]
    assert demo.metrics["seg-knn"]["miou"]["value"] > rand.metrics["seg-knn"]["miou"]["value"]


def test_dense_probes_need_masks_and_patch_tokens(tmp_path, folder):
    with pytest.raises(DataError, match="has no segmentation masks, needed by seg-knn"):
        vitlab.evaluate("demo:fmnist-vit", f"folder:{folder}", protocols="seg-knn", cache_dir=tmp_path, **FAST)
    with pytest.raises(ConfigError, match="seg-linear works on patch tokens, and pixels:28 has none"):
        vitlab.evaluate("pixels", "sample:fashion-mnist-mosaic", protocols="seg-linear", cache_dir=tmp_path, **FAST)
    with pytest.raises(DataError, match="has no labels, needed by knn"):
        vitlab.evaluate("demo:fmnist-vit", "sample:fashion-mnist-mosaic", protocols="knn", cache_dir=tmp_path, **FAST)
    assert not (tmp_path / "embeddings").exists() or not any((tmp_path / "embeddings").iterdir())


def test_zero_shot_beside_knn_on_the_same_split(folder, tmp_path):
    res = vitlab.evaluate("random:open_clip:ViT-S-32", f"folder:{folder}", protocols="zeroshot:templates=simple,knn",
                          cache_dir=tmp_path, **FAST)
    zs, knn = res.results["zeroshot"], res.results["knn"]
    assert zs.units == knn.units and zs.outputs["proba"].shape == (len(zs.units), 3)
    m = res.record.metrics["zeroshot"]["top1"]
    assert m["low"] <= m["value"] <= m["high"]
    assert res.record.details["zeroshot"]["classnames"] == ["a", "b", "c"]
    (pair,) = res.record.details["protocol_pairs"]  # zero-shot against the probe, on the same test images
    assert (pair["a"], pair["b"], pair["metric"]) == ("zeroshot", "knn", "top1")
    assert pair["low"] <= pair["diff"] <= pair["high"] and 0 < pair["p_mcnemar_holm"] <= 1
    assert list((tmp_path / "text").glob("*.npz"))  # the prompt embeddings were cached
    with pytest.raises(ConfigError, match="needs an image–text backbone with a text tower; demo:fmnist-vit"):
        vitlab.evaluate("demo:fmnist-vit", f"folder:{folder}", protocols="zeroshot", cache_dir=tmp_path, **FAST)


def test_retrieval_with_manifest_roles_and_positives(folder, tmp_path):
    import csv

    files = sorted(folder.rglob("*.png"))[::4][:12]  # across the three classes

    def write(positives_of_both: str) -> Path:
        rows = []
        for i, f in enumerate(files):
            role = "query" if i < 3 else ("both" if i == 3 else "gallery")
            pos = f"img{i + 4};img3" if i < 3 else (positives_of_both if i == 3 else "")
            rows.append({"path": str(f), "id": f"img{i}", "role": role, "positives": pos})
        manifest = tmp_path / "m.csv"
        with open(manifest, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        return manifest

    manifest = write("img5")
    res = vitlab.evaluate("pixels:8", f"csv:{manifest}", protocols="retrieval:ks=[1,5]", cache_dir=tmp_path / "c",
                          **FAST)
    r = res.results["retrieval"]
    assert r.units == ["img0", "img1", "img2", "img3"]  # the 'query' rows and the 'both' row
    d = res.record.details["retrieval"]
    assert d["n_gallery"] == 9 and d["queries_in_gallery"] == 1
    ex = {e["id"]: e for e in d["examples"]}
    assert "img3" not in [x["id"] for x in ex["img3"]["results"]]  # a query never retrieves itself
    per = r.outputs["per_query"]
    assert ((per["precision@5"] * 5)[:3] <= 2).all() and (per["precision@5"][3] * 5) <= 1  # only listed positives
    write("")  # the 'both' row is now a query without positives
    with pytest.raises(DataError, match=r"have no relevant item in the gallery \(first: img3\)"):
        vitlab.evaluate("pixels:8", f"csv:{manifest}", protocols="retrieval", cache_dir=tmp_path / "c", **FAST)
