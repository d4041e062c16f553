"""The layout cache: ``<cache root>/layouts/<24 hex>.npz``, one file per (embeddings, layout settings).

An entry holds ``xy [n, 2]``, ``fit_rows [m]`` and ``key`` (the JSON of everything that shapes the map:
the embeddings' digest, layer and pooling, a hash of the exact ``[n, d]`` rows fed to the layout, the
method and its settings, the seed and the library version). The file name is a hash of that key, and a
hit is used only when the stored key equals the expected one, so a layout whose inputs changed is never
reused; an unreadable entry is recomputed and replaced. Entries are written atomically (temporary file,
fsync, rename).

Example:
    >>> import tempfile
    >>> from vitlab.exploration.layout import LayoutConfig
    >>> X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    >>> root = Path(tempfile.mkdtemp())
    >>> cfg = LayoutConfig(method="pca")
    >>> a = load_or_compute_layout(root, X, cfg, embeddings="e1", layer=3, pool="cls")
    >>> b = load_or_compute_layout(root, X, cfg, embeddings="e1", layer=3, pool="cls")
    >>> a.info["from_cache"], b.info["from_cache"], bool((a.xy == b.xy).all())
    (False, True, True)
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from vitlab._io import atomic_write
from vitlab.exploration.layout import Layout, LayoutConfig, _library, _version, compute_layout

__all__ = ["NAMESPACE", "FORMAT", "layout_key", "load_or_compute_layout", "describe_layout"]

#: The cache namespace (registered in :mod:`vitlab._cache`: ``vitlab cache ls/clear`` see it).
NAMESPACE = "layouts"
FORMAT = "vitlab-layout/1"


def layout_key(X: np.ndarray, config: LayoutConfig, *, embeddings: str, layer: int, pool: str) -> dict[str, Any]:
    """Everything that shapes a layout, as JSON-ready data (its hash names the cache file).

    Example:
        >>> k = layout_key(np.zeros((3, 2), np.float32), LayoutConfig(method="pca"), embeddings="e", layer=1,
        ...                pool="cls")
        >>> k["format"], k["shape"], len(k["rows_blake2b"])
        ('vitlab-layout/1', [3, 2], 32)
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    dist = _library(config.method)[0]
    return {"format": FORMAT, "embeddings": str(embeddings), "layer": int(layer), "pool": str(pool),
            "shape": list(X.shape), "rows_blake2b": hashlib.blake2b(X.tobytes(), digest_size=16).hexdigest(),
            "layout": config.params(), "library": {dist: _version(dist)}}


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def load_or_compute_layout(root: str | Path, X: np.ndarray, config: LayoutConfig, *, embeddings: str, layer: int,
                           pool: str) -> Layout:
    """The cached layout of ``X`` under ``config``, computing (and caching) it when there is none.

    Args:
        root: the cache root (the embedding store's ``root``).
        X: ``[n, d]`` rows fed to the layout.
        config: the layout settings.
        embeddings, layer, pool: where ``X`` comes from (the embeddings' digest, layer and pooling).

    Returns:
        The :class:`Layout`; ``info["from_cache"]`` says whether it was read back, ``info["cache_file"]``
        where it lives.
    """
    key = layout_key(X, config, embeddings=embeddings, layer=layer, pool=pool)
    from vitlab._cache import entry_path

    path = entry_path(NAMESPACE, f"{_digest(key)}.npz", root)
    if path.is_file() and not path.is_symlink():
        try:
            with np.load(path, allow_pickle=False) as z:
                stored = json.loads(bytes(z["key"]).decode())
                xy, rows = np.asarray(z["xy"]), np.asarray(z["fit_rows"])
                info = json.loads(bytes(z["info"]).decode())
            if stored == key and xy.shape == (len(X), 2):
                return Layout(xy.astype(np.float32), rows.astype(np.int64), config,
                              {**info, "from_cache": True, "cache_file": str(path)})
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
            warnings.warn(f"layout cache entry {path} is unreadable ({err}); recomputing it.", stacklevel=2)
    layout = compute_layout(X, config)
    buf = io.BytesIO()
    np.savez(buf, xy=layout.xy, fit_rows=layout.fit_rows,
             key=np.frombuffer(json.dumps(key, sort_keys=True).encode(), np.uint8),
             info=np.frombuffer(json.dumps(layout.info).encode(), np.uint8))
    try:
        atomic_write(path, buf.getvalue())  # a WriteError is an OSError
        layout.info["cache_file"] = str(path)
    except OSError as err:  # a read-only cache costs a recomputation next time, not this run
        warnings.warn(f"could not cache the layout in {path.parent} ({err}); it will be recomputed next time.",
                      stacklevel=2)
    return layout


def describe_layout(path: str | Path) -> dict[str, Any]:
    """A JSON-ready summary of one cache entry (for ``vitlab cache ls``); raises for anything that is not one.

    Example:
        >>> describe_layout("/nonexistent.npz")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: ...
    """
    with np.load(Path(path), allow_pickle=False) as z:
        key = json.loads(bytes(z["key"]).decode())
        n = int(z["xy"].shape[0])
    if key.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} entry.")
    return {"embeddings": key["embeddings"], "n": n, "layout": key["layout"], "layer": key["layer"],
            "pool": key["pool"]}
