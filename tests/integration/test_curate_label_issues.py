"""``vitlab curate --label-issues`` end to end (issue 23 §3): a csv: manifest of real images with planted wrong
labels, the ranked list in the record, the manifest with ``issue`` and ``suggested_label`` columns, the report
section, and bad input as one line (exit 2)."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import vitlab
from vitlab.cli import app

pytest.importorskip("cleanlab")
runner = CliRunner()
B = "demo:fmnist-vit"
CLASSES = (1, 7, 8)  # trouser, sneaker, bag: the demo model tells them apart


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("labels")
    fm = vitlab.load_source("sample:fashion-mnist")
    rows, rng = [], np.random.default_rng(0)
    for c in CLASSES:
        for j, i in enumerate(np.flatnonzero(np.asarray(fm.labels) == c)[:20]):
            name = f"c{c}_{j:02d}.png"
            fm.load_image(int(i)).save(root / name)
            rows.append([name, fm.classes[c]])
    planted = rng.choice(len(rows), 4, replace=False)
    names = [fm.classes[c] for c in CLASSES]
    for r in planted:
        rows[r][1] = names[(names.index(rows[r][1]) + 1) % 3]
    m = root / "labels.csv"
    with open(m, "w", newline="") as fh:
        csv.writer(fh).writerows([["path", "label"], *rows])
    return m, {rows[r][0] for r in planted}, tmp_path_factory.mktemp("labels-cache")


def _args(m, cache, *extra):
    return ["curate", "-b", B, "-d", f"csv:{m}", "--label-issues", "--label-method", "knn", "--folds", "4",
            "--no-dedup", "--no-leakage", "--threshold", "0.99", "--cache-dir", str(cache), "--num-workers", "0",
            *extra]


def test_label_issues_rank_the_planted_errors_and_write_a_new_manifest(labelled, tmp_path):
    m, planted, cache = labelled
    before = m.read_bytes()
    out = tmp_path / "relabel.csv"
    res = runner.invoke(app, _args(m, cache, "--write-manifest", str(out), "--json"))
    assert res.exit_code == 0, res.stderr
    li = json.loads(res.stdout)["details"]["label_issues"]
    flagged = {it["id"].rsplit("/", 1)[-1] for it in li["items"]}
    assert len(planted & flagged) >= 3 and len(flagged) <= 2 * len(planted), (planted, flagged)
    conf = [it["self_confidence"] for it in li["items"]]
    assert conf == sorted(conf) and [it["rank"] for it in li["items"]] == list(range(len(conf)))
    assert li["method"] == "knn" and li["folds"] == 4 and li["n"] == 60 and li["n_issues"] == len(flagged)
    for it in li["items"]:
        assert it["given"] != it["suggested"] or it["self_confidence"] < 0.5
    # the manifest: every kept row, the given label untouched, issue / suggested_label columns; reads back
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 60 and {"path", "label", "issue", "suggested_label", "self_confidence"} <= set(rows[0])
    issue_rows = {r["path"].rsplit("/", 1)[-1] for r in rows if r["issue"] == "true"}
    assert issue_rows == flagged
    given = {r[0]: r[1] for r in csv.reader(open(m))}
    assert all(r["label"] == given[r["path"].rsplit("/", 1)[-1]] for r in rows)
    assert len(vitlab.load_source(f"csv:{out}")) == 60
    assert m.read_bytes() == before  # the user's manifest is never touched
    # never over the user's file
    again = runner.invoke(app, _args(m, cache, "--write-manifest", str(m)))
    assert again.exit_code == 2 and "is an input of this command" in again.stderr  # the output rule, before work
    again = runner.invoke(app, _args(m, cache, "--write-manifest", str(out)))  # an earlier output: not replaced
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert m.read_bytes() == before


def test_label_issues_in_the_report_with_thumbnails(labelled, tmp_path):
    m, _, cache = labelled
    res = vitlab.curate(B, f"csv:{m}", label_issues=True, label_method="knn", folds=4, dedup=False, leakage=False,
                        threshold=0.99, cache_dir=cache, num_workers=0, progress=False)
    html = vitlab.report.render_html([res.record], tmp_path / "r.html").read_text()
    assert "Label issues" in html and "suggested label" in html
    n = len(res.record.details["label_issues"]["items"])
    assert n >= 4 and html.count("data:image/png;base64,") >= n


@pytest.mark.parametrize("case, msg", [
    ("no-labels", "has no labels: --label-issues"),
    ("small-class", "fewer than --folds 4"),
    ("no-cleanlab", "pip install 'vitlab[curate]'"),
])
def test_label_issue_bad_input_is_one_line(case, msg, labelled, tmp_path, monkeypatch):
    m, _, cache = labelled
    if case == "no-labels":
        for i, line in enumerate(open(m).read().splitlines()[1:6]):
            (tmp_path / f"{i}.png").write_bytes((m.parent / line.split(",")[0]).read_bytes())
        data = tmp_path
        args = _args(m, cache)
        args[args.index("-d") + 1] = f"folder:{data}"
    elif case == "small-class":
        lines = open(m).read().splitlines()
        small = tmp_path / "small.csv"
        small.write_text("\n".join([lines[0]] + [f"{m.parent / ln.split(',')[0]},{ln.split(',')[1]}"
                                                  for ln in lines[1:21] + lines[41:44]]) + "\n")
        args = _args(small, cache)
    else:
        monkeypatch.setitem(sys.modules, "cleanlab", None)
        monkeypatch.setitem(sys.modules, "cleanlab.filter", None)
        args = _args(m, cache)
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.stderr
    assert msg in res.stderr and res.stderr.count("error:") == 1


def test_label_issue_section_escapes_user_strings():
    from vitlab.record import RunRecord
    from vitlab.report import curate_section  # noqa: F401  (registers the section)
    from vitlab.report.base import SECTIONS, RenderContext

    bad = "<script>alert(1)</script>"
    li = {"method": "knn", "folds": 5, "grouped": False, "filter_by": "prune_by_noise_rate", "n": 3, "n_issues": 1,
          "fraction_issues": 1 / 3, "oof_accuracy": 0.5, "items": [{"row": 0, "id": bad, "given": bad, "suggested": "b",
                                                                    "self_confidence": 0.1, "rank": 0}]}
    rec = RunRecord("curate", {"data": "x", "backbone": "b", "threshold_used": 0.9}, {},
                    details={"data": {"n": 3}, "label_issues": li})
    html = SECTIONS["curate"][1]([rec], RenderContext([rec], load_images=False))
    assert "Label issues" in html and bad not in html and "&lt;script&gt;" in html
