"""Issue 18 part 4: a full disk (ENOSPC, simulated by patching writes) while writing the cache, a run record
or a report is one line naming the path and the space needed; records are written atomically, and a
result whose record cannot be saved is still printed before the error."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import vitlab
from tests.reliability.conftest import one_line_error, tree
from vitlab.cli import app
from vitlab.errors import WriteError
from vitlab.record import RunRecord

runner = CliRunner()
EVAL = ["eval", "-b", "pixels:8", "-d", "sample:digits?limit=300", "-p", "knn", "--n-resamples", "50",
        "--num-workers", "0"]


def test_cache_full_is_one_line_with_path_and_space(tmp_path, full_disk):
    cache = tmp_path / "cache"
    cache.mkdir()
    full_disk(cache)
    res = runner.invoke(app, ["embed", "-b", "pixels:8", "-d", "sample:digits?limit=12", "--pool", "mean",
                              "--num-workers", "0", "--cache-dir", str(cache)])
    err = one_line_error(res, f"cannot write {cache}/embeddings/", "(no space left on device: ", " needed, ",
                         " free). Free some space or pass --cache-dir <another dir>")
    assert "Traceback" not in res.output and err.count("error:") == 1


def test_record_full_prints_the_result_then_one_line(tmp_path, full_disk):
    runs = tmp_path / "runs"
    old = RunRecord(kind="eval", config={"earlier": True}, metrics={}).save(runs)
    before = tree(runs)
    full_disk(runs)
    res = runner.invoke(app, [*EVAL, "--out", str(runs), "--cache-dir", str(tmp_path / "cache"), "--json"])
    one_line_error(res, f"cannot write {runs}/eval-", ".json (no space left on device: ", "pass another --out")
    doc = json.loads(res.stdout)  # the work is not lost: the record is on stdout, one JSON document
    assert doc["kind"] == "eval" and doc["metrics"]["knn"]["top1"]["value"] > 0
    assert tree(runs) == before and old.exists()  # nothing half-written next to the earlier record


def test_record_full_without_json_prints_the_table(tmp_path, full_disk):
    runs = tmp_path / "runs"
    runs.mkdir()
    full_disk(runs)
    res = runner.invoke(app, [*EVAL, "--out", str(runs), "--cache-dir", str(tmp_path / "cache")])
    one_line_error(res, "no space left on device")
    assert "knn" in res.stderr and "top1" in res.stderr  # the leaderboard was printed before the error


def test_report_full_keeps_the_earlier_report_whole(tmp_path, full_disk):
    runs = tmp_path / "runs"
    RunRecord(kind="eval", config={"backbone": "b", "data": "d"}, metrics={}).save(runs)
    out = tmp_path / "site"
    assert runner.invoke(app, ["report", str(runs), "-o", str(out / "r.html")]).exit_code == 0
    before = tree(out)
    full_disk(out)
    one_line_error(runner.invoke(app, ["report", str(runs), "-o", str(out / "r.html")]),
                   f"cannot write {out / 'r.html'} (no space left on device: ", " needed, ")
    assert tree(out) == before


def test_record_save_is_atomic_and_carries_the_record(tmp_path, monkeypatch):
    rec = RunRecord(kind="eval", config={"a": 1}, metrics={"knn": {"top1": {"value": 0.5, "low": 0.4, "high": 0.6}}})
    path = rec.save(tmp_path)
    first = path.read_bytes()
    import vitlab._io as io_mod

    def full(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(io_mod.os, "replace", full)
    with pytest.raises(WriteError, match=r"no space left on device: \d+(\.\d)? [kM]?B needed") as e:
        rec.save(tmp_path)
    assert e.value.record is rec and path.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_export_full_is_one_line(tmp_path, full_disk):
    out = tmp_path / "exports"
    out.mkdir()
    cache = tmp_path / "cache"
    vitlab.embed("pixels:8", "sample:digits?limit=12", pool="mean", cache_dir=cache, progress=False, num_workers=0)
    full_disk(out)
    one_line_error(runner.invoke(app, ["embed", "-b", "pixels:8", "-d", "sample:digits?limit=12", "--pool", "mean",
                                       "--cache-dir", str(cache), "--export", str(out / "e.npz")]),
                   f"cannot write {out / 'e.npz'} (no space left on device")
    assert list(out.iterdir()) == []


def test_consolidation_checks_the_room_first_not_a_memmap_crash(tmp_path, monkeypatch):
    """Memory-mapped arrays on a full disk die with SIGBUS, not an error: the store checks the room first."""
    import collections

    import vitlab._io as io_mod

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(io_mod.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10, 10))
    with pytest.raises(WriteError, match=r"^cannot write .*/embeddings/[0-9a-f]{24} \(no space left on device: "
                                         r".* needed, 10 B free\)\. Free some space or pass --cache-dir"):
        vitlab.embed("pixels:8", "sample:digits?limit=12", pool="mean", cache_dir=tmp_path / "c", progress=False,
                     num_workers=0)
