"""bench/gpu_check.py must keep running: CI runs it on the CPU with tiny sizes (the Ray check has its own tests
in tests/unit/test_ray_engine.py and is skipped here for time)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_gpu_check_runs_every_path_on_the_cpu(capsys):
    mod = _load()
    rc = mod.main(["--device", "cpu", "--quick", "--skip", "ray", "--json"])
    doc = json.loads(capsys.readouterr().out)
    failed = {r["check"]: r["status"] for r in doc["rows"] if r["status"] != "ok"}
    assert rc == 0 and not failed, failed
    assert [r["check"] for r in doc["rows"]] == [c for c in mod.CHECKS if c != "ray"]
    rows = {r["check"]: r for r in doc["rows"]}
    assert rows["knn"]["same_neighbours_as_cpu"] == 1.0 and rows["fd"]["relative_diff_vs_cpu"] < 1e-8


def test_bad_arguments_are_one_line(capsys):
    mod = _load()
    assert mod.main(["--device", "cpu", "--skip", "nope"]) == 2
    assert "unknown check(s) nope" in capsys.readouterr().err
