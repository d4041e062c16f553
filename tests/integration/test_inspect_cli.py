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
                              "--n-resamples", "100", "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "i.html"),
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
                              "--report", str(tmp_path / "r.html")])
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


# -- issue 18 part 4: bad images and options, one line (exit 2), checked before the work -----------------------
def _folder(tmp_path, bad: str | None):
    """A labelled folder (classes a, b; six 28x28 images each) plus one bad item in a/."""
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    for c in "ab":
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.fromarray(g.integers(0, 255, (28, 28), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    if bad == "not-an-image":
        (tmp_path / "a" / "bad.png").write_text("not an image")
    elif bad == "tiny":
        Image.new("L", (1, 1)).save(tmp_path / "a" / "bad.png")
    elif bad == "large":
        Image.new("L", (60, 60)).save(tmp_path / "a" / "bad.png")  # over the limit the test sets
    return f"folder:{tmp_path}"


INSPECT = ["inspect", "-b", "demo:fmnist-vit", "--maps", "attention", "--no-sanity", "--n-images", "20"]
ROBUST = ["robust", "-b", "demo:fmnist-vit", "--corrupt", "patch-drop", "--counts", "0", "--attack", ""]


@pytest.mark.parametrize("verb", ["inspect", "robust"])
@pytest.mark.parametrize("bad,message", [
    ("not-an-image", r"a/bad.png: cannot decode image \(not an image, or an unsupported format\)\. Remove or fix it"),
    ("tiny", r"a/bad.png: image is 1x1 px, smaller than one 4x4 px patch"),
    ("large", r"a/bad.png: image is 60x60 = 3,600 pixels, over the 1,000-pixel limit"),
])
def test_inspect_and_robust_refuse_what_embed_refuses(tmp_path, monkeypatch, verb, bad, message):
    import re

    from vitlab.data.images import MAX_PIXELS_ENV

    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")  # a 28x28 image is 784 pixels: only the 60x60 one is over
    data = _folder(tmp_path, bad)
    res = runner.invoke(app, [*(INSPECT if verb == "inspect" else ROBUST), "-d", data])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert re.search(r"error: \S*" + message, out), out
    assert "Traceback" not in res.output


def test_the_same_folder_without_the_bad_item_is_accepted(tmp_path):
    res = runner.invoke(app, [*INSPECT, "-d", _folder(tmp_path, None), "--json"])
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["details"]["images"]) == 12


def _npz(path, **arrays):
    import numpy as np

    np.savez(path, **arrays)
    return str(path)


def test_inspect_pca_file_of_another_kind_is_one_line(tmp_path):
    import numpy as np

    other = _npz(tmp_path / "other.npz", weights=np.zeros(3))
    res = runner.invoke(app, ["inspect", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--maps", "pca",
                              "--no-sanity", "--pca", other])
    assert res.exit_code == 2, res.output
    assert "other.npz: not a saved PCA (no mean1, comp1, mean3" in " ".join(res.output.split())
    assert "fitting" not in res.output and "Traceback" not in res.output


def test_inspect_pca_file_with_object_arrays_is_one_line(tmp_path):
    import numpy as np

    obj = _npz(tmp_path / "obj.npz", **{k: np.array([{"x": 1}], dtype=object) for k in
                                        ("mean1", "comp1", "mean3", "comp3", "lo", "hi", "threshold", "fg_above",
                                         "foreground", "backbone_id", "layer")})
    res = runner.invoke(app, ["inspect", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--maps", "pca",
                              "--no-sanity", "--pca", obj])
    assert res.exit_code == 2, res.output
    assert "obj.npz: not a saved PCA (it holds object arrays, which are never unpickled)" in " ".join(res.output.split())


def test_robust_counts_above_the_grid_are_refused(tmp_path):
    res = runner.invoke(app, ["robust", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--corrupt", "patch-drop",
                              "--counts", "0,100", "--grid", "aligned", "--attack", ""])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert "--counts 100: demo:fmnist-vit's aligned grid has only 49 cells of 4x4 px (7x7); use counts up to 49" in out
    assert "fitting probes" not in out  # refused before any work
    res = runner.invoke(app, ["robust", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--corrupt", "patch-drop",
                              "--counts", "0,40", "--attack", ""])  # --grid both: 40 fits aligned (49), not shifted
    assert res.exit_code == 2, res.output
    assert "--counts 40: demo:fmnist-vit's misaligned grid has only 36 cells" in " ".join(res.output.split())


@pytest.mark.parametrize("args,message", [
    (["--patch-side", "0"], "--patch-side 0: an attack patch of 0x0 grid cells does not fit the 7x7 patch grid of "
                            "demo:fmnist-vit; use 1..7."),
    (["--patch-side", "8"], "--patch-side 8: an attack patch of 8x8 grid cells does not fit"),
    (["--n-resamples", "0"], "n_resamples=0 must be >= 1"),
])
def test_robust_options_are_checked_before_the_probes(args, message):
    res = runner.invoke(app, ["robust", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--attack", "pgd-patch",
                              *args])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert message in out and "fitting probes" not in out


@pytest.mark.parametrize("args,message", [
    (["--n-resamples", "0"], "--n-resamples 0 must be >= 1"),
    (["--z-thresh", "0"], "--z-thresh 0.0 must be a positive robust z-score"),
    (["--maps", "attention", "--pca", "p.npz"], "--pca p.npz is only used by the pca map"),
])
def test_inspect_options_are_checked_before_any_work(args, message):
    res = runner.invoke(app, ["inspect", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", *args])
    assert res.exit_code == 2, res.output
    out = " ".join(res.output.split())
    assert message in out and "fitting a linear probe" not in out
