"""Issue 18 part 2: one output rule for every verb, checked before any work.

An output aimed at an input (a record being read, a data manifest, a checkpoint) or at another output of
the same command is refused in one line; an existing file that is not the command's own earlier output
is never replaced without --overwrite; every message names the path actually written. The user's files
are byte-identical afterwards, and nothing was embedded (the cache was never created).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.reliability.conftest import one_line_error, tree
from vitlab.cli import app
from vitlab.outputs import check_output_dir
from vitlab.record import RunRecord
from vitlab.errors import ConfigError

runner = CliRunner()
B = ["-b", "pixels:8"]


@pytest.fixture
def ws(tmp_path):
    """A user's workspace: a runs folder with one record, a manifest with images, a PNG, a notes file."""
    runs = tmp_path / "runs"
    rec = RunRecord(kind="eval", config={"backbone": "pixels:8", "data": "x"}, metrics={}).save(runs)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(6):
        Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(imgs / f"{i}.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n" + "".join(f"imgs/{i}.png,{i % 2}\n" for i in range(6)))
    (tmp_path / "notes.html").write_text("<p>my own notes</p>")
    return {"root": tmp_path, "runs": runs, "rec": rec, "manifest": manifest, "cache": tmp_path / "cache"}


def _same_after(ws, args, *needles):
    before = tree(ws["root"])
    res = runner.invoke(app, args)
    err = one_line_error(res, *needles)
    assert tree(ws["root"]) == before
    return err


def test_report_onto_the_record_it_reads(ws):
    _same_after(ws, ["report", str(ws["rec"]), "-o", str(ws["rec"])],
                f"--output {ws['rec']}: is an input of this command (the run records {ws['rec']})")


def test_report_csv_onto_a_record_of_the_runs_folder(ws):
    _same_after(ws, ["report", str(ws["runs"]), "-o", str(ws["root"] / "r.html"), "--csv", str(ws["rec"])],
                f"--csv {ws['rec']}: is an input of this command (the run records {ws['runs']})")


def test_curate_report_onto_the_data_manifest(ws):
    _same_after(ws, ["curate", *B, "-d", f"csv:{ws['manifest']}", "--report", str(ws["manifest"]),
                     "--cache-dir", str(ws["cache"])],
                f"--report {ws['manifest']}: is an input of this command (the data manifest csv:{ws['manifest']})")


def test_curate_write_manifest_onto_the_data_manifest(ws):
    _same_after(ws, ["curate", *B, "-d", f"csv:{ws['manifest']}", "--write-manifest", str(ws["manifest"]),
                     "--cache-dir", str(ws["cache"])], "--write-manifest", "is an input of this command")


def test_two_outputs_on_one_path(ws):
    p = ws["root"] / "r.html"
    _same_after(ws, ["report", str(ws["runs"]), "-o", str(p), "--markdown", str(p)],
                f"--output and --markdown both name {p}; give each output its own path.")


def test_embed_export_names_the_file_it_writes(ws):
    _same_after(ws, ["embed", *B, "-d", "sample:digits?limit=12", "--export", str(ws["root"] / "m2.csv"),
                     "--cache-dir", str(ws["cache"])],
                "a vitlab embeddings export (.npz) is written as .npz; name it m2.npz (or m2.csv.npz)")
    assert not ws["cache"].exists()


def test_embed_export_writes_exactly_the_named_npz_and_says_so(ws):
    out = ws["root"] / "e.npz"
    res = runner.invoke(app, ["embed", *B, "-d", "sample:digits?limit=12", "--pool", "mean", "--export", str(out),
                              "--cache-dir", str(ws["cache"]), "--num-workers", "0"])
    assert res.exit_code == 0, res.output
    assert f"exported to {out}" in " ".join(res.output.split()) and np.load(out)["ids"].shape == (12,)
    again = runner.invoke(app, ["embed", *B, "-d", "sample:digits?limit=12", "--pool", "mean", "--export", str(out),
                                "--cache-dir", str(ws["cache"]), "--num-workers", "0"])
    assert again.exit_code == 0  # its own earlier export is replaced


