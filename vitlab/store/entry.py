"""The on-disk format of one embedding entry, ``<cache>/embeddings/<digest>/``::

    key.json                    the full EmbeddingKey (what the digest hashes) + shard layout: the
                                marker that makes the folder a vitlab entry (``vitlab cache clear``
                                removes nothing without it)
    .lock                       flock held while a run computes the entry (cache clear skips it)
    shards/shard-<start>.*      safetensors + sidecar with its row range, written during
                                extraction (the resume unit: rows no valid shard covers)
    L{layer}.{pool}.npy         consolidated arrays, read back with numpy mmap (``embed``: last block only)
    L{layer}.tokens.npy         view="tokens" entries: patch tokens [n, N, C], float32 or float16
    index.npy, labels.npy       source row of each embedding row, labels
    rows.json                   ids, groups, split column of the rows
    manifest.json               written last: complete flag, shapes, sha256 and stat (size,
                                mtime, ctime, inode) of each file, skipped ids, throughput; for
                                the tokens view also the grid, prefix/register tokens, input size

Shards are safetensors (safe, self-describing, checksummed in a sidecar); finished sets are
consolidated into ``.npy`` because numpy memory-maps them directly, so a 1M x 1536 set opens
instantly and reads only what is used. Every JSON file is written atomically (:mod:`vitlab._io`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vitlab._io import atomic_write_json, check_space, hash_file, stat_key
from vitlab._version import __version__
from vitlab.data.base import DataSource
from vitlab.errors import CacheError
from vitlab.store import shards
from vitlab.store.embeddings import Embeddings
from vitlab.store.fingerprint import EmbeddingKey
from vitlab.store.shards import gaps, load_shard

__all__ = ["MANIFEST_FORMAT", "CACHE_ELSEWHERE", "read_layout", "consolidate", "load_entry", "describe_entry",
           "vanished"]

MANIFEST_FORMAT = "vitlab-embeddings/1"
#: the alternative a full or read-only cache offers
CACHE_ELSEWHERE = "pass --cache-dir <another dir>"


def read_layout(entry: Path, key: EmbeddingKey, uri: str, shard_size: int | None) -> dict[str, Any]:
    """The shard layout of ``entry``: the one in its ``key.json`` when resuming (so rows run in the same
    batches), else a new one, written with the key (the entry's marker)."""
    key_file = entry / "key.json"
    try:
        old = json.loads(key_file.read_text()).get("layout", {})
        return {"shard_size": int(old["shard_size"]), "flush_seconds": old.get("flush_seconds")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        layout = {"shard_size": shard_size or shards.DEFAULT_SHARD_ROWS,
                  "flush_seconds": shards.FLUSH_SECONDS if shard_size is None else None}
        atomic_write_json(key_file, {"key": key.to_dict(), "digest": key.digest, "uri": uri, "layout": layout},
                          indent=2, elsewhere=CACHE_ELSEWHERE, mkdir=False)
        return layout


def consolidate(entry: Path, key: EmbeddingKey, source: DataSource, kept: list[dict[str, Any]],
                stats: dict[str, Any], resumed: bool, meta: dict[str, Any] | None = None) -> None:
    """Concatenate the finished shards into the ``.npy`` arrays, then write the manifest (last)."""
    shard_dir = entry / "shards"
    if gaps([(s["start"], s["stop"]) for s in kept], len(source)):
        raise CacheError(f"{shard_dir}: the shards do not cover every row; run the same command again to "
                         "recompute the missing ones.")
    n = sum(s["n_rows"] for s in kept)
    # the arrays take about what their shards take: refuse a full disk now, not with SIGBUS in a memmap
    check_space(entry, sum((shard_dir / f"{s['stem']}.safetensors").stat().st_size for s in kept),
                elsewhere=CACHE_ELSEWHERE)
    skipped = [x for s in kept for x in s["skipped"]]
    names = key.array_names()
    shapes: dict[str, list[int]] = {}
    outs: dict[str, np.ndarray] = {}
    index = np.empty(n, np.int64)
    pos = 0
    for i, side in enumerate(kept):
        arrays = load_shard(shard_dir, side)
        m = len(arrays["index"])
        if m != side["n_rows"]:
            raise CacheError(f"{shard_dir / side['stem']}: holds {m} rows, its sidecar says {side['n_rows']}; "
                             "delete it and run the same command again.")
        index[pos:pos + m] = arrays["index"]
        if not outs and (m or i == len(kept) - 1):  # shapes and dtypes from the first shard with rows
            for name in names:
                shapes[name] = [n, *arrays[name].shape[1:]]
                outs[name] = np.lib.format.open_memmap(entry / f"{name}.npy", mode="w+",
                                                       dtype=arrays[name].dtype, shape=tuple(shapes[name]))
        for name in names if m else ():
            outs[name][pos:pos + m] = arrays[name]
        pos += m
    for arr in outs.values():
        arr.flush()
    del outs
    np.save(entry / "index.npy", index)
    rows = {"ids": [source.ids[i] for i in index],
            "groups": None if source.groups is None else [source.groups[i] for i in index],
            "split": None if source.split_column is None else [source.split_column[i] for i in index]}
    atomic_write_json(entry / "rows.json", rows, elsewhere=CACHE_ELSEWHERE, mkdir=False)
    if source.labels is not None:
        np.save(entry / "labels.npy", source.labels[index])
    files = [f"{name}.npy" for name in names] + ["index.npy", "rows.json"] + \
        (["labels.npy"] if source.labels is not None else [])
    sha = {f: hash_file(entry / f, "sha256") for f in files}
    manifest = {
        "format": MANIFEST_FORMAT, "complete": True, "digest": key.digest, "key": key.to_dict(),
        "uri": source.uri, "n": n, "n_source": len(source), "classes": source.classes,
        "arrays": shapes, "sha256": sha,
        "stat": {f: stat_key(entry / f) for f in files},
        "skipped": skipped, "stats": stats, "resumed": resumed, "vitlab_version": __version__,
    }
    if key.view == "tokens":
        manifest["tokens"] = {**(meta or {}), "dtype": key.token_dtype}
    atomic_write_json(entry / "manifest.json", manifest, indent=2, elsewhere=CACHE_ELSEWHERE, mkdir=False)
    import shutil

    shutil.rmtree(shard_dir, ignore_errors=True)


def load_entry(entry: Path, key: EmbeddingKey, pool: str, verify: bool) -> Embeddings | None:
    """A valid finished entry, or ``None`` (missing, partial, or corrupt → warn and recompute).

    Every hit compares each array file's (size, mtime_ns, ctime_ns, inode) with the manifest and
    re-hashes the files whose stat differs (a file whose bytes still match gets its new stat
    recorded); ``verify`` re-hashes every file.
    """
    mf = entry / "manifest.json"
    if not mf.exists():
        return None
    problem, restat = None, None
    try:
        manifest = json.loads(mf.read_text())
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("key") != key.to_dict():
            problem = "manifest does not match its key"
        else:
            problem, restat = check_files(entry, manifest, verify)
        if problem is None:
            arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in manifest["arrays"]}
            bad = [k for k, a in arrays.items() if list(a.shape) != manifest["arrays"][k]]
            problem = f"array shape mismatch in {', '.join(bad)}" if bad else None
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        problem = f"unreadable ({type(e).__name__}: {e})"
    if problem:
        warnings.warn(f"cache entry {entry} is corrupt ({problem}); recomputing it.", stacklevel=4)
        try:
            mf.unlink(missing_ok=True)
        except OSError:  # read-only cache: the recompute stops with a clear CacheError
            pass
        return None
    if restat is not None:  # touched but intact: record the new stats so the next hit is cheap again
        manifest["stat"] = restat
        try:
            atomic_write_json(mf, manifest, indent=2, mkdir=False)
        except OSError:
            pass
    rows = json.loads((entry / "rows.json").read_text())
    labels = np.load(entry / "labels.npy") if (entry / "labels.npy").exists() else None
    tok = manifest.get("tokens") or {}
    return Embeddings(
        digest=key.digest, path=entry, key=manifest["key"], layers=tuple(key.layers),
        depth=int(key.backbone["depth"]), arrays=arrays,
        index=np.load(entry / "index.npy", mmap_mode="r"), ids=rows["ids"], labels=labels,
        classes=manifest["classes"], groups=rows["groups"], split_column=rows["split"], pool=pool,
        skipped=manifest["skipped"], stats=manifest["stats"], from_cache=True, view=key.view,
        token_dtype=tok.get("dtype"), grid=tuple(tok["grid"]) if "grid" in tok else None,
        num_prefix_tokens=tok.get("num_prefix_tokens"), num_register_tokens=tok.get("num_register_tokens"),
        input_size=tuple(tok["input_size"]) if "input_size" in tok else None)


def check_files(entry: Path, manifest: dict[str, Any], verify: bool) -> tuple[str | None, dict | None]:
    """``(problem, new_stats)``: re-hash the files whose stat changed (all with ``verify``)."""
    recorded = manifest.get("stat") or {}
    bad, stats = [], {}
    for f, h in manifest["sha256"].items():
        st = stat_key(entry / f)
        if (verify or recorded.get(f) != st) and hash_file(entry / f, "sha256") != h:
            bad.append(f)
        stats[f] = st
    if bad:
        return f"checksum mismatch in {', '.join(bad)}", None
    return None, (stats if stats != recorded else None)


def describe_entry(entry: Path) -> dict[str, Any]:
    """What ``vitlab cache ls`` shows of an entry: finished (manifest) or partial (key.json only).

    ``source`` is the data source's full URI, query included (``idx:/x?split=test&limit=4500``).
    Raises when the folder is not an entry of this format (the cache's registry then leaves it alone).
    """
    entry = Path(entry)
    k = json.loads((entry / "key.json").read_text())
    if k.get("digest") != entry.name or not isinstance(k.get("key"), dict):
        raise ValueError(f"key.json names digest {k.get('digest')!r}, not {entry.name}")
    mf = entry / "manifest.json"
    if mf.exists():
        m = json.loads(mf.read_text())
        if m.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"manifest.json has format {m.get('format')!r}")
        return {"digest": entry.name, "complete": True, "backbone": m["key"]["backbone"]["name"], "source": m["uri"],
                "n": m["n"], "layers": m["key"]["layers"], "view": m["key"].get("view", "pooled")}
    return {"digest": entry.name, "complete": False, "backbone": k["key"]["backbone"]["name"], "source": k["uri"],
            "n": k["key"]["source"]["n"], "layers": k["key"]["layers"], "view": k["key"].get("view", "pooled")}


def vanished(entry: Path) -> bool:
    """Whether ``entry`` was deleted under a running computation."""
    return not (entry / "key.json").exists() or not (entry / "shards").is_dir()
