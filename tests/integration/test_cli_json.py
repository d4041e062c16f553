"""``--json`` prints exactly one JSON document on stdout; progress, notes and warnings go to stderr.

Every verb with ``--json`` runs on a cold cache (its own small image folder, one shared cache dir),
because a cold cache is when a progress bar would be drawn. click >= 8.2's CliRunner keeps
``result.stdout`` and ``result.stderr`` apart.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import write_images
from vitlab.cli import app
from vitlab.store.progress import image_progress

runner = CliRunner()
BAR_MARKS = ("━", "img/s", "ETA")  # the bar, the rate and the ETA columns of image_progress()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> dict[str, Path]:
    """One cache dir for every verb; a different small folder per verb, so each one embeds (cold)."""
    root = tmp_path_factory.mktemp("cli_json")
    folders = {name: write_images(root / name, n_per_class=8, start=24 * i, jitter=i)
               for i, name in enumerate(("embed", "eval", "compare", "tradeoff", "gen_stats", "gen_real", "gen_fake",
                                         "subprocess"))}
    rng = np.random.default_rng(0)
    np.save(root / "real.npy", rng.normal(size=(40, 8)).astype(np.float32))
    np.save(root / "fake.npy", rng.normal(0.3, 1.0, size=(40, 8)).astype(np.float32))
    return {"root": root, "cache": root / "cache", **folders}


def _verbs(ws: dict[str, Path]) -> dict[str, list[str]]:
    c = ["--cache-dir", str(ws["cache"])]
    w0 = ["--num-workers", "0"]
    return {
        "embed": ["embed", "-b", "demo:fmnist-vit", "-d", f"folder:{ws['embed']}", *w0, *c],
        "eval": ["eval", "-b", "demo:fmnist-vit", "-d", f"folder:{ws['eval']}", "-p", "knn", "--n-resamples", "20",
                 *w0, *c],
        "compare": ["compare", "-b", "demo:fmnist-vit,pixels", "-d", f"folder:{ws['compare']}", "-p", "knn",
                    "--n-resamples", "20", *w0, *c],
        "tradeoff": ["tradeoff", "-b", "demo:fmnist-vit", "-d", f"folder:{ws['tradeoff']}", "--accel", "none",
                     "--n-resamples", "20", "--repeats", "2", "--batch-size", "4", *w0, *c],
        "bench": ["bench", "-b", "demo:fmnist-vit", "--accel", "none", "--batch-size", "2", "--warmup", "1",
                  "--repeats", "2", "--min-time", "0", "--latency-repeats", "2"],
        "gen-stats": ["gen-stats", "-d", f"folder:{ws['gen_stats']}", "-b", "demo:fmnist-vit",
                      "-o", str(ws["root"] / "s.stats"), "--device", "cpu", *w0, *c],
        "gen-eval-images": ["gen-eval", "--real", f"folder:{ws['gen_real']}", "--fake", f"folder:{ws['gen_fake']}",
                            "-b", "demo:fmnist-vit", "--metrics", "fd,kd", "--n-resamples", "5", "--device", "cpu", *w0, *c],
        "gen-eval-features": ["gen-eval", "--real-features", str(ws["root"] / "real.npy"), "--fake-features",
                              str(ws["root"] / "fake.npy"), "--metrics", "fd,kd", "--n-resamples", "5"],
        "cache-ls": ["cache", "ls", *c],
    }


# what each verb's JSON must hold (so an empty or wrong document fails too)
EXPECT = {"embed": "from_cache", "eval": "metrics", "compare": "metrics", "tradeoff": "metrics", "bench": "metrics",
          "gen-stats": "encoder", "gen-eval-images": "metrics", "gen-eval-features": "metrics", "cache-ls": None}


@pytest.mark.parametrize("verb", list(EXPECT))  # cache-ls last: it lists what the others cached
def test_json_is_the_only_thing_on_stdout(ws, verb):
    res = runner.invoke(app, [*_verbs(ws)[verb], "--json"])
    assert res.exit_code == 0, res.stderr + res.stdout
    doc = json.loads(res.stdout)  # fails on any bar, note or warning before or after the document
    if EXPECT[verb]:
        assert EXPECT[verb] in doc
    if verb == "embed":
        assert doc["from_cache"] is False  # the cache was cold, so a bar would have been drawn
    if verb == "cache-ls":
        embeddings = [e for e in doc["entries"] if e["namespace"] == "embeddings"]
        assert len(embeddings) >= 5  # embed, eval, compare (2), tradeoff, gen-* entries in the shared cache
    for mark in BAR_MARKS:  # stderr is not a terminal here: no bar there either
        assert mark not in res.stderr


def test_quiet_silences_notes_but_not_results(ws):
    args = _verbs(ws)["gen-eval-features"]
    loud = runner.invoke(app, args)
    quiet = runner.invoke(app, [*args, "--quiet"])
    assert loud.exit_code == quiet.exit_code == 0
    assert "note (kd)" in loud.stderr and "warning:" in loud.stderr  # 40 samples: small-sample notes
    assert "note (" not in quiet.stderr and "warning:" not in quiet.stderr
    assert "fd" in quiet.stderr and quiet.stdout == ""  # the result table still shows, on stderr


def test_subprocess_with_piped_stderr_draws_no_bar(ws, tmp_path):
    """A real process whose stderr is a pipe (not a terminal): stdout is pure JSON, stderr has no bar."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", "OMP_NUM_THREADS": "1"}
    env.pop("FORCE_COLOR", None)
    env.pop("TTY_COMPATIBLE", None)
    proc = subprocess.run([sys.executable, "-m", "vitlab.cli", "embed", "-b", "demo:fmnist-vit", "-d",
                           f"folder:{ws['subprocess']}", "--num-workers", "0", "--cache-dir", str(tmp_path / "c"),
                           "--json"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["from_cache"] is False
    for mark in BAR_MARKS:
        assert mark not in proc.stderr


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_goes_to_stderr_and_only_on_a_terminal():
    for err, shown in ((_TTY(), True), (io.StringIO(), False)):
        out = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            with image_progress() as bar:
                task = bar.add_task("embed demo", total=4)
                bar.advance(task, 4)
        assert out.getvalue() == ""
        assert ("embed demo" in err.getvalue()) is shown


def test_json_output_is_strict_json_even_with_undefined_metrics(capsys):
    from vitlab.cli.common import print_json

    print_json({"auroc": {"value": float("nan"), "low": float("-inf")}, "top1": 0.5})

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    doc = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert doc == {"auroc": {"value": None, "low": None}, "top1": 0.5}
