"""Cached text embeddings of zero-shot prompts: ``[n_classes, n_templates, D]`` per (backbone, prompts).

Layout: ``<cache_dir>/text/<digest>.npz`` holding ``emb`` (float32) and ``key`` (the JSON the
digest hashes), written atomically. The key covers the backbone name, a hash of the text
tower's weights (``bb.text_weights_id``, which follows in-place changes; ``weights_id`` for
a backbone that has no separate text tower), the templates, the class names (both in order)
and :data:`TEXT_SCHEMA_VERSION`. Not covered, on purpose: device and batch size (fp32 results
agree across them to float rounding).

Example:
    >>> import vitlab
    >>> bb = vitlab.load_backbone("open_clip:ViT-S-32", pretrained=False)  # random weights: offline
    >>> emb = text_embeddings(bb, ["cat", "dog"], ["a photo of a {}."], "cache")
    >>> emb.shape
    (2, 1, 384)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitlab._cache import entry_path
from vitlab._io import atomic_write
from vitlab.errors import BackboneError, DataError
from vitlab.protocols.zeroshot_math import class_prompts

__all__ = ["TEXT_SCHEMA_VERSION", "text_cache_key", "text_cache_path", "text_embeddings"]

TEXT_SCHEMA_VERSION = 1
PROMPTS_PER_CALL = 4096  # prompts handed to encode_text at a time (bounds device memory)


def _text_weights_id(backbone: Any) -> str:
    tid = getattr(backbone, "text_weights_id", None)
    return str(tid) if tid is not None else str(backbone.weights_id)


def text_cache_key(backbone: Any, classnames: Sequence[str], templates: Sequence[str]) -> dict[str, Any]:
    """The dict the text-embedding cache digest hashes.

    Example:
        >>> class Fake:
        ...     name, text_weights_id = "demo:clip", "ab12"
        >>> k = text_cache_key(Fake(), ["cat"], ["a photo of a {}."])
        >>> sorted(k), k["text_weights_id"]
        (['backbone', 'classnames', 'schema', 'templates', 'text_weights_id'], 'ab12')
    """
    return {"schema": TEXT_SCHEMA_VERSION, "backbone": str(backbone.name), "text_weights_id": _text_weights_id(backbone),
            "templates": [str(t) for t in templates], "classnames": [str(c) for c in classnames]}


def _digest(key: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=12).hexdigest()


def text_cache_path(cache_dir: str | os.PathLike, key: dict[str, Any]) -> Path:
    """Where the entry of ``key`` lives: ``<cache_dir>/text/<digest>.npz``.

    Example:
        >>> text_cache_path("/c", {"schema": 1}).parent.as_posix()
        '/c/text'
    """
    return entry_path("text", f"{_digest(key)}.npz", cache_dir)


def _load(path: Path, key: dict[str, Any], shape: tuple[int, int]) -> np.ndarray | None:
    """The cached array, or None when absent, unreadable, or written for another key."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if json.loads(str(z["key"])) != key:
                return None
            emb = np.array(z["emb"], dtype=np.float32)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError, KeyError, EOFError) as e:  # corrupt/truncated: recompute and overwrite
        warnings.warn(f"text-embedding cache file {path} is unreadable ({type(e).__name__}); recomputing it.",
                      stacklevel=3)
        return None
    if emb.ndim != 3 or emb.shape[:2] != shape or not np.isfinite(emb).all():
        return None
    return emb


def _save(path: Path, key: dict[str, Any], emb: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, emb=emb, key=np.array(json.dumps(key, sort_keys=True)))
    try:
        atomic_write(path, buf.getvalue(), elsewhere="pass a writable --cache-dir")
    except OSError as e:  # the result is still good: keep going without the cache
        warnings.warn(f"the text-embedding cache is not written, continuing without it: {e}", stacklevel=3)


def describe_entry(path: Path) -> dict[str, Any]:
    """What ``vitlab cache ls`` shows of a text-embedding entry (raises for a file that is not one).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "0a0a0a0a0a0a0a0a0a0a0a0a.npz"
        >>> key = {"schema": 1, "backbone": "b", "text_weights_id": "t", "templates": ["{}"], "classnames": ["cat"]}
        >>> _save(p, key, np.zeros((1, 1, 4), np.float32))
        >>> describe_entry(p)
        {'backbone': 'b', 'classes': 1, 'templates': 1}
    """
    with np.load(path, allow_pickle=False) as z:
        key = json.loads(str(z["key"]))
    return {"backbone": key["backbone"], "classes": len(key["classnames"]), "templates": len(key["templates"])}


def text_embeddings(backbone: Any, classnames: Sequence[str], templates: Sequence[str],
                    cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Text embeddings ``[n_classes, n_templates, D]`` (float32, not normalised) of every class name
    written into every template, via ``backbone.encode_text``; cached on disk under ``cache_dir``
    (pass the embedding store's root; ``None`` computes without caching).

    Args:
        backbone: a backbone with a text tower (``has_text``).
        classnames: class names, in label order.
        templates: prompt templates, each with ``{}`` (see :func:`vitlab.protocols.zeroshot_math.templates`).
        cache_dir: cache root; entries go to ``<cache_dir>/text/``.

    Raises:
        BackboneError: the backbone has no text tower.
        ConfigError: empty class names or templates, or a template without ``{}``.
        DataError: the text tower returned a wrong shape or non-finite values.

    Example:
        >>> import vitlab
        >>> text_embeddings(vitlab.load_backbone("demo:fmnist-vit"), ["cat"], ["a {}."])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        vitlab.errors.BackboneError: demo:fmnist-vit has no text tower: zero-shot classification needs ...
    """
    prompts = class_prompts(classnames, templates)
    if not backbone.has_text:
        backbone.encode_text(prompts[0][:1])  # raises the backbone's own reason
        raise BackboneError(f"{backbone.name} has no text tower; zero-shot classification needs an image–text model.")
    n_cls, n_tmpl = len(prompts), len(prompts[0])
    key = text_cache_key(backbone, classnames, templates)
    path = text_cache_path(cache_dir, key) if cache_dir is not None else None
    if path is not None:
        cached = _load(path, key, (n_cls, n_tmpl))
        if cached is not None:
            return cached
    flat = [p for row in prompts for p in row]
    parts = []
    for s in range(0, len(flat), PROMPTS_PER_CALL):
        out = backbone.encode_text(flat[s:s + PROMPTS_PER_CALL])
        parts.append(out.detach().float().cpu().numpy() if hasattr(out, "detach") else np.asarray(out, np.float32))
    emb = np.concatenate(parts).astype(np.float32, copy=False)
    if emb.ndim != 2 or emb.shape[0] != len(flat) or not np.isfinite(emb).all():
        raise DataError(f"{backbone.name}.encode_text returned shape {emb.shape} (or non-finite values) for "
                        f"{len(flat)} prompts; expected finite [{len(flat)}, D]. Check the backbone's text tower.")
    emb = emb.reshape(n_cls, n_tmpl, -1)
    if path is not None:
        _save(path, key, emb)
    return emb
