"""``hfds:<dir>[?split=&image=&label=&id=]``: a Hugging Face ``datasets`` dataset saved with ``save_to_disk``.

Opens a ``Dataset`` or ``DatasetDict`` folder with :func:`datasets.load_from_disk` (Arrow
files, memory-mapped: nothing is copied). The image column is read with ``decode=False``
and decoded by vitlab, so a bad image names its row and the fix, like every other source.

* ``split``: which split of a ``DatasetDict`` (required when it has several).
* ``image``: the image column; default the one column of feature type ``Image``.
* ``label``: the label column; default ``label`` if present, else the one ``ClassLabel``
  column, else unlabelled. ``ClassLabel`` names become the classes; integer or text
  columns get their values as class names (integers sorted numerically).
* ``id``: a column of unique sample ids; default the row number.

The fingerprint covers the dataset's own ``_fingerprint``, the split and columns used, and
the size, mtime, ctime and inode of its Arrow files (``?fingerprint=content``: their bytes).

Needs the ``datasets`` package (``pip install 'vitlab[hfds]'``).

Example:
    >>> import datasets
    >>> feats = datasets.Features({"image": datasets.Image(),
    ...                            "labels": datasets.ClassLabel(names=["angular_leaf_spot", "bean_rust", "healthy"])})
    >>> ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (32, 32))] * 4, "labels": [0, 1, 2, 1]}, features=feats)
    >>> datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk("beans_saved")  # a tiny stand-in for beans
    >>> from vitlab.data import load_source
    >>> src = load_source("hfds:./beans_saved?split=validation")
    >>> src.classes, len(src)
    (['angular_leaf_spot', 'bean_rust', 'healthy'], 4)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlab._io import hash_file
from vitlab.data.base import DataSource, check_fingerprint_mode, file_stat_key, with_query
from vitlab.data.images import ImageDecodeError, open_rgb
from vitlab.data.wds import NamedBytes, class_index
from vitlab.errors import DataError

INSTALL = "pip install 'vitlab[hfds]'"


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError(f"hfds: sources need the Hugging Face datasets package: {INSTALL}.") from None
    return datasets


def _pick(kind: str, given: str | None, columns: list[str], candidates: list[str], uri: str, flag: str) -> str | None:
    if given is not None:
        if given not in columns:
            raise DataError(f"{uri}: no column {given!r} (columns: {', '.join(columns)}). Pass {flag}=<one of them>.")
        return given
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise DataError(f"{uri}: several {kind} columns ({', '.join(candidates)}); choose one with {flag}=<name>.")
    return None


class HFDiskSource(DataSource):
    """Rows of a ``datasets`` dataset saved on disk (see the module docstring).

    Args:
        root: folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``.
        split, image, label, id: see the module docstring.
        fingerprint: ``stat`` (default) or ``content``.

    Raises:
        DataError: ``datasets`` missing (with the install line), not a saved dataset, unknown
            split or column, no image column, or a row without a label (named).

    Example:
        >>> import datasets
        >>> feats = datasets.Features({"image": datasets.Image(),
        ...                            "labels": datasets.ClassLabel(names=["angular_leaf_spot", "bean_rust", "healthy"])})
        >>> ds = datasets.Dataset.from_dict({"image": [Image.new("RGB", (32, 32))] * 4, "labels": [0, 1, 2, 1]}, features=feats)
        >>> datasets.DatasetDict({"train": ds, "validation": ds}).save_to_disk("beans_saved")  # a tiny stand-in for beans
        >>> src = HFDiskSource("./beans_saved", split="train", label="labels")
        >>> src.labels.tolist()
        [0, 1, 2, 1]
    """

    kind = "hfds"

    def __init__(self, root: str | Path, *, split: str | None = None, image: str | None = None,
                 label: str | None = None, id: str | None = None, fingerprint: str = "stat") -> None:  # noqa: A002
        ds_mod = _datasets()
        path = Path(root).expanduser()
        uri0 = f"hfds:{path}"
        self._fp_mode = check_fingerprint_mode(uri0, fingerprint)
        if not path.is_dir():
            raise DataError(f"{uri0}: no such directory. Point hfds: at a folder written by "
                            "Dataset.save_to_disk / DatasetDict.save_to_disk.")
        try:
            loaded = ds_mod.load_from_disk(str(path))
        except (FileNotFoundError, ValueError, OSError) as e:
            raise DataError(f"{uri0}: not a dataset saved with save_to_disk ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}). For an image folder use folder:{path}.") from None
        if isinstance(loaded, ds_mod.DatasetDict):
            splits = list(loaded)
            if split is None and len(splits) == 1:
                split = splits[0]
            if split not in splits:
                what = "choose one with ?split=" if split is None else f"no split {split!r}; choose"
                raise DataError(f"{uri0}: a DatasetDict with splits {', '.join(splits)}: {what} (e.g. "
                                f"hfds:{path}?split={splits[0]}).")
            ds = loaded[split]
        elif split is not None:
            raise DataError(f"{uri0}: holds one Dataset, not a DatasetDict, so it has no splits; drop ?split={split}.")
        else:
            ds = loaded
        uri = with_query(uri0, split=split, image=image, label=label, id=id,
                         fingerprint=None if fingerprint == "stat" else fingerprint)
        feats, cols = ds.features, list(ds.column_names)
        img_col = _pick("image", image, cols, [c for c in cols if isinstance(feats[c], ds_mod.Image)], uri, "?image")
        if img_col is None:
            raise DataError(f"{uri}: no column of type Image (columns: {', '.join(cols)}). Pass ?image=<column> "
                            "holding image bytes or paths.")
        if label is None and "label" in cols:
            label = "label"
        lab_col = _pick("ClassLabel", label, cols, [c for c in cols if isinstance(feats[c], ds_mod.ClassLabel)],
                        uri, "?label")
        if len(ds) == 0:
            raise DataError(f"{uri}: the dataset has no rows.")
        labels, classes = None, []
        if lab_col is not None:
            values = ds[lab_col]
            missing = [i for i, v in enumerate(values) if v is None or (isinstance(feats[lab_col], ds_mod.ClassLabel)
                                                                         and v < 0)]
            if missing:
                raise DataError(f"{uri}: row {missing[0]} has no {lab_col!r} ({len(missing)} row(s) in all). Label "
                                "every row, filter them out before save_to_disk, or pass ?label=<another column>.")
            if isinstance(feats[lab_col], ds_mod.ClassLabel):
                classes, labels = list(feats[lab_col].names), np.asarray(values, dtype=np.int64)
            else:
                classes, labels = class_index([str(v).strip() for v in values])
        if id is not None:
            if id not in cols:
                raise DataError(f"{uri}: no column {id!r} for ids (columns: {', '.join(cols)}).")
            ids = [str(v) for v in ds[id]]
            if len(set(ids)) != len(ids):
                seen: set[str] = set()
                dup = next(v for v in ids if v in seen or seen.add(v))  # type: ignore[func-returns-value]
                raise DataError(f"{uri}: ids in column {id!r} are not unique ({dup!r} repeats); pick a unique column "
                                "or drop ?id= to use row numbers.")
        else:
            ids = [str(i) for i in range(len(ds))]
        self.path, self.split, self.image_column, self.label_column = path.resolve(), split, img_col, lab_col
        self._rows = ds.select_columns([img_col]).cast_column(img_col, ds_mod.Image(decode=False))
        self._files = [Path(f["filename"]) for f in ds.cache_files]
        self._ds_fingerprint = getattr(ds, "_fingerprint", None)
        super().__init__(uri, ids, labels, classes)

    def load_image(self, i: int) -> Image.Image:
        cell = self._rows[i][self.image_column]
        where = self.describe_item(i)
        if cell is None:
            raise ImageDecodeError(f"{where}: the image cell is empty; drop the row or fill it")
        if cell.get("bytes"):
            return open_rgb(NamedBytes(cell["bytes"], where))
        if cell.get("path"):
            return open_rgb(cell["path"])
        raise ImageDecodeError(f"{where}: the image cell has neither bytes nor a path; drop the row or fill it")

    def describe_item(self, i: int) -> str:
        return f"{self.uri} row {i} (id {self.ids[i]})"

    def _content_key(self) -> Any:
        files = [hash_file(f) for f in self._files] if self._fp_mode == "content" else \
            [[f.name, *st] for f, st in zip(self._files, file_stat_key(self._files))]
        return {"fingerprint": self._ds_fingerprint, "split": self.split, "image": self.image_column,
                "label": self.label_column, "files": files}
