"""The HTML report per task: retrieval examples, segmentation masks and per-class IoU, headline summaries;
the report modules' import graph; Markdown/CSV rows of the new tasks.

Real records: ``vitlab.compare`` of two ``pixels`` backbones with ``retrieval`` and ``knn`` on a 36-image
folder (whose class folders do not follow the garments, so some retrieved images are irrelevant), and
``vitlab.evaluate`` of ``demo:fmnist-vit`` with ``seg-knn`` on the bundled Fashion-MNIST mosaics.
"""

from __future__ import annotations

import ast
import base64
import copy
import csv
import html
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vitlab.report
from tests.conftest import write_images
from vitlab.comparison import compare
from vitlab.evaluation import evaluate
from vitlab.report import RunRecord, load_records, render_html, to_csv, to_markdown
from vitlab.report.figures import IGNORE_COLOUR, SEG_PALETTE, class_colour, label_map_image
from vitlab.report.html import headline_summary
from vitlab.report.tables import fmt, fmt_ci

pytestmark = [pytest.mark.filterwarnings("ignore:bootstrap:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:kNN. default k:UserWarning")]
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)
REPORT_DIR = Path(vitlab.report.__file__).parent
MODULES = sorted(p.stem for p in REPORT_DIR.glob("*.py") if p.stem != "__init__")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``(retrieval eval records, compare record, seg eval record, image folder)``."""
    tmp = tmp_path_factory.mktemp("report-tasks")
    folder = write_images(tmp / "imgs", n_per_class=12)
    kw = dict(n_resamples=100, cache_dir=tmp / "cache", progress=False, num_workers=0)
    compare(["pixels:8", "pixels:4"], f"folder:{folder}", protocols="retrieval,knn", out=tmp / "ret", **kw)
    evaluate("demo:fmnist-vit", "sample:fashion-mnist-mosaic", protocols="seg-knn", out=tmp / "seg", **kw)
    ret = load_records(tmp / "ret")
    (seg,) = load_records(tmp / "seg")
    return [r for r in ret if r.kind == "eval"], next(r for r in ret if r.kind == "compare"), seg, folder


@pytest.fixture(scope="module")
def page(runs, tmp_path_factory):
    evals, cmp_, seg, _ = runs
    return render_html([*evals, cmp_, seg], tmp_path_factory.mktemp("page") / "report.html").read_text("utf-8")


def _clone(r: RunRecord) -> RunRecord:
    return RunRecord.from_dict(copy.deepcopy(r.to_dict()))


def _decode(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))


def _rgb(hex_colour: str) -> tuple[int, ...]:
    return tuple(int(hex_colour[k:k + 2], 16) for k in (1, 3, 5))


# ---------------------------------------------------------------- page
def test_page_is_self_contained_with_a_block_per_task(page):
    assert not EXTERNAL.search(page) and "<script" not in page.lower() and "<link" not in page.lower()
    assert page.count("<h3 id=\"run-") == 3  # two retrieval blocks, one segmentation block
    assert page.count(">Retrieval · retrieval</h3>") == 2 and page.count(">Segmentation · seg-knn</h3>") == 1
    assert "Per-class recall" in page and "Misclassified test images · knn" in page  # classification unchanged


def test_summary_line_shows_each_protocols_headline_metric(runs, page):
    evals, _, seg, _ = runs
    for r in evals:
        want = (f"retrieval recall@1 {fmt(r.metrics['retrieval']['recall@1']['value'])} · "
                f"knn top1 {fmt(r.metrics['knn']['top1']['value'])}")
        assert want in page
    assert f"seg-knn miou {fmt(seg.metrics['seg-knn']['miou']['value'])}" in page
    assert "top-1:" not in page


def test_headline_summary_uses_the_task_scorer_and_defaults_old_records_to_classification(runs):
    evals, _, seg, _ = runs
    assert [(p, m) for p, m, _ in headline_summary(evals[0])] == [("retrieval", "recall@1"), ("knn", "top1")]
    assert [(p, m) for p, m, _ in headline_summary(seg)] == [("seg-knn", "miou")]
    old = _clone(evals[0])  # a record written before protocols declared a task
    for p in ("retrieval", "knn"):
        old.details[p].pop("task")
        old.config["protocol_config"][p].pop("task")
    assert [m for _, m, _ in headline_summary(old)] == ["recall@1", "top1"]  # unknown task falls back, no crash
    shots = RunRecord("eval", {"protocols": ["fewshot"]},
                      {"fewshot": {k: {"value": v} for k, v in
                                   {"simpleshot_1shot": 0.4, "simpleshot_5shot": 0.6, "linear_5shot": 0.7}.items()}},
                      details={"fewshot": {"task": "episodes"}})
    assert headline_summary(shots) == [("fewshot", "simpleshot_5shot", 0.6)]


def test_retrieval_block_marks_relevant_and_irrelevant_results(runs, page):
    evals, _, _, _ = runs
    n_rel = n_irr = 0
    for r in evals:
        d = r.details["retrieval"]
        assert f"{d['n_queries']} queries against {d['n_gallery']} gallery images" in page
        assert d["backend"] == "exact" and "backend exact" in page and "approximate search" not in page
        assert d["examples"]
        for ex in d["examples"]:
            assert f'alt="{html.escape(ex["id"])}"' in page
            assert len(ex["results"]) == 5
            for hit in ex["results"]:
                n_rel += hit["relevant"]
                n_irr += not hit["relevant"]
    assert n_rel and n_irr  # the fixture's data gives both kinds
    assert page.count('class="tile rel"') == n_rel and page.count('class="tile irr"') == n_irr
    assert page.count('class="tile query"') == sum(len(r.details["retrieval"]["examples"]) for r in evals)
    # every example row: query, then its 5 results in rank order with their relevance marks
    r = evals[0]
    ex = r.details["retrieval"]["examples"][0]
    row = page[page.index(f'alt="{ex["id"]}"'):]
    row = row[:row.index("relevant</span></div>")]
    pos = [row.index(f'alt="{h["id"]}"') for h in ex["results"]]
    assert pos == sorted(pos)
    tiles = re.findall(r'class="tile (rel|irr)"', row)
    assert tiles == ["rel" if h["relevant"] else "irr" for h in ex["results"]]


def test_retrieval_block_reports_the_measured_ann_recall(runs, tmp_path):
    r = _clone(runs[0][0])
    r.details["retrieval"].update(backend="faiss-hnsw", ann={"recall_at_k": 0.9713, "k": 10, "sampled_queries": 1000,
                                                             "index": "faiss HNSW (M=32)"})
    page = render_html([r], tmp_path / "r.html", load_images=False).read_text("utf-8")
    assert "backend faiss-hnsw" in page
    assert "approximate search (faiss HNSW (M=32)): recall@10 of the exact neighbours = 0.97 on 1000 sampled " \
           "queries" in page
    assert "load_images=False" in page and 'class="tile rel"' in page  # ids and marks without images


def test_retrieval_images_from_a_moved_folder_become_a_note(runs, tmp_path):
    evals, _, _, folder = runs
    moved = folder.with_name("imgs-moved")
    folder.rename(moved)
    try:
        page = render_html(evals[:1], tmp_path / "r.html").read_text("utf-8")
    finally:
        moved.rename(folder)
    ex = evals[0].details["retrieval"]["examples"][0]
    assert "could not be opened" in page and ex["id"] in page and f'alt="{ex["id"]}"' not in page


def test_segmentation_block_has_a_figure_per_example_and_per_class_iou(runs, page):
    _, _, seg, _ = runs
    d = seg.details["seg-knn"]
    classes = seg.details["data"]["classes"]
    assert len(d["examples"]) >= 2
    assert page.count('class="seg-example"') == len(d["examples"])
    for ex in d["examples"]:
        for what in ("image", "ground truth", "prediction"):
            assert f'alt="{what} {ex["id"]}"' in page
    block = page[page.index(">Segmentation · seg-knn</h3>"):]
    assert "Per-class IoU" in block
    for i, (name, iou) in enumerate(zip(classes, d["per_class_iou"])):
        row = re.search(rf"<tr><td class=\"num\">{i}</td><td>.*?</tr>", block).group(0)
        assert html.escape(name) in row and fmt(iou) in row
    assert "Mask resolution: " + html.escape(d["mask_resolution"]) in block and "56×56" in block
    assert "patch grid 7×7" in block and "grey = ignored" in block


def test_segmentation_masks_are_drawn_with_the_fixed_palette(runs, page):
    _, _, seg, _ = runs
    d = seg.details["seg-knn"]
    ex = d["examples"][0]
    mask = np.asarray(ex["mask"])
    uri = re.search(rf'alt="ground truth {re.escape(ex["id"])}" src="([^"]+)"', page).group(1)
    img = _decode(uri)
    assert img.shape[:2] == (112, 112) and mask.shape == (56, 56)
    small = img[::2, ::2]  # nearest-neighbour 2x: one pixel per mask pixel
    for value in np.unique(mask):
        want = IGNORE_COLOUR if value == d["ignore_index"] else SEG_PALETTE[value % len(SEG_PALETTE)]
        assert (small[mask == value] == _rgb(want)).all()
    assert (mask == d["ignore_index"]).any()  # the mosaic has unlabelled pixels: they are grey
    pred_uri = re.search(rf'alt="prediction {re.escape(ex["id"])}" src="([^"]+)"', page).group(1)
    pred = np.asarray(ex["pred"])
    assert (_decode(pred_uri)[::2, ::2] == np.array([_rgb(class_colour(v)) for v in pred.ravel()])
            .reshape(*pred.shape, 3)).all()
    image_uri = re.search(rf'alt="image {re.escape(ex["id"])}" src="([^"]+)"', page).group(1)
    assert _decode(image_uri).shape[:2] == (112, 112)


def test_label_map_image_palette_and_ignore():
    im = np.asarray(label_map_image([[0, 1, 25], [255, 3, 3]], ignore_index=255))
    assert tuple(im[0, 0]) == _rgb(SEG_PALETTE[0]) and tuple(im[0, 2]) == _rgb(SEG_PALETTE[5])
    assert tuple(im[1, 0]) == _rgb(IGNORE_COLOUR)
    assert tuple(np.asarray(label_map_image([[255]], ignore_index=None))[0, 0]) == _rgb(SEG_PALETTE[255 % 20])
    assert label_map_image(np.zeros((4, 8), int), size=16).size == (16, 8)


def test_task_blocks_escape_user_strings(runs, tmp_path):
    evals, _, seg, _ = runs
    bad = "<script>alert(1)</script>"
    r = _clone(evals[0])
    r.details["retrieval"]["examples"][0]["id"] = bad
    r.details["retrieval"]["examples"][0]["results"][0]["id"] = "<b>g</b>"
    r.details["data"]["classes"][0] = "<i>cls</i>"
    r.details["retrieval"]["backend"] = "<u>exact</u>"
    s = _clone(seg)
    s.details["seg-knn"]["classes"][1] = "<i>shirt</i>"
    s.details["seg-knn"]["examples"][0]["id"] = bad
    s.details["seg-knn"]["mask_resolution"] = "<em>native</em>"
    page = render_html([r, s], tmp_path / "r.html").read_text("utf-8")
    assert "<script" not in page.lower() and "<b>g</b>" not in page and "<i>cls</i>" not in page
    assert "<i>shirt</i>" not in page and "<u>exact</u>" not in page and "<em>native</em>" not in page
    for text in (bad, "<b>g</b>", "<i>shirt</i>", "<u>exact</u>", "<em>native</em>"):
        assert html.escape(text) in page
    assert "[image unavailable]" in page  # the renamed ids no longer resolve to images


def test_a_broken_task_block_becomes_a_note(runs, tmp_path):
    s = _clone(runs[2])
    s.details["seg-knn"]["examples"][0]["mask"] = [[0, 1], [2]]  # ragged
    s.details["seg-knn"]["per_class_iou"] = "oops"
    page = render_html([s], tmp_path / "r.html", load_images=False).read_text("utf-8")
    assert "masks unreadable" in page or "could not be rendered" in page
    assert "Provenance" in page


def test_pairwise_table_names_the_tasks_metric(page):
    assert "Δ recall@1 (A − B) [95% CI]" in page and "Δ top-1 (A − B) [95% CI]" in page


# ---------------------------------------------------------------- Markdown / CSV
def test_markdown_and_csv_carry_retrieval_and_segmentation_metrics(runs, tmp_path):
    evals, cmp_, seg, folder = runs
    records = [*evals, cmp_, seg]
    md = to_markdown(records)
    assert f"## folder:{folder} · retrieval" in md and "## sample:fashion-mnist-mosaic · seg-knn" in md
    assert "recall@1 [95% CI]" in md and "miou [95% CI]" in md
    assert fmt_ci(seg.metrics["seg-knn"]["miou"]) in md
    for r in evals:
        assert any(f"`{r.config['backbone']}`" in line and fmt_ci(r.metrics["retrieval"]["recall@1"]) in line
                   for line in md.splitlines())
    with to_csv(records, tmp_path / "m.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    got = {(x["backbone"], x["protocol"], x["metric"]): x for x in rows}
    for r in [*evals, seg]:
        for proto, metrics in r.metrics.items():
            for name, m in metrics.items():
                x = got[(r.config["backbone"], proto, name)]
                assert float(x["value"]) == m["value"] and float(x["low"]) == m["low"]
    assert {"precision@5", "ndcg@10", "map@r"} <= {k[2] for k in got if k[1] == "retrieval"}
    assert {"miou", "mdice", "pixel_accuracy"} <= {k[2] for k in got if k[1] == "seg-knn"}


def test_cli_verdicts_name_the_metric_of_a_retrieval_comparison(runs):
    from vitlab.cli.common import console
    from vitlab.cli.eval_cmds import _verdicts

    with console.capture() as cap:
        _verdicts(runs[1])  # retrieval pairs have no McNemar Holm p: no KeyError
    out = cap.get()
    assert "Δrecall@1 = " in out and "Δtop1 = " in out and "p(boot, Holm) = " in out


# ---------------------------------------------------------------- import graph
def _report_imports(path: Path) -> set[str]:
    """``vitlab.report`` modules that ``path`` imports anywhere (top level or inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[:2] == ["vitlab", "report"] and len(parts) > 2 and parts[2] in MODULES:
                out.add(parts[2])
    return out


def test_report_modules_form_no_import_circle():
    graph = {m: _report_imports(REPORT_DIR / f"{m}.py") - {m} for m in MODULES}
    assert {"base", "html", "gen_section", "perf_section", "task_sections", "tables", "figures"} <= set(graph)
    assert not any("html" in deps for m, deps in graph.items() if m != "html"), graph
    assert graph["base"] <= {"figures"} and "tables" not in graph["base"]

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in graph[a])

    circles = [m for m in MODULES if reaches(m, m, set())]
    assert not circles, graph


