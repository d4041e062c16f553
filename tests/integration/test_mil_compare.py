"""MIL across backbones (`vitlab compare --protocol mil-<head>`), the held-out K-fold ensemble, and
attention heat maps on tile coordinates, on image bags built from real Fashion-MNIST items."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import vitlab
from vitlab.cli import app
from vitlab.data import load_source
from vitlab.errors import ConfigError, DataError

FAST = dict(progress=False, num_workers=0)
RECIPE = "epochs=20,min_epochs=5,patience=5,lr=1e-3"  # MIL protocols take their recipe as protocol parameters


@pytest.fixture(scope="module")
def bag_dir(tmp_path_factory):
    """36 bags of 6 tiles on a 3 x 2 grid: positive when a 'Bag' (class 8) item is among them; 30 bags of
    15 patients for cross-validation and 6 bags (of 3 patients) marked split=test."""
    d = tmp_path_factory.mktemp("bags")
    src = load_source("sample:fashion-mnist")
    labels = np.asarray(src.labels)
    rng = np.random.default_rng(0)
    key, other = np.flatnonzero(labels == 8), np.flatnonzero(labels != 8)
    rows = ["bag_id,label,patient_id,split,path,x,y,instance_label"]
    used = 0
    for b in range(36):
        y = b % 2
        items = list(rng.choice(other, 6, replace=False))
        if y:
            items[int(rng.integers(6))] = int(rng.choice(key))
        for j, i in enumerate(items):
            name = f"t{used}.png"
            used += 1
            src.load_image(int(i)).save(d / name)
            rows.append(f"b{b},{'tumour' if y else 'normal'},p{b // 2},{'test' if b >= 30 else 'train'},{name},"
                        f"{256 * (j % 3)},{256 * (j // 3)},{int(labels[i] == 8)}")
    (d / "bags.csv").write_text("\n".join(rows) + "\n")
    return d


@pytest.fixture(scope="module")
def compared(bag_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    res = vitlab.compare(["demo:fmnist-vit", "pixels"], f"bags:{bag_dir / 'bags.csv'}",
                         protocols=f"mil-abmil:{RECIPE},mil-mean:{RECIPE}", n_resamples=200,
                         cache_dir=tmp_path_factory.mktemp("cache"), out=out, **FAST)
    return res, out


def test_compare_ranks_backbones_on_auroc_with_paired_tests_on_the_same_folds(compared, bag_dir):
    res, _ = compared
    ds = f"bags:{bag_dir / 'bags.csv'}"
    rec = res.record
    assert rec.config["protocols"] == ["mil-abmil", "mil-abmil@test", "mil-mean", "mil-mean@test"]
    board = rec.details["leaderboards"][ds]["mil-abmil"]
    assert [r["metric"] for r in board] == ["auroc", "auroc"]
    assert {r["backbone"] for r in board} == {"demo:fmnist-vit", "pixels:28"}
    runs = list(res.runs.values())
    # the same patient-grouped folds for both backbones, so the out-of-fold predictions pair bag by bag
    folds = [r.results["mil-abmil"].details["cv"]["fold"] for r in runs]
    assert folds[0] == folds[1]
    assert runs[0].results["mil-abmil"].units == runs[1].results["mil-abmil"].units
    (t,) = rec.details["pairwise"][ds]["mil-abmil"]
    assert {"p_bootstrap", "p_mcnemar", "p_delong", "p_delong_holm"} <= set(t)
    # DeLong on the pooled out-of-fold AUROCs, recomputed from the stored probabilities
    from vitlab.stats.paired import delong_test

    ra, rb = (res.runs[(ds, t["a"])].results["mil-abmil"], res.runs[(ds, t["b"])].results["mil-abmil"])
    p = delong_test(ra.outputs["y"], ra.outputs["proba"][:, 1], rb.outputs["proba"][:, 1]).p_value
    assert t["p_delong"] == pytest.approx(p)
    for r in runs:
        assert r.record.details["data"]["n_bags"] == 36 and r.record.config["n_test_bags"] == 6


def test_held_out_test_bags_are_scored_by_the_fold_ensemble_only(compared):
    res, _ = compared
    run = next(iter(res.runs.values()))
    cv_units = set(run.results["mil-abmil"].units)
    test_units = run.results["mil-abmil@test"].units
    assert len(test_units) == 6 and not cv_units & set(test_units) and len(cv_units) == 30
    ens = run.record.details["mil-abmil@test"]["ensemble"]
    assert ens["n_models"] == run.record.config["folds"] == 5
    for m, g in ens["gain"].items():
        assert g["low"] <= g["value"] <= g["high"]
        assert g["value"] == pytest.approx(g["ensemble"] - np.mean(ens["single_models"][m]))
    assert run.record.metrics["mil-abmil@test"]["auroc"]["value"] == pytest.approx(ens["gain"]["auroc"]["ensemble"])


def test_attention_heat_maps_use_the_tile_coordinates_and_the_report_draws_them(compared, tmp_path):
    from vitlab.report import render_html

    res, out = compared
    run = next(r for r in res.runs.values() if r.record.config["backbone"] == "demo:fmnist-vit")
    ex = run.record.details["mil-abmil"]["attention_examples"][0]
    hm = ex["heatmap"]
    assert sorted(set(hm["x"])) == [0, 256, 512] and sorted(set(hm["y"])) == [0, 256]
    assert np.sum(hm["attention"]) == pytest.approx(ex["size"], rel=1e-3)  # attention x bag size sums to n
    page = render_html([r.record for r in res.runs.values()] + [res.record], tmp_path / "r.html").read_text()
    assert f'alt="attention heat map of bag {ex["bag"]}"' in page
    assert "Held-out test: the K fold models as one ensemble" in page
    assert "30 bags of 15 patients" not in page and "36 bags of 18 patients" in page
    assert "layer None" not in page


def test_the_cli_compares_mil_heads_between_backbones(bag_dir, tmp_path):
    r = CliRunner().invoke(app, ["compare", "--backbone", "demo:fmnist-vit,pixels", "--data",
                                 f"bags:{bag_dir / 'bags.csv'}", "--protocol", "mil-mean", "--n-resamples", "50",
                                 "--cache-dir", str(tmp_path / "c"), "--json", "--quiet"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["kind"] == "compare" and doc["config"]["protocols"] == ["mil-mean", "mil-mean@test"]


def test_bad_mil_compare_inputs_are_one_line_each(bag_dir, tmp_path):
    with pytest.raises(ConfigError, match="cannot be mixed with instance protocols"):
        vitlab.compare(["demo:fmnist-vit", "pixels"], f"bags:{bag_dir / 'bags.csv'}", protocols="mil-abmil,knn")
    with pytest.raises(Exception, match="abmill"):
        vitlab.compare(["demo:fmnist-vit", "pixels"], f"bags:{bag_dir / 'bags.csv'}", protocols="mil-abmill")
    with pytest.raises(ConfigError, match="is not a bag source"):
        vitlab.compare(["demo:fmnist-vit", "pixels"], "sample:fashion-mnist", protocols="mil-abmil",
                       cache_dir=tmp_path)


def test_a_partial_coordinate_column_is_one_clear_line(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("bag_id,label,path,x\nb1,1,a.png,0\n")
    with pytest.raises(DataError, match="column 'x' without 'y'"):
        load_source(f"bags:{tmp_path / 'm.csv'}")
    (tmp_path / "m.csv").write_text("bag_id,label,path,x,y\nb1,1,a.png,0,left\n")
    with pytest.raises(DataError, match=r"line 2: y 'left' is not a finite number"):
        load_source(f"bags:{tmp_path / 'm.csv'}")
