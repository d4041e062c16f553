"""The registry of cache namespaces, and the rule of what is an entry of one (floor 1).

Every cache vitlab keeps lives under the one cache root (:func:`vitlab._io.cache_root`), in a
namespace folder declared here with its entry shape:

============== ================ ====== =================================================================
namespace      folder           entry  what makes it one of *its* entries
============== ================ ====== =================================================================
embeddings     ``embeddings/``  folder a 24-hex name and ``key.json`` (the store's entry format)
text           ``text/``        file   ``<24 hex>.npz`` holding ``emb`` and ``key`` (zero-shot prompts)
specs          ``specs/``       file   ``<32 hex>.json``: a backbone spec of a ``file:`` checkpoint
wds-index      ``wds-index/``   file   ``<32 hex>.json`` in the vitlab wds-index format
pca            ``pca/``         file   ``<32 hex>.npz``: a PatchPCA fitted by ``vitlab inspect``
tune-resume    ``tune-resume/`` folder a 12-hex run id and ``run.json``: finished method runs of a tune
============== ================ ====== =================================================================

``vitlab cache ls`` lists them and ``vitlab cache clear`` removes only such entries: real
directories or files (never symbolic links) with the namespace's name pattern, marker and a layout
its owner's ``describe`` function accepts. Anything else found there is listed as *left alone*
with the reason, and never touched; no link is followed for deletion or for a lock file.

Each ``describe`` target is named by string (``"module:function"``, imported when used), so this
module imports nothing above :mod:`vitlab._io`.

Example:
    >>> [ns.name for ns in NAMESPACES]
    ['embeddings', 'text', 'specs', 'wds-index', 'pca', 'layouts', 'tune-resume']
    >>> NAMESPACES.get("wds-index").folder
    'wds-index'
"""

from __future__ import annotations

import os
import re
import stat as stat_mod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vitlab._io import cache_root, is_real_dir, is_real_file, is_tmp_name
from vitlab._registry import Registry

__all__ = ["Namespace", "NAMESPACES", "Found", "scan", "namespace_dir", "entry_path", "open_entry"]


@dataclass(frozen=True)
class Namespace:
    """One cache namespace: where its entries live and what makes a name there one of them.

    Attributes:
        name: ``--namespace`` name. folder: its folder under the cache root.
        entry: ``"dir"`` (an entry is a folder) or ``"file"``.
        pattern: a regular expression an entry's name must match in full.
        marker: ``dir`` entries: the file inside that makes the folder an entry (``key.json``).
        describe: ``"module:function"`` taking the entry's path and returning a JSON-ready summary;
            it raises (``OSError``, ``ValueError``, ``KeyError``, ``TypeError``) for anything that is
            not a valid entry, which is then left alone.
        locked: entries hold a ``.lock`` that a running process ``flock``\\ s (clear skips those).
        leftover: files an entry may hold, empty, before its marker exists (a start that was cut
            short); such a folder is an entry too.
        help: one line for ``vitlab cache ls``.
    """

    name: str
    folder: str
    entry: str
    pattern: str
    describe: str
    marker: str | None = None
    locked: bool = False
    leftover: tuple[str, ...] = ()
    help: str = ""

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None


NAMESPACES = Registry("cache namespace", hint="See vitlab cache ls.")


def _register(ns: Namespace) -> None:
    NAMESPACES.register(ns.name, ns, help=ns.help)


_register(Namespace("embeddings", "embeddings", "dir", r"[0-9a-f]{24}", "vitlab.store.entry:describe_entry",
                    marker="key.json", locked=True, leftover=(".lock",),
                    help="embedding sets (vitlab embed and every verb that embeds)"))
_register(Namespace("text", "text", "file", r"[0-9a-f]{24}\.npz", "vitlab.protocols.text_cache:describe_entry",
                    help="text embeddings of zero-shot prompts"))