@pytest.mark.parametrize("module", MODULES)
def test_each_report_module_imports_alone(module):
    code = (f"import vitlab.report.{module}, sys; from vitlab.report.base import SECTIONS, TASK_SECTIONS; "
            "print(sorted(SECTIONS), sorted(TASK_SECTIONS))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=REPORT_DIR.parents[1])
    assert res.returncode == 0, res.stderr[-2000:]
    if module in ("html", "task_sections"):
        assert "'retrieval', 'segmentation'" in res.stdout
    if module == "html":
        for kind in ("bench", "eval", "gen-eval", "tradeoff", "tune", "inspect", "robust", "curate"):
            assert f"'{kind}'" in res.stdout, (kind, res.stdout)


def test_public_api_unchanged():
    from vitlab.report import html as page
    from vitlab.report import base

    for name in ("render_html", "register_section", "load_records", "to_markdown", "to_csv", "leaderboard_table",
                 "leaderboards", "RunRecord"):
        assert callable(getattr(vitlab.report, name))
    assert vitlab.report.register_section is base.register_section
    assert page.SECTIONS is base.SECTIONS and page.RenderContext is base.RenderContext


def test_palette_colours_are_distinct_and_never_grey():
    rgb = [_rgb(c) for c in SEG_PALETTE]
    assert len(set(rgb)) == len(rgb) == 20
    assert all(max(c) - min(c) > 30 for c in rgb)  # no grey: grey means "ignored"
    assert IGNORE_COLOUR not in SEG_PALETTE and class_colour(255) == IGNORE_COLOUR
