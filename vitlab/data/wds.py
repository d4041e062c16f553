"""``wds:<dir | file.tar | brace pattern>``: WebDataset shards as img2dataset writes them, read in place.

A WebDataset shard is a plain ``.tar`` whose members are grouped by key: ``<key>.jpg``
(or ``.png``, ``.webp``, ...), ``<key>.json``, ``<key>.txt``, ``<key>.cls``. The key is the
member path up to the first dot of its file name (WebDataset's own rule), and is the
sample's id. The tars are never unpacked: one pass over their headers
(:func:`vitlab.data.tar_index.scan_tar`: a ustar header walk, stdlib :mod:`tarfile` for pax
and GNU headers) builds an index of member offsets when the source opens, and each image is
then read with one positioned read from the tar (random access, safe in DataLoader workers). The index of
each shard is remembered under ``<cache>/wds-index/`` keyed by the shard's path and stat, so
re-opening a large set does not re-read its headers.

The ``webdataset`` package is not needed (nor a dependency): its streaming loader has no
random access, and reading an uncompressed tar by offset is a few lines of stdlib.

Labels: ``?label=cls`` reads the ``.cls`` members (integers as text); ``?label=<key>`` reads
that field of each ``.json`` member (e.g. ``?label=class_name``). Without ``label=`` the
``.cls`` members are used when every key has one; when no key has one the source is unlabelled
(and when only some have one, that is an error naming the first key without).

Fingerprint: per tar its name, size, mtime, ctime and inode, plus the index (keys,
members, offsets and sizes) and the labels; ``?fingerprint=content`` hashes the tar bytes.

Example:
    >>> import tarfile
    >>> os.makedirs("shards")
    >>> for s in range(2):  # two tiny img2dataset-style shards: <key>.jpg + <key>.json
    ...     with tarfile.open(f"shards/{s:05d}.tar", "w") as tf:
    ...         for j in range(3):
    ...             key = f"{s:05d}{j:04d}"
    ...             Image.new("RGB", (64, 48)).save(f"{key}.jpg")
    ...             _ = open(f"{key}.json", "w").write(json.dumps({"class_name": "cat" if j else "dog"}))
    ...             tf.add(f"{key}.jpg"); tf.add(f"{key}.json")
    >>> from vitlab.data import load_source
    >>> src = load_source("wds:shards/{00000..00001}.tar?label=class_name")
    >>> len(src), src.ids[:2], src.classes, src.labels.tolist()
    (6, ['000000000', '000000001'], ['cat', 'dog'], [1, 0, 0, 1, 0, 0])
    >>> src.describe_item(0).endswith("shards/00000.tar:000000000.jpg")
    True
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlab._cache import entry_path
from vitlab._io import atomic_write_json, hash_file, stat_key
from vitlab.data.base import DataSource, check_fingerprint_mode, file_stat_key, with_query
from vitlab.data.images import IMAGE_SUFFIXES, ImageDecodeError, open_rgb
from vitlab.data.tar_index import scan_tar
from vitlab.errors import DataError

#: Image members in order of preference when a key has several.
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp") + tuple(sorted(e[1:] for e in IMAGE_SUFFIXES
                                                           if e[1:] not in ("jpg", "jpeg", "png", "webp")))
_KEY_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's base_plus_ext: key = up to the first dot
_BRACE_RE = re.compile(r"\{([^{}]*)\}")
_COMPRESSED = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")
INDEX_VERSION = 2  # of the remembered shard indexes (<cache>/wds-index)
INDEX_FORMAT = f"vitlab-wds-index/{INDEX_VERSION}"


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{a,b}`` lists and zero-padded ``{000..012}`` ranges (the shard patterns img2dataset prints).

    Example:
        >>> expand_braces("s/{00..02}.tar")
        ['s/00.tar', 's/01.tar', 's/02.tar']
        >>> expand_braces("{a,b}-{1..2}.tar")
        ['a-1.tar', 'a-2.tar', 'b-1.tar', 'b-2.tar']
    """
    m = _BRACE_RE.search(pattern)
    if not m:
        return [pattern]
    body, head, tail = m.group(1), pattern[:m.start()], pattern[m.end():]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.groups()
        width = len(lo) if lo.startswith("0") else 0
        step = 1 if int(hi) >= int(lo) else -1
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    else:
        items = body.split(",")
    return [out for item in items for out in expand_braces(head + item + tail)]


