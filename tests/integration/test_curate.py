"""``vitlab curate`` end to end on a small folder of real images with known injected duplicates.

The folder: 30 Fashion-MNIST sample items (56 px PNGs) and 12 textured, non-overlapping tiles of
scikit-learn's china.jpg / flower.jpg (the known clean pairs), plus injected copies: 4 JPEG
re-encodes, 4 down-and-up resizes and 1 exact copy. The backbone is the shipped demo:fmnist-vit at
block 2 (of 6), where these edits are separable from distinct items.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import vitlab
from vitlab.cli import app
from vitlab.curation.calibrate import augment

LAYER = 2
EDITS = "jpeg,resize"


def _build(root):
    from sklearn.datasets import load_sample_image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    imgs = {}
    for name in ("china.jpg", "flower.jpg"):
        a = load_sample_image(name)
        tiles = [a[y:y + 96, x:x + 96] for y in range(0, a.shape[0] - 95, 96) for x in range(0, a.shape[1] - 95, 96)]
        tiles.sort(key=lambda t: -float(t.std()))  # textured tiles: no two blank skies
        for j, t in enumerate(tiles[:6]):
            imgs[f"{name[:-4]}_{j:02d}.png"] = Image.fromarray(t)
    fm = vitlab.load_source("sample:fashion-mnist")
    for j, i in enumerate(rng.choice(len(fm), 30, replace=False)):
        imgs[f"fm_{j:02d}.png"] = fm.load_image(int(i)).resize((56, 56))
    for n, im in imgs.items():
        im.save(root / n)
    names = sorted(imgs)
    injected = []
    for j, src in enumerate(rng.choice(names, 8, replace=False)):
        kind = ("jpeg", "resize")[j % 2]
        copy = f"zz_{j:02d}_{kind}.png"
        augment(imgs[str(src)], kind, rng).save(root / copy)
        injected.append((str(src), copy))
    shutil.copy(root / names[0], root / "zz_exact.png")
    injected.append((names[0], "zz_exact.png"))
    return injected


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("curate") / "imgs"
    return root, _build(root)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def result(folder, cache, tmp_path_factory):
    root, _ = folder
    out = tmp_path_factory.mktemp("out")
    res = vitlab.curate("demo:fmnist-vit", f"folder:{root}", threshold="auto", edits=EDITS, layers=LAYER,
                        cache_dir=cache, num_workers=0, progress=False, n_resamples=200,
                        write_manifest=out / "clean.csv", max_removed=0.5)
    return res, vitlab.report.render_html([res.record], out / "curate.html")


def test_auto_threshold_finds_every_injected_duplicate_with_few_false_positives(folder, result):
    _, injected = folder
    result, _ = result
    d = result.record.details
    cal = d["calibration"]
    assert cal["n_positive"] == 2 * d["data"]["n"] and cal["separable"] and cal["fpr"] <= 1e-3
    assert all(v >= 0.99 for v in cal["recall_by_edit"].values()) and set(cal["recall_by_edit"]) == {"jpeg", "resize"}
    assert cal["threshold"] == result.threshold and -1 <= result.threshold <= 1
    ids = result.ids
    pairs = {tuple(sorted((ids[a], ids[b]))) for g in result.groups for a in g.members for b in g.members if a < b}
    want = {tuple(sorted(p)) for p in injected}
    assert want <= pairs, f"missed: {want - pairs}"
    false_pairs = d["semantic"]["n_pairs"] - len(want)
    assert false_pairs <= 2, d["semantic"]["groups"]
    # exact and perceptual levels see the exact copy and the re-encodes / resizes too
    assert [sorted(g) for g in d["exact"]["groups"]] == [sorted(injected[-1])]
    perc = {tuple(sorted((p["a"], p["b"]))) for p in d["perceptual"]["pairs"]}
    assert want <= perc
    # one item of every injected pair is removed, the other kept
    kept_ids = {ids[i] for i in np.flatnonzero(result.kept)}
    for a, b in injected:
        assert (a in kept_ids) != (b in kept_ids)


def test_groups_have_every_pair_above_the_threshold(result):
    result, _ = result
    for g in result.record.details["semantic"]["groups"]:
        assert result.threshold <= g["min_similarity"] <= g["min_to_centre"] + 1e-9
    curve = result.record.details["semantic"]["curve"]
    fr = [c["fraction"] for c in curve]
    assert fr == sorted(fr, reverse=True)


def test_manifest_lists_the_kept_items_and_reads_back(result):
    result, _ = result
    rows = list(csv.DictReader(open(result.manifest)))
    assert len(rows) == int(result.kept.sum()) and set(rows[0]) == {"path"}
    src = vitlab.load_source(f"csv:{result.manifest}")
    assert len(src) == len(rows)


def test_report_shows_pairs_as_embedded_pngs(result):
    html = result[1].read_text()
    assert "Curation: duplicates, leakage, filters" in html and "Threshold calibration" in html
    assert html.count("data:image/png;base64,") >= 3 + 2 * 2  # figures + at least two image pairs


def test_cli_json_is_one_document_and_bad_inputs_are_one_line(folder, cache, tmp_path):
    root, _ = folder
    runner = CliRunner()
    args = ["curate", "-b", "demo:fmnist-vit", "-d", f"folder:{root}", "--layer", str(LAYER), "--threshold", "0.99",
            "--cache-dir", str(cache), "--num-workers", "0", "--json", "-q"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["kind"] == "curate" and rec["config"]["threshold_used"] == 0.99
    existing = tmp_path / "clean.csv"
    existing.write_text("x\n")
    for extra, msg in ((["--threshold", "1.2"], "threshold must be a cosine similarity in [-1, 1]"),
                       (["--write-manifest", str(existing)], "already exists and is not overwritten"),
                       (["--leakage"], "has no splits to check for leakage")):
        bad = runner.invoke(app, [a for a in args if a != "--json"][:-3] + ["--num-workers", "0"] + extra[:1] + extra[1:]
                            if extra[0] != "--threshold" else args[:7] + extra + args[9:])
        assert bad.exit_code == 2, bad.output
        assert msg in bad.output and bad.output.count("error:") == 1
    assert existing.read_text() == "x\n"


def test_too_few_images_to_calibrate(tmp_path):
    for i in range(5):
        Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    with pytest.raises(vitlab.errors.DataError, match="needs at least 20 to calibrate"):
        vitlab.curate("demo:fmnist-vit", f"folder:{tmp_path}", threshold="auto", cache_dir=tmp_path / "c")


def test_leakage_on_a_split_manifest_with_groups_and_exclude_leaked_eval(folder, cache, result, tmp_path):
    from pathlib import Path

    root, injected = folder
    # train: everything else; test: the injected copies (leaked) and 10 clean items; one group crosses splits
    files = sorted(p.name for p in root.iterdir())
    copies = {c for _, c in injected}
    originals = {o for o, _ in injected}
    clean_fm = [f for f in files if f.startswith("fm_") and f not in originals]
    tiles = [f for f in files if f.startswith(("china", "flower")) and f not in originals]
    test = set(copies) | set(clean_fm[:8]) | set(tiles[:2])
    crossing = (clean_fm[0], clean_fm[-1])  # a test item and a train item of one patient
    lines = ["path,label,split,group"]
    for f in files:
        lines.append(f"{root / f},{'tile' if f.startswith(('china', 'flower')) else 'fm'},"
                     f"{'test' if f in test else 'train'},{'p-cross' if f in crossing else f}")
    m = tmp_path / "m.csv"
    m.write_text("\n".join(lines) + "\n")
    t = result[0].threshold
    res = vitlab.curate("demo:fmnist-vit", f"csv:{m}", threshold=t, layers=LAYER, leakage=True, dedup=False,
                        cache_dir=cache, num_workers=0, progress=False, n_resamples=200)
    lk = res.record.details["leakage"]
    leaked = {Path(p["test_id"]).name for p in lk["pairs"]}
    assert copies <= leaked, f"missed: {copies - leaked}"
    assert len(leaked - copies) <= 2  # few false leaks
    assert lk["crossing_groups"] == [{"group": "p-cross", "splits": {"test": 1, "train": 1}}]
    assert lk["split_origin"] == "split column" and lk["n_leaked"] == len(leaked | {clean_fm[0]})
    eff = lk["effect"]
    assert eff["n_leaked"] == lk["n_leaked"] and eff["low"] <= eff["diff"] <= eff["high"]
    ev = vitlab.evaluate("demo:fmnist-vit", f"csv:{m}", protocols="knn", layers=LAYER, exclude_leaked=True,
                         leak_threshold=t, cache_dir=cache, num_workers=0, progress=False, n_resamples=200)
    ex = ev.record.details["knn"]["exclude_leaked"]
    assert ex["n_leaked"] == lk["n_leaked"] and ex["full"]["value"] == ev.record.metrics["knn"]["top1"]["value"]
    assert ex["diff"] == pytest.approx(ex["clean"]["value"] - ex["full"]["value"])
