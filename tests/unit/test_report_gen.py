"""The ``gen-eval`` report section: real records from ``gen_eval`` on small PNG folders with ``pixels:4``.

HTML self-contained and escaped, metrics with their CIs and methods, notes, encoder and sets,
real/fake grids, memorisation pairs, moved data, precomputed features; Markdown and CSV rows.
"""

from __future__ import annotations

import base64
import copy
import csv
import html
import io
import re
import shutil

import numpy as np
import pytest

from tests.conftest import write_images
from PIL import Image

from vitlab.generative import GenEvalConfig, gen_eval, gen_stats
from vitlab.report import RunRecord, load_records, render_html, to_csv, to_markdown
from vitlab.report import gen_section
from vitlab.report.gen_section import num, spread_text
from vitlab.report.html import SECTIONS

pytestmark = pytest.mark.filterwarnings("ignore::vitlab.metrics.SmallSampleWarning",
                                        "ignore:bootstrap:RuntimeWarning")
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)
FAST = dict(encoder="pixels:4", num_workers=0, progress=False, n_resamples=5,
            config=GenEvalConfig(fls_steps=5, kd_subsets=10, ct_pca_dim=8, ct_cells=2, gallery_size=6, grid_size=8))
CLASSES = ("bag", "coat", "shoe")


def _write(root, start, n_per_class=20, size=28, jitter=0):
    """Fashion-MNIST PNGs from the bundled sample, images ``start..``; ``jitter`` adds seeded noise."""
    return write_images(root, n_per_class, CLASSES, size, start=start, jitter=jitter)


@pytest.fixture(autouse=True)
def _registered():
    """Another test may pop SECTIONS["gen-eval"] (it registers its own); make sure ours is in place."""
    gen_section.register()
    yield


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    """``(record, dirs, runs_dir)``: one gen-eval run with real, fake, train (= real) and test image folders."""
    base = tmp_path_factory.mktemp("genrep")
    dirs = {"real": _write(base / "real", 0), "fake": _write(base / "fake", 0, jitter=40, size=24),
            "test": _write(base / "test", 60)}
    res = gen_eval(f"folder:{dirs['real']}", f"folder:{dirs['fake']}", train=f"folder:{dirs['real']}",
                   test=f"folder:{dirs['test']}", metrics="all", cache_dir=base / "cache", out=base / "runs", **FAST)
    return RunRecord.load(res.path), dirs, base / "runs"


def _clone(r: RunRecord) -> RunRecord:
    return RunRecord.from_dict(copy.deepcopy(r.to_dict()))


def _section(page: str) -> str:
    i = page.index("<h2 id=sec-gen-eval>")
    return page[i:page.index("<footer>")]


def _div(page: str, cls: str) -> str:
    i = page.index(f'<div class="{cls}"')
    return page[i:page.index("</div></div>", i)]


