"""``EmbeddingStore``: the only route from (backbone, source) to embeddings.

Layout of one entry, ``<cache>/embeddings/<digest>/``::

    key.json                    the full EmbeddingKey (what the digest hashes) + shard layout
    shards/shard-000000.*       safetensors + sidecar, written during extraction (resume unit)
    L{layer}.{pool}.npy         consolidated arrays, read back with numpy mmap
    index.npy, labels.npy       source row of each embedding row, labels
    rows.json                   ids, groups, split column of the rows
    manifest.json               written last: complete flag, shapes, sha256s, skipped ids, throughput

Shards are safetensors (safe, self-describing, checksummed in a sidecar);
finished sets are consolidated into ``.npy`` because numpy memory-maps them
directly, so a 1M x 1536 set opens instantly and reads only what is used.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vitlab import __version__
from vitlab.backbones import Backbone, load_backbone, resolve_device
from vitlab.backbones.base import check_pool
from vitlab.data import DataSource, load_source
from vitlab.errors import CacheError, ConfigError, DataError
from vitlab.store.embeddings import Embeddings
from vitlab.store.extract import ON_ERROR, default_num_workers, extract
from vitlab.store.fingerprint import PRECISIONS, EmbeddingKey, file_sha256
from vitlab.store.shards import atomic_write_bytes, plan_shards, read_shard_meta, load_shard, remove_shard

ENV_VAR = "VITLAB_CACHE_DIR"
MANIFEST_FORMAT = "vitlab-embeddings/1"


def default_cache_dir() -> Path:
    """``$VITLAB_CACHE_DIR`` if set, else the user cache dir (``~/.cache/vitlab`` on Linux)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vitlab"))


