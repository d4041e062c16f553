"""Reference statistics: one versioned file with the mean and covariance of a real set's features.

Format (``np.savez``, whatever the file name; read with ``allow_pickle=False``):

* ``header``: a JSON string ``{"format": "vitlab-gen-stats", "version": 1, "encoder": {...},
  "data": {...}, "n", "dim", "has_features", "vitlab_version", "created"}``; ``encoder`` is
  :meth:`Encoder.describe` (name, backbone, ``weights_id``, pooling, layer, resize and the
  full preprocessing) or ``null`` for precomputed features;
* ``mu`` ``[d]`` and ``sigma`` ``[d, d]`` in float64 (``ddof = 1``, as ``np.cov``);
* with ``save_features``: ``features`` ``[n, d]`` float32 and ``ids`` ``[n]``.

A file is only used with the encoder it was made with: :func:`check_compatible`
refuses it, naming both values, when the encoder, weights, pooling, layer or
preprocessing differ.

Example:
    >>> import numpy as np, tempfile, os
    >>> x = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    >>> p = os.path.join(tempfile.mkdtemp(), "ref.stats")
    >>> _ = save_stats(p, x, encoder=None, data={"kind": "array"})
    >>> load_stats(p).mu.shape
    (3,)
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitlab._io import atomic_path
from vitlab._version import __version__
from vitlab.errors import ConfigError, DataError
from vitlab.metrics.moments import chunked_moments

STATS_FORMAT = "vitlab-gen-stats"
STATS_VERSION = 1
#: Encoder fields that must agree between a stats file and a run.
MATCH_KEYS = ("encoder", "backbone", "weights_id", "pool", "layer", "preprocessing")


@dataclass
class ReferenceStats:
    """A loaded reference-statistics file.

    Attributes:
        mu: ``[d]`` float64 mean; sigma: ``[d, d]`` float64 covariance.
        n: number of feature rows; encoder: the encoder description (or ``None``).
        data: fingerprint of the data they came from; header: the whole JSON header.
        features: ``[n, d]`` float32 when saved with ``save_features``, else ``None``; ids likewise.
        path: the file.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int
    encoder: dict[str, Any] | None
    data: dict[str, Any]
    header: dict[str, Any] = field(default_factory=dict)
    features: np.ndarray | None = None
    ids: list[str] | None = None
    path: Path | None = None

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def fingerprint(self) -> dict[str, Any]:
        """What a run record stores about the file."""
        return {"path": str(self.path) if self.path else None, "format": self.header.get("format"),
                "version": self.header.get("version"), "n": self.n, "dim": self.dim,
                "has_features": self.features is not None, "data": self.data, "encoder": self.encoder}


