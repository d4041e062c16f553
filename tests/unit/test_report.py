"""Report layer: HTML (self-contained, escaped, robust to moved data), Markdown, CSV and rich tables.

Real records come from ``vitlab.compare`` / ``vitlab.evaluate`` on a 48-image folder of four
hard-to-separate Fashion-MNIST classes with the cheap ``pixels`` pseudo-backbones.
"""

from __future__ import annotations

import base64
import copy
import csv
import html
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from vitlab.backbones import load_backbone
from vitlab.comparison import compare
from vitlab.data.sample import SampleSource
from vitlab.evaluation import evaluate
from vitlab.protocols import KNN, FewShot, Linear
from vitlab.report import (RunRecord, leaderboard_table, leaderboards, load_records, register_section, render_html,
                           to_csv, to_markdown)
from vitlab.report.figures import confusion_matrix_uri, thumbnail_uri
from vitlab.report.html import SECTIONS
from vitlab.report.tables import fmt, fmt_ci

CLASSES = (0, 2, 4, 6)  # T-shirt/top, Pullover, Coat, Shirt: pixels confuse them, so the gallery is non-empty
pytestmark = pytest.mark.filterwarnings("ignore:bootstrap:RuntimeWarning")
PROTOS = [KNN(ks=(3, 5)), Linear(Cs=(0.1, 1.0)), FewShot(shots=(1, 2), episodes=2)]
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def _write_folder(root: Path, n_per_class: int = 12) -> Path:
    src = SampleSource("fashion-mnist")
    for c in CLASSES:
        d = root / src.classes[c].replace("/", "-")
        d.mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(src.labels == c)[:n_per_class]):
            Image.fromarray(src.images[i]).save(d / f"{c}_{j:02d}.png")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(records, folder, out_dir)``: 2 eval + 1 compare record from compare, plus 1 unpaired eval record."""
    tmp = tmp_path_factory.mktemp("report")
    folder = _write_folder(tmp / "imgs")
    out, cache = tmp / "records", tmp / "cache"
    kw = dict(n_resamples=100, cache_dir=cache, out=out, progress=False, num_workers=0)
    compare(["pixels:8", "pixels:4"], f"folder:{folder}", protocols=PROTOS, **kw)
    vit = load_backbone("random:timm:vit_tiny_patch16_224", img_size=28, patch_size=4, depth=2)
    evaluate(vit, f"folder:{folder}", protocols=PROTOS[:1], **kw)
    return load_records(out), folder, out


def _clone(r: RunRecord) -> RunRecord:
    return RunRecord.from_dict(copy.deepcopy(r.to_dict()))


def _of(records, kind):
    return [r for r in records if r.kind == kind]


def _png_size(uri: str) -> tuple[int, int]:
    assert uri.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size


def test_html_is_self_contained_and_has_every_section(runs, tmp_path):
    records, folder, _ = runs
    path = render_html(records, tmp_path / "sub" / "report.html", title="demo")
    assert path.exists()
    page = path.read_text(encoding="utf-8")
    assert not EXTERNAL.search(page) and "<script" not in page.lower() and "<link" not in page.lower()
    assert "data:image/png;base64," in page
    evals = _of(records, "eval")
    assert {r.config["backbone"] for r in evals} == {"pixels:8", "pixels:4", "random:timm:vit_tiny_patch16_224"}
    for r in evals:
        assert r.config["backbone"] in page
        top1 = r.metrics["knn"]["top1"]
        assert f"[{fmt(top1['low'])}, {fmt(top1['high'])}]" in page  # value and 95% CI
        assert r.run_id in page and r.created in page  # provenance footer
    assert "★ leader" in page and ("= not significantly different" in page or "▼ significantly worse" in page)
    assert "Holm-adjusted" in page and "Pairwise tests" in page and "p McNemar" in page
    assert 'alt="confusion matrix, knn"' in page and "Per-class recall" in page and "Shirt" in page
    assert "Few-shot" in page and "simpleshot" in page
    assert "k = " in page and "C = " in page  # chosen hyper-parameters
    gallery = next(r for r in evals if r.details["knn"]["gallery"]).details["knn"]["gallery"]
    assert "Misclassified test images" in page and f'alt="{gallery[0]["id"]}"' in page
    assert f'alt="{gallery[0]["neighbors"][0]["id"]}"' in page
    assert "could not be opened" not in page
    assert "Versions" in page and "torch" in page


def test_worse_mark_and_critical_difference_diagram(runs, tmp_path):
    records, _, _ = runs
    cmp_ = _clone(_of(records, "compare")[0])
    ds = cmp_.config["datasets"][0]
    cmp_.details["leaderboards"][ds]["knn"][1]["worse_than_leader"] = True
    cmp_.details["ranks"]["knn"].update({"mean_ranks": {"pixels:8": 1.2, "pixels:4": 1.8}, "nemenyi_cd": 0.5,
                                         "friedman_p": 0.03})
    page = render_html([cmp_], tmp_path / "r.html").read_text()
    assert "▼ significantly worse" in page
    assert 'alt="critical-difference diagram, knn"' in page and "Friedman p = 0.030" in page


def test_moved_data_folder_renders_with_a_note(runs, tmp_path):
    records, folder, _ = runs
    moved = folder.with_name("imgs-moved")
    folder.rename(moved)
    try:
        page = render_html(records, tmp_path / "r.html").read_text()
    finally:
        moved.rename(folder)
    assert "could not be opened" in page and "may have moved" in page
    gallery = next(r for r in _of(records, "eval") if r.details["knn"]["gallery"]).details["knn"]["gallery"]
    assert gallery[0]["id"] in page  # ids and labels still listed
    assert "data:image/png;base64," in page  # figures still there
    text_only = render_html(records, tmp_path / "t.html", load_images=False).read_text()
    assert "load_images=False" in text_only and f'alt="{gallery[0]["id"]}"' not in text_only


def test_html_escapes_user_strings(runs, tmp_path):
    records, _, _ = runs
    bad = "<script>alert(1)</script>"
    ev = _clone(_of(records, "eval")[0])
    ev.config["backbone"] = bad
    ev.details["data"]["classes"][0] = "<b>cls</b>"
    cmp_ = _clone(_of(records, "compare")[0])
    ds = cmp_.config["datasets"][0]
    cmp_.details["leaderboards"][ds]["knn"][0]["backbone"] = bad
    cmp_.details["pairwise"][ds]["knn"][0]["a"] = bad
    page = render_html([ev, cmp_], tmp_path / "r.html").read_text()
    assert bad not in page and "<script" not in page.lower() and "<b>cls</b>" not in page
    assert html.escape(bad) in page and html.escape("<b>cls</b>") in page


def test_unknown_kinds_get_a_generic_summary_and_sections_are_pluggable(runs, tmp_path):
    records, _, _ = runs
    odd = RunRecord(kind="mystery", config={"accel": "tome<r=8>"}, metrics={"speedup": {"value": 1.7}})
    page = render_html([*records, odd], tmp_path / "r.html").read_text()
    assert "Records of kind “mystery”" in page and "tome&lt;r=8&gt;" in page and "1.7" in page

    previous = SECTIONS.get("gen-eval")

    @register_section("gen-eval", "Generative metrics")
    def _gen(recs, ctx):
        return "<p>gen runs: %d</p>" % len(recs)

    try:
        gen = RunRecord(kind="gen-eval", config={}, metrics={})
        page = render_html([gen], tmp_path / "g.html").read_text()
        assert "Generative metrics" in page and "gen runs: 1" in page
    finally:
        SECTIONS.pop("gen-eval")
        if previous is not None:
            SECTIONS["gen-eval"] = previous


def test_leaderboards_order_marks_and_unpaired_rows(runs):
    records, folder, _ = runs
    boards = {(b.dataset, b.protocol): b for b in leaderboards(records)}
    knn = boards[(f"folder:{folder}", "knn")]
    assert knn.paired and knn.metrics[0] == "top1" and knn.rows[0].mark == "leader"
    paired = [r for r in knn.rows if r.mark is not None]
    compared = _of(records, "compare")[0].details["leaderboards"][f"folder:{folder}"]["knn"]
    assert [r.backbone for r in paired] == [row["backbone"] for row in compared]
    vit = next(r for r in knn.rows if r.backbone.startswith("random:"))
    assert vit.mark is None and "auroc" in vit.values  # the unpaired eval run is listed without a mark
    assert not boards[(f"folder:{folder}", "fewshot")].paired


def test_markdown_has_one_table_per_dataset_and_protocol(runs):
    records, folder, _ = runs
    md = to_markdown(records)
    for proto in ("knn", "linear", "fewshot"):
        assert f"## folder:{folder} · {proto}" in md
    ev = next(r for r in _of(records, "eval") if r.config["backbone"] == "pixels:4")
    row = next(line for line in md.splitlines() if "`pixels:4`" in line)
    assert fmt_ci(ev.metrics["knn"]["top1"]) in row
    assert "▼ significantly worse than the leader (Holm-adjusted p < 0.05)" in md


def test_csv_has_one_row_per_dataset_backbone_protocol_metric(runs, tmp_path):
    records, folder, _ = runs
    path = to_csv(records, tmp_path / "out" / "results.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [(r["dataset"], r["backbone"], r["protocol"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    evals = _of(records, "eval")
    assert len(rows) == sum(len(m) for r in evals for m in r.metrics.values())
    for r in evals:
        want = r.metrics["knn"]["top1"]
        got = next(x for x in rows if x["backbone"] == r.config["backbone"] and x["protocol"] == "knn"
                   and x["metric"] == "top1" and x["dataset"] == f"folder:{folder}")
        assert float(got["value"]) == want["value"] and float(got["low"]) == want["low"]
        assert float(got["high"]) == want["high"]
    assert any(x["metric"] == "simpleshot_2shot" for x in rows)


def test_leaderboard_table_for_the_terminal(runs):
    records, _, _ = runs
    tables = leaderboard_table(records)
    assert len(tables) == len(leaderboards(records)) == 3
    console = Console(record=True, width=250)
    for t in tables:
        console.print(t)
    text = console.export_text()
    assert "pixels:8" in text and "top1" in text and "★" in text


def test_figures_are_legible_pngs():
    w, h = _png_size(confusion_matrix_uri(np.array([[5, 1, 0], [2, 3, 1], [0, 0, 6]]), ["a", "b", "c"], title="knn"))
    assert w > 200 and h > 200
    assert _png_size(thumbnail_uri(Image.new("L", (28, 28)), 84)) == (84, 84)
    assert _png_size(thumbnail_uri(Image.new("RGB", (400, 200)), 96)) == (96, 48)


def test_a_linear_probe_that_did_not_converge_is_marked(runs, tmp_path):
    records, _, _ = runs
    r = _clone(next(r for r in _of(records, "eval") if "linear" in r.metrics))
    assert r.details["linear"]["convergence"]["all_converged"]  # the real record converged: no mark
    assert "not converged" not in render_html([r], tmp_path / "ok.html").read_text(encoding="utf-8")
    r.details["linear"]["convergence"].update(all_converged=False, not_converged_C=[100.0, 1000.0])
    page = render_html([r], tmp_path / "bad.html").read_text(encoding="utf-8")
    assert "⚠ not converged: C = 100, 1e+03" in page or "&#9888; not converged: C = 100, 1e+03" in page


def test_protocols_of_one_run_are_compared_on_the_same_test_items(runs, tmp_path):
    records, _, _ = runs
    r = next(r for r in _of(records, "eval") if {"knn", "linear"} <= set(r.metrics))
    (pair,) = [t for t in r.details["protocol_pairs"] if {t["a"], t["b"]} == {"knn", "linear"}]
    assert pair["metric"] == "top1" and pair["low"] <= pair["diff"] <= pair["high"]
    page = render_html([r], tmp_path / "pairs.html").read_text(encoding="utf-8")
    assert "Protocols compared on the same test items" in page and "<code>linear</code>" in page
