"""``EmbeddingStore``: the only route from (backbone, source) to embeddings.

Layout of one entry, ``<cache>/embeddings/<digest>/``::

    key.json                    the full EmbeddingKey (what the digest hashes) + shard layout
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

from vitlab._version import __version__
from vitlab.backbones import Backbone, load_backbone, resolve_device
from vitlab.backbones.base import check_pool
from vitlab.backbones.preprocessing import DECODERS
from vitlab.data import DataSource, load_source
from vitlab.errors import CacheError, ConfigError, DataError, Interrupted
from vitlab.store.embeddings import Embeddings
from vitlab.store import shards
from vitlab.store.extract import ON_ERROR, check_precision, default_num_workers, extract
from vitlab.store.fingerprint import PRECISIONS, TOKEN_DTYPES, VIEWS, EmbeddingKey, file_sha256
from vitlab.store.ray_engine import check_engine
from vitlab.store.shards import atomic_write_bytes, gaps, load_shard, scan_shards

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
                precision: str = "fp32", view: str = "pooled", token_dtype: str = "float32") -> EmbeddingKey:
        """The cache key of (backbone, source, layers, precision, view).

        The stored poolings are ``backbone.stored_pools``; ``token_dtype`` counts only for
        ``view="tokens"`` (a pooled key is the same as before views existed).

        Example:
            >>> bb, src = vitlab.load_backbone("demo:fmnist-vit"), vitlab.load_source("sample:fashion-mnist")  # doctest: +SKIP
            >>> store = EmbeddingStore()  # doctest: +SKIP
            >>> store.key_for(bb, src, -1).digest != store.key_for(bb, src, -1, view="tokens").digest  # doctest: +SKIP
            True
        """
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
        _check_view(view, token_dtype)
        tokens = {"view": "tokens", "token_dtype": token_dtype} if view == "tokens" else {}
        return EmbeddingKey(backbone.fingerprint(), {"kind": source.kind, "fingerprint": source.fingerprint,
                                                     "n": len(source)},
                            backbone.resolve_layers(layers), tuple(backbone.stored_pools), precision, **tokens)

    def entry_dir(self, key: EmbeddingKey) -> Path:
        return self.root / "embeddings" / key.digest

    # -- main entry point ---------------------------------------------------------
    def get_or_compute(self, backbone: Backbone | str, source: DataSource | str, *,
                       layers: Sequence[int] | int = -1, pool: str = "cls", batch_size: int = 64,
                       num_workers: int | None = None, device: str | None = None, precision: str | None = None,
                       on_error: str = "raise", progress: bool | None = None, shard_size: int | None = None,
                       verify: bool = False, pretrained: bool = True, view: str = "pooled",
                       token_dtype: str = "float32", on_batch: Callable[[int], None] | None = None,
                       engine: str = "local", ray_address: str | None = None,
                       ray_options: dict[str, Any] | None = None, decoder: str | None = None) -> Embeddings:
        """Return the embeddings, computing only what the cache lacks.

        Args:
            backbone, source: objects or names (``"demo:fmnist-vit"``, ``"folder:./imgs"``).
            layers: block indices, negative from the end.
            pool: default pooling of the result (``cls``, ``mean``, ``cls+mean``, or ``embed`` for
                image–text models); every pooling of ``backbone.stored_pools`` is stored (``cls``
                and ``mean``, and ``embed`` for the last block), so changing it costs nothing.
            batch_size, num_workers: DataLoader settings (workers default to CPUs - 1).
            device: moves the backbone there (``cpu``, ``cuda``, ``auto``).
            precision: ``fp32`` (default on CPU) or ``bf16``/``fp16`` autocast (default ``bf16`` on
                CUDA); honoured on every device (CPU autocast included), and refused with a
                ConfigError before any embedding when the backbone cannot run under it.
            on_error: ``raise`` at the first bad image, or ``skip`` it (listed in ``skipped``).
            progress: show a progress bar (default: when stderr is a terminal).
            shard_size: the largest shard in rows (the unit of resume). ``None`` (default): up to
                4,096 rows, and a shard is also written every ~30 s, so an interrupted run loses at
                most about half a minute. An interrupted entry resumes with its first layout.
            verify: re-hash every consolidated array on a cache hit. Without it a hit checks each
                file's size, mtime, ctime and inode against the manifest and re-hashes only the
                files whose stat changed.
            pretrained: used only when ``backbone`` is a name.
            view: ``pooled`` (default): pooled vectors per layer. ``tokens``: also the patch tokens
                ``[n, N, C]`` of each layer (prefix tokens, i.e. CLS and registers, stripped), read
                with :meth:`Embeddings.tokens`; a separate cache entry.
            token_dtype: storage of the tokens view, ``float32`` or ``float16`` (half the size).
            on_batch: callback after each batch with the number of rows done (for tests).
            engine: ``local`` (one DataLoader, one device) or ``ray``: a Ray Data actor pool (one actor
                per GPU, or CPU actors) writes the same shards under the same key, so the arrays are
                the same and either engine resumes or reuses the other's work
                (:mod:`vitlab.store.ray_engine`; needs ``pip install 'vitlab[ray]'``).
            ray_address: an existing Ray cluster (``auto``, ``ray://head:10001``); default: the running
                instance, else a local one started for this run.
            ray_options: more :func:`~vitlab.store.ray_engine.extract_ray` options (``num_actors``,
                ``unit_rows``).
            decoder: the data path (``pil``, ``pil-draft``, ``tensor``, ``tensor-draft``; see
                :class:`~vitlab.backbones.preprocessing.Preprocessing`): faster decode and resize,
                within a stated tolerance of the reference ``pil``. Runs a copy of the backbone whose
                preprocessing names it, so it is part of the cache key; ``None``: the backbone's own.

        Raises:
            ConfigError: bad options (before anything is loaded), or a precision the backbone
                cannot run under (before embedding).
            CacheError: the cache is not writable and the embeddings must be computed.
            vitlab.errors.Interrupted: Ctrl-C during extraction; ``resume_hint`` says what is kept.

        Example:
            >>> store = EmbeddingStore("/tmp/vitlab-cache")  # doctest: +SKIP
            >>> store.get_or_compute("demo:fmnist-vit", "sample:fashion-mnist", shard_size=500).from_cache  # doctest: +SKIP
            False
            >>> emb = store.get_or_compute("demo:fmnist-vit", "sample:fashion-mnist", view="tokens",
            ...                            token_dtype="float16")  # doctest: +SKIP
            >>> emb.tokens().shape, emb.grid  # doctest: +SKIP
            ((2000, 49, 96), (7, 7))
            >>> store.get_or_compute("demo:fmnist-vit", "sample:fashion-mnist", engine="ray").stats["engine"]  # doctest: +SKIP
            'ray'
        """
        check_engine(engine, ray_address, ray_options)
        if decoder is not None and decoder not in DECODERS:
            raise ConfigError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}.")
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}.")
        if pool != "embed":
            check_pool(pool)
        _check_view(view, token_dtype)
        if precision is not None and precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
        if batch_size < 1 or (shard_size is not None and shard_size < 1):
            raise ConfigError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}.")
        source = load_source(source)  # cheap, so bad data fails before a model download
        if isinstance(backbone, str):
            backbone = load_backbone(backbone, pretrained=pretrained, device=device or "cpu")
        elif device is not None:
            dev = resolve_device(device)
            if dev != backbone.device:
                backbone = backbone.to(dev)
        if decoder is not None and decoder != backbone.spec.preprocessing.decoder:
            backbone = with_decoder(backbone, decoder)
        if view == "tokens":
            check_patch_tokens(backbone)
        if pool == "embed":
            _check_embed(backbone, layers)
        else:
            check_pool(pool, backbone.spec.has_cls_token)
        precision = precision or ("bf16" if backbone.device.type == "cuda" else "fp32")
        key = self.key_for(backbone, source, layers, precision, view, token_dtype)
        entry = self.entry_dir(key)
        emb = self._load(entry, key, source, pool, verify)
        if emb is None:
            with self._locked(entry):  # CacheError here when the cache is read-only: nothing computed yet
                emb = self._load(entry, key, source, pool, verify)  # another process may have finished it
                if emb is None:
                    check_precision(backbone, precision, key.layers, key.pools)
                    try:
                        self._compute(entry, key, backbone, source, batch_size=batch_size,
                                      num_workers=default_num_workers() if num_workers is None else num_workers,
                                      on_error=on_error, progress=_auto(progress), shard_size=shard_size,
                                      on_batch=on_batch, meta=token_meta(backbone) if view == "tokens" else None,
                                      engine=engine, ray={"address": ray_address, **(ray_options or {})})
                    except OSError as e:
                        if _vanished(entry):
                            raise CacheError(f"cache entry {entry} was deleted while this run was writing it "
                                             "(rm, or an old vitlab cache clear); nothing of it is kept. Run the "
                                             "same command again to recompute it.") from e
                        if e.filename and str(e.filename).startswith(str(entry)):
                            raise CacheError(f"cannot write {e.filename} ({e.strerror or e}). Free some space or "
                                             f"fix the permissions of {self.root}, or pass --cache-dir <another "
                                             "dir>; finished shards are kept.") from e
                        raise
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
                 num_workers: int, on_error: str, progress: bool, shard_size: int | None,
                 on_batch: Callable[[int], None] | None, meta: dict[str, Any] | None = None,
                 engine: str = "local", ray: dict[str, Any] | None = None) -> None:
        key_file = entry / "key.json"
        layout = {"shard_size": shard_size or shards.DEFAULT_SHARD_ROWS,
                  "flush_seconds": shards.FLUSH_SECONDS if shard_size is None else None}
        try:  # resuming: keep the original layout, so rows run in the same batches
            old = json.loads(key_file.read_text()).get("layout", {})
            layout = {"shard_size": int(old["shard_size"]), "flush_seconds": old.get("flush_seconds")}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            atomic_write_bytes(key_file, json.dumps({"key": key.to_dict(), "digest": key.digest, "uri": source.uri,
                                                     "layout": layout}, indent=2).encode())
        shard_dir = entry / "shards"
        shard_dir.mkdir(exist_ok=True)
        n = len(source)
        kept, bad = scan_shards(shard_dir, n)
        for stem in bad:
            warnings.warn(f"{shard_dir / stem}: partial or corrupt shard; recomputing it.", stacklevel=3)
        pending = gaps([(s["start"], s["stop"]) for s in kept], n)
        resumed = bool(kept)
        stats = None
        try:
            if pending and engine == "ray":
                from vitlab.store.ray_engine import extract_ray

                stats = extract_ray(backbone, source, pending, shard_dir, block=layout["shard_size"], layers=key.layers,
                                    pools=key.pools, batch_size=batch_size, precision=key.precision,
                                    on_error=on_error, progress=progress, tokens=key.token_dtype,
                                    on_shard=kept.append, **(ray or {}))
            elif pending:
                stats = extract(backbone, source, pending, shard_dir, block=layout["shard_size"],
                                flush_seconds=layout["flush_seconds"], layers=key.layers, pools=key.pools,
                                batch_size=batch_size, num_workers=num_workers, precision=key.precision,
                                on_error=on_error, progress=progress, tokens=key.token_dtype,
                                on_batch=on_batch, on_shard=kept.append)
        except KeyboardInterrupt:
            raise Interrupted(resume_hint(kept, n)) from None
        kept.sort(key=lambda s: s["start"])
        try:
            self._consolidate(entry, key, source, kept, stats.to_dict() if stats else {}, resumed=resumed,
                              meta=meta)
        except KeyboardInterrupt:
            raise Interrupted(f"all {n:,} rows are computed and kept in {len(kept)} shard(s): run the same command "
                              "again to finish writing the cache entry.") from None

    def _consolidate(self, entry: Path, key: EmbeddingKey, source: DataSource, kept: list[dict[str, Any]],
                     stats: dict[str, Any], resumed: bool, meta: dict[str, Any] | None = None) -> None:
        shard_dir = entry / "shards"
        if gaps([(s["start"], s["stop"]) for s in kept], len(source)):
            raise CacheError(f"{shard_dir}: the shards do not cover every row; run the same command again to "
                             "recompute the missing ones.")
        n = sum(s["n_rows"] for s in kept)
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
        atomic_write_bytes(entry / "rows.json", json.dumps(rows).encode())
        if source.labels is not None:
            np.save(entry / "labels.npy", source.labels[index])
        files = [f"{name}.npy" for name in names] + ["index.npy", "rows.json"] + \
            (["labels.npy"] if source.labels is not None else [])
        sha = {f: file_sha256(str(entry / f)) for f in files}
        manifest = {
            "format": MANIFEST_FORMAT, "complete": True, "digest": key.digest, "key": key.to_dict(),
            "uri": source.uri, "n": n, "n_source": len(source), "classes": source.classes,
            "arrays": shapes, "sha256": sha,
            "stat": {f: file_stat(entry / f) for f in files},
            "skipped": skipped, "stats": stats, "resumed": resumed, "vitlab_version": __version__,
        }
        if key.view == "tokens":
            manifest["tokens"] = {**(meta or {}), "dtype": key.token_dtype}
        atomic_write_bytes(entry / "manifest.json", json.dumps(manifest, indent=2).encode())
        shutil.rmtree(shard_dir, ignore_errors=True)

    # -- load ---------------------------------------------------------------------
    def _load(self, entry: Path, key: EmbeddingKey, source: DataSource, pool: str, verify: bool) -> Embeddings | None:
        """A valid finished entry, or ``None`` (missing, partial, or corrupt → warn and recompute).

        Every hit compares each array file's (size, mtime_ns, ctime_ns, inode) with the manifest
        and re-hashes the files whose stat differs (a file whose bytes still match gets its new
        stat recorded); ``verify`` re-hashes every file.
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
                problem, restat = _check_files(entry, manifest, verify)
            if problem is None:
                arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in manifest["arrays"]}
                bad = [k for k, a in arrays.items() if list(a.shape) != manifest["arrays"][k]]
                problem = f"array shape mismatch in {', '.join(bad)}" if bad else None
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            problem = f"unreadable ({type(e).__name__}: {e})"
        if problem:
            warnings.warn(f"cache entry {entry} is corrupt ({problem}); recomputing it.", stacklevel=3)
            try:
                mf.unlink(missing_ok=True)
            except OSError:  # read-only cache: the recompute stops with a clear CacheError
                pass
            return None
        if restat is not None:  # touched but intact: record the new stats so the next hit is cheap again
            manifest["stat"] = restat
            try:
                atomic_write_bytes(mf, json.dumps(manifest, indent=2).encode())
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

    # -- locking ------------------------------------------------------------------
    @contextmanager
    def _locked(self, entry: Path):
        """Exclusive lock on an entry while computing it (released if the process dies).

        Raises a one-line CacheError when the entry cannot be written (read-only cache), and
        takes the lock again if ``vitlab cache clear`` removed the entry while this run waited.
        """
        for _ in range(5):
            try:
                entry.mkdir(parents=True, exist_ok=True)
                f = open(entry / ".lock", "a")
            except OSError as e:
                raise self._unwritable(entry, e) from None
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                same = os.fstat(f.fileno()).st_ino == os.stat(entry / ".lock").st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()  # cleared while we waited: lock the new entry instead
        else:
            raise CacheError(f"{entry}: removed again and again while this run waited for it (a loop of "
                             "vitlab cache clear?). Run the same command again once it has stopped.")
        try:
            if not os.access(entry, os.W_OK | os.X_OK):
                raise self._unwritable(entry, PermissionError(13, "Permission denied"))
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    def _unwritable(self, entry: Path, e: OSError) -> CacheError:
        return CacheError(f"cache dir {self.root} is not writable ({entry}: {e.strerror or e}), and these embeddings "
                          f"are not cached yet. Pass --cache-dir <a writable dir> or set {ENV_VAR}.")

    # -- housekeeping -------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """One summary dict per finished or partial entry (``vitlab cache ls``).

        ``source`` is the data source's full URI, query included (``idx:/x?split=test&limit=4500``).
        """
        out = []
        for d in sorted((self.root / "embeddings").iterdir()):
            mf, kf = d / "manifest.json", d / "key.json"
            try:
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                if mf.exists():
                    m = json.loads(mf.read_text())
                    out.append({"digest": d.name, "complete": True, "backbone": m["key"]["backbone"]["name"],
                                "source": m["uri"], "n": m["n"], "layers": m["key"]["layers"], "bytes": size,
                                "view": m["key"].get("view", "pooled")})
                elif kf.exists():
                    k = json.loads(kf.read_text())
                    out.append({"digest": d.name, "complete": False, "backbone": k["key"]["backbone"]["name"],
                                "source": k["uri"], "n": k["key"]["source"]["n"], "layers": k["key"]["layers"],
                                "bytes": size, "view": k["key"].get("view", "pooled")})
            except (OSError, ValueError, KeyError):  # removed or being written right now
                continue
        return out

    def clear_entries(self, digest: str | None = None) -> dict[str, Any]:
        """Delete one entry (by digest prefix) or all, except those a running embed holds locked.

        Returns ``{"removed": int, "in_use": [digest, ...]}``.

        Example:
            >>> import tempfile
            >>> EmbeddingStore(tempfile.mkdtemp()).clear_entries()
            {'removed': 0, 'in_use': []}
        """
        removed, in_use = 0, []
        for d in sorted((self.root / "embeddings").iterdir()):
            if digest is not None and not d.name.startswith(digest):
                continue
            try:
                f = open(d / ".lock", "a")
            except FileNotFoundError:  # removed meanwhile
                continue
            except OSError as e:
                raise CacheError(f"cannot clear {d} ({e.strerror or e}): the cache dir {self.root} is not "
                                 "writable. Fix its permissions, or pass the --cache-dir you meant.") from None
            with f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    in_use.append(d.name)
                    continue
                shutil.rmtree(d)
                removed += 1
        return {"removed": removed, "in_use": in_use}

    def clear(self, digest: str | None = None) -> int:
        """Delete one entry (by digest prefix) or all; returns how many were removed.

        Entries a running embed is computing are skipped, with a warning that names them.
        """
        res = self.clear_entries(digest)
        if res["in_use"]:
            k = len(res["in_use"])
            warnings.warn(f"{k} cache entr{'y is' if k == 1 else 'ies are'} in use by a running embed and "
                          f"{'was' if k == 1 else 'were'} kept ({', '.join(d[:12] for d in res['in_use'])}); "
                          "run clear again once it has finished.", stacklevel=2)
        return res["removed"]


def with_decoder(backbone: Backbone, decoder: str) -> Backbone:
    """A copy of ``backbone`` (the same model object, never changed) whose preprocessing uses ``decoder``.

    The copy's fingerprint names the decoder, so its embeddings get their own cache key.

    Raises:
        ConfigError: the decoder does not apply to this preprocessing (e.g. ``resize="clean"``).

    Example:
        >>> bb = load_backbone("demo:fmnist-vit")
        >>> fast = with_decoder(bb, "tensor")
        >>> fast.spec.preprocessing.decoder, bb.spec.preprocessing.decoder, fast.fingerprint() != bb.fingerprint()
        ('tensor', 'pil', True)
    """
    import copy
    import dataclasses

    prep = backbone.spec.preprocessing.replace(decoder=decoder)
    new = copy.copy(backbone)
    new.__dict__["spec"] = dataclasses.replace(backbone.spec, preprocessing=prep)
    return new


def check_patch_tokens(backbone: Backbone) -> None:
    """Raise a one-line ConfigError unless ``backbone`` has a patch grid (the tokens view needs one).

    A backbone whose one "patch" is the whole image (``pixels``) has no patch tokens.

    Example:
        >>> check_patch_tokens(load_backbone("pixels:16"))
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: pixels:16 has no patch tokens (its one token is the whole 16x16 image), so view='tokens' does not apply to it; use view='pooled', or a ViT backbone.
    """
    grid, size = backbone.spec.grid_size, tuple(backbone.spec.preprocessing.input_size)
    if grid == (1, 1) and tuple(backbone.spec.patch_size) == size:
        raise ConfigError(f"{backbone.name} has no patch tokens (its one token is the whole {size[0]}x{size[1]} "
                          "image), so view='tokens' does not apply to it; use view='pooled', or a ViT backbone.")


def token_meta(backbone: Backbone) -> dict[str, Any]:
    """What a tokens entry records about its tokens: patch grid, prefix and register tokens, input size.

    Example:
        >>> token_meta(load_backbone("demo:fmnist-vit"))["grid"]  # doctest: +SKIP
        [7, 7]
    """
    s = backbone.spec
    return {"grid": list(s.grid_size), "num_prefix_tokens": s.num_prefix_tokens,
            "num_register_tokens": s.num_register_tokens, "has_cls_token": s.has_cls_token,
            "input_size": list(s.preprocessing.input_size), "patch_size": list(s.patch_size)}


def _check_view(view: str, token_dtype: str) -> None:
    if view not in VIEWS:
        raise ConfigError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}.")
    if token_dtype not in TOKEN_DTYPES:
        raise ConfigError(f"unknown token_dtype {token_dtype!r}; choose one of {', '.join(TOKEN_DTYPES)}.")
    if view != "tokens" and token_dtype != "float32":
        raise ConfigError(f"token_dtype={token_dtype!r} applies only to view='tokens'; pass view='tokens' "
                          "(--view tokens) or drop it.")


def _check_embed(backbone: Backbone, layers: Sequence[int] | int) -> None:
    if "embed" not in backbone.stored_pools:
        raise ConfigError(f"pooling 'embed' needs an image–text model and {backbone.name} has no text tower. "
                          "Use pool='cls' or 'mean'.")
    last = backbone.spec.depth - 1
    if last not in backbone.resolve_layers(layers):
        raise ConfigError(f"pooling 'embed' exists only for the last block ({last}) of {backbone.name}; "
                          "include layer -1 in layers.")


def resume_hint(kept: list[dict[str, Any]], n: int) -> str:
    """What an interrupted run keeps, for :class:`~vitlab.errors.Interrupted`.

    Example:
        >>> resume_hint([{"start": 0, "stop": 4096}, {"start": 4096, "stop": 5000}], 12288)
        '5,000 of 12,288 rows (2 shards) are kept: run the same command again to resume.'
        >>> resume_hint([], 12288)
        'no shard was finished yet; nothing is kept.'
    """
    if not kept:
        return "no shard was finished yet; nothing is kept."
    rows = sum(s["stop"] - s["start"] for s in kept)
    return (f"{rows:,} of {n:,} rows ({len(kept)} shard{'s' if len(kept) != 1 else ''}) are kept: "
            "run the same command again to resume.")


def file_stat(path: Path) -> list[int]:
    """(size, mtime_ns, ctime_ns, inode) of a cache file: what a hit compares before trusting it.

    Any write through the filesystem changes ctime, even when mtime is put back with
    ``os.utime``; only silent media corruption (or a clock set back by root) slips past,
    which ``--verify`` (a full sha256) catches.
    """
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _check_files(entry: Path, manifest: dict[str, Any], verify: bool) -> tuple[str | None, dict | None]:
    """``(problem, new_stats)``: re-hash the files whose stat changed (all with ``verify``)."""
    recorded = manifest.get("stat") or {}
    bad, stats = [], {}
    for f, h in manifest["sha256"].items():
        st = file_stat(entry / f)
        if (verify or recorded.get(f) != st) and file_sha256(str(entry / f)) != h:
            bad.append(f)
        stats[f] = st
    if bad:
        return f"checksum mismatch in {', '.join(bad)}", None
    return None, (stats if stats != recorded else None)


def _vanished(entry: Path) -> bool:
    return not (entry / "key.json").exists() or not (entry / "shards").is_dir()


def _auto(progress: bool | None) -> bool:
    import sys

    return sys.stderr.isatty() if progress is None else progress
