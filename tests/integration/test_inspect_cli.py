"""``vitlab inspect`` and ``vitlab robust``: one JSON document on stdout, an HTML report, bad input as one line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vitlab.cli import app

runner = CliRunner()


def test_inspect_artefacts_json_and_report(tmp_path):
    res = runner.invoke(app, ["inspect", "--backbone", "demo:fmnist-vit", "--data", "sample:fashion-mnist",
                              "--maps", "attention,rollout,gradcam,pca", "--artefacts", "--json", "--n-images", "3",
                              "--n-resamples", "100", "--out", str(tmp_path / "runs"), "-o", str(tmp_path / "i.html"),
                              "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # exactly one document: notes went to stderr
    assert doc["kind"] == "inspect" and doc["config"]["maps"] == ["attention", "rollout", "gradcam", "pca"]
    assert "randomisation_spearman" in doc["metrics"] and "artefacts" in doc["details"]
    maps = doc["details"]["maps"]
    assert len(maps["rollout"]) == 3 and len(maps["rollout"][0]) == 7
    assert [len(maps["attention"]), len(maps["attention"][0])] == [3, 6]  # [n, L, h, w], mean over heads
    assert [len(maps["attention_heads"]), len(maps["attention_heads"][0])] == [6, 3]  # [L, H, h, w], first image
    assert "fitting a linear probe head" in res.stderr
    html = (tmp_path / "i.html").read_text()
    assert "Inspection: maps and artefact tokens" in html and 'alt="gradcam map"' in html
    assert list((tmp_path / "runs").glob("inspect-*.json")) and list((tmp_path / "cache" / "pca").glob("*.npz"))


def test_robust_prints_curves_and_attacks(tmp_path):
    res = runner.invoke(app, ["robust", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--corrupt",
                              "patch-drop", "--counts", "0,8", "--grid", "misaligned", "--attack", "pgd-patch,feature",
                              "--eps", "0,4/255", "--steps", "2", "--n-train", "60", "--n-test", "20",
                              "--n-attack", "4", "--n-resamples", "100", "--out", str(tmp_path),
                              "-o", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())  # tables go to the console (stderr), as in the other verbs
    assert "patch-drop" in out and "pgd-patch" in out and "feature" in out and "run record" in out
    assert "Robustness: patch corruptions and attacks" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("args,message", [
    (["inspect", "-b", "pixels:16", "-d", "sample:fashion-mnist", "--maps", "attention"],
     "pixels:16 cannot give the 'attention' map"),
    (["inspect", "-b", "demo:fmnist-vit", "-d", "photos:china", "--maps", "gradcam"],
     "the 'gradcam' map needs a probe head, and photos:china has no labels"),
    (["inspect", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--maps", "atention"],
     "unknown map 'atention'. Did you mean: attention?"),
    (["robust", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--eps", "0,2"],
     "epsilon 2 is out of range"),
    (["robust", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--eps", "0,x"],
     "--eps: 'x' is not a number"),
])
def test_bad_input_is_one_clear_line(args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