def _png(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_section_is_self_contained_with_metrics_cis_and_notes(gen, tmp_path):
    rec, dirs, _ = gen
    page = render_html([rec], tmp_path / "r.html").read_text(encoding="utf-8")
    assert not EXTERNAL.search(page) and "<script" not in page.lower() and "<link" not in page.lower()
    assert "data:image/png;base64," in page
    sec = _section(page)
    assert "Generative evaluation" in page and 'href="#sec-gen-eval"' in page
    for name, m in rec.metrics.items():
        row = re.search(rf"<tr><td><code>{re.escape(name)}</code></td>(.*?)</tr>", sec)
        assert row, name
        assert f"<b>{num(m['value'])}</b>" in row.group(1)
        if m.get("low") is not None:
            assert m["low"] <= m["value"] <= m["high"], name
            assert f"[{num(m['low'])}, {num(m['high'])}]" in row.group(1)
            assert f"95% half-sample, 5 resamples, se {num(m['se'])}" in row.group(1)
    # KD: an interval (half-samples: its subsets are the whole 60-row sets), no longer "± std over subsets"
    kd = re.search(r"<tr><td><code>kd</code></td>(.*?)</tr>", sec).group(1)
    assert rec.metrics["kd"]["method"] == "half-sample" and "std over subsets" not in kd
    assert spread_text(rec.metrics["kd"]).startswith("[")
    # the bias-corrected FD is its own, labelled row; the FD row shows the estimated bias
    fd_row = re.search(r"<tr><td><code>fd</code></td>(.*?)</tr>", sec).group(1)
    assert f"bias = {num(rec.metrics['fd']['bias'])}" in fd_row
    deb = re.search(r"<tr><td><code>fd_debiased</code></td>(.*?)</tr>", sec).group(1)
    assert "estimated finite-sample bias" in deb and "estimates the population FD" in deb
    assert rec.metrics["fd_debiased"]["value"] == pytest.approx(rec.metrics["fd"]["value"] - rec.metrics["fd"]["bias"])
    assert "half-samples: fd 5, prdc 5, vendi 5, kd 5" in sec
    # the notes come first, in a highlighted box, each once
    notes = _div(sec, "note gen-notes")
    assert sec.index("gen-notes") < sec.index("<h3>Metrics</h3>")
    for n in rec.details["notes"]:
        assert html.escape(n["message"]) in notes
    assert "PRDC with only 60 real samples" in notes and "⚠ small sample" in sec
    # encoder, preprocessing, sets
    assert "<td>pixels:4</td>" in sec and "4×4 input · resize stretch · bilinear interpolation" in sec
    assert rec.config["encoder"]["weights_id"] in sec and "layer -1 · mean pooling · 48-d" in sec
    for role in ("real", "fake", "train", "test"):
        assert f"<td>{role}</td>" in sec and rec.fingerprints[role]["fingerprint"] in sec
    assert html.escape(f"folder:{dirs['test']}") in sec and "embeddings from the cache" in sec
    assert 'alt="FD-infinity extrapolation"' in sec and "Vendi score per class" in sec


def test_real_and_fake_grids_and_memorisation_pairs(gen, tmp_path):
    rec, _, _ = gen
    sec = _section(render_html([rec], tmp_path / "r.html").read_text(encoding="utf-8"))
    grid = rec.details["memorization"]["grid"]
    for role in ("real", "fake"):
        block = _div(sec, f"grid-{role}")
        assert len(grid[role]) == 8
        for sid in grid[role]:
            assert f'alt="{html.escape(sid)}"' in block
        assert block.count("data:image/png;base64,") == 8
    pairs = rec.details["memorization"]["closest"]
    assert len(pairs) == 6 and "<h3>Memorisation</h3>" in sec
    boxes = re.findall(r'<div class="gal memo-pair".*?</span></div></div>', sec)
    assert len(boxes) == len(pairs)
    for p, box in zip(pairs, boxes):
        assert f'alt="{p["fake_id"]}"' in box and f'alt="{p["train_id"]}"' in box
        assert f"d = {num(p['distance'])}" in box and box.count("data:image/png;base64,") == 2
        assert box.index("generated") < box.index("training")
    assert "authpct</b> = " in sec and "Most realistic generated samples" in sec
    assert "could not be opened" not in sec and "No images" not in sec
    uri = re.search(r'<img alt="[^"]*" title="[^"]*" src="(data:image/png;base64,[^"]+)"', sec).group(1)
    assert _png(uri).size == (84, 84)  # 28x28 enlarged to the default thumbnail size


def test_records_from_disk_and_mixed_with_other_kinds(gen, tmp_path):
    rec, _, runs = gen
    other = RunRecord(kind="eval", config={"backbone": "pixels:4", "dataset": "d"},
                      metrics={"knn": {"top1": {"value": 0.8, "low": 0.7, "high": 0.9}}})
    page = render_html([*load_records(runs), other], tmp_path / "r.html").read_text(encoding="utf-8")
    assert page.index("Evaluation runs") < page.index("<h2 id=sec-gen-eval>")
    assert "memo-pair" in page and rec.run_id in page


def test_moved_data_gives_a_note_not_a_failure(gen, tmp_path):
    rec, dirs, _ = gen
    moved = {}
    try:
        for role in ("real", "fake"):
            moved[role] = dirs[role].with_name(dirs[role].name + "-moved")
            dirs[role].rename(moved[role])
        sec = _section(render_html([rec], tmp_path / "r.html").read_text(encoding="utf-8"))
    finally:
        for role, m in moved.items():
            m.rename(dirs[role])
    assert "could not be opened" in sec and "may have moved" in sec
    assert html.escape(f"folder:{dirs['fake']}") in sec
    assert rec.details["memorization"]["closest"][0]["fake_id"] in sec  # ids still listed
    assert 'alt="FD-infinity extrapolation"' in sec  # figures still there
    assert not re.search(r'<img alt="(bag|coat|shoe)/', sec)  # no sample image
    text_only = _section(render_html([rec], tmp_path / "t.html", load_images=False).read_text(encoding="utf-8"))
    assert "load_images=False" in text_only and not re.search(r'<img alt="(bag|coat|shoe)/', text_only)


def test_changed_data_is_flagged(gen, tmp_path):
    rec, dirs, _ = gen
    copy_dir = tmp_path / "fake"
    shutil.copytree(dirs["fake"], copy_dir)
    r = _clone(rec)
    r.details["memorization"]["grid"]["fake_uri"] = f"folder:{copy_dir}"
    r.details["memorization"]["fake_uri"] = f"folder:{copy_dir}"
    r.fingerprints["fake"]["uri"] = f"folder:{copy_dir}"
    Image.new("L", (24, 24)).save(copy_dir / "bag" / "bag_00.png")
    sec = _section(render_html([r], tmp_path / "r.html").read_text(encoding="utf-8"))
    assert "has changed since this run" in sec


def test_precomputed_features_render_without_images(tmp_path):
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((80, 6)), rng.standard_normal((70, 6)) + 0.3
    train = np.concatenate([fake[:5] + 1e-3, rng.standard_normal((40, 6))])
    np.save(tmp_path / "real.npy", real)
    res = gen_eval(str(tmp_path / "real.npy"), fake, train=train, metrics="fd,kd,prdc,authpct", n_resamples=3,
                   config=GenEvalConfig(kd_subsets=5, gallery_size=4))
    page = render_html([res.record], tmp_path / "r.html").read_text(encoding="utf-8")
    sec = _section(page)
    assert "No images for the real set" in sec and "No images for the fake set" in sec
    assert html.escape(str(tmp_path / "real.npy")) in sec
    assert "No images for the generated set" in sec and "No images for the training set" in sec
    assert "precomputed features" in sec and "vitlab could not check" in sec
    assert "Encoder: none" in sec and "data:image/png;base64," not in sec
    pairs = res.record.details["memorization"]["closest"]
    assert len(pairs) == 4 and sec.count("memo-pair") == 4 and f"d = {num(pairs[0]['distance'])}" in sec
    assert f"[{num(res.record.metrics['fd']['low'])}, {num(res.record.metrics['fd']['high'])}]" in sec


def test_reference_stats_run_says_no_ci_and_no_real_images(gen, tmp_path):
    _, dirs, _ = gen
    st = gen_stats(f"folder:{dirs['real']}", tmp_path / "ref.stats", encoder="pixels:4", cache_dir=tmp_path,
                   num_workers=0, progress=False)
    res = gen_eval(real_stats=st.path, fake=f"folder:{dirs['fake']}", metrics="fd", cache_dir=tmp_path,
                   num_workers=0, progress=False)
    sec = _section(render_html([res.record], tmp_path / "r.html").read_text(encoding="utf-8"))
    assert "no CI: the reference file holds only mean/covariance" in sec
    assert "real (statistics)" in sec and "No real images" in sec and "grid-fake" in sec


def test_user_strings_are_escaped(gen, tmp_path):
    rec, _, _ = gen
    bad = "<script>alert(1)</script>"
    r = _clone(rec)
    r.config["encoder"]["encoder"] = bad
    r.config["sets"]["fake"] = bad
    r.details["notes"].append({"metric": "<i>m</i>", "message": bad})
    r.details["memorization"]["closest"][0]["fake_id"] = "<b>x</b>"
    r.details["memorization"]["grid"]["real"][0] = '"><img src=x>'
    r.metrics["<u>odd</u>"] = {"value": 1.0, "low": None, "high": None, "caveat": bad}
    r.details["vendi_per_class"]["<em>c</em>"] = 1.0
    page = render_html([r], tmp_path / "r.html").read_text(encoding="utf-8")
    assert bad not in page and "<script" not in page.lower() and "<b>x</b>" not in page
    assert "<i>m</i>" not in page and "<u>odd</u>" not in page and "<em>c</em>" not in page
    assert '"><img src=x>' not in page and not EXTERNAL.search(page)
    assert html.escape(bad) in page and html.escape("<b>x</b>") in page


def test_markdown_and_csv_have_the_gen_eval_metrics(gen, tmp_path):
    rec, dirs, _ = gen
    md = to_markdown([rec])
    assert f"## gen-eval · folder:{dirs['fake']} vs folder:{dirs['real']} · encoder `pixels:4`" in md
    for name, m in rec.metrics.items():
        line = next(x for x in md.splitlines() if x.startswith(f"| {name} |"))
        assert num(m["value"]) in line and spread_text(m) in line
    assert "PRDC with only 60 real samples" in md
    path = to_csv([rec], tmp_path / "m.csv")
    with path.open(newline="") as f:
        rows = [x for x in csv.DictReader(f) if x["protocol"] == "gen-eval"]
    assert {x["metric"] for x in rows} == set(rec.metrics)
    fd = next(x for x in rows if x["metric"] == "fd")
    assert fd["dataset"] == f"folder:{dirs['fake']}" and fd["backbone"] == "pixels:4"
    assert float(fd["value"]) == rec.metrics["fd"]["value"] and float(fd["low"]) == rec.metrics["fd"]["low"]
    assert float(fd["high"]) == rec.metrics["fd"]["high"]
    kd = next(x for x in rows if x["metric"] == "kd")
    assert float(kd["low"]) == rec.metrics["kd"]["low"] and float(kd["high"]) == rec.metrics["kd"]["high"]
    sw = next(x for x in rows if x["metric"] == "sw")
    assert sw["low"] == sw["high"] == ""


def test_registered_and_figure_is_a_legible_png():
    assert SECTIONS["gen-eval"][0] == "Generative evaluation"
    w, h = _png(gen_section.fd_inf_uri([6, 12, 30, 60], [3.0, 1.5, 0.6, 0.3], 0.1, 17.0)).size
    assert w > 300 and h > 200
