"""Parquet export of cached sets: layout pandas/pyarrow/embedding-reader read, metadata, no recompute, bad targets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import vitlab
from tests.conftest import write_images
from vitlab.cli import app
from vitlab.errors import CacheError, ConfigError
from vitlab.store import EmbeddingStore
from vitlab.store.export import export_parquet, find_cached, open_entry, to_parquet

runner = CliRunner()
BB = "demo:fmnist-vit"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    folder = write_images(root / "imgs", n_per_class=7)
    cache = root / "cache"
    emb = vitlab.embed(BB, f"folder:{folder}", cache_dir=cache, layers=[-1, -2], progress=False, num_workers=0)
    return {"root": root, "data": f"folder:{folder}", "cache": cache, "emb": emb}


def _stack(table: pa.Table) -> np.ndarray:
    """What embedding-reader's ParquetReader does with the column: to_numpy() then np.stack."""
    return np.stack(table["embedding"].to_numpy())


def test_one_file_schema_values_and_metadata(ws, tmp_path):
    emb = ws["emb"]
    info = to_parquet(emb, tmp_path / "e.parquet", layer=-2, pool="cls+mean")
    t = pq.read_table(tmp_path / "e.parquet")
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), 2 * 96)
    assert t.column_names == ["id", "label", "class", "embedding"] and t.num_rows == len(emb) == info["rows"] == 21
    np.testing.assert_array_equal(_stack(t), emb.get(-2, "cls+mean"))
    flat = t["embedding"].combine_chunks().flatten().to_numpy().reshape(-1, 192)  # zero-copy route
    np.testing.assert_array_equal(flat, emb.get(-2, "cls+mean"))
    assert t["id"].to_pylist() == emb.ids and t["label"].to_pylist() == emb.labels.tolist()
    assert t["class"].to_pylist() == [emb.classes[v] for v in emb.labels]
    meta = json.loads(t.schema.metadata[b"vitlab"])
    assert meta["digest"] == emb.digest and meta["layer"] == emb.depth - 2 and meta["pool"] == "cls+mean"
    assert meta["backbone"] == emb.key["backbone"] and meta["source"]["fingerprint"] == emb.key["source"]["fingerprint"]
    assert meta["source"]["uri"] == ws["data"] and meta["classes"] == emb.classes
    df = pd.read_parquet(tmp_path / "e.parquet")
    assert df["id"].tolist() == emb.ids and np.array_equal(np.stack(df["embedding"].to_numpy()), _stack(t))


def test_a_folder_of_parts_reads_back_in_order(ws, tmp_path):
    emb = ws["emb"]
    info = to_parquet(emb, tmp_path / "parts", rows_per_file=8, batch_rows=3)
    assert [p.rsplit("/", 1)[1] for p in info["files"]] == ["part-00000.parquet", "part-00001.parquet",
                                                            "part-00002.parquet"]
    assert [pq.ParquetFile(p).metadata.num_rows for p in info["files"]] == [8, 8, 5]
    assert pq.ParquetFile(info["files"][0]).metadata.num_row_groups == 3  # batch_rows per row group
    whole = pa.concat_tables(pq.read_table(p) for p in info["files"])  # embedding-reader reads the parts in order
    np.testing.assert_array_equal(_stack(whole), emb.get())
    assert whole["id"].to_pylist() == emb.ids
    assert pq.read_table(tmp_path / "parts").num_rows == 21  # pyarrow reads the folder as one dataset


def test_unlabelled_sets_have_null_labels(tmp_path):
    folder = write_images(tmp_path / "flat", n_per_class=2, flat=True)
    emb = vitlab.embed(BB, f"folder:{folder}", cache_dir=tmp_path / "c", progress=False, num_workers=0)
    t = pq.read_table(to_parquet(emb, tmp_path / "u.parquet")["path"])
    assert t["label"].null_count == t.num_rows == 6 and t["class"].null_count == 6
    assert json.loads(t.schema.metadata[b"vitlab"])["classes"] is None


