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
    s = json.loads(first.stdout[first.stdout.index("{"):])
    assert s["n"] == 2000 and s["shape"] == [2000, 96] and s["from_cache"] is False
    second = _run(*args, "--layers", "-1", "--export", str(tmp_path / "e.npz"), cache_dir=cache_dir)
    assert second.exit_code == 0 and "from cache" in second.output
    z = np.load(tmp_path / "e.npz")
    assert z["L5_cls"].shape == (2000, 96) and z["labels"].shape == (2000,)


def test_embed_layers_and_pool(cache_dir):
    res = _run("embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--layers", "-1,-4", "--pool",
               "cls+mean", "--num-workers", "0", "--json", cache_dir=cache_dir)
    s = json.loads(res.stdout[res.stdout.index("{"):])
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
    assert json.loads(res.stdout)[0]["backbone"] == "demo:fmnist-vit"
    res = runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache_dir), "--yes"])
    assert "removed 1" in res.output


def test_embed_with_an_accelerator_is_a_separate_cache_entry(cache_dir):
    base = ["embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--num-workers", "0", "--json"]
    out = _run(*base, cache_dir=cache_dir).stdout
    plain = json.loads(out[out.index("{"):])
    res = _run(*base, "--accel", "tome:r=2", cache_dir=cache_dir)
    assert res.exit_code == 0, res.output
    fast = json.loads(res.stdout[res.stdout.index("{"):])
    assert fast["digest"] != plain["digest"] and fast["shape"] == plain["shape"] and not fast["from_cache"]
    bad = _run("embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--accel", "tomee:r=2",
               cache_dir=cache_dir)
    assert bad.exit_code == 2 and "unknown accelerator 'tomee'" in bad.output
