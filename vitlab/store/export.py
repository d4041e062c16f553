"""Export a cached embedding set to Parquet: ``id``, label, embedding as ``fixed_size_list<float32>[d]``.

Layout (what pandas, pyarrow and embedding-reader read directly):

* ``out.parquet``: one file; or ``out/`` (a folder, or ``rows_per_file=``): parts
  ``part-00000.parquet``, ``part-00001.parquet``, ... (embedding-reader's
  ``EmbeddingReader(out, file_format="parquet", embedding_column="embedding")`` takes the folder).
* columns: ``id`` (string), ``label`` (int64, null when the source is unlabelled), ``class``
  (string, the label's name), ``group`` / ``split`` when the source has them, ``embedding``
  (``fixed_size_list<float32>[d]``: ``pq.read_table(f)["embedding"].to_numpy()`` then
  ``np.stack``, or ``.combine_chunks().flatten().to_numpy().reshape(-1, d)`` zero-copy).
* schema metadata ``b"vitlab"``: JSON with the format, the cache digest, the backbone
  fingerprint (name, weights_id, preprocessing, accelerator), the source fingerprint
  (kind, fingerprint, n, uri), layer, pool, precision and the classes.

Rows are streamed from the store's memory-mapped arrays in batches of ``batch_rows``: the
whole ``[n, d]`` matrix is never copied into memory. Files are written under a temporary
name and moved into place, so a failed export leaves nothing half-written behind; an
existing output is refused unless ``overwrite=True``.

Example:
    >>> import vitlab
    >>> emb = vitlab.embed("demo:fmnist-vit", "sample:digits?limit=64", progress=False)
    >>> to_parquet(emb, "digits.parquet")["rows"]
    64
    >>> import pandas as pd; pd.read_parquet("digits.parquet").columns.tolist()
    ['id', 'label', 'class', 'embedding']
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitlab._io import atomic_path, is_real_dir, is_real_file, remove_tree
from vitlab._version import __version__
from vitlab.backbones import Backbone
from vitlab.data import DataSource
from vitlab.errors import CacheError, ConfigError
from vitlab.store.embeddings import Embeddings
from vitlab.store.entry import load_entry
from vitlab.store.progress import image_progress, show_progress

EXPORT_FORMAT = "vitlab-embeddings-parquet/1"
#: Rows per write batch (and Parquet row group): 65,536 x 768 float32 = 200 MB at most.
BATCH_ROWS = 65_536
#: Columns with few distinct values get Parquet dictionary encoding; ids and floats are written plain.
DICT_COLUMNS = ("class", "group", "split")


def _is_file_target(out: Path, rows_per_file: int | None) -> bool:
    return rows_per_file is None and out.suffix.lower() in (".parquet", ".pq")


_PART = re.compile(r"part-\d{5}\.parquet")


def check_target(out: str | Path, *, overwrite: bool = False, rows_per_file: int | None = None) -> Path:
    """Validate an export target before any work: refuse an existing one unless ``overwrite``.

    Raises:
        ConfigError: the target exists (and ``overwrite`` is off), is a file where a folder of
            parts is asked for, or its parent folder does not exist.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "e.parquet"; _ = p.write_bytes(b"x")
        >>> check_target(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: .../e.parquet already exists; pass --overwrite (overwrite=True) to replace it, or choose another --output.
    """
    p = Path(out).expanduser()
    if rows_per_file is not None and rows_per_file < 1:
        raise ConfigError(f"rows_per_file must be >= 1, got {rows_per_file}.")
    if p.is_symlink():
        raise ConfigError(f"{p} is a symbolic link; vitlab does not write or delete through one. Choose another --output.")
    if p.exists() and not overwrite:
        raise ConfigError(f"{p} already exists; pass --overwrite (overwrite=True) to replace it, or choose another "
                          "--output.")
    if p.is_file() and not _is_file_target(p, rows_per_file):
        raise ConfigError(f"{p} is a file, but a folder of parts is asked for (rows_per_file, or no .parquet "
                          "suffix); choose another --output.")
    if not p.parent.is_dir():
        raise ConfigError(f"{p.parent} does not exist; create it first, or choose another --output.")
    if p.is_dir():
        other = sorted(q.name for q in p.iterdir() if not (_PART.fullmatch(q.name) and is_real_file(q)))
        if other:
            raise ConfigError(f"{p} is a folder holding other files than export parts (e.g. {other[0]}); --overwrite "
                              "replaces only a folder of vitlab's own part-NNNNN.parquet files. Choose another --output.")
    return p


def _metadata(emb: Embeddings, layer: int, pool: str, dim: int) -> dict[str, Any]:
    return {"format": EXPORT_FORMAT, "digest": emb.digest, "backbone": emb.key.get("backbone"),
            "source": {**emb.key.get("source", {}), "uri": _uri(emb)}, "layer": layer, "layers": list(emb.layers),
            "pool": pool, "dim": dim, "precision": emb.key.get("precision"), "view": emb.view, "n": len(emb),
            "classes": emb.classes if emb.labels is not None else None, "skipped": len(emb.skipped),
            "vitlab_version": __version__}


def _uri(emb: Embeddings) -> str | None:
    try:
        return json.loads((Path(emb.path) / "manifest.json").read_text()).get("uri")
    except (OSError, ValueError):
        return None


def _table(emb: Embeddings, parts: list[np.ndarray], start: int, stop: int, schema: Any) -> Any:
    import pyarrow as pa

    block = np.concatenate([p[start:stop] for p in parts], axis=1) if len(parts) > 1 else parts[0][start:stop]
    block = np.ascontiguousarray(block, dtype=np.float32)
    d = block.shape[1]
    cols: dict[str, Any] = {"id": pa.array(emb.ids[start:stop], pa.string())}
    if emb.labels is not None:
        lab = np.asarray(emb.labels[start:stop], dtype=np.int64)
        cols["label"] = pa.array(lab, pa.int64())
        cols["class"] = pa.array([emb.classes[v] for v in lab], pa.string())
    else:
        cols["label"] = pa.nulls(stop - start, pa.int64())
        cols["class"] = pa.nulls(stop - start, pa.string())
    if emb.groups is not None:
        cols["group"] = pa.array(emb.groups[start:stop], pa.string())
    if emb.split_column is not None:
        cols["split"] = pa.array(emb.split_column[start:stop], pa.string())
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1), pa.float32()), d)
    return pa.Table.from_pydict(cols, schema=schema)


def _schema(emb: Embeddings, dim: int, meta: dict[str, Any]) -> Any:
    import pyarrow as pa

    fields = [pa.field("id", pa.string(), nullable=False), pa.field("label", pa.int64()),
              pa.field("class", pa.string())]
    if emb.groups is not None:
        fields.append(pa.field("group", pa.string()))
    if emb.split_column is not None:
        fields.append(pa.field("split", pa.string()))
    fields.append(pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False))
    return pa.schema(fields, metadata={b"vitlab": json.dumps(meta, default=str).encode()})


def to_parquet(emb: Embeddings, out: str | Path, *, layer: int | None = None, pool: str | None = None,
               rows_per_file: int | None = None, batch_rows: int = BATCH_ROWS, overwrite: bool = False,
               compression: str = "zstd", progress: bool | None = None) -> dict[str, Any]:
    """Write one layer and pooling of a cached set to Parquet (see the module docstring for the layout).

    Args:
        emb: the embeddings (``vitlab.embed`` or :func:`find_cached`); nothing is recomputed.
        out: ``x.parquet`` (one file) or a folder (parts ``part-00000.parquet``...).
        layer: absolute or negative block index; default the last extracted layer.
        pool: ``cls``, ``mean``, ``cls+mean`` or ``embed``; default ``emb.pool``.
        rows_per_file: rows per part (then ``out`` is a folder); default one file for a
            ``.parquet`` target, else a folder of parts of 1,000,000 rows.
        batch_rows: rows read from the memmap and written per row group.
        overwrite: replace an existing ``out``.
        compression: Parquet codec (``zstd``, ``snappy``, ``none``...).
        progress: a bar on stderr (default: when stderr is a terminal).

    Returns:
        ``{"path", "files", "rows", "dim", "bytes", "seconds", "digest", "layer", "pool"}``.

    Raises:
        ConfigError: the target exists (without ``overwrite``), or a bad layer / pooling
            (checked before anything is written).

    Example:
        >>> import vitlab
        >>> emb = vitlab.embed("demo:fmnist-vit", "sample:digits?limit=64", progress=False)
        >>> info = to_parquet(emb, "emb", rows_per_file=32)
        >>> info["files"]
        ['emb/part-00000.parquet', 'emb/part-00001.parquet']
    """
    import pyarrow.parquet as pq

    target = check_target(out, overwrite=overwrite, rows_per_file=rows_per_file)
    if batch_rows < 1:
        raise ConfigError(f"batch_rows must be >= 1, got {batch_rows}.")
    pool = pool or emb.pool
    a = emb._layer(layer)  # validates the layer with the store's message
    names = ("cls", "mean") if pool == "cls+mean" else (pool,)
    parts = [emb.get(a, p) for p in names]  # memmaps: nothing read yet
    dim = sum(p.shape[1] for p in parts)
    n = len(emb)
    single = _is_file_target(target, rows_per_file)
    per_file = n if single else (rows_per_file or 1_000_000)
    meta = _metadata(emb, a, pool, dim)
    schema = _schema(emb, dim, meta)
    t0 = time.perf_counter()
    files: list[str] = []
    with atomic_path(target, mkdir=False, elsewhere="choose another --output") as tmp:
        if not single:
            tmp.mkdir()
        with image_progress(disable=not show_progress(progress)) as bar:
            task = bar.add_task("export", total=n)
            for fi, fstart in enumerate(range(0, max(n, 1), per_file)):
                fstop = min(n, fstart + per_file)
                name = tmp if single else tmp / f"part-{fi:05d}.parquet"
                with pq.ParquetWriter(str(name), schema, compression=compression,
                                      use_dictionary=[c for c in DICT_COLUMNS if c in schema.names]) as w:
                    for s in range(fstart, fstop, batch_rows):
                        e = min(fstop, s + batch_rows)
                        w.write_table(_table(emb, parts, s, e, schema), row_group_size=e - s)
                        bar.advance(task, e - s)
                    if fstop == fstart:
                        w.write_table(schema.empty_table())
                files.append(target.name if single else f"part-{fi:05d}.parquet")
        if is_real_dir(target):  # overwrite (checked: only parts): only now that the new export is complete
            remove_tree(target)
        elif target.exists():
            target.unlink()
    paths = [str(target)] if single else [str(target / f) for f in files]
    return {"path": str(target), "files": paths, "rows": n, "dim": dim,
            "bytes": sum(os.path.getsize(p) for p in paths), "seconds": time.perf_counter() - t0,
            "digest": emb.digest, "layer": a, "pool": pool, "from_cache": emb.from_cache}


def find_cached(backbone: Backbone | str, source: DataSource | str, *, cache_dir: str | Path | None = None,
                layers: Sequence[int] | int = -1, pool: str = "cls", precision: str | None = None,
                view: str = "pooled", pretrained: bool = True, device: str | None = None,
                verify: bool = False) -> Embeddings:
    """The cached embeddings of (backbone, source, layers, precision, view), never computing them.

    The backbone is loaded (on CPU unless ``device``) only to compute its cache key.
    ``precision`` defaults as in ``vitlab embed``: ``bf16`` on CUDA, else ``fp32``.

    Raises:
        CacheError: nothing finished is cached under that key; the message gives the
            ``vitlab embed`` command that computes it (a partial entry resumes).

    Example:
        >>> import vitlab
        >>> _ = vitlab.embed("demo:fmnist-vit", "sample:digits?limit=64", progress=False)
        >>> emb = find_cached("demo:fmnist-vit", "sample:digits?limit=64")
        >>> emb.from_cache
        True
    """
    from vitlab.backbones import load_backbone, resolve_device
    from vitlab.data import load_source
    from vitlab.store.store import EmbeddingStore

    store = EmbeddingStore(cache_dir)
    src = load_source(source)
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, pretrained=pretrained, device=device or "cpu")
    elif device is not None and resolve_device(device) != backbone.device:
        backbone = backbone.to(resolve_device(device))
    precision = precision or ("bf16" if backbone.device.type == "cuda" else "fp32")
    key = store.key_for(backbone, src, layers, precision, view)
    entry = store.entry_dir(key)
    emb = load_entry(entry, key, pool, verify)  # the store's own validated read path
    if emb is None:
        lay = ",".join(str(x) for x in (layers if isinstance(layers, Sequence) else [layers]))
        state = "is only partly computed" if (entry / "key.json").exists() else "is not in the cache"
        raise CacheError(f"{backbone.name} on {src.uri} (layers {lay}, {precision}{', ' + view if view != 'pooled' else ''}) "
                         f"{state} at {store.root}. Compute it with `vitlab embed -b {backbone.name} -d {src.uri} "
                         f"--layers {lay}` (same --precision/--cache-dir), or pass --compute; `vitlab cache ls` "
                         "lists what is cached.")
    return emb


def open_entry(digest: str, *, cache_dir: str | Path | None = None, pool: str = "cls",
               verify: bool = False) -> Embeddings:
    """A finished cache entry by digest (or a unique prefix, as ``vitlab cache ls`` prints it).

    Raises:
        CacheError: no entry, an ambiguous prefix, a partial entry, or an entry that fails validation.

    Example:
        >>> import vitlab
        >>> digest = vitlab.embed("demo:fmnist-vit", "sample:digits?limit=64", progress=False).digest
        >>> open_entry(digest[:8]).digest == digest
        True
    """
    from vitlab.store.fingerprint import EmbeddingKey
    from vitlab.store.store import EmbeddingStore

    store = EmbeddingStore(cache_dir)
    hits = sorted(d for d in (store.root / "embeddings").iterdir() if d.name.startswith(digest)) if digest else []
    if len(hits) != 1:
        what = "no cache entry" if not hits else f"{len(hits)} cache entries ({', '.join(h.name[:12] for h in hits[:4])})"
        raise CacheError(f"{what} under {store.root} match digest {digest!r}; `vitlab cache ls` lists them (give a "
                         "longer prefix, or the --cache-dir they are in).")
    entry = hits[0]
    try:
        k = json.loads((entry / "manifest.json").read_text())["key"]
    except FileNotFoundError:
        raise CacheError(f"cache entry {entry.name[:12]} is only partly computed; run the embed that made it again to "
                         "finish it (`vitlab cache ls` shows its backbone and source).") from None
    except (OSError, ValueError, KeyError) as e:
        raise CacheError(f"cache entry {entry}: unreadable manifest ({e}); delete it with `vitlab cache clear "
                         f"{entry.name[:12]}` and embed again.") from None
    key = EmbeddingKey(**{**k, "layers": tuple(k["layers"]), "pools": tuple(k["pools"])})
    if key.digest != entry.name:
        raise CacheError(f"cache entry {entry}: its manifest key does not hash to its name; delete it with "
                         f"`vitlab cache clear {entry.name[:12]}` and embed again.")
    emb = load_entry(entry, key, pool, verify)
    if emb is None:
        raise CacheError(f"cache entry {entry.name[:12]} failed validation (see the warning); embed it again.")
    return emb


def export_parquet(out: str | Path, *, digest: str | None = None, backbone: Backbone | str | None = None,
                   data: DataSource | str | None = None, cache_dir: str | Path | None = None,
                   layers: Sequence[int] | int = -1, layer: int | None = None, pool: str = "cls",
                   precision: str | None = None, view: str = "pooled", compute: bool = False,
                   pretrained: bool = True, device: str | None = None, overwrite: bool = False,
                   rows_per_file: int | None = None, progress: bool | None = None,
                   **embed_kwargs: Any) -> dict[str, Any]:
    """Export a cached set (by digest, or by backbone + data) to Parquet; ``vitlab cache export``.

    Without ``compute`` nothing is embedded: a set that is not cached is a one-line CacheError
    naming the ``vitlab embed`` command that makes it. With ``compute=True`` the set is embedded
    first exactly as ``vitlab embed`` would (cached rows are reused; ``embed_kwargs`` such as
    ``batch_size``, ``num_workers``, ``on_error`` go to the store). The target is checked first.

    Args:
        out: ``x.parquet`` or a folder of parts (see :func:`to_parquet`).
        digest: a cache entry's digest (prefix); or ``backbone`` + ``data``.
        layers, precision, view: which entry (as given to ``vitlab embed``).
        layer, pool: what to export from it (default: its last layer, ``pool``).

    Example:
        >>> info = export_parquet("digits.parquet", backbone="demo:fmnist-vit", data="sample:digits?limit=64",
        ...                       compute=True, progress=False)
        >>> info["path"], info["rows"], info["dim"]
        ('digits.parquet', 64, 96)
    """
    from vitlab.store.store import EmbeddingStore

    check_target(out, overwrite=overwrite, rows_per_file=rows_per_file)
    if digest is not None:
        if backbone is not None or data is not None or compute:
            raise ConfigError("pass either a digest or --backbone and --data (and --compute), not both.")
        emb = open_entry(digest, cache_dir=cache_dir, pool=pool)
    elif backbone is None or data is None:
        raise ConfigError("say which set to export: a digest from `vitlab cache ls`, or --backbone and --data.")
    elif compute:
        emb = EmbeddingStore(cache_dir).get_or_compute(backbone, data, layers=layers, pool=pool, precision=precision,
                                                       view=view, pretrained=pretrained, device=device,
                                                       progress=progress, **embed_kwargs)
    else:
        emb = find_cached(backbone, data, cache_dir=cache_dir, layers=layers, pool=pool, precision=precision,
                          view=view, pretrained=pretrained, device=device)
    return to_parquet(emb, out, layer=layer, pool=pool, rows_per_file=rows_per_file, overwrite=overwrite,
                      progress=progress)
