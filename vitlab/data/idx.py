"""``idx:<dir>``: MNIST / Fashion-MNIST IDX files (gzipped or not)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitlab.data.base import ArraySource, hash_bytes, with_query
from vitlab.data.idx_format import read_idx
from vitlab.errors import DataError

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
_PREFIXES = {"train": "train", "test": "t10k"}


def _find(root: Path, prefix: str, kind: str) -> Path | None:
    for name in (f"{prefix}-{kind}-ubyte", f"{prefix}-{kind}.idx3-ubyte", f"{prefix}-{kind}.idx1-ubyte"):
        for suffix in ("", ".gz"):
            for cand in root.glob(f"{name}{suffix}"):
                return cand
    return None


class IdxSource(ArraySource):
    """The train (``train-*``) and test (``t10k-*``) IDX pairs in a folder; the split column says which.

    Class names are Fashion-MNIST's when the folder name contains "fashion",
    else the digits ``0``-``9`` (override with ``classes=``).

    Example:
        >>> import os, struct
        >>> os.makedirs("fashion-mnist")
        >>> with open("fashion-mnist/t10k-images-idx3-ubyte", "wb") as f:  # 5 blank images
        ...     _ = f.write(struct.pack(">IIII", 0x0803, 5, 28, 28) + bytes(5 * 28 * 28))
        >>> with open("fashion-mnist/t10k-labels-idx1-ubyte", "wb") as f:  # and their labels
        ...     _ = f.write(struct.pack(">II", 0x0801, 5) + bytes([9, 2, 1, 1, 6]))
        >>> src = IdxSource("fashion-mnist", split="test")
        >>> len(src), [src.classes[y] for y in src.labels[:2]]
        (5, ['Ankle boot', 'Pullover'])
    """

    kind = "idx"

    def __init__(self, root: str | Path, *, split: str | None = None, classes: list[str] | None = None,
                 limit: int | None = None) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"idx:{root}: no such directory. Expected a folder holding train-images-idx3-ubyte[.gz] etc.")
        wanted = [split] if split else list(_PREFIXES)
        for s in wanted:
            if s not in _PREFIXES:
                raise DataError(f"idx:{root}: unknown split {s!r}; use train or test.")
        images, labels, splits, ids, blobs = [], [], [], [], []
        for s in wanted:
            img_f = _find(root, _PREFIXES[s], "images-idx3")
            lab_f = _find(root, _PREFIXES[s], "labels-idx1")
            if img_f is None and lab_f is None:
                continue
            if img_f is None or lab_f is None:
                raise DataError(f"idx:{root}: found {(img_f or lab_f).name} but not its "
                                f"{'images' if img_f is None else 'labels'} partner for the {s} split.")
            x, y = read_idx(img_f), read_idx(lab_f)
            if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
                raise DataError(f"idx:{root}: {img_f.name} has shape {x.shape} and {lab_f.name} {y.shape}; "
                                "expected [n, H, W] images and [n] labels of the same n.")
            if limit:
                x, y = x[:limit], y[:limit]
            images.append(x), labels.append(y.astype(np.int64))
            splits += [s] * len(x)
            ids += [f"{_PREFIXES[s]}-{i:05d}" for i in range(len(x))]
            blobs += [img_f.read_bytes(), lab_f.read_bytes()]
        if not images:
            raise DataError(f"idx:{root}: no IDX files found. Expected train-images-idx3-ubyte[.gz] and "
                            "train-labels-idx1-ubyte[.gz] (and/or t10k-*).")
        y_all = np.concatenate(labels)
        n_classes = int(y_all.max()) + 1
        if classes is None:
            classes = FASHION_CLASSES if "fashion" in str(root).lower() and n_classes <= 10 else [str(i) for i in range(n_classes)]
        super().__init__(with_query(f"idx:{root}", split=split, limit=limit or None), np.concatenate(images), ids, y_all,
                         list(classes), {"bytes": hash_bytes(*blobs), "limit": limit}, split_column=splits)
