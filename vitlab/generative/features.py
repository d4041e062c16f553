"""Feature sets for generative evaluation: from images (through the embedding cache) or from files.

Images are embedded only through :meth:`EmbeddingStore.get_or_compute`, so a real set
is computed once and reused by every later run with the same encoder. Precomputed
features come from ``.npy`` (``[n, d]``) or ``.npz`` files (key ``features``, else the
only 2-D array, as written by ``vitlab embed --export`` with one layer; optional
``ids`` / ``labels`` / ``classes`` arrays of length ``n`` are used when present).

Example:
    >>> import numpy as np
    >>> fs = feature_set(np.ones((4, 3), np.float32), "fake")
    >>> fs.X.shape, fs.origin["kind"]
    ((4, 3), 'array')
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.data import DataSource, load_source
from vitlab.errors import DataError
from vitlab.metrics._validate import check_features
from vitlab.store import Embeddings, EmbeddingStore

FEATURE_SUFFIXES = (".npy", ".npz")


@dataclass
class FeatureSet:
    """One set of pooled features and where it came from.

    Attributes:
        role: ``real``, ``fake``, ``train`` or ``test``.
        X: ``[n, d]`` float features (float32 from the cache, as stored for files).
        ids: ``[n]`` sample ids (``"0".."n-1"`` for arrays without ids).
        labels: ``[n]`` int64 class indices, or ``None``; classes: their names.
        origin: JSON-ready fingerprint (source kind/uri/fingerprint + embeddings digest, or file sha256).
        from_cache: whether the embeddings came from the cache (``None`` for files and arrays).
        seconds: time spent embedding or reading.
        skipped: images skipped with ``on_error="skip"``.
    """

    role: str
    X: np.ndarray
    ids: list[str]
    labels: np.ndarray | None = None
    classes: list[str] = field(default_factory=list)
    origin: dict[str, Any] = field(default_factory=dict)
    from_cache: bool | None = None
    seconds: float = 0.0
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])


def is_feature_file(spec: Any) -> bool:
    """True for a path (``str``/``Path``) ending in ``.npy`` / ``.npz`` (not a ``kind:`` URI)."""
    return isinstance(spec, (str, Path)) and Path(str(spec)).suffix.lower() in FEATURE_SUFFIXES \
        and not str(spec).split(":", 1)[0] in ("folder", "csv", "idx", "sample")


def _sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()[:24]


def feature_set(x: Any, role: str, *, ids: Any = None, labels: Any = None, classes: Any = None,
                origin: dict[str, Any] | None = None, where: str | None = None) -> FeatureSet:
    """Validate an ``[n, d]`` array (shape, real dtype, no NaN/inf) into a :class:`FeatureSet`.

    Args:
        x: features ``[n, d]``.
        role: ``real`` / ``fake`` / ``train`` / ``test`` (used in messages).
        ids, labels, classes: optional row metadata (length ``n``).
        origin: fingerprint to record; default the array's sha256.
        where: prefix for error messages (a file path).

    Raises:
        DataError: wrong shape, non-numeric dtype, empty, NaN/inf, or metadata of the wrong length.
    """
    try:
        arr = np.asarray(x)
        if arr.dtype.kind == "f" and arr.ndim == 2:
            check_features(arr, role, dtype=arr.dtype)  # validate without a float64 copy
        else:
            arr = check_features(arr, role, dtype=np.float32)
    except DataError as e:
        raise DataError(f"{where}: {e}" if where else str(e)) from None
    n = arr.shape[0]
    ids_l = [str(i) for i in range(n)] if ids is None else [str(i) for i in np.asarray(ids).tolist()]
    lab = None if labels is None else np.asarray(labels)
    for what, val in (("ids", ids_l), ("labels", lab)):
        if val is not None and len(val) != n:
            raise DataError(f"{where or role}: {what} has {len(val)} entries but the features have {n} rows; "
                            "pass one per row.")
    cls_list = [] if classes is None else [str(c) for c in np.asarray(classes).tolist()]
    if lab is not None and lab.dtype.kind not in "iu":  # string labels → indices
        cls_list, lab = np.unique(lab.astype(str), return_inverse=True)
        cls_list = cls_list.tolist()
    origin = origin or {"kind": "array", "sha256": _sha256(arr), "n": n, "dim": int(arr.shape[1])}
    return FeatureSet(role, arr, ids_l, None if lab is None else lab.astype(np.int64), cls_list, origin)


def load_feature_file(path: str | Path, role: str) -> FeatureSet:
    """Read precomputed features from ``.npy`` or ``.npz`` (see the module docstring).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "f.npy"); np.save(p, np.zeros((3, 2), np.float32))
        >>> load_feature_file(p, "real").X.shape
        (3, 2)
    """
    p = Path(path).expanduser()
    t0 = time.perf_counter()
    if not p.is_file():
        raise DataError(f"{p}: no such feature file. Pass a .npy ([n, d] array) or .npz (key 'features').")
    meta: dict[str, Any] = {}
    try:
        loaded = np.load(p, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            x, key = loaded, None
        else:
            with loaded as z:
                arrays = {k: z[k] for k in z.files}
            x, key = _pick_features(arrays, p)
            meta = {k: arrays[k] for k in ("ids", "labels", "classes") if k in arrays and k != key}
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{p}: cannot read features ({type(e).__name__}: {e}). Save them with np.save / "
                        "np.savez(features=...) (object arrays are not accepted).") from None
    origin = {"kind": "file", "path": str(p.resolve()), "key": key, "sha256": None,
              "n": int(x.shape[0]) if x.ndim else 0, "dim": int(x.shape[1]) if x.ndim == 2 else None}
    labels = meta.get("labels")
    if labels is not None and labels.size == 0:
        labels = None
    fs = feature_set(x, role, ids=meta.get("ids") if meta.get("ids") is not None and meta["ids"].size else None,
                     labels=labels, classes=meta.get("classes"), origin=origin, where=str(p))
    fs.origin["sha256"] = _sha256(fs.X)
    fs.seconds = time.perf_counter() - t0
    return fs


def _pick_features(arrays: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, str]:
    if "features" in arrays:
        return arrays["features"], "features"
    if len(arrays) == 1:
        (k, v), = arrays.items()
        return v, k
    two_d = [k for k, v in arrays.items() if v.ndim == 2 and v.dtype.kind in "fiu"]
    if len(two_d) == 1:
        return arrays[two_d[0]], two_d[0]
    raise DataError(f"{path}: holds arrays {sorted(arrays)} and none is named 'features'. Save the features under "
                    "that key: np.savez(path, features=X[, labels=y, ids=ids]).")


def embed_source(encoder: Any, source: DataSource | str, role: str, store: EmbeddingStore,
                 **embed_kwargs: Any) -> FeatureSet:
    """Embed a data source with an :class:`~vitlab.generative.encoders.Encoder` through the cache.

    Args:
        encoder: the encoder (backbone, layer, pooling).
        source: a :class:`DataSource` or URI (``"folder:./samples"``).
        role: ``real`` / ``fake`` / ``train`` / ``test``.
        store: the embedding store.
        **embed_kwargs: ``batch_size``, ``num_workers``, ``progress``, ``on_error``, ``precision``...

    Returns:
        :class:`FeatureSet` with ``from_cache`` set.
    """
    t0 = time.perf_counter()
    emb, origin = embed_cached(encoder, source, store, **embed_kwargs)
    x = np.asarray(emb.get(), dtype=np.float32)
    fs = feature_set(x, role, ids=emb.ids, labels=emb.labels, classes=emb.classes if emb.labels is not None else None,
                     origin=origin, where=origin["uri"])
    fs.from_cache, fs.seconds, fs.skipped = emb.from_cache, time.perf_counter() - t0, list(emb.skipped)
    return fs


def embed_cached(encoder: Any, source: DataSource | str, store: EmbeddingStore,
                 **embed_kwargs: Any) -> tuple[Embeddings, dict[str, Any]]:
    """Embed a data source with an encoder through the cache, leaving the features memory-mapped.

    ``emb.get()`` (the encoder's layer and pooling, ``[n, d]``) stays a float32 memmap of the
    store's array, so a caller that reads it in chunks (``gen_stats``) never holds all rows.

    Returns:
        ``(embeddings, origin)``: origin is the JSON-ready fingerprint recorded in stats files and
        run records (source kind, uri, fingerprint, n, embeddings digest).

    Example:
        >>> from vitlab.generative import load_encoder
        >>> enc = load_encoder("demo:fmnist-vit")
        >>> emb, origin = embed_cached(enc, "sample:digits?limit=64", EmbeddingStore(), progress=False)
        >>> emb.get().shape, origin["embeddings"] == emb.digest
        ((64, 96), True)
    """
    src = load_source(source)
    emb = store.get_or_compute(encoder.backbone, src, layers=encoder.layer, pool=encoder.pool, **embed_kwargs)
    return emb, {"kind": src.kind, "uri": src.uri, "fingerprint": src.fingerprint, "n": len(src),
                 "embeddings": emb.digest}