_register(Namespace("specs", "specs", "file", r"[0-9a-f]{32}\.json", "vitlab.backbones.file:describe_spec",
                    help="architectures of file: checkpoints (skips re-reading them)"))
_register(Namespace("wds-index", "wds-index", "file", r"[0-9a-f]{32}\.json", "vitlab.data.wds:describe_index",
                    help="member indexes of WebDataset shards"))
_register(Namespace("pca", "pca", "file", r"[0-9a-f]{32}\.npz", "vitlab.inspect.pca:describe_fit",
                    help="PCA maps fitted by vitlab inspect"))
_register(Namespace("layouts", "layouts", "file", r"[0-9a-f]{24}\.npz", "vitlab.exploration.cache:describe_layout",
                    help="2-D maps of embeddings drawn by vitlab explore"))
_register(Namespace("tune-resume", "tune-resume", "dir", r"[0-9a-f]{12}", "vitlab._cache:describe_json_marker",
                    marker="run.json", help="finished method runs of an interrupted vitlab tune"))


def namespace_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """The folder of namespace ``name`` under the cache root (``root``, else :func:`~vitlab._io.cache_root`).

    Example:
        >>> namespace_dir("specs", "/c").as_posix()
        '/c/specs'
    """
    return cache_root(root) / NAMESPACES.get(name).folder


def entry_path(name: str, key: str, root: str | os.PathLike | None = None) -> Path:
    """The path of entry ``key`` (a file name or folder name) of namespace ``name``; refuses a key the
    namespace would not recognise as its own (so nothing is written that ``cache clear`` cannot clean).

    Example:
        >>> entry_path("specs", "0" * 32 + ".json", "/c").as_posix()
        '/c/specs/00000000000000000000000000000000.json'
    """
    ns = NAMESPACES.get(name)
    if not ns.matches(key):
        raise ValueError(f"{key!r} is not an entry name of cache namespace {name!r} ({ns.pattern}).")
    return namespace_dir(name, root) / key


def open_entry(name: str, key: str, root: str | os.PathLike | None, marker: dict[str, Any]) -> Path | None:
    """The folder of entry ``key`` of a folder namespace, created with its marker (``marker`` as JSON, with
    ``"format": "vitlab-<name>/1"``) when missing; ``None`` when the cache cannot be written (the caller
    then works without it). Never writes through a symbolic link.

    Example:
        >>> import tempfile
        >>> d = open_entry("tune-resume", "0123456789ab", tempfile.mkdtemp(), {"backbone": "demo:fmnist-vit"})
        >>> sorted(p.name for p in d.iterdir()), describe_json_marker(d)
        (['run.json'], {'backbone': 'demo:fmnist-vit'})
    """
    from vitlab._io import atomic_write_json

    ns = NAMESPACES.get(name)
    path = entry_path(name, key, root)
    try:
        if path.is_symlink() or path.parent.is_symlink():
            return None
        path.mkdir(parents=True, exist_ok=True)
        if not is_real_file(path / str(ns.marker)):
            atomic_write_json(path / str(ns.marker), {"format": f"vitlab-{name}/1", **marker}, indent=2)
    except OSError:
        return None
    return path


def describe_json_marker(path: Path) -> dict[str, Any]:
    """Summary of a folder entry whose marker is JSON with a ``format`` key (``tune-resume``)."""
    import json

    ns = next(e.target for e in NAMESPACES if Path(path).parent.name == e.target.folder and e.target.marker)
    doc = json.loads((Path(path) / ns.marker).read_text())
    if not isinstance(doc, dict) or not str(doc.get("format", "")).startswith("vitlab-"):
        raise ValueError(f"{ns.marker} is not a vitlab marker")
    return {k: v for k, v in doc.items() if k != "format"}


@dataclass
class Found:
    """One thing found in a namespace folder: an entry (``entry=True``, ``info`` from ``describe``)
    or something left alone (``reason`` says why)."""

    namespace: str
    path: Path
    entry: bool
    info: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.path.name, "path": str(self.path), "bytes": self.bytes,
                **({"reason": self.reason} if not self.entry else {}), **self.info}


