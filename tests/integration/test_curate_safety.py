"""``vitlab curate`` never floods (issue 20 §1), finds every perceptual pair (issue 19 §9), checks its optional
dependency and its option pairs before any work (issue 19 §9, issue 18 §4).

The flooding case of issue 20 is rebuilt from bundled data (:func:`tests.integration.curate_folders.build_flood`):
300 distinct 112-px images (Fashion-MNIST sample items upscaled, tiles of scikit-learn's photos) and 20
near-copies (shift <= 2 px, brightness +-10%, JPEG q85). Before the fix, ``--threshold auto`` chose a cosine
of 0.77 with 7% of random pairs above it and kept 34 of the 320 images.
"""

from __future__ import annotations

import json
import sys

import imagehash
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import vitlab
from tests.integration.curate_folders import build_flood
from vitlab.cli import app

runner = CliRunner()
B = "demo:fmnist-vit"


@pytest.fixture(scope="module")
def flood(tmp_path_factory):
    root = tmp_path_factory.mktemp("flood") / "imgs"
    names, copies = build_flood(root)
    return root, names, copies, tmp_path_factory.mktemp("flood-cache")


def _cli(*args):
    return runner.invoke(app, ["curate", "-b", B, *args])


def test_flooding_case_keeps_every_distinct_image_and_names_the_inseparable_edits(flood):
    root, names, copies, cache = flood
    res = _cli("-d", f"folder:{root}", "--dedup", "--threshold", "auto", "--json", "--cache-dir", str(cache),
               "--num-workers", "0")
    assert res.exit_code == 0, res.stderr
    rec = json.loads(res.stdout)
    d = rec["details"]
    cal = d["calibration"]
    # the threshold never lets more than the stated bound of random pairs through
    assert cal["max_fpr"] == 1e-3 and cal["fpr"] <= 1e-3
    assert cal["fpr"] == pytest.approx(np.mean(np.asarray(cal["negatives"]) >= cal["threshold"]), abs=1e-4)
    # flips (and the small crops) of these images cannot be told from random pairs with this backbone
    assert not cal["separable"] and "flip" in cal["failing_edits"]
    assert all(cal["recall_by_edit"][e] < 0.99 for e in cal["failing_edits"])
    warn = [line for line in res.stderr.splitlines() if "no cosine threshold separates" in line]
    assert len(warn) == 1 and all(e in warn[0] for e in cal["failing_edits"])
    # no semantic removal: every distinct image is kept
    assert d["semantic"]["skipped"] and d["semantic"]["n_removed"] == 0
    assert d["kept"]["n"] == len(names) + len(copies) == 320 and d["exact"]["n_groups"] == 0
    # ... and the perceptual step still finds the copies it finds on its own (imagehash, brute force)
    ph = {n: imagehash.phash(Image.open(root / n)) for pair in copies for n in pair[:2]}
    own = {tuple(sorted((a, b))) for a, b, _ in copies if ph[a] - ph[b] <= 4}
    found = {tuple(sorted((p["a"], p["b"]))) for p in d["perceptual"]["pairs"]}
    assert len(own) >= 12 and own <= found


def test_a_separable_edit_gives_groups_whose_members_are_all_pairwise_above_the_threshold(flood):
    root, _, copies, cache = flood
    res = vitlab.curate(B, f"folder:{root}", threshold="auto", edits="jpeg", cache_dir=cache, num_workers=0,
                        progress=False)
    cal = res.record.details["calibration"]
    assert cal["separable"] and cal["fpr"] <= 1e-3 and cal["recall_by_edit"]["jpeg"] >= 0.99
    assert res.groups and res.threshold == cal["threshold"]
    X = vitlab.EmbeddingStore(cache).get_or_compute(vitlab.load_backbone(B), vitlab.load_source(f"folder:{root}"),
                                                    layers=-1, pool="cls", num_workers=0, progress=False).get()
    Xn = np.asarray(X, np.float64) / np.linalg.norm(X, axis=1, keepdims=True)
    for g in res.groups:
        gram = Xn[g.members] @ Xn[g.members].T
        assert gram.min() >= res.threshold and g.min_similarity == pytest.approx(gram.min())
    assert len(res.removed) <= 0.2 * len(X)


