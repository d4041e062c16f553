"""``bags:<manifest>``: multiple-instance data, one row per instance and one label per bag.

A bag manifest (CSV, TSV or Parquet) has the columns

* ``bag_id`` (required): the bag (a slide, a patient study) the row belongs to;
* ``label`` (required): the bag's label, the same on every row of the bag;
* ``path`` *or* ``features`` (one of them, required):

  - ``path``: an instance image, relative to the manifest (or absolute). The source is a
    :class:`BagSource`: a :class:`~vitlab.data.base.DataSource` over the instances whose
    ``groups`` are the bag ids, so a backbone embeds every instance once through the store and
    ``Embeddings.bags()`` groups them back;
  - ``features``: a precomputed feature file of the bag (``.npy``, ``.pt`` or ``.h5`` with a
    ``features`` dataset, ``[n, d]`` or ``[1, n, d]``; an ``.h5`` ``coords`` dataset or a ``.pt``
    dict's ``coords`` is kept). The source is a :class:`FeatureBagSource`: one row per bag, no
    images; :meth:`FeatureBagSource.load_bag_features` reads ``[n, d]`` float32 (several rows of one
    bag: their files are concatenated in row order);

* optional ``patient_id`` (several bags per patient; default: the bag is its own patient),
  ``split`` (train/val/test, per bag), ``fold`` (and ``fold_<name>`` columns: cross-validation
  folds, per bag; a patient may not sit in two folds of one fold column), ``id`` (instance ids;
  default: the path), ``instance_label`` (per instance, e.g. to check attention) and ``x``, ``y``
  (per instance, the tile's position on the slide: the report draws attention heat maps there).

Every problem is one :class:`~vitlab.errors.DataError` line naming the bag, patient, file or
manifest line (header = line 1) and the fix.

Example:
    >>> import tempfile, pathlib, numpy as np
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> np.save(d / "s1.npy", np.ones((3, 4), np.float32)); np.save(d / "s2.npy", np.zeros((5, 4), np.float32))
    >>> _ = (d / "m.csv").write_text("bag_id,label,features\\ns1,tumour,s1.npy\\ns2,normal,s2.npy\\n")
    >>> src = open_bags(str(d / "m.csv"))
    >>> type(src).__name__, src.bags, src.bag_labels.tolist(), src.classes, src.load_bag_features("s2").shape
    ('FeatureBagSource', ['s1', 's2'], [1, 0], ['normal', 'tumour'], (5, 4))
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from PIL import Image

from vitlab.data.base import DataSource, check_fingerprint_mode, file_content_key, file_stat_key
from vitlab.data.base import with_query
from vitlab.errors import DataError
from vitlab.data.bag_features import FeatureBagSource, read_feature_file
from vitlab.data.bag_table import (FEATURE_SUFFIXES, BagInfo, _bag_metadata,  # noqa: F401
                                    _instance_coords, _instance_labels,
                                    _open_manifest, _read, _resolve_files)

__all__ = ["BagInfo", "BagSource", "FeatureBagSource", "open_bags", "read_feature_file", "FEATURE_SUFFIXES"]


def open_bags(manifest: str | Path, **options: Any) -> BagSource | FeatureBagSource:
    """``bags:<manifest>``: a :class:`BagSource` (``path`` column) or :class:`FeatureBagSource` (``features``).

    Example:
        >>> open_bags("nope.csv")
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: bags:nope.csv: no such manifest file; pass a CSV, TSV or Parquet with bag_id,label,path|features.
    """
    path = Path(manifest).expanduser()
    if not path.is_file():
        raise DataError(f"bags:{path}: no such manifest file; pass a CSV, TSV or Parquet with bag_id,label,path|features.")
    df = _read(path, f"bags:{path}")
    if "features" in df.columns:
        return FeatureBagSource(path, table=df, **options)
    return BagSource(path, table=df, **options)


class BagSource(BagInfo, DataSource):
    """Instance images grouped in bags (``bags:<manifest>`` with a ``path`` column).

    A :class:`~vitlab.data.base.DataSource` over the instances: ``labels`` are the bag's label on
    each of its rows, ``groups`` the bag ids, ``split_column`` the bag's split (if any). Per-bag
    metadata: see :class:`BagInfo`. The fingerprint covers the table and the image files' stats
    (``fingerprint="content"``: their bytes).

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for n in "abc": Image.new("RGB", (8, 8)).save(d / f"{n}.png")
        >>> _ = (d / "m.csv").write_text("bag_id,label,path\\nb1,1,a.png\\nb1,1,b.png\\nb2,0,c.png\\n")
        >>> src = BagSource(d / "m.csv")
        >>> len(src), src.groups, src.bags, src.bag_labels.tolist(), src.labels.tolist()
        (3, ['b1', 'b1', 'b2'], ['b1', 'b2'], [1, 0], [1, 1, 0])
    """

    kind = "bags"

    def __init__(self, manifest: str | Path, *, fingerprint: str = "stat", table: Any = None) -> None:
        path, uri, df = _open_manifest(manifest, table, "path")
        self._fp_mode = check_fingerprint_mode(uri, fingerprint)
        if "path" not in df.columns:
            close = difflib.get_close_matches("path", list(df.columns), n=1)
            raise DataError(f"{uri}: missing column 'path' (instance images) or 'features' (feature files per bag)"
                            + (f"; did you mean {close[0]!r}?" if close else "") + ".")
        meta = _bag_metadata(df, uri, data_col="path")
        base = path.parent.resolve()
        self.files = _resolve_files(df, "path", base, uri)
        ids = df["id"].astype(str).tolist() if "id" in df.columns and not df["id"].isna().any() else \
            df["path"].astype(str).tolist()
        if len(set(ids)) != len(ids):
            seen: dict[str, int] = {}
            for i, v in enumerate(ids):
                if v in seen:
                    raise DataError(f"{uri}: instance {v!r} is listed twice, on lines {seen[v] + 2} and {i + 2}; give "
                                    "each row its own 'id' column value, or remove the duplicate row.")
                seen[v] = i
        self._set_meta(meta)
        if "instance_label" in df.columns:
            self.instance_labels = _instance_labels(df, uri)
        self.instance_coords = _instance_coords(df, uri)
        self.path = path
        labels = meta["bag_labels"][[self.bag_index(b) for b in meta["bag_ids"]]]
        split = None if self.bag_split is None else [self.bag_split[self.bag_index(b)] for b in meta["bag_ids"]]
        super().__init__(with_query(uri, fingerprint=None if fingerprint == "stat" else fingerprint),
                         ids, labels, meta["classes"], list(meta["bag_ids"]), split)

    def _set_meta(self, meta: dict[str, Any]) -> None:
        for k in ("bag_ids", "bags", "bag_labels", "bag_patients", "bag_split", "bag_fold", "bag_folds"):
            setattr(self, k, meta[k])

    def load_image(self, i: int) -> Image.Image:
        from vitlab.data.images import open_rgb

        return open_rgb(self.files[i])

    def describe_item(self, i: int) -> str:
        return f"{self.files[i]} (bag {self.bag_ids[i]!r}, manifest {self.path} line {i + 2})"

    def _content_key(self) -> Any:
        key = {"bags": self.bags, "bag_labels": self.bag_labels.tolist(), "patients": self.bag_patients,
               "folds": self.bag_folds,
               "instance_labels": None if self.instance_labels is None else self.instance_labels.tolist(),
               "coords": None if self.instance_coords is None else self.instance_coords.tolist()}
        if self._fp_mode == "content":
            key["files"] = file_content_key(self.files)
        else:
            key["files"] = [[str(f), *st] for f, st in zip(self.files, file_stat_key(self.files))]
        return key
