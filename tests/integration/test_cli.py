"""The CLI mirrors the API: verbs run, print, and fail with one clear line (exit code 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import truncated_jpeg
from vitlab.cli import app

runner = CliRunner()


def _run(*args, cache_dir):
    return runner.invoke(app, [*args, "--cache-dir", str(cache_dir)] if args[0] == "embed" else list(args))


def test_ls_lists_aliases_and_kinds():
    res = runner.invoke(app, ["ls"])
    assert res.exit_code == 0
    for text in ("dinov2-s", "clip-b16", "mae-b", "folder:", "csv:", "idx:", "sample:"):
        assert text in res.output


def test_embed_quickstart_then_cache(cache_dir, tmp_path):
    args = ["embed", "--backbone", "demo:fmnist-vit", "--data", "sample:fashion-mnist", "--num-workers", "0"]
    first = _run(*args, "--json", cache_dir=cache_dir)
    assert first.exit_code == 0, first.output
    s = json.loads(first.stdout)
    assert s["n"] == 2000 and s["shape"] == [2000, 96] and s["from_cache"] is False
    second = _run(*args, "--layers", "-1", "--export", str(tmp_path / "e.npz"), cache_dir=cache_dir)
    assert second.exit_code == 0 and "from cache" in second.output
    z = np.load(tmp_path / "e.npz")
    assert z["L5_cls"].shape == (2000, 96) and z["labels"].shape == (2000,)


def test_embed_layers_and_pool(cache_dir):
    res = _run("embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--layers", "-1,-4", "--pool",
               "cls+mean", "--num-workers", "0", "--json", cache_dir=cache_dir)
    s = json.loads(res.stdout)
    assert s["layers"] == [2, 5] and s["shape"] == [2000, 192]


@pytest.mark.parametrize("args, message", [
    (["-b", "dinov2-m", "-d", "sample:fashion-mnist"], "unknown backbone 'dinov2-m'. Did you mean"),
    (["-b", "demo:fmnist-vit", "-d", "folder:/no/such/dir"], "no such directory"),
    (["-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--layers", "x"], "--layers takes comma-separated"),
    (["-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--layers", "9"], "layer 9 is out of range"),
])
def test_errors_are_one_clear_line(cache_dir, args, message):
    res = _run("embed", *args, cache_dir=cache_dir)
    assert res.exit_code == 2
    assert message in " ".join(res.output.split())
    assert "Traceback" not in res.output


def test_on_error_skip_lists_the_file(cache_dir, image_folder):
    truncated_jpeg(image_folder / "bag" / "cut.jpg")
    res = _run("embed", "-b", "demo:fmnist-vit", "-d", f"folder:{image_folder}", "--num-workers", "0", cache_dir=cache_dir)
    assert res.exit_code == 2 and "cut.jpg: cannot decode image (truncated file)" in " ".join(res.output.split())
    res = _run("embed", "-b", "demo:fmnist-vit", "-d", f"folder:{image_folder}", "--num-workers", "0",
               "--on-error", "skip", cache_dir=cache_dir)
    assert res.exit_code == 0 and "skipped 1 image(s)" in res.output and "bag/cut.jpg" in res.output


def test_cache_ls_and_clear(cache_dir):
    _run("embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--num-workers", "0", cache_dir=cache_dir)
    res = runner.invoke(app, ["cache", "ls", "--cache-dir", str(cache_dir), "--json"])
    doc = json.loads(res.stdout)
    assert doc["entries"][0]["namespace"] == "embeddings" and doc["entries"][0]["backbone"] == "demo:fmnist-vit"
    entry = next((cache_dir / "embeddings").iterdir())
    import fcntl

    with open(entry / ".lock", "a") as held:  # a running embed holds this entry
        fcntl.flock(held, fcntl.LOCK_EX)
        res = runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache_dir), "--yes"])
        fcntl.flock(held, fcntl.LOCK_UN)
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and f"kept 1 entr(ies) in use by a running embed: {entry.name}" in out
    assert "removed 1 entr(ies) (specs 1)" in out  # the demo checkpoint's spec: --cache-dir governs specs/ too
    assert entry.exists()
    res = runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache_dir), "--yes"])
    assert "removed 1 entr(ies) (embeddings 1)" in res.output and not entry.exists()


def test_embed_with_an_accelerator_is_a_separate_cache_entry(cache_dir):
    base = ["embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--num-workers", "0", "--json"]
    plain = json.loads(_run(*base, cache_dir=cache_dir).stdout)
    res = _run(*base, "--accel", "tome:r=2", cache_dir=cache_dir)
    assert res.exit_code == 0, res.output
    fast = json.loads(res.stdout)
    assert fast["digest"] != plain["digest"] and fast["shape"] == plain["shape"] and not fast["from_cache"]
    bad = _run("embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--accel", "tomee:r=2",
               cache_dir=cache_dir)
    assert bad.exit_code == 2 and "unknown accelerator 'tomee'" in bad.output


def test_eval_compare_report_verbs(tmp_path, cache_dir):
    from tests.conftest import write_images

    root = write_images(tmp_path / "imgs", n_per_class=15, classes=("a", "b", "c"))
    runs = tmp_path / "runs"
    res = runner.invoke(app, ["eval", "-b", "pixels:8", "-d", f"folder:{root}", "-p", "knn", "--n-resamples", "200",
                              "--num-workers", "0", "--cache-dir", str(cache_dir), "--out", str(runs), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["kind"] == "eval" and "top1" in rec["metrics"]["knn"]
    res = runner.invoke(app, ["compare", "-b", "pixels:8,pixels:4", "-d", f"folder:{root}", "-p", "knn",
                              "--n-resamples", "200", "--num-workers", "0", "--cache-dir", str(cache_dir),
                              "--out", str(runs)])
    assert res.exit_code == 0, res.output
    assert "pixels:8 vs pixels:4" in " ".join(res.output.split())
    html, md, csv_path = tmp_path / "r.html", tmp_path / "r.md", tmp_path / "m.csv"
    res = runner.invoke(app, ["report", str(runs), "-o", str(html), "--markdown", str(md), "--csv", str(csv_path)])
    assert res.exit_code == 0, res.output
    assert "data:image/png;base64," in html.read_text() and "pixels:4" in md.read_text()
    res = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no run records" in res.output


def test_quickstart_offline(tmp_path, cache_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["quickstart", "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "demo:fmnist-vit vs pixels:28" in text and "significantly better" in text
    assert (tmp_path / "report.html").exists() and len(list((tmp_path / "runs" / "quickstart").glob("*.json"))) == 4