def resolve_tars(target: str) -> list[Path]:
    """The shard files named by ``target``: a directory (its ``*.tar``, sorted), a file, a brace pattern or a glob.

    Raises:
        DataError: nothing matches, a named shard is missing, or a shard is compressed.

    Example:
        >>> os.makedirs("shards")
        >>> for s in range(3):
        ...     Path(f"shards/{s:05d}.tar").touch()
        >>> [t.name for t in resolve_tars("shards/{00000..00002}.tar")]
        ['00000.tar', '00001.tar', '00002.tar']
        >>> [t.name for t in resolve_tars("shards")]  # a folder: its .tar files, sorted
        ['00000.tar', '00001.tar', '00002.tar']
    """
    uri = f"wds:{target}"
    p = Path(target).expanduser()
    if p.is_dir():
        tars = sorted(q for q in p.iterdir() if q.suffix == ".tar" and not q.name.startswith("."))
        if not tars:
            others = sorted(q.name for q in p.iterdir() if q.name.endswith(_COMPRESSED))
            raise DataError(f"{uri}: no .tar shards in this directory" + (f" (found {others[0]}: compressed)"
                            if others else "") + ". Point wds: at a folder of img2dataset .tar shards, a .tar "
                            "file or a pattern such as dir/{00000..00009}.tar.")
    else:
        names = [n for part in expand_braces(str(p)) for n in (sorted(glob.glob(part)) if glob.has_magic(part)
                                                                 else [part])]
        missing = [n for n in names if not Path(n).is_file()]
        if not names or missing:
            raise DataError(f"{uri}: shard {missing[0] if missing else str(p)!r} does not exist"
                            + (f" ({len(missing)} of {len(names)} missing)" if len(missing) > 1 else "")
                            + ". Check the path or the {first..last} range of the pattern.")
        tars = [Path(n) for n in names]
    for t in tars:
        if t.name.endswith(_COMPRESSED):
            raise DataError(f"wds:{t}: a compressed tar cannot be read by offset. Decompress it (e.g. gunzip) or "
                            "write uncompressed shards (img2dataset's default).")
    return [t.resolve() for t in tars]


@dataclass(frozen=True)
class _Item:
    """One sample: its tar (index into ``tars``), image member name, data offset and size."""

    tar: int
    member: str
    offset: int
    size: int


class NamedBytes(io.BytesIO):
    """Image bytes that print as where they came from (``<tar>:<member>``, a dataset row), so
    :func:`~vitlab.data.images.open_rgb`'s decode errors name the sample, not a buffer."""

    def __init__(self, data: bytes, where: str) -> None:
        super().__init__(data)
        self.where = where

    def __str__(self) -> str:
        return self.where

    def __format__(self, spec: str) -> str:  # f"{blob}" in open_rgb's messages
        return self.where


def _label_value(raw: Any, where: str, field: str) -> str:
    if raw is None or isinstance(raw, (dict, list)) or raw == "":
        raise DataError(f"{where}: {field} is {raw!r}, not a class. Give every sample a label, or drop ?label= "
                        "to read the shards unlabelled.")
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    return str(raw).strip()


def class_index(values: list[str]) -> tuple[list[str], np.ndarray]:
    """Class names (integers sorted numerically, else text sorted) and each value's index.

    Example:
        >>> class_index(["10", "2", "10"])
        (['2', '10'], array([1, 0, 1]))
    """
    try:
        names = [str(c) for c in sorted({int(v) for v in values})]
        values = [str(int(v)) for v in values]
    except ValueError:
        names = sorted(set(values))
    index = {c: i for i, c in enumerate(names)}
    return names, np.array([index[v] for v in values], dtype=np.int64)


