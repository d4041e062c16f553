"""vitlab explore: the page's data against vitlab's own search, split and probe; the page file; bad input; the
record in the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import vitlab
from tests.integration.explore_helpers import SCRIPT_ID, hostile_manifest
from vitlab.cli import app
from vitlab.errors import ConfigError
from vitlab.neighbors import search
from vitlab.record import RunRecord

runner = CliRunner()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return hostile_manifest(tmp_path_factory.mktemp("explore"))


@pytest.fixture(scope="module")
def run(manifest, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    page = tmp_path_factory.mktemp("page") / "explore.html"
    res = vitlab.explore("demo:fmnist-vit", f"csv:{manifest}", page=page, layout="pca", k=5, seed=1,
                         n_resamples=200, cache_dir=cache, progress=False, num_workers=0)
    return res, cache


def test_neighbours_split_and_predictions_are_vitlabs_own(run, manifest):
    res, cache = run
    d = res.data
    emb = vitlab.embed("demo:fmnist-vit", f"csv:{manifest}", cache_dir=cache, progress=False, num_workers=0)
    X = np.array(emb.get(), np.float32)
    ref = search(X, X, 5, metric="cosine", exclude_self=True)
    assert np.array_equal(d.nn_idx, ref.indices) and np.allclose(d.nn_sim, ref.scores, atol=1e-6)
    assert d.ids == list(emb.ids) and len(d) == 36 and d.xy.shape == (36, 2)
    split = emb.splits(seed=1)
    assert d.split.tolist() == split.tolist()
    ev = vitlab.evaluate("demo:fmnist-vit", f"csv:{manifest}", protocols="linear", seed=1, n_resamples=200,
                         cache_dir=cache, progress=False, num_workers=0)
    want = np.full(36, -1)
    want[[d.ids.index(i) for i in ev.test_ids]] = ev.results["linear"].outputs["proba"].argmax(1)
    assert d.pred.tolist() == want.tolist() and (d.pred[split == "test"] >= 0).all()
    top1 = res.record.metrics["linear"]["top1"]
    assert top1 == ev.record.metrics["linear"]["top1"]
    assert top1["value"] == pytest.approx(np.mean(d.pred[split == "test"] == d.labels[split == "test"]))
    assert d.paths is not None and d.paths[0].endswith(".png") and d.labels.tolist().count(0) == 12


def test_record_is_valid_and_names_the_layout(run):
    res, _ = run
    r = res.record
    r.validate()
    assert r.kind == "explore" and r.seeds == {"layout": 1, "split": 1, "probe": 1}
    assert r.config["layout"] == {"method": "pca", "metric": "cosine", "fit_sample": 20000, "seed": 1}
    lay = r.details["layout"]
    assert lay["fitted"] == 36 and lay["transformed"] == 0 and lay["library"] == "scikit-learn"
    assert {"embeddings", "backbone", "data"} <= set(r.fingerprints)
    assert r.details["map_sample"]["n"] == 36 and len(r.details["map_sample"]["label"]) == 36


def test_the_layout_is_cached_under_the_embeddings(run, manifest):
    res, cache = run
    again = vitlab.explore("demo:fmnist-vit", f"csv:{manifest}", layout="pca", k=5, seed=1, n_resamples=200,
                           cache_dir=cache, progress=False, num_workers=0)
    assert again.layout.info["from_cache"] is True and np.array_equal(again.data.xy, res.data.xy)
    assert again.record.run_id == res.record.run_id
    other = vitlab.explore("demo:fmnist-vit", f"csv:{manifest}", layout="pca", k=5, seed=1, n_resamples=200,
                           layers=-2, cache_dir=cache, progress=False, num_workers=0)
    assert other.layout.info["from_cache"] is False


def test_page_is_one_file_with_escaped_strings_and_thumbnails(run, manifest, tmp_path):
    from vitlab.report.explore_page import _thumb, write_explore_page

    res, _ = run
    info = write_explore_page(res)
    html = res.page.read_text(encoding="utf-8")
    assert info["n_points"] == 36 and info["n_thumbnails"] == 36 and info["bytes"] == len(html.encode())
    assert SCRIPT_ID not in html and "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in html
    assert "http://" not in html and "https://" not in html and "<canvas id=map>" in html
    payload = json.loads(html.split('id="vitlab-data">')[1].split("</script>")[0])
    src = vitlab.load_source(f"csv:{manifest}")
    r = 7
    assert payload["thumbs"][payload["thumbRows"].index(r)] == _thumb(src.load_image(int(res.data.index[r])), 64)
    assert res.record.details["page"]["n_thumbnails"] == 36
    with pytest.raises(ConfigError, match="already exists and is not overwritten"):
        write_explore_page(res)
    res.max_thumbs = 10
    small = write_explore_page(res, tmp_path / "small.html")
    payload = json.loads((tmp_path / "small.html").read_text().split('id="vitlab-data">')[1].split("</script>")[0])
    assert small["n_thumbnails"] == 10 and len(payload["thumbRows"]) == 10 and payload["n"] == 36
    assert len(payload["ids"]) == 36 and "seeded sample of 10 of 36" in (tmp_path / "small.html").read_text()


def _cli(*args):
    return runner.invoke(app, ["explore", *map(str, args)])


def test_cli_json_is_one_document_and_the_report_shows_it(manifest, tmp_path):
    page, runs = tmp_path / "e.html", tmp_path / "runs"
    res = _cli("-b", "demo:fmnist-vit", "-d", f"csv:{manifest}", "--output", page, "--layout", "pca", "--k", 4,
               "--n-resamples", 100, "--num-workers", 0, "--cache-dir", tmp_path / "c", "--out", runs, "--json",
               "--quiet")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["kind"] == "explore" and doc["details"]["page"]["n_points"] == 36 and page.is_file()
    rec = RunRecord.load(next(runs.glob("explore-*.json")))
    assert rec.run_id == RunRecord.from_dict(doc).run_id
    rep = runner.invoke(app, ["report", str(runs), "-o", str(tmp_path / "report.html")])
    assert rep.exit_code == 0, rep.output
    html = (tmp_path / "report.html").read_text()
    assert "Embedding explorer" in html and page.resolve().as_uri() in html and "<script" not in html
    assert "36 of 36 points" in html


def _no_work(cache):
    emb = cache / "embeddings"
    return not emb.exists() or not any(emb.iterdir())


@pytest.mark.parametrize("case, message", [
    ("few", "has 36 items, fewer than UMAP needs (more than n_neighbors=40). Pass --neighbors 35 or less, or "
            "--layout pca."),
    ("exists", "the file already exists and is not overwritten"),
    ("unwritable", "cannot be created because"),
    ("k", "k=36 neighbours per item needs more than 36 items"),
    ("probe", "has no labels, needed by --probe linear"),
    ("issues", "has no labels, and --label-issues looks for wrong labels"),
    ("umap", "--layout umap needs umap-learn, which is not installed: pip install 'vitlab[explore]'"),
])
def test_bad_input_is_one_line_before_any_work(case, message, manifest, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    page = tmp_path / "e.html"
    data = f"csv:{manifest}"
    extra = ["--layout", "pca"]
    if case == "few":
        extra = ["--neighbors", 40]
    elif case == "exists":
        page.write_text("mine")
    elif case == "unwritable":
        (tmp_path / "f").write_text("a file")
        page = tmp_path / "f" / "e.html"
    elif case == "k":
        extra += ["--k", 36]
    elif case in ("probe", "issues"):
        data = f"csv:{hostile_manifest(tmp_path / 'u', n_per_class=4, labelled=False)}"
        extra += ["--probe", "linear"] if case == "probe" else ["--label-issues", "--probe", "none"]
    elif case == "umap":
        import importlib.util

        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "umap" else real(n, *a))
        extra = []
    res = _cli("-b", "demo:fmnist-vit", "-d", data, "--output", page, "--cache-dir", cache, *extra)
    out = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert out.startswith("error: ") and message in out and "Traceback" not in out
    assert _no_work(cache)
    assert case == "exists" and page.read_text() == "mine" or not page.exists()


def _label_issues_or_skip():
    from vitlab.exploration.issues import label_issues_module

    if label_issues_module() is None:
        pytest.skip("vitlab.curation.label_issues is not in this build yet")
    pytest.importorskip("cleanlab")


def test_label_issue_colours_come_from_find_label_issues(manifest, tmp_path):
    _label_issues_or_skip()
    from vitlab.curation.label_issues import find_label_issues
    from vitlab.report.explore_page import page_payload

    cache = tmp_path / "c"
    res = vitlab.explore("demo:fmnist-vit", f"csv:{manifest}", layout="pca", probe=None, label_issues=True, folds=3,
                         seed=2, cache_dir=cache, progress=False, num_workers=0, max_thumbs=0)
    emb = vitlab.embed("demo:fmnist-vit", f"csv:{manifest}", cache_dir=cache, progress=False, num_workers=0)
    li = find_label_issues(np.array(emb.get(), np.float32), emb.labels, folds=3, seed=2)
    cols = res.data.issues
    assert np.array_equal(cols["is_issue"], li.is_issue) and np.allclose(cols["score"], 1 - li.self_confidence)
    assert np.array_equal(cols["suggested"], li.suggested) and np.array_equal(cols["rank"], li.rank)
    assert res.record.details["label_issues"]["n_issues"] == int(li.is_issue.sum())
    payload = page_payload(res)
    assert payload["issues"]["flag"] == li.is_issue.astype(int).tolist()


def test_a_class_smaller_than_the_folds_is_refused_before_any_work(manifest, tmp_path):
    _label_issues_or_skip()
    res = _cli("-b", "demo:fmnist-vit", "-d", f"csv:{manifest}", "--output", tmp_path / "e.html", "--layout", "pca",
               "--label-issues", "--folds", 13, "--cache-dir", tmp_path / "c")
    assert res.exit_code == 2 and "fewer than --folds 13" in " ".join(res.output.split())
    assert _no_work(tmp_path / "c") and not (tmp_path / "e.html").exists()


def _dup_manifest(root):
    """The hostile manifest plus two more rows showing image 0's file (an exact-duplicate group of three)."""
    import csv as _csv

    m = hostile_manifest(root)
    rows = list(_csv.reader(open(m, newline="")))
    rows += [[rows[1][0], rows[1][1], "dup-a"], [rows[1][0], rows[1][1], "dup-b"]]
    with open(m, "w", newline="") as fh:
        _csv.writer(fh).writerows(rows)
    return m