def test_write_manifest_refuses_a_flood_and_says_how_many(flood, tmp_path):
    root, _, _, cache = flood
    m = tmp_path / "clean.csv"
    common = ["-d", f"folder:{root}", "--threshold", "0.77", "--no-leakage", "--cache-dir", str(cache),
              "--num-workers", "0", "-q", "--write-manifest", str(m)]
    res = _cli(*common)
    assert res.exit_code == 2 and res.stderr.count("error:") == 1
    assert "would drop" in res.stderr and "of 320 items" in res.stderr and "--max-removed" in res.stderr
    assert not m.exists()
    n = int(res.stderr.split("would drop ")[1].split(" ")[0])
    assert n > 64  # more than 20% of 320
    ok = _cli(*common, "--max-removed", "0.95")
    assert ok.exit_code == 0, ok.stderr
    assert len(m.read_text().splitlines()) == 1 + 320 - n


def test_twenty_hash_identical_images_give_all_190_pairs(tmp_path):
    from sklearn.datasets import load_sample_image

    base = load_sample_image("flower.jpg")[100:212, 200:312]
    imgs = []
    for i in range(20):  # one pixel changed per copy: the same pHash, never pixel-identical
        a = base.copy()
        a[0, i] = 255 - a[0, i]
        imgs.append(Image.fromarray(a))
    assert len({imagehash.phash(im) for im in imgs}) == 1 and len({im.tobytes() for im in imgs}) == 20
    other = load_sample_image("china.jpg")
    imgs += [Image.fromarray(other[y:y + 112, x:x + 112]) for y, x in ((0, 0), (200, 300), (300, 100), (100, 500))]
    for i, im in enumerate(imgs):
        im.save(tmp_path / f"im_{i:02d}.png")
    res = _cli("-d", f"folder:{tmp_path}", "--threshold", "0.999", "--perceptual-distance", "0", "--no-leakage",
               "--cache-dir", str(tmp_path / "c"), "--num-workers", "0", "--json")
    assert res.exit_code == 0, res.stderr
    pp = json.loads(res.stdout)["details"]["perceptual"]
    pairs = {(p["a"], p["b"]) for p in pp["pairs"] if p["distance"] == 0}
    same = {(f"im_{a:02d}.png", f"im_{b:02d}.png") for a in range(20) for b in range(a + 1, 20)}
    assert same <= pairs and len(same) == 190  # with k = 16 neighbours, 6 of these were never reported
    assert pp["max_distance"] == 0 and pp["n_capped"] == 0


@pytest.mark.parametrize("args, msg", [
    (["--target-min", "0.5"], "--target-min needs --target"),
    (["--prompt-min", "0.2"], "--prompt-min needs --prompts"),
    (["--threshold", "0.9", "--edits", "jpeg"], "--edits only applies to --threshold auto"),
    (["--threshold", "0.9", "--max-fpr", "0.01"], "--max-fpr only applies to --threshold auto"),
    (["--no-dedup", "--perceptual-distance", "2"], "--perceptual-distance applies to the duplicate search"),
    (["--max-removed", "0.5"], "--max-removed bounds what --write-manifest may drop"),
    (["--folds", "3"], "--folds applies to --label-issues"),
    (["--label-method", "knn"], "--label-method applies to --label-issues"),
])
def test_an_option_without_the_one_it_needs_is_one_line_before_any_work(args, msg, tmp_path):
    res = _cli("-d", f"folder:{tmp_path / 'does-not-exist'}", *args)  # the data is never opened
    assert res.exit_code == 2 and msg in res.stderr and res.stderr.count("error:") == 1


def test_missing_imagehash_fails_before_any_work_naming_the_extra(monkeypatch, tmp_path):
    import vitlab.store

    def boom(*a, **k):
        raise AssertionError("embedding started before the dependency check")

    monkeypatch.setitem(sys.modules, "imagehash", None)
    monkeypatch.setattr(vitlab.store.EmbeddingStore, "get_or_compute", boom)
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 60, 0, 0)).save(tmp_path / f"{i}.png")
    res = _cli("-d", f"folder:{tmp_path}", "--threshold", "0.9", "--cache-dir", str(tmp_path / "c"))
    assert res.exit_code == 2 and res.stderr.count("error:") == 1
    assert "imagehash" in res.stderr and "pip install 'vitlab[curate]'" in res.stderr
    ok = _cli("-d", f"folder:{tmp_path}", "--threshold", "0.9", "--no-dedup", "--no-leakage", "--cache-dir",
              str(tmp_path / "c"))
    assert ok.exit_code != 0 and "embedding started" in repr(ok.exception)  # --no-dedup needs no imagehash


def test_curate_writes_no_html_itself(tmp_path):
    with pytest.raises(vitlab.errors.ConfigError, match="curate\\(\\) writes no HTML"):
        vitlab.curate(B, "sample:fashion-mnist", threshold=0.9, report=tmp_path / "r.html")