class WdsSource(DataSource):
    """Samples in WebDataset ``.tar`` shards (img2dataset's output), indexed once, read by offset.

    Args:
        target: a directory of ``.tar`` shards, one ``.tar``, a brace pattern
            (``shards/{00000..00099}.tar``) or a glob.
        label: ``"cls"`` (the ``.cls`` members) or a field of the ``.json`` members; default
            ``.cls`` when every key has one, else unlabelled.
        fingerprint: ``stat`` (default) or ``content`` (hash the tar bytes).

    Raises:
        DataError: missing/compressed/corrupt shard, a key without an image member, a key in
            two shards, or a missing label (each message names the tar and the key).

    Example:
        >>> import tarfile
        >>> os.makedirs("shards")
        >>> for s in range(2):  # two tiny img2dataset-style shards: <key>.jpg + <key>.json
        ...     with tarfile.open(f"shards/{s:05d}.tar", "w") as tf:
        ...         for j in range(3):
        ...             key = f"{s:05d}{j:04d}"
        ...             Image.new("RGB", (64, 48)).save(f"{key}.jpg")
        ...             _ = open(f"{key}.json", "w").write(json.dumps({"class_name": "cat" if j else "dog"}))
        ...             tf.add(f"{key}.jpg"); tf.add(f"{key}.json")
        >>> src = WdsSource("shards", label="class_name")
        >>> src[0].image.size
        (64, 48)
    """

    kind = "wds"

    def __init__(self, target: str | Path, *, label: str | None = None, fingerprint: str = "stat") -> None:
        target = str(target)
        self._fp_mode = check_fingerprint_mode(f"wds:{target}", fingerprint)
        self.tars = resolve_tars(target)
        self.items: list[_Item] = []
        self._index: list[list[Any]] = []
        ids, raw_labels, seen = [], [], {}
        want = label
        for ti, tar in enumerate(self.tars):
            for key, members, meta in _cached_scan(tar, want):
                where = f"wds:{tar} key {key!r}"
                if key in seen:
                    raise DataError(f"{where}: the same key is also in {self.tars[seen[key]]}; keys are sample ids and "
                                    "must be unique across shards. Remove one of the copies.")
                seen[key] = ti
                img = next((e for e in IMAGE_EXTS if e in members), None)
                if img is None:
                    raise DataError(f"{where}: has no image member (found {', '.join('.' + e for e in members)}). "
                                    f"Each key needs one of .{', .'.join(IMAGE_EXTS[:4])}; remove the key's members "
                                    "or re-create the shard.")
                off, size = members[img]
                self.items.append(_Item(ti, f"{key}.{img}", off, size))
                self._index.append([ti, key, sorted(members), off, size])
                ids.append(key)
                raw_labels.append(meta)
        if not ids:
            raise DataError(f"wds:{target}: the shards hold no samples. Check that they are img2dataset / WebDataset "
                            "tars (members <key>.jpg, <key>.json...).")
        labels, classes = None, []
        has_cls = [v.get("cls") is not None for v in raw_labels]
        if want is None and all(has_cls):
            want = "cls"
        elif want is None and any(has_cls):  # some labelled, some not: say so rather than drop the labels
            i = has_cls.index(False)
            raise DataError(f"wds:{self.tars[self.items[i].tar]} key {ids[i]!r}: no .cls member, while "
                            f"{sum(has_cls):,} of {len(ids):,} keys have one. Give every key a .cls, pick a .json "
                            "field with ?label=<json key>, or remove the .cls members to read the shards unlabelled.")
        if want is not None:
            values = []
            for it, key, meta in zip(self.items, ids, raw_labels):
                where = f"wds:{self.tars[it.tar]} key {key!r}"
                if want not in meta:
                    src = ".cls member" if want == "cls" else f"field {want!r} in its .json"
                    raise DataError(f"{where}: no {src}. Give every sample one, pick another field with "
                                    "?label=<json key>, or drop ?label= to read the shards unlabelled.")
                values.append(_label_value(meta[want], where, f"label {want!r}"))
            classes, labels = class_index(values)
        self.label_field = want
        uri = with_query(f"wds:{target}", label=label, fingerprint=None if fingerprint == "stat" else fingerprint)
        super().__init__(uri, ids, labels, classes)

    @staticmethod
    def _scan(tar: Path, label: str | None):
        """Yield ``(key, {ext: (offset, size)}, {"cls"|field: value})`` per key, in tar order."""
        where = f"wds:{tar}"
        groups: dict[str, dict[str, tuple[int, int]]] = {}
        metas: dict[str, dict[str, Any]] = {}
        with open(tar, "rb") as f:
            for name, off, size in scan_tar(tar):
                name = name[2:] if name.startswith("./") else name
                if name.rsplit("/", 1)[-1].startswith("."):  # hidden files (macOS "._x.jpg" resource forks)
                    continue
                km = _KEY_RE.match(name)
                if not km:
                    raise DataError(f"{where}: member {name!r} has no extension, so no key; a WebDataset shard "
                                    "holds <key>.<ext> members only. Remove it or re-create the shard.")
                key, ext = km.group(1), km.group(2).lower()
                groups.setdefault(key, {})[ext] = (off, size)
                meta = metas.setdefault(key, {})
                if ext == "cls" or (ext == "json" and label not in (None, "cls")):
                    raw = os.pread(f.fileno(), size, off)
                    try:
                        if ext == "cls":
                            meta["cls"] = raw.decode().strip()
                        else:
                            doc = json.loads(raw)
                            if isinstance(doc, dict) and label in doc:
                                meta[label] = doc[label]  # type: ignore[index]
                    except (UnicodeDecodeError, ValueError) as e:
                        raise DataError(f"{where}: member {name!r} is not valid {ext} ({e}). Fix or re-create "
                                        "the shard.") from None
        for key, members in groups.items():
            yield key, members, metas.get(key, {})

    def read_bytes(self, i: int) -> bytes:
        """The raw image bytes of sample ``i`` (one positioned read from its tar).

        Example:
            >>> import tarfile
            >>> os.makedirs("shards")
            >>> for s in range(2):  # two tiny img2dataset-style shards: <key>.jpg + <key>.json
            ...     with tarfile.open(f"shards/{s:05d}.tar", "w") as tf:
            ...         for j in range(3):
            ...             key = f"{s:05d}{j:04d}"
            ...             Image.new("RGB", (64, 48)).save(f"{key}.jpg")
            ...             _ = open(f"{key}.json", "w").write(json.dumps({"class_name": "cat" if j else "dog"}))
            ...             tf.add(f"{key}.jpg"); tf.add(f"{key}.json")
            >>> src = WdsSource("shards")
            >>> src.read_bytes(0)[:3] == b"\\xff\\xd8\\xff"  # a JPEG member
            True
        """
        it = self.items[i]
        with open(self.tars[it.tar], "rb") as f:
            data = os.pread(f.fileno(), it.size, it.offset)
        if len(data) != it.size:
            raise ImageDecodeError(f"{self.describe_item(i)}: the shard is shorter than its index says (was it "
                                   "truncated or rewritten?); open the source again")
        return data

    def load_image(self, i: int) -> Image.Image:
        return open_rgb(NamedBytes(self.read_bytes(i), self.describe_item(i)))

    def describe_item(self, i: int) -> str:
        it = self.items[i]
        return f"{self.tars[it.tar]}:{it.member}"

    def _content_key(self) -> Any:
        index = hashlib.blake2b(json.dumps(self._index).encode(), digest_size=16).hexdigest()
        names = [t.name for t in self.tars]
        if self._fp_mode == "content":
            return {"tars": names, "bytes": [hash_file(t) for t in self.tars], "index": index}
        return {"tars": [[n, *st] for n, st in zip(names, file_stat_key(self.tars))], "index": index}