def test_cached_sets_are_never_recomputed(ws, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(EmbeddingStore, "_compute", boom)
    info = export_parquet(tmp_path / "a.parquet", backbone=BB, data=ws["data"], cache_dir=ws["cache"],
                          layers=[-1, -2])
    assert info["from_cache"] and info["digest"] == ws["emb"].digest
    by_digest = export_parquet(tmp_path / "b.parquet", digest=ws["emb"].digest[:10], cache_dir=ws["cache"])
    assert by_digest["digest"] == ws["emb"].digest
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))
    assert find_cached(BB, ws["data"], cache_dir=ws["cache"], layers=[-1, -2]).from_cache


def test_not_cached_says_so_and_computes_only_when_asked(ws, tmp_path):
    entries = sorted(p.name for p in (ws["cache"] / "embeddings").iterdir())
    with pytest.raises(CacheError, match=r"demo:fmnist-vit on folder:.* \(layers -1, fp32\) is not in the cache at "
                                         r".*Compute it with `vitlab embed -b demo:fmnist-vit -d folder:.* --layers -1`"
                                         r".* or pass --compute"):
        export_parquet(tmp_path / "x.parquet", backbone=BB, data=ws["data"], cache_dir=ws["cache"])
    assert sorted(p.name for p in (ws["cache"] / "embeddings").iterdir()) == entries  # nothing started
    assert not (tmp_path / "x.parquet").exists()
    info = export_parquet(tmp_path / "x.parquet", backbone=BB, data=ws["data"], cache_dir=tmp_path / "c2",
                          compute=True, num_workers=0)
    assert not info["from_cache"] and info["rows"] == 21
    ref = vitlab.embed(BB, ws["data"], cache_dir=tmp_path / "c2", progress=False, num_workers=0)
    assert ref.from_cache and np.array_equal(_stack(pq.read_table(tmp_path / "x.parquet")), ref.get())


def test_bad_targets_and_entries_give_one_line(ws, tmp_path, monkeypatch):
    out = tmp_path / "e.parquet"
    out.write_bytes(b"old")
    with pytest.raises(ConfigError, match=r"e\.parquet already exists; pass --overwrite"):
        export_parquet(out, backbone="no-such-backbone", data=ws["data"])  # refused before loading anything
    to_parquet(ws["emb"], out, overwrite=True)
    assert pq.read_table(out).num_rows == 21
    with pytest.raises(ConfigError, match=r"does not exist; create it first"):
        to_parquet(ws["emb"], tmp_path / "nope" / "e.parquet")
    with pytest.raises(CacheError, match=r"no cache entry under .* match digest 'ffff'"):
        open_entry("ffff", cache_dir=ws["cache"])
    with pytest.raises(ConfigError, match=r"layer -4 was not extracted"):
        to_parquet(ws["emb"], tmp_path / "l.parquet", layer=-4)
    import vitlab.store.export as ex

    calls = []

    def fail_second(*a, **k):  # a failure after the first row group: nothing half-written is left
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*a, **k)

    real = ex._table
    monkeypatch.setattr(ex, "_table", fail_second)
    with pytest.raises(OSError, match="disk full"):
        to_parquet(ws["emb"], tmp_path / "half.parquet", batch_rows=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.parquet"]


def test_cli_export_json_and_errors(ws, tmp_path):
    out = tmp_path / "cli.parquet"
    args = ["cache", "export", "-b", BB, "-d", ws["data"], "--layers", "-1,-2", "--layer", "-1", "--pool", "mean",
            "--output", str(out), "--cache-dir", str(ws["cache"]), "--json"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["rows"] == 21 and info["dim"] == 96 and info["from_cache"] and info["pool"] == "mean"
    np.testing.assert_array_equal(_stack(pq.read_table(out)), ws["emb"].get(-1, "mean"))
    r = runner.invoke(app, args)  # exists now
    assert r.exit_code == 2 and "already exists; pass --overwrite" in r.stderr and r.stdout == ""
    r = runner.invoke(app, ["cache", "export", "-b", BB, "-d", ws["data"], "--output", str(tmp_path / "n.parquet"),
                            "--cache-dir", str(ws["cache"])])
    assert r.exit_code == 2 and "is not in the cache" in r.stderr
    r = runner.invoke(app, ["cache", "export", ws["emb"].digest[:8], "-b", BB, "--output", str(tmp_path / "m.parquet"),
                            "--cache-dir", str(ws["cache"])])
    assert r.exit_code == 2 and "either a digest or --backbone and --data" in r.stderr
