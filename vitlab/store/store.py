"""``EmbeddingStore``: the only route from (backbone, source) to embeddings.

The store finds an entry by its key, locks it, runs the extraction engine for the rows no
finished shard covers, and consolidates. The pieces around it live by concept:
:mod:`~vitlab.store.options` (the validated options of one request), :mod:`~vitlab.store.entry`
(the on-disk entry format), :mod:`~vitlab.store.admin` (``cache ls`` / ``cache clear`` over every
cache namespace) and :mod:`vitlab._io` (the cache root, atomic writes, hashes).
"""

from __future__ import annotations

import errno
import fcntl
import os
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vitlab._io import ENV_VAR, cache_root, open_lock, use_cache_root
from vitlab.backbones import Backbone, load_backbone, resolve_device
from vitlab.backbones.base import check_pool
from vitlab.backbones.tokens import check_patch_tokens, token_meta, with_decoder
from vitlab.data import DataSource, load_source
from vitlab.errors import CacheError, ConfigError, DataError, Interrupted, WriteError
from vitlab.store.embeddings import Embeddings
from vitlab.store.entry import CACHE_ELSEWHERE, MANIFEST_FORMAT, consolidate, load_entry, read_layout, vanished
from vitlab.store.extract import check_precision, default_num_workers, extract
from vitlab.store.fingerprint import PRECISIONS, EmbeddingKey
from vitlab.store.options import EmbedOptions, check_embed, check_view
from vitlab.store.shards import gaps, scan_shards

__all__ = ["EmbeddingStore", "default_cache_dir", "ENV_VAR", "MANIFEST_FORMAT", "resume_hint", "with_decoder",
           "check_patch_tokens", "token_meta"]


def default_cache_dir() -> Path:
    """``$VITLAB_CACHE_DIR`` if set, else the user cache dir (``~/.cache/vitlab`` on Linux); see
    :func:`vitlab._io.cache_root`, the one definition."""
    return cache_root()


