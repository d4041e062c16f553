"""The ``DataSource`` contract: indexed samples with labels, ids, groups and a fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image

from vitlab._io import hash_file, stat_key
from vitlab.data.splits import make_splits


@dataclass(frozen=True, eq=False)
class Sample:
    """One item: an RGB image, its label index (or ``None``), a stable id, a group, a split and,
    for segmentation sources, a mask.

    ``mask`` is ``None`` unless the source has masks (``source.has_masks``); then it is an
    ``[H, W]`` int64 label map of the image's size (values: class indices or ``source.ignore_index``).
    Compared by identity (``eq=False``): images and masks have no cheap equality.
    """

    image: Image.Image
    label: int | None
    id: str
    group: str | None = None
    split: str | None = None
    mask: np.ndarray | None = None


class DataSource(ABC):
    """Indexed image data with metadata. Images load lazily; metadata is held in memory.

    Subclasses set ``ids``, ``labels`` (``[n] int64`` or ``None``), ``classes``,
    ``groups`` and ``split_column`` in ``__init__`` and implement :meth:`load_image`
    and :meth:`_content_key`.

    Example:
        >>> import vitlab
        >>> src = vitlab.load_source("sample:fashion-mnist")
        >>> len(src), src.classes[:2]
        (2000, ['T-shirt/top', 'Trouser'])
    """

    kind: str = "?"
    #: Segmentation sources (``seg:``, ``csv:`` with a ``mask`` column, ``sample:fashion-mnist-mosaic``)
    #: set ``has_masks = True`` and ``ignore_index`` and implement :meth:`mask`; ``classes`` then
    #: names the mask values (index = label value).
    has_masks: bool = False
    ignore_index: int | None = None
    #: Retrieval sources (``csv:`` with ``role`` / ``positives`` columns): each row's role (``query``,
    #: ``gallery`` or ``both``) and, per query id, the ids of its relevant gallery items.
    roles: list[str] | None = None
    positives: dict[str, list[str]] | None = None

    def __init__(self, uri: str, ids: list[str], labels: np.ndarray | None, classes: list[str],
                 groups: list[str] | None = None, split_column: list[str] | None = None) -> None:
        self.uri = uri
        self.ids = ids
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.classes = classes
        self.groups = groups
        self.split_column = split_column

    def __len__(self) -> int:
        return len(self.ids)

    @abstractmethod
    def load_image(self, i: int) -> Image.Image:
        """Decode sample ``i`` as RGB; raise ``ImageDecodeError`` naming the file on failure."""

    def describe_item(self, i: int) -> str:
        """Where sample ``i`` comes from (a path, a row), for error messages."""
        return self.ids[i]

    def mask(self, i: int) -> np.ndarray:
        """The ``[H, W]`` int64 label map of sample ``i``, loaded without decoding the image.

        Raises:
            DataError: the source has no masks, or the mask is unusable (the message names the file).
        """
        from vitlab.errors import DataError

        raise DataError(f"{self.uri}: has no segmentation masks. Use seg:<dir>, a csv: manifest with a 'mask' "
                        "column, or sample:fashion-mnist-mosaic.")

    def __getitem__(self, i: int) -> Sample:
        label = None if self.labels is None else int(self.labels[i])
        return Sample(self.load_image(i), label, self.ids[i],
                      None if self.groups is None else self.groups[i],
                      None if self.split_column is None else self.split_column[i],
                      self.mask(i) if self.has_masks else None)

    @abstractmethod
    def _content_key(self) -> Any:
        """JSON-able object that changes whenever the content changes (file stats or bytes hashes)."""

    @cached_property
    def fingerprint(self) -> str:
        """Hash of the content and metadata (ids, labels, classes, groups, splits)."""
        h = hashlib.blake2b(digest_size=16)
        meta = {"kind": self.kind, "ids": self.ids, "classes": self.classes, "groups": self.groups,
                "split": self.split_column, "content": self._content_key()}
        if self.roles is not None or self.positives is not None:  # only when present: older keys stay valid
            meta.update(roles=self.roles, positives=self.positives)
        h.update(json.dumps(meta, sort_keys=True, default=str).encode())
        if self.labels is not None:
            h.update(self.labels.tobytes())
        return h.hexdigest()

    def splits(self, *, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.0) -> np.ndarray:
        """``[n]`` split names: the ``split`` column when present, else seeded/stratified/group-aware."""
        if self.split_column is not None:
            return np.asarray(self.split_column, dtype=str)
        return make_splits(self.labels, self.groups, seed=seed, test_fraction=test_fraction,
                           val_fraction=val_fraction, n=len(self))

    def describe(self) -> dict[str, Any]:
        """Summary for run records and ``vitlab embed`` output."""
        d: dict[str, Any] = {"kind": self.kind, "uri": self.uri, "n": len(self), "fingerprint": self.fingerprint,
                             "num_classes": len(self.classes) if self.labels is not None else 0,
                             "has_groups": self.groups is not None, "has_split_column": self.split_column is not None}
        if self.has_masks:
            d.update(has_masks=True, mask_classes=len(self.classes), ignore_index=self.ignore_index)
        if self.labels is not None:
            d["class_counts"] = {c: int(n) for c, n in zip(self.classes, np.bincount(self.labels, minlength=len(self.classes)))}
        return d

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r}, n={len(self)}, classes={len(self.classes)})"


class ArraySource(DataSource):
    """Images held as a ``[n, H, W]`` or ``[n, H, W, 3]`` uint8 array (IDX files, the bundled sample)."""

    def __init__(self, uri: str, images: np.ndarray, ids: list[str], labels: np.ndarray | None,
                 classes: list[str], content_key: Any, **kw: Any) -> None:
        super().__init__(uri, ids, labels, classes, **kw)
        self.images = images
        self._key = content_key

    def load_image(self, i: int) -> Image.Image:
        a = self.images[i]
        return Image.fromarray(a, "L" if a.ndim == 2 else "RGB").convert("RGB")

    def _content_key(self) -> Any:
        return self._key


FINGERPRINTS = ("stat", "content")


def with_query(uri: str, **options: Any) -> str:
    """``uri`` plus ``?key=value&...`` for every option that is not ``None`` (order kept).

    A source's ``uri`` must name everything that selects its rows, so two different
    selections of one folder never look alike (``vitlab cache ls``).

    Example:
        >>> with_query("idx:/data/fmnist", split="test", limit=4500)
        'idx:/data/fmnist?split=test&limit=4500'
        >>> with_query("folder:./imgs", fingerprint=None)
        'folder:./imgs'
    """
    query = "&".join(f"{k}={v}" for k, v in options.items() if v is not None)
    return f"{uri}?{query}" if query else uri


def check_fingerprint_mode(uri: str, mode: str) -> str:
    """Validate a ``fingerprint=`` option (``stat`` or ``content``).

    Example:
        >>> check_fingerprint_mode("folder:x", "bytes")
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: folder:x: fingerprint must be 'stat' or 'content', got 'bytes'. Use ?fingerprint=content to hash file bytes.
    """
    if mode not in FINGERPRINTS:
        from vitlab.errors import DataError

        raise DataError(f"{uri}: fingerprint must be 'stat' or 'content', got {mode!r}. "
                        "Use ?fingerprint=content to hash file bytes.")
    return mode


def file_stat_key(paths: list[Any]) -> list[list[int]]:
    """Per file: size, mtime_ns, ctime_ns and inode (the default ``stat`` fingerprint), by
    :func:`vitlab._io.stat_key`, which says why ctime and inode make it hard to fool.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "a.png"; _ = f.write_bytes(b"x")
        >>> len(file_stat_key([f])[0])
        4
    """
    return [stat_key(p) for p in paths]


def file_content_key(paths: list[Any]) -> list[str]:
    """Per file: a blake2b of its bytes (the ``content`` fingerprint: slower, survives copies and touches);
    :func:`vitlab._io.hash_file`, read in 4 MiB blocks."""
    return [hash_file(p) if os.path.exists(p) else f"missing:{p}" for p in paths]  # a broken link: read → bad item


def hash_bytes(*blobs: bytes) -> str:
    """blake2b of byte strings (content fingerprints of small files)."""
    h = hashlib.blake2b(digest_size=16)
    for b in blobs:
        h.update(b)
    return h.hexdigest()
