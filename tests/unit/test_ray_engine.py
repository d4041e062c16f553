"""The Ray Data engine: same key, same shards, same bytes as the local engine; faults keep finished shards.

One Ray instance for the whole file (2 CPUs, no dashboard), shut down at the end. The source is the
first 320 images of the bundled Fashion-MNIST sample; units of 64 rows, so five shards.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import vitlab
from vitlab.data.base import ArraySource
from vitlab.data.sample import SampleSource
from vitlab.errors import ConfigError, DataError
from vitlab.store import EmbeddingStore
from vitlab.store.ray_engine import check_engine, plan_units
from vitlab.store.shards import batch_grid

N, BATCH, UNIT = 320, 32, 64
FAIL_AT, DIE_AT = 128, 192  # unit starts: one always fails, one kills its actor once


@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fault hooks travel to the actors
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def subset():
    s = SampleSource("fashion-mnist")
    return ArraySource("sample:fashion-mnist?first=320", s.images[:N], s.ids[:N], s.labels[:N], s.classes,
                       {"sample": s.fingerprint, "first": N})


@pytest.fixture(scope="module")
def local(subset, tmp_path_factory):
    return vitlab.embed("demo:fmnist-vit", subset, cache_dir=tmp_path_factory.mktemp("local"), batch_size=BATCH,
                        num_workers=0, progress=False, shard_size=256)


def _same_bytes(a, b) -> None:
    names = sorted(p.name for p in a.path.glob("*.npy"))
    assert names == sorted(p.name for p in b.path.glob("*.npy")) and "L5.cls.npy" in names
    for name in names:
        assert (a.path / name).read_bytes() == (b.path / name).read_bytes(), name
    assert a.path.name == b.path.name  # the same cache key


def test_units_are_whole_grid_batches_inside_blocks():
    ranges = [(0, 100), (130, 300)]
    units = plan_units(ranges, block=128, batch_size=24, unit_rows=50)
    assert units == plan_units(ranges, block=128, batch_size=24, unit_rows=50)  # deterministic
    grid = batch_grid(ranges, 128, 24)
    edges = {a for a, _ in grid} | {b for _, b in grid}
    assert all(a in edges and b in edges for a, b in units)  # never cuts a batch
    assert all(a // 128 == (b - 1) // 128 for a, b in units)  # never crosses a block
    covered = [r for a, b in units for r in range(a, b)]
    assert covered == [r for a, b in ranges for r in range(a, b)]  # every row once, in order
    assert all(b - a <= 50 for a, b in units)


def test_bad_engine_options_fail_before_loading():
    with pytest.raises(ConfigError, match="unknown engine 'spark'"):
        check_engine("spark", None)
    with pytest.raises(ConfigError, match=r"unknown ray_options \['actors'\]"):
        check_engine("ray", None, {"actors": 2})
    with pytest.raises(ConfigError, match="unit_rows must be a whole number >= 1, got 0"):
        check_engine("ray", None, {"unit_rows": 0})
    with pytest.raises(ConfigError, match="--ray-address and ray_options apply only to --engine ray"):
        vitlab.embed("demo:fmnist-vit", "sample:no-such-sample", ray_address="auto")


def test_unreachable_ray_address_is_one_line_before_any_work(tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match=r"cannot reach the Ray cluster at '127.0.0.1:1' \(Connection refused\)"):
        vitlab.embed("demo:fmnist-vit", "sample:fashion-mnist", engine="ray", ray_address="127.0.0.1:1",
                     cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="is not host:port"):
        check_engine("ray", "head-node")
    assert not list((tmp_path / "embeddings").iterdir())


def test_missing_ray_says_how_to_install(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from vitlab.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'vitlab\[ray\]'"):
        vitlab.embed("demo:fmnist-vit", "sample:fashion-mnist", engine="ray", cache_dir=tmp_path)
    res = CliRunner().invoke(app, ["embed", "-b", "demo:fmnist-vit", "-d", "sample:fashion-mnist", "--engine", "ray",
                                   "--cache-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "pip install 'vitlab[ray]'" in res.output
    assert not list((tmp_path / "embeddings").iterdir())  # nothing computed


class _Faults:
    """Kills the actor the first time it reaches unit ``DIE_AT`` (a lost actor: Ray restarts it and
    retries the unit) and fails unit ``FAIL_AT`` every time (the run stops; the rest is kept)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self, start: int, stop: int) -> None:
        import os

        if start == DIE_AT and not self.marker.exists():
            self.marker.write_text("died once")
            os._exit(1)
        if start == FAIL_AT:
            raise DataError(f"simulated failure of rows {start}-{stop}")


@pytest.mark.slow  # 40 s on a quiet 2-core box (Ray start-up and three actor starts), 80 s when loaded
def test_ray_engine_faults_resume_and_bytes(ray_session, subset, local, tmp_path):
    """One Ray run with two actors in which an actor dies once (Ray restarts it and retries its unit) and one
    unit fails (the run stops in one line, the finished shards stay); the rerun computes only the missing
    unit, the consolidated arrays are byte-identical to the local engine's, and a local run is a cache hit."""
    cache, marker = tmp_path / "c", tmp_path / "died"
    with pytest.raises(DataError, match=r"1 unit\(s\) failed \(first at row 128: DataError: simulated failure"):
        vitlab.embed("demo:fmnist-vit", subset, cache_dir=cache, batch_size=BATCH, progress=False, shard_size=256,
                     engine="ray", ray_options={"unit_rows": UNIT, "num_actors": 2, "hook": _Faults(marker)})
    assert marker.exists()  # an actor did die once
    shard_dir = next((cache / "embeddings").iterdir()) / "shards"
    starts = sorted(int(p.stem.split("-")[1]) for p in shard_dir.glob("*.json"))
    assert starts == [0, 64, 192, 256]  # the lost actor's unit was retried; only the failed one is missing
    emb = vitlab.embed("demo:fmnist-vit", subset, cache_dir=cache, batch_size=BATCH, progress=False, shard_size=256,
                       engine="ray", ray_options={"unit_rows": UNIT})
    assert not emb.from_cache and emb.stats["engine"] == "ray" and emb.stats["actors"] == 1
    assert emb.stats["shards_written"] == 1 and emb.stats["images"] == UNIT  # only the missing unit
    assert emb.stats["forward_seconds"] > 0 and emb.stats["data_seconds"] > 0 and emb.stats["peak_memory_mb"] > 0
    _same_bytes(local, emb)
    again = vitlab.embed("demo:fmnist-vit", subset, cache_dir=cache, batch_size=7, num_workers=0, progress=False)
    assert again.from_cache and again.path == emb.path
    assert np.array_equal(again.labels, subset.labels)