def _index_file(tar: Path, label: str | None) -> Path:
    """Where the index of ``tar`` is remembered: ``<cache>/wds-index/<hash of path, stat and label>.json``
    (the ``wds-index`` cache namespace, :mod:`vitlab._cache`).

    The stat (size, mtime, ctime, inode) is in the name, so a shard that is rewritten in any way
    (ctime always changes) is indexed again; the remembered file is never trusted otherwise.
    """
    ident = json.dumps([str(tar), *stat_key(tar), label, INDEX_VERSION])
    return entry_path("wds-index", f"{hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()}.json")


def _cached_scan(tar: Path, label: str | None) -> list[Any]:
    """:meth:`WdsSource._scan` of one shard, remembered in the cache after the first time (a million-sample
    set re-opens in seconds instead of re-reading every header). An unwritable cache only costs the re-scan."""
    path = _index_file(tar, label)
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") == INDEX_FORMAT and doc.get("tar") == str(tar):
            return doc["rows"]  # [[key, {ext: [offset, size]}, meta], ...]
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    rows = list(WdsSource._scan(tar, label))
    try:
        atomic_write_json(path, {"format": INDEX_FORMAT, "tar": str(tar), "label": label, "rows": rows})
    except OSError:
        pass
    return rows


def describe_index(path: Path) -> dict[str, Any]:
    """What ``vitlab cache ls`` shows of a ``wds-index`` entry (raises for a file that is not one)."""
    doc = json.loads(Path(path).read_text())
    if isinstance(doc, list) and all(isinstance(r, list) and len(r) == 3 and isinstance(r[1], dict) for r in doc):
        return {"tar": "?", "samples": len(doc), "status": "format 1, no longer read"}  # INDEX_VERSION 1
    if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
        raise ValueError(f"not a {INDEX_FORMAT} file")
    return {"tar": doc["tar"], "samples": len(doc["rows"])}