def _size(path: Path) -> int:
    """Bytes of a file, or of the regular files under a real folder (links not followed)."""
    try:
        if is_real_file(path):
            return os.lstat(path).st_size
        total = 0
        for dirpath, _, files in os.walk(path):  # os.walk does not follow links by default
            for f in files:
                st = os.lstat(os.path.join(dirpath, f))
                total += st.st_size if stat_mod.S_ISREG(st.st_mode) else 0
        return total
    except OSError:
        return 0


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _check(ns: Namespace, path: Path) -> tuple[bool | None, str]:
    """``(True, "")`` for an entry by its shape, ``(None, "")`` for a folder entry whose start was cut short
    (only its empty leftover files), ``(False, reason)`` for anything else. No file is opened."""
    name = path.name
    if path.is_symlink():
        return False, f"a symbolic link (to {_link_target(path)}); links are never followed or removed"
    if is_tmp_name(name):
        return False, "the temporary file of an unfinished write"
    if ns.entry == "dir":
        if not is_real_dir(path):
            return False, f"a file, not a {ns.name} entry folder"
        if not ns.matches(name):
            return False, f"its name is not that of an entry of {ns.folder}/"
        marker = path / (ns.marker or "")
        if marker.is_symlink():
            return False, f"its {ns.marker} is a symbolic link"
        if not is_real_file(marker):
            try:
                inside = os.listdir(path)
            except OSError as e:
                return False, f"unreadable ({e.strerror or e})"
            if inside and set(inside) <= set(ns.leftover) and \
                    all(is_real_file(path / f) and os.lstat(path / f).st_size == 0 for f in inside):
                return None, ""  # a start cut short before the marker: vitlab's own lock file only
            return False, f"no {ns.marker}: not a vitlab {ns.name} entry"
        return True, ""
    if not is_real_file(path):
        return False, f"a folder, not a {ns.name} entry file" if is_real_dir(path) else "not a regular file"
    if not ns.matches(name):
        return False, f"its name is not that of an entry of {ns.folder}/"
    return True, ""


def scan(root: str | os.PathLike | None = None, names: list[str] | None = None) -> list[Found]:
    """Everything in the namespace folders under the cache root: entries and the things left alone.

    A namespace folder that is a symbolic link is reported (left alone) and not read: nothing
    through a link is ever removed. Entries that fail their owner's ``describe`` are left alone.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp()); (root / "embeddings" / "clip_run1").mkdir(parents=True)
        >>> [(f.path.name, f.entry, f.reason) for f in scan(root)]
        [('clip_run1', False, 'its name is not that of an entry of embeddings/')]
    """
    base = cache_root(root)
    out: list[Found] = []
    for ns in (NAMESPACES.get(n) for n in (names or [e.name for e in NAMESPACES])):
        folder = base / ns.folder
        if folder.is_symlink():
            out.append(Found(ns.name, folder, False, reason=f"the {ns.folder}/ folder is a symbolic link (to "
                                                            f"{_link_target(folder)}); it is not followed"))
            continue
        if not folder.exists():
            continue
        if not is_real_dir(folder):
            out.append(Found(ns.name, folder, False, reason=f"a file where the {ns.folder}/ folder belongs"))
            continue
        for child in sorted(folder.iterdir()):
            ok, why = _check(ns, child)
            info: dict[str, Any] = {"status": "started, nothing written"} if ok is None else {}
            if ok:
                try:
                    info = _describer(ns)(child)
                except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                    ok, why = False, f"not a valid {ns.name} entry ({type(e).__name__}: {e})"
            out.append(Found(ns.name, child, ok is not False, info, why, _size(child)))
    return out


def _describer(ns: Namespace) -> Any:
    import importlib

    module, attr = ns.describe.split(":", 1)
    return getattr(importlib.import_module(module), attr)