class EmbeddingStore:
    """Sharded, resumable, memory-mapped embedding cache.

    Args:
        root: cache directory; default :func:`vitlab._io.cache_root` (``--cache-dir``,
            ``$VITLAB_CACHE_DIR``, or the user cache dir).

    Example:
        >>> store = EmbeddingStore("cache")
        >>> emb = store.get_or_compute("demo:fmnist-vit", "sample:digits?limit=64", progress=False)
        >>> emb.from_cache, emb.get().shape
        (False, (64, 96))
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = cache_root(root)
        folder = self.root / "embeddings"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise CacheError(f"cache dir {self.root}: {folder} is a file, not a folder. Move it away, or pass "
                             f"--cache-dir <another dir>.") from None
        except OSError as e:
            raise CacheError(f"cache dir {self.root} is not writable ({e.strerror or e}). Pass --cache-dir or set "
                             f"{ENV_VAR}.") from e
        if not folder.is_dir():
            raise CacheError(f"cache dir {self.root}: {folder} is not a folder. Move it away, or pass --cache-dir "
                             "<another dir>.")

    # -- keys -----------------------------------------------------------------------
    def key_for(self, backbone: Backbone, source: DataSource, layers: Sequence[int] | int,
                precision: str = "fp32", view: str = "pooled", token_dtype: str = "float32") -> EmbeddingKey:
        """The cache key of (backbone, source, layers, precision, view).

        The stored poolings are ``backbone.stored_pools``; ``token_dtype`` counts only for
        ``view="tokens"`` (a pooled key is the same as before views existed).

        Example:
            >>> import vitlab
            >>> bb, src = vitlab.load_backbone("demo:fmnist-vit"), vitlab.load_source("sample:digits?limit=64")
            >>> store = EmbeddingStore()
            >>> store.key_for(bb, src, -1).digest != store.key_for(bb, src, -1, view="tokens").digest
            True
        """
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}.")
        check_view(view, token_dtype)
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
            >>> store = EmbeddingStore("cache")
            >>> store.get_or_compute("demo:fmnist-vit", "sample:digits?limit=64", shard_size=16,
            ...                      progress=False).from_cache
            False
            >>> store.get_or_compute("demo:fmnist-vit", "sample:digits?limit=64", progress=False).from_cache
            True
            >>> emb = store.get_or_compute("demo:fmnist-vit", "sample:digits?limit=64", view="tokens",
            ...                            token_dtype="float16", progress=False)
            >>> emb.tokens().shape, emb.grid
            ((64, 49, 96), (7, 7))
            >>> store.get_or_compute("demo:fmnist-vit", "sample:digits?limit=64", engine="ray").stats["engine"]  # starts a Ray instance: slow  # doctest: +SKIP
            'ray'
        """
        opts = EmbedOptions(layers=layers, pool=pool, batch_size=batch_size, num_workers=num_workers, device=device,
                            precision=precision, on_error=on_error, progress=progress, shard_size=shard_size,
                            verify=verify, pretrained=pretrained, view=view, token_dtype=token_dtype, engine=engine,
                            ray_address=ray_address, ray_options=ray_options, decoder=decoder, on_batch=on_batch)
        with use_cache_root(self.root):  # the backbone's and the source's own caches (specs/, wds-index/) too
            return self._get_or_compute(backbone, source, opts)

    def _get_or_compute(self, backbone: Backbone | str, source: DataSource | str, o: EmbedOptions) -> Embeddings:
        source = load_source(source)  # cheap, so bad data fails before a model download
        if isinstance(backbone, str):
            backbone = load_backbone(backbone, pretrained=o.pretrained, device=o.device or "cpu")
        elif o.device is not None:
            dev = resolve_device(o.device)
            if dev != backbone.device:
                backbone = backbone.to(dev)
        if o.decoder is not None and o.decoder != backbone.spec.preprocessing.decoder:
            backbone = with_decoder(backbone, o.decoder)
        if o.view == "tokens":
            check_patch_tokens(backbone)
        if o.pool == "embed":
            check_embed(backbone, o.layers)
        else:
            check_pool(o.pool, backbone.spec.has_cls_token)
        precision = o.precision or ("bf16" if backbone.device.type == "cuda" else "fp32")
        key = self.key_for(backbone, source, o.layers, precision, o.view, o.token_dtype)
        entry = self.entry_dir(key)
        emb = load_entry(entry, key, o.pool, o.verify)
        if emb is None:
            with self._locked(entry):  # CacheError here when the cache is read-only: nothing computed yet
                emb = load_entry(entry, key, o.pool, o.verify)  # another process may have finished it
                if emb is None:
                    check_precision(backbone, precision, key.layers, key.pools)
                    try:
                        self._compute(entry, key, backbone, source, o,
                                      meta=token_meta(backbone) if o.view == "tokens" else None)
                    except OSError as e:
                        if isinstance(e, WriteError) and e.errno != errno.ENOENT:
                            raise  # a full disk, permissions: already one line with the path and the space
                        if vanished(entry):
                            raise CacheError(f"cache entry {entry} was deleted while this run was writing it "
                                             "(rm, or an old vitlab cache clear); nothing of it is kept. Run the "
                                             "same command again to recompute it.") from e
                        if isinstance(e, WriteError):
                            raise
                        if e.filename and str(e.filename).startswith(str(entry)):
                            from vitlab._io import write_error

                            raise write_error(e.filename, e, elsewhere=CACHE_ELSEWHERE) from e
                        raise
                    emb = load_entry(entry, key, o.pool, verify=False)
                    if emb is None:
                        raise CacheError(f"{entry}: consolidated embeddings failed validation right after writing. "
                                         "Check free disk space and delete the folder.")
                    emb.from_cache = False
        if emb.skipped and o.on_error == "raise":
            first = emb.skipped[0]
            raise DataError(f"{len(emb.skipped)} image(s) could not be embedded (first: {first['reason']}). "
                            "Fix them, or pass --on-error skip to accept the listed skips.")
        return emb

    # -- compute ------------------------------------------------------------------
    def _compute(self, entry: Path, key: EmbeddingKey, backbone: Backbone, source: DataSource, o: EmbedOptions,
                 meta: dict[str, Any] | None = None) -> None:
        layout = read_layout(entry, key, source.uri, o.shard_size)
        shard_dir = entry / "shards"
        shard_dir.mkdir(exist_ok=True)
        n = len(source)
        kept, bad = scan_shards(shard_dir, n)
        for stem in bad:
            warnings.warn(f"{shard_dir / stem}: partial or corrupt shard; recomputing it.", stacklevel=4)
        pending = gaps([(s["start"], s["stop"]) for s in kept], n)
        resumed = bool(kept)
        stats = None
        progress = _auto(o.progress)
        try:
            if pending and o.engine == "ray":
                from vitlab.store.ray_engine import extract_ray

                stats = extract_ray(backbone, source, pending, shard_dir, block=layout["shard_size"], layers=key.layers,
                                    pools=key.pools, batch_size=o.batch_size, precision=key.precision,
                                    on_error=o.on_error, progress=progress, tokens=key.token_dtype,
                                    on_shard=kept.append, **o.ray)
            elif pending:
                stats = extract(backbone, source, pending, shard_dir, block=layout["shard_size"],
                                flush_seconds=layout["flush_seconds"], layers=key.layers, pools=key.pools,
                                batch_size=o.batch_size,
                                num_workers=default_num_workers() if o.num_workers is None else o.num_workers,
                                precision=key.precision, on_error=o.on_error, progress=progress,
                                tokens=key.token_dtype, on_batch=o.on_batch, on_shard=kept.append)
        except KeyboardInterrupt:
            raise Interrupted(resume_hint(kept, n)) from None
        kept.sort(key=lambda s: s["start"])
        try:
            consolidate(entry, key, source, kept, stats.to_dict() if stats else {}, resumed=resumed, meta=meta)
        except KeyboardInterrupt:
            raise Interrupted(f"all {n:,} rows are computed and kept in {len(kept)} shard(s): run the same command "
                              "again to finish writing the cache entry.") from None

    # -- locking ------------------------------------------------------------------
    @contextmanager
    def _locked(self, entry: Path):
        """Exclusive lock on an entry while computing it (released if the process dies).

        Raises a one-line CacheError when the entry cannot be written (read-only cache) or is a
        symbolic link (never followed: no lock file is created in a link's target), and takes the
        lock again if ``vitlab cache clear`` removed the entry while this run waited.
        """
        for _ in range(5):
            if entry.is_symlink():
                raise CacheError(f"cache entry {entry} is a symbolic link; vitlab never writes through a link in its "
                                 "cache. Remove the link, or pass --cache-dir <another dir>.")
            try:
                entry.mkdir(parents=True, exist_ok=True)
                f = open_lock(entry)
            except OSError as e:
                raise self._unwritable(entry, e) from None
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                same = os.fstat(f.fileno()).st_ino == os.lstat(entry / ".lock").st_ino
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

    # -- housekeeping (vitlab.store.admin does it for every namespace) ---------------
    def entries(self) -> list[dict[str, Any]]:
        """One summary dict per finished or partial embeddings entry (``vitlab cache ls`` shows every namespace).

        ``source`` is the data source's full URI, query included (``idx:/x?split=test&limit=4500``).
        Folders that are not vitlab entries are not listed (:func:`vitlab.store.admin.cache_ls` names them).
        """
        from vitlab.store.admin import cache_ls

        return [{**f.info, "bytes": f.bytes} for f in cache_ls(self.root, ["embeddings"]) if f.entry]

    def clear_entries(self, digest: str | None = None) -> dict[str, Any]:
        """Delete one embeddings entry (by digest prefix) or all, except those a running embed holds locked.

        Only vitlab's own entries are removed (real folders with a digest name and ``key.json``);
        anything else is left alone and listed. Returns ``{"removed": int, "in_use": [digest, ...],
        "left_alone": [{"path", "reason"}, ...]}``.

        Example:
            >>> import tempfile
            >>> EmbeddingStore(tempfile.mkdtemp()).clear_entries()
            {'removed': 0, 'in_use': [], 'left_alone': []}
        """
        from vitlab.store.admin import cache_clear

        res = cache_clear(self.root, ["embeddings"], digest)
        return {"removed": len(res["removed"]), "in_use": [Path(p).name for p in res["in_use"]],
                "left_alone": res["left_alone"]}

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


def _auto(progress: bool | None) -> bool:
    import sys

    return sys.stderr.isatty() if progress is None else progress