def save_stats(path: str | Path, features: np.ndarray, *, encoder: dict[str, Any] | None, data: dict[str, Any],
               save_features: bool = False, ids: list[str] | None = None) -> ReferenceStats:
    """Compute mean/covariance of ``features`` ``[n, d]`` and write one stats file (atomically).

    The moments are accumulated in float64 over chunks of rows (:func:`vitlab.metrics.moments.chunked_moments`),
    so a memory-mapped store array is never loaded whole: working memory is ``O(chunk * d + d^2)``.

    Args:
        path: output file (any name; no suffix is added).
        features: ``[n, d]`` features, ``n >= 2`` (an array or a memmap, e.g. ``Embeddings.get()``).
        encoder: :meth:`Encoder.describe` of the encoder that made them, or ``None``.
        data: fingerprint of the source.
        save_features: also store the raw features (then every real-set metric can use the file).
        ids: row ids stored with the features.

    Returns:
        The :class:`ReferenceStats` written.
    """
    x = features if isinstance(features, np.ndarray) else np.asarray(features)
    if x.ndim != 2 or x.shape[1] == 0 or x.dtype.kind not in "fiu":
        raise DataError(f"features must be a numeric [n, d] array with d >= 1, got shape {x.shape} ({x.dtype}).")
    mu, sigma = chunked_moments(x).gaussian()
    header = {"format": STATS_FORMAT, "version": STATS_VERSION, "encoder": encoder, "data": data,
              "n": int(x.shape[0]), "dim": int(x.shape[1]), "has_features": bool(save_features),
              "vitlab_version": __version__,
              "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    arrays: dict[str, np.ndarray] = {"header": np.array(json.dumps(header, default=str)), "mu": mu, "sigma": sigma}
    if save_features:
        arrays["features"] = np.asarray(x, dtype=np.float32)
        arrays["ids"] = np.array([str(i) for i in (ids if ids is not None else range(x.shape[0]))])
    p = Path(path).expanduser()
    need = sum(a.nbytes for a in arrays.values())
    with atomic_path(p, need=need) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz" suffix
        np.savez(f, **arrays)
    return ReferenceStats(mu, sigma, int(x.shape[0]), encoder, data, header,
                          arrays.get("features"), None if not save_features else arrays["ids"].tolist(), p)


def load_stats(path: str | Path) -> ReferenceStats:
    """Read and validate a stats file written by :func:`save_stats` (``vitlab gen-stats``).

    Raises:
        DataError: missing or unreadable file, wrong format or version, inconsistent shapes.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: no such reference-statistics file. Create it with "
                        f"`vitlab gen-stats --data <real images> --backbone <name> -o {p}`.")
    try:
        loaded = np.load(p, allow_pickle=False)
        if isinstance(loaded, np.ndarray) or "header" not in loaded.files:
            raise DataError(f"{p}: not a vitlab reference-statistics file (no header). Create one with "
                            "`vitlab gen-stats`.")
        with loaded as z:
            header = json.loads(str(z["header"]))
            mu, sigma = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
            feats = z["features"] if "features" in z.files else None
            ids = z["ids"].tolist() if "ids" in z.files else None
    except DataError:
        raise
    except (OSError, ValueError, KeyError, EOFError, json.JSONDecodeError) as e:
        raise DataError(f"{p}: unreadable reference statistics ({type(e).__name__}: {e}). "
                        "Recreate the file with `vitlab gen-stats`.") from None
    if header.get("format") != STATS_FORMAT:
        raise DataError(f"{p}: format {header.get('format')!r} is not {STATS_FORMAT!r}. "
                        "Create it with `vitlab gen-stats`.")
    if header.get("version") != STATS_VERSION:
        raise DataError(f"{p}: stats version {header.get('version')!r}; this vitlab reads version {STATS_VERSION}. "
                        "Recompute it with `vitlab gen-stats`.")
    d = mu.shape[0] if mu.ndim == 1 else -1
    if mu.ndim != 1 or sigma.shape != (d, d) or (feats is not None and (feats.ndim != 2 or feats.shape[1] != d)):
        raise DataError(f"{p}: inconsistent shapes (mu {mu.shape}, sigma {sigma.shape}). Recompute the file.")
    return ReferenceStats(mu, sigma, int(header.get("n", 0)), header.get("encoder"), header.get("data", {}),
                          header, feats, ids, p)


def describe_preprocessing(prep: dict[str, Any] | None) -> str:
    """``"stretch 224x224 bicubic"`` (plus mean/std when not ImageNet's), for messages.

    Example:
        >>> describe_preprocessing({"resize": "clean", "input_size": [299, 299], "interpolation": "bicubic"})
        'clean 299x299 bicubic'
    """
    if not prep:
        return "unknown"
    h, w = prep.get("input_size", ["?", "?"])
    return f"{prep.get('resize')} {h}x{w} {prep.get('interpolation')}"


def _show(key: str, value: Any) -> str:
    if key == "preprocessing":
        return repr(describe_preprocessing(value))
    if key == "weights_id" and isinstance(value, str):
        return repr(value[:12])
    return repr(value)


def check_compatible(stats: ReferenceStats, encoder: dict[str, Any] | None, *,
                     real_hint: str = "<real images>") -> None:
    """Refuse ``stats`` unless they were made with the same encoder, weights, pooling, layer and preprocessing.

    Args:
        stats: the loaded file.
        encoder: :meth:`Encoder.describe` of this run (``None``: precomputed features; nothing to check).
        real_hint: what to suggest for ``--data`` in the fix.

    Raises:
        ConfigError: naming each differing value in the file and in this run, and the fix.
    """
    if encoder is None or stats.encoder is None:
        return
    diffs = [k for k in MATCH_KEYS if stats.encoder.get(k) != encoder.get(k)]
    if not diffs:
        return
    parts = [f"{k} {_show(k, stats.encoder.get(k))} in the file vs {_show(k, encoder.get(k))} in this run"
             for k in diffs]
    if "preprocessing" in diffs and describe_preprocessing(stats.encoder.get("preprocessing")) == \
            describe_preprocessing(encoder.get("preprocessing")):
        parts.append(f"full preprocessing {stats.encoder.get('preprocessing')} vs {encoder.get('preprocessing')}")
    resize = "" if encoder.get("resize") in (None, "default") else f" --resize {encoder['resize']}"
    file_resize = "" if stats.encoder.get("resize") in (None, "default") else f" --resize {stats.encoder['resize']}"
    raise ConfigError(
        f"{stats.path}: reference statistics were made with a different encoder setup: {'; '.join(parts)}. "
        "Features from different encoders or preprocessing are not comparable. Recompute them with "
        f"`vitlab gen-stats --data {real_hint} --backbone {encoder.get('encoder')}{resize} -o {stats.path}`, "
        f"or evaluate with the file's setup (--backbone {stats.encoder.get('encoder')}{file_resize}"
        f"{' --no-pretrained' if stats.encoder.get('pretrained') is False else ''}).")


def require_features(stats: ReferenceStats, metrics: list[str]) -> np.ndarray:
    """The raw features stored in ``stats``, or a clear error naming the metrics that need them."""
    if stats.features is None:
        raise ConfigError(
            f"metric(s) {', '.join(metrics)} need the real features, but {stats.path} holds only their mean and "
            "covariance (enough for fd). Recompute it with `vitlab gen-stats ... --save-features`, pass the real "
            "images with --real instead, or use --metrics fd.")
    return stats.features