class EmbeddingStore:
    """Sharded, resumable, memory-mapped embedding cache.

    Args:
        root: cache directory; default :func:`default_cache_dir`.

    Example:
        >>> store = EmbeddingStore("/tmp/vitlab-cache")
        >>> emb = store.get_or_compute("demo:fmnist-vit", "sample:fashion-mnist", progress=False)  # doctest: +SKIP
        >>> emb.from_cache, emb.get().shape  # doctest: +SKIP
        (False, (2000, 96))
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        try:
            (self.root / "embeddings").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(f"cache dir {self.root} is not writable ({e}). Pass --cache-dir or set {ENV_VAR}.") from e

    # -- keys -----------------------------------------------------------------------
    def key_for(self, backbone: Backbone, source: DataSource, layers: Sequence[int] | int,
                precision: str = "fp32") -> EmbeddingKey:
        """The cache key of (backbone, source, layers, precision)."""
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
        pools = ("cls", "mean") if backbone.spec.has_cls_token else ("mean",)
        return EmbeddingKey(backbone.fingerprint(), {"kind": source.kind, "fingerprint": source.fingerprint,
                                                     "n": len(source)},
                            backbone.resolve_layers(layers), pools, precision)

    def entry_dir(self, key: EmbeddingKey) -> Path:
        return self.root / "embeddings" / key.digest

    # -- main entry point ---------------------------------------------------------
    def get_or_compute(self, backbone: Backbone | str, source: DataSource | str, *,
                       layers: Sequence[int] | int = -1, pool: str = "cls", batch_size: int = 64,
                       num_workers: int | None = None, device: str | None = None, precision: str | None = None,
                       on_error: str = "raise", progress: bool | None = None, shard_size: int = 4096,
                       verify: bool = False, pretrained: bool = True,
                       on_batch: Callable[[int], None] | None = None) -> Embeddings:
        """Return the embeddings, computing only what the cache lacks.

        Args:
            backbone, source: objects or names (``"demo:fmnist-vit"``, ``"folder:./imgs"``).
            layers: block indices, negative from the end.
            pool: default pooling of the result (``cls``, ``mean``, ``cls+mean``); both
                ``cls`` and ``mean`` are always stored, so changing it costs nothing.
            batch_size, num_workers: DataLoader settings (workers default to CPUs - 1).
            device: moves the backbone there (``cpu``, ``cuda``, ``auto``).
            precision: ``fp32`` (default on CPU) or ``bf16``/``fp16`` autocast (default ``bf16`` on CUDA).
            on_error: ``raise`` at the first bad image, or ``skip`` it (listed in ``skipped``).
            progress: show a progress bar (default: when stderr is a terminal).
            shard_size: rows per shard (the unit of resume).
            verify: re-check the sha256 of the consolidated arrays on a cache hit.
            pretrained: used only when ``backbone`` is a name.
            on_batch: callback after each batch with the number of rows done (for tests).
        """
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}.")
        check_pool(pool)
        if batch_size < 1 or shard_size < 1:
            raise ConfigError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}.")
        source = load_source(source)  # cheap, so bad data fails before a model download
        if isinstance(backbone, str):
            backbone = load_backbone(backbone, pretrained=pretrained, device=device or "cpu")
        elif device is not None:
            dev = resolve_device(device)
            if dev != backbone.device:
                backbone = backbone.to(dev)
        check_pool(pool, backbone.spec.has_cls_token)
        precision = precision or ("bf16" if backbone.device.type == "cuda" else "fp32")
        key = self.key_for(backbone, source, layers, precision)
        entry = self.entry_dir(key)
        emb = self._load(entry, key, source, pool, verify)
        if emb is None:
            entry.mkdir(parents=True, exist_ok=True)
            with _locked(entry):
                emb = self._load(entry, key, source, pool, verify)  # another process may have finished it
                if emb is None:
                    self._compute(entry, key, backbone, source, batch_size=batch_size,
                                  num_workers=default_num_workers() if num_workers is None else num_workers,
                                  on_error=on_error, progress=_auto(progress), shard_size=shard_size, on_batch=on_batch)
                    emb = self._load(entry, key, source, pool, verify=False)
                    if emb is None:
                        raise CacheError(f"{entry}: consolidated embeddings failed validation right after writing. "
                                         "Check free disk space and delete the folder.")
                    emb.from_cache = False
        if emb.skipped and on_error == "raise":
            first = emb.skipped[0]
            raise DataError(f"{len(emb.skipped)} image(s) could not be embedded (first: {first['reason']}). "
                            "Fix them, or pass --on-error skip to accept the listed skips.")
        return emb

    # -- compute ------------------------------------------------------------------
    def _compute(self, entry: Path, key: EmbeddingKey, backbone: Backbone, source: DataSource, *, batch_size: int,
                 num_workers: int, on_error: str, progress: bool, shard_size: int,
                 on_batch: Callable[[int], None] | None) -> None:
        key_file = entry / "key.json"
        if key_file.exists():  # resuming: keep the original shard layout
            layout = json.loads(key_file.read_text()).get("layout", {})
            shard_size = int(layout.get("shard_size", shard_size))
        else:
            atomic_write_bytes(key_file, json.dumps({"key": key.to_dict(), "digest": key.digest, "uri": source.uri,
                                                     "layout": {"shard_size": shard_size}}, indent=2).encode())
        shard_dir = entry / "shards"
        shard_dir.mkdir(exist_ok=True)
        plans = plan_shards(len(source), shard_size)
        pending = []
        for p in plans:
            if read_shard_meta(shard_dir, p) is None:
                if (shard_dir / f"{p.stem}.safetensors").exists() or (shard_dir / f"{p.stem}.json").exists():
                    warnings.warn(f"{shard_dir / p.stem}: partial or corrupt shard; recomputing it.", stacklevel=3)
                remove_shard(shard_dir, p)
                pending.append(p)
        stats = None
        if pending:
            stats = extract(backbone, source, pending, shard_dir, layers=key.layers, pools=key.pools,
                            batch_size=batch_size, num_workers=num_workers, precision=key.precision,
                            on_error=on_error, progress=progress, on_batch=on_batch)
        self._consolidate(entry, key, source, plans, stats.to_dict() if stats else {},
                          resumed=len(pending) < len(plans))

    def _consolidate(self, entry: Path, key: EmbeddingKey, source: DataSource, plans: list, stats: dict[str, Any],
                     resumed: bool) -> None:
        shard_dir = entry / "shards"
        metas = [read_shard_meta(shard_dir, p) for p in plans]
        if any(m is None for m in metas):
            raise CacheError(f"{shard_dir}: a shard failed validation during consolidation; rerun to recompute it.")
        n = sum(m["n_rows"] for m in metas)
        skipped = [s for m in metas for s in m["skipped"]]
        names = [f"L{layer}.{pool}" for layer in key.layers for pool in key.pools]
        dim = None
        outs: dict[str, np.ndarray] = {}
        index = np.empty(n, np.int64)
        pos = 0
        for p in plans:
            arrays = load_shard(shard_dir, p)
            m = len(arrays["index"])
            index[pos:pos + m] = arrays["index"]
            for name in names:
                if name not in outs:
                    dim = arrays[name].shape[1]
                    outs[name] = np.lib.format.open_memmap(entry / f"{name}.npy", mode="w+", dtype=np.float32,
                                                           shape=(n, dim))
                outs[name][pos:pos + m] = arrays[name]
            pos += m
        for arr in outs.values():
            arr.flush()
        del outs
        np.save(entry / "index.npy", index)
        rows = {"ids": [source.ids[i] for i in index],
                "groups": None if source.groups is None else [source.groups[i] for i in index],
                "split": None if source.split_column is None else [source.split_column[i] for i in index]}
        atomic_write_bytes(entry / "rows.json", json.dumps(rows).encode())
        if source.labels is not None:
            np.save(entry / "labels.npy", source.labels[index])
        files = [f"{name}.npy" for name in names] + ["index.npy", "rows.json"] + \
            (["labels.npy"] if source.labels is not None else [])
        manifest = {
            "format": MANIFEST_FORMAT, "complete": True, "digest": key.digest, "key": key.to_dict(),
            "uri": source.uri, "n": n, "n_source": len(source), "classes": source.classes,
            "arrays": {name: [n, dim] for name in names}, "sha256": {f: file_sha256(str(entry / f)) for f in files},
            "skipped": skipped, "stats": stats, "resumed": resumed, "vitlab_version": __version__,
        }
        atomic_write_bytes(entry / "manifest.json", json.dumps(manifest, indent=2).encode())
        shutil.rmtree(shard_dir, ignore_errors=True)

    # -- load ---------------------------------------------------------------------
    def _load(self, entry: Path, key: EmbeddingKey, source: DataSource, pool: str, verify: bool) -> Embeddings | None:
        """A valid finished entry, or ``None`` (missing, partial, or corrupt → warn and recompute)."""
        mf = entry / "manifest.json"
        if not mf.exists():
            return None
        problem = None
        try:
            manifest = json.loads(mf.read_text())
            if manifest.get("format") != MANIFEST_FORMAT or manifest.get("key") != key.to_dict():
                problem = "manifest does not match its key"
            elif verify:
                bad = [f for f, h in manifest["sha256"].items() if file_sha256(str(entry / f)) != h]
                problem = f"checksum mismatch in {', '.join(bad)}" if bad else None
            if problem is None:
                arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in manifest["arrays"]}
                bad = [k for k, a in arrays.items() if list(a.shape) != manifest["arrays"][k]]
                problem = f"array shape mismatch in {', '.join(bad)}" if bad else None
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            problem = f"unreadable ({type(e).__name__}: {e})"
        if problem:
            warnings.warn(f"cache entry {entry} is corrupt ({problem}); recomputing it.", stacklevel=3)
            (entry / "manifest.json").unlink(missing_ok=True)
            return None
        rows = json.loads((entry / "rows.json").read_text())
        labels = np.load(entry / "labels.npy") if (entry / "labels.npy").exists() else None
        return Embeddings(
            digest=key.digest, path=entry, key=manifest["key"], layers=tuple(key.layers),
            depth=int(key.backbone["depth"]), arrays=arrays,
            index=np.load(entry / "index.npy", mmap_mode="r"), ids=rows["ids"], labels=labels,
            classes=manifest["classes"], groups=rows["groups"], split_column=rows["split"], pool=pool,
            skipped=manifest["skipped"], stats=manifest["stats"], from_cache=True)

    # -- housekeeping -------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """One summary dict per finished or partial entry (``vitlab cache ls``)."""
        out = []
        for d in sorted((self.root / "embeddings").iterdir()):
            mf, kf = d / "manifest.json", d / "key.json"
            size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            if mf.exists():
                m = json.loads(mf.read_text())
                out.append({"digest": d.name, "complete": True, "backbone": m["key"]["backbone"]["name"],
                            "source": m["uri"], "n": m["n"], "layers": m["key"]["layers"], "bytes": size})
            elif kf.exists():
                k = json.loads(kf.read_text())
                out.append({"digest": d.name, "complete": False, "backbone": k["key"]["backbone"]["name"],
                            "source": k["uri"], "n": k["key"]["source"]["n"], "layers": k["key"]["layers"],
                            "bytes": size})
        return out

    def clear(self, digest: str | None = None) -> int:
        """Delete one entry (by digest prefix) or all; returns how many were removed."""
        removed = 0
        for d in (self.root / "embeddings").iterdir():
            if digest is None or d.name.startswith(digest):
                shutil.rmtree(d)
                removed += 1
        return removed


def _auto(progress: bool | None) -> bool:
    import sys

    return sys.stderr.isatty() if progress is None else progress


@contextmanager
def _locked(entry: Path):
    """Exclusive lock on an entry while computing it (released if the process dies)."""
    with open(entry / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
