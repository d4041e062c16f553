"""Cache administration: list and clear every cache namespace (``vitlab cache ls`` / ``cache clear``).

The rule (one for every namespace, :mod:`vitlab._cache`): only vitlab's own entries are removed,
i.e. real folders or files (never symbolic links) with the namespace's name pattern, marker
(``key.json`` for embeddings) and a layout its owner accepts. Anything else found in a namespace
folder (a user's folder, a stray file, a link) is listed as *left alone*, with the reason, and
never touched. Links are never followed: not for deletion, not for a lock file. An entry a
running embed holds locked is kept and listed as in use.

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()); (root / "embeddings" / "clip_run1").mkdir(parents=True)
    >>> res = cache_clear(root)
    >>> res["removed"], [Path(x["path"]).name for x in res["left_alone"]], (root / "embeddings" / "clip_run1").exists()
    ([], ['clip_run1'], True)
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Any

from vitlab._cache import NAMESPACES, Found, scan
from vitlab._io import cache_root, is_real_file, open_lock, remove_tree
from vitlab.errors import CacheError

__all__ = ["cache_ls", "cache_clear"]


def _names(namespaces: list[str] | None) -> list[str]:
    names = list(namespaces or [e.name for e in NAMESPACES])
    for n in names:
        NAMESPACES.entry(n)  # unknown → one line with "did you mean"
    return names


def cache_ls(root: str | os.PathLike | None = None, namespaces: list[str] | None = None) -> list[Found]:
    """Every entry of the given namespaces (default: all) and everything left alone there.

    Example:
        >>> import tempfile
        >>> cache_ls(tempfile.mkdtemp())
        []
    """
    return scan(cache_root(root), _names(namespaces))


def cache_clear(root: str | os.PathLike | None = None, namespaces: list[str] | None = None,
                prefix: str | None = None) -> dict[str, Any]:
    """Remove the entries of the given namespaces (default: all) whose name starts with ``prefix``.

    Returns ``{"removed": [path, ...], "in_use": [path, ...], "left_alone": [{"path", "namespace",
    "reason"}, ...]}``; nothing but vitlab's own entries is ever removed.

    Raises:
        CacheError: an entry cannot be removed (permissions, read-only file system), one line.
    """
    removed: list[str] = []
    in_use: list[str] = []
    left: list[dict[str, Any]] = []
    for f in cache_ls(root, namespaces):
        if prefix is not None and not f.path.name.startswith(prefix):
            continue
        if not f.entry:
            left.append({"path": str(f.path), "namespace": f.namespace, "reason": f.reason})
            continue
        try:
            outcome = _remove(f)
        except OSError as e:
            if e.errno == errno.ENOENT:  # removed meanwhile
                continue
            if e.errno in (errno.ELOOP, errno.ENOTDIR):  # became a link, or its .lock is one: not ours to touch
                left.append({"path": str(f.path), "namespace": f.namespace,
                             "reason": "holds or became a symbolic link; not followed"})
                continue
            raise CacheError(f"cannot clear {f.path} ({e.strerror or e}): fix the permissions of "
                             f"{f.path.parent}, or pass the --cache-dir you meant.") from None
        (removed if outcome else in_use).append(str(f.path))
    return {"removed": removed, "in_use": in_use, "left_alone": left}


def _remove(f: Found) -> bool:
    """Remove one entry; ``False`` when a running process holds its lock (kept)."""
    ns = NAMESPACES.get(f.namespace)
    if ns.entry == "file":
        if not is_real_file(f.path):
            raise OSError(errno.ELOOP, "not a regular file", str(f.path))
        f.path.unlink()
        return True
    if not ns.locked:
        remove_tree(f.path)
        return True
    with open_lock(f.path) as lock:  # no link followed, neither the folder nor .lock
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        remove_tree(f.path)
    return True


def summary(found: list[Found]) -> dict[str, dict[str, int]]:
    """Entries and bytes per namespace.

    Example:
        >>> summary([Found("text", Path("a.npz"), True, bytes=10), Found("text", Path("x"), False)])
        {'text': {'entries': 1, 'bytes': 10, 'left_alone': 1}}
    """
    out: dict[str, dict[str, int]] = {}
    for f in found:
        s = out.setdefault(f.namespace, {"entries": 0, "bytes": 0, "left_alone": 0})
        if f.entry:
            s["entries"] += 1
            s["bytes"] += f.bytes
        else:
            s["left_alone"] += 1
    return out
