"""vitlab.mil_eval / `vitlab mil`: patient-grouped K-fold MIL with patient CIs, on the bundled bag sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import vitlab
from vitlab.cli import app
from vitlab.errors import DataError

FAST = dict(folds=3, epochs=25, min_epochs=5, patience=5, lr=1e-3, n_resamples=200, progress=False, num_workers=0)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    return vitlab.mil_eval("demo:fmnist-vit", "sample:fashion-mnist-bags", heads="abmil,mean",
                           cache_dir=tmp_path_factory.mktemp("mil"), **FAST)


def test_abmil_beats_mean_pooling_and_finds_the_key_instances(sample_run):
    rec = sample_run.record
    assert rec.config["protocols"] == ["mil-abmil", "mil-mean"] and rec.config["bootstrap_unit"] == "patient"
    for label in ("mil-abmil", "mil-mean"):
        for m in ("auroc", "balanced_accuracy", "macro_f1"):
            v = rec.metrics[label][m]
            assert v["low"] <= v["value"] <= v["high"] and v["method"] == "cluster-percentile"
        assert len(rec.details[label]["per_fold"]["auroc"]["folds"]) == 3
    # out-of-fold, every bag predicted once by a model that never saw its patient
    res = sample_run.results["mil-abmil"]
    assert len(res.units) == len(set(res.units)) == rec.details["data"]["n_bags"] == 200
    pair = next(p for p in rec.details["protocol_pairs"] if {p["a"], p["b"]} == {"mil-abmil", "mil-mean"})
    assert pair["a"] == "mil-abmil" and pair["diff"] > 0 and pair["low"] > 0  # paired: ABMIL better on top-1
    assert rec.metrics["mil-abmil"]["balanced_accuracy"]["value"] > rec.metrics["mil-mean"]["balanced_accuracy"]["value"]
    assert rec.details["mil-abmil"]["instance_auroc_of_attention"] > 0.9
    assert rec.details["mil-mean"]["instance_auroc_of_attention"] is None
    ex = rec.details["mil-abmil"]["attention_examples"][0]
    assert ex["top"][0]["attention"] >= ex["bottom"][0]["attention"] and ex["top"][0]["id"].startswith(ex["bag"])


def test_feature_bags_and_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    rows = ["bag_id,label,patient_id,features"]
    for b in range(24):
        y = b % 2
        n = int(rng.integers(5, 15))
        x = rng.normal(size=(n, 8)).astype(np.float32)
        if y:
            x[0] += 4.0  # one key instance
        np.save(tmp_path / f"b{b}.npy", x)
        rows.append(f"b{b},{'pos' if y else 'neg'},p{b // 2},b{b}.npy")
    (tmp_path / "bags.csv").write_text("\n".join(rows) + "\n")
    res = CliRunner().invoke(app, ["mil", "--data", f"bags:{tmp_path / 'bags.csv'}", "--head", "abmil,max",
                                   "--folds", "3", "--epochs", "15", "--n-resamples", "100", "--lr", "1e-3",
                                   "--cache-dir", str(tmp_path / "c"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["config"]["backbone"] == "features" and set(doc["metrics"]) == {"mil-abmil", "mil-max"}
    assert doc["details"]["data"]["n_patients"] == 12


def test_not_a_bag_source_is_one_clear_line(tmp_path):
    with pytest.raises(DataError, match="is not a bag source: MIL needs bags:<manifest>"):
        vitlab.mil_eval("demo:fmnist-vit", "sample:fashion-mnist", cache_dir=tmp_path, **FAST)


def test_the_report_shows_where_the_head_looks(sample_run, tmp_path):
    from vitlab.report import render_html

    page = render_html([sample_run.record], tmp_path / "mil.html").read_text(encoding="utf-8")
    assert "Where mil-abmil looks" in page and "Where mil-mean looks" not in page
    ex = sample_run.record.details["mil-abmil"]["attention_examples"][0]
    assert f'alt="{ex["top"][0]["id"]}"' in page  # the most attended tile is shown as an image
    assert "attention ranks the key instances above the others with AUROC" in page
    assert "leaderboard" in page.lower() and "mil-abmil" in page