def test_duplicate_groups_come_from_a_curate_record(tmp_path):
    pytest.importorskip("imagehash")
    m = _dup_manifest(tmp_path / "d")
    cache, runs = tmp_path / "c", tmp_path / "runs"
    cur = vitlab.curate("demo:fmnist-vit", f"csv:{m}", threshold=0.99, leakage=False, cache_dir=cache, out=runs,
                        progress=False, num_workers=0)
    rec_path = cur.path
    res = vitlab.explore("demo:fmnist-vit", f"csv:{m}", layout="pca", probe=None, duplicates=rec_path,
                         cache_dir=cache, progress=False, num_workers=0)
    d = res.data
    trio = [d.ids.index(s) for s in ("img-000", "dup-a", "dup-b")]
    assert d.dup[trio[0]] >= 0 and len(set(d.dup[trio].tolist())) == 1
    assert (d.dup >= 0).sum() == res.record.details["duplicates"]["n_items"] >= 3
    assert res.record.config["duplicates"] == str(rec_path)


def test_a_duplicates_record_of_other_data_or_kind_is_refused(manifest, tmp_path):
    from vitlab.errors import DataError

    other = RunRecord("curate", {}, {}, fingerprints={"data": {"fingerprint": "not-this-data"}},
                      details={"exact": {"groups": [["img-000", "img-001"]]}}).save(tmp_path)
    with pytest.raises(DataError, match="that curate run saw other data than csv:"):
        vitlab.explore("demo:fmnist-vit", f"csv:{manifest}", layout="pca", probe=None, duplicates=other,
                       cache_dir=tmp_path / "c", progress=False, num_workers=0)
    ev = RunRecord("eval", {}, {}).save(tmp_path / "e")
    res = _cli("-b", "demo:fmnist-vit", "-d", f"csv:{manifest}", "--output", tmp_path / "x.html", "--layout", "pca",
               "--duplicates", ev, "--cache-dir", tmp_path / "c2")
    assert res.exit_code == 2 and "a 'eval' run record, not a curate one" in " ".join(res.output.split())
    assert _no_work(tmp_path / "c2")


def test_unlabelled_data_gets_a_map_without_probe_colours(tmp_path):
    from vitlab.report.explore_page import page_payload, render_explore_page

    m = hostile_manifest(tmp_path / "u", n_per_class=4, labelled=False)
    res = vitlab.explore("demo:fmnist-vit", f"csv:{m}", layout="pca", k=3, cache_dir=tmp_path / "c", progress=False,
                         num_workers=0)
    assert res.record.config["probe"] is None and res.data.labels is None and res.data.pred is None
    p = page_payload(res)
    assert p["labels"] is None and p["pred"] is None and p["split"] is None and p["n"] == 12
    html, _ = render_explore_page(res)
    assert '<option value="pred" disabled' in html and '<option value="label" disabled' not in html