def test_an_existing_file_that_is_not_ours_needs_overwrite(ws):
    notes = ws["root"] / "notes.html"
    _same_after(ws, ["report", str(ws["runs"]), "-o", str(notes)],
                f"--output {notes}: exists and is not a vitlab HTML report written earlier, so it is not replaced. "
                "Choose another name, or pass --overwrite.")
    res = runner.invoke(app, ["report", str(ws["runs"]), "-o", str(notes), "--overwrite"])
    assert res.exit_code == 0 and "vitlab" in notes.read_text()


def test_the_command_s_own_earlier_output_is_replaced(ws):
    out = ws["root"] / "r.html"
    md, csv = ws["root"] / "r.md", ws["root"] / "r.csv"
    args = ["report", str(ws["runs"]), "-o", str(out), "--markdown", str(md), "--csv", str(csv)]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, args).exit_code == 0  # second time: all three are its own, replaced
    assert md.read_text().startswith("<!-- generated by vitlab") and csv.read_text().startswith("dataset,backbone")
    csv.write_text("my,own,table\n")
    before = tree(ws["root"])
    one_line_error(runner.invoke(app, args), f"--csv {csv}: exists and is not a vitlab metrics CSV")
    assert tree(ws["root"]) == before


def test_inspect_pca_and_report_cannot_be_the_same_or_an_input(ws):
    pca = ws["root"] / "p.npz"
    _same_after(ws, ["inspect", *B, "-d", "sample:digits", "--pca", str(pca), "--report", str(pca)],
                "both name")
    _same_after(ws, ["inspect", *B, "-d", f"csv:{ws['manifest']}", "--report", str(ws["manifest"])],
                "is an input of this command")


def test_gen_stats_output_onto_its_feature_file(ws):
    feats = ws["root"] / "f.npy"
    np.save(feats, np.ones((5, 3), np.float32))
    _same_after(ws, ["gen-stats", "-d", str(feats), "-o", str(feats)], "is an input of this command")


def test_tradeoff_plot_onto_a_user_png(ws):
    png = ws["root"] / "imgs" / "0.png"
    _same_after(ws, ["tradeoff", *B, "-d", f"folder:{ws['root'] / 'imgs'}", "--accel", "none", "--plot", str(png),
                     "--cache-dir", str(ws["cache"])], f"--plot {png}: is an input of this command")


def test_cache_export_onto_the_data_manifest(ws):
    _same_after(ws, ["cache", "export", *B, "-d", f"csv:{ws['manifest']}", "--output", str(ws["manifest"]),
                     "--cache-dir", str(ws["cache"])], "is an input of this command")


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_out_in_proc_fails_up_front(ws):
    _same_after(ws, ["eval", *B, "-d", "sample:digits?limit=20", "--out", "/proc/vitlab", "--cache-dir",
                     str(ws["cache"])], "--out /proc/vitlab: cannot be written")
    assert not ws["cache"].exists()
    with pytest.raises(ConfigError, match=r"^-o /proc/vitlab: cannot be written \(/proc/vitlab: "):
        check_output_dir("/proc/vitlab", "-o")


def test_the_probe_leaves_nothing_behind(tmp_path):
    check_output_dir(tmp_path / "a" / "b" / "c", "--out")
    assert list(tmp_path.iterdir()) == []


def test_a_record_of_the_same_name_that_is_not_a_record_is_never_replaced(tmp_path):
    rec = RunRecord(kind="eval", config={}, metrics={})
    path = tmp_path / f"eval-{rec.run_id}.json"
    path.write_text('{"mine": 1}')
    from vitlab.errors import WriteError

    with pytest.raises(WriteError, match="exists and is not a run record, so it is not replaced"):
        rec.save(tmp_path)
    assert json.loads(path.read_text()) == {"mine": 1}
