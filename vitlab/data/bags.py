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
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> np.save(d / "s1.npy", np.ones((3, 4), np.float32)); np.save(d / "s2.npy", np.zeros((5, 4), np.float32))
    >>> _ = (d / "m.csv").write_text("bag_id,label,features\\ns1,tumour,s1.npy\\ns2,normal,s2.npy\\n")
    >>> src = open_bags(str(d / "m.csv"))
    >>> type(src).__name__, src.bags, src.bag_labels.tolist(), src.classes, src.load_bag_features("s2").shape
    ('FeatureBagSource', ['s1', 's2'], [1, 0], ['normal', 'tumour'], (5, 4))
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlab.data.base import ArraySource, DataSource, check_fingerprint_mode, file_content_key, file_stat_key, hash_bytes
from vitlab.data.base import with_query
from vitlab.data.splits import normalise_split
from vitlab.errors import DataError

__all__ = ["BagInfo", "BagSource", "FeatureBagSource", "FashionBagsSource", "open_bags", "read_feature_file",
           "make_fashion_bags", "FEATURE_SUFFIXES", "BAG_SAMPLES"]

BAG_COLUMNS = ("bag_id", "label", "patient_id", "split", "fold", "path", "features", "id", "instance_label", "x", "y")
FEATURE_SUFFIXES = (".npy", ".pt", ".pth", ".h5", ".hdf5")
_FOLD_COLUMN = re.compile(r"^fold(_\w+)?$")


def _lines(rows: Sequence[int] | np.ndarray, limit: int = 5) -> str:
    """Manifest line numbers (header = line 1) of 0-based rows.

    Example:
        >>> _lines([0, 1, 2, 3, 4, 5, 6])
        '2, 3, 4, 5, 6 and 2 more'
    """
    lines = [int(r) + 2 for r in rows]
    return ", ".join(map(str, lines[:limit])) + (f" and {len(lines) - limit} more" if len(lines) > limit else "")


def _read(path: Path, uri: str) -> Any:
    import pandas as pd

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
            df = df.astype({c: "string" for c in df.columns})
        else:
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise DataError(f"{uri}: cannot parse the manifest ({e}); write it as CSV, TSV or Parquet.") from e
    df.columns = [str(c).strip().lower() for c in df.columns]
    df = df.astype(object)
    for c in df.columns:  # every cell a stripped str, or None when blank (Parquet nulls included)
        df[c] = [None if v is None or pd.isna(v) or not str(v).strip() else str(v).strip() for v in df[c]]
    return df


class BagInfo:
    """Per-bag metadata shared by the bag sources.

    Attributes:
        bag_ids: the bag of every row (``[n]`` list of str).
        bags: bag ids in order of first appearance (the order of ``Embeddings.bags()``).
        bag_labels: ``[n_bags]`` int64 class index of every bag.
        bag_patients: the patient of every bag (the bag id when there is no ``patient_id`` column).
        bag_split: the split of every bag (train/val/test) or ``None``.
        bag_fold: the ``fold`` column, per bag, or ``None``; ``bag_folds`` holds every fold column.
        instance_labels: per row, or ``None``.
        instance_coords: ``[n, 2]`` float64 ``(x, y)`` per row (image bags with ``x``/``y`` columns), or ``None``.
    """

    bag_ids: list[str]
    bags: list[str]
    bag_labels: np.ndarray
    bag_patients: list[str]
    bag_split: list[str] | None = None
    bag_fold: list[str] | None = None
    bag_folds: dict[str, list[str]]
    instance_labels: np.ndarray | None = None
    instance_coords: np.ndarray | None = None

    def bag_index(self, bag: str | int) -> int:
        """Position of a bag (by id or position) in :attr:`bags`.

        Example:
            >>> b = BagInfo(); b.bags = ["s1", "s2"]; b.bag_index("s2"), b.bag_index(-1)
            (1, 1)
        """
        if isinstance(bag, (int, np.integer)):
            n = len(self.bags)
            if not -n <= bag < n:
                raise DataError(f"bag {bag} is out of range; there are {n} bags (0..{n - 1}).")
            return int(bag) % n
        pos = getattr(self, "_bag_pos", None)
        if pos is None or len(pos) != len(self.bags):
            pos = self._bag_pos = {b: i for i, b in enumerate(self.bags)}
        if bag not in pos:
            close = difflib.get_close_matches(str(bag), self.bags, n=3)
            raise DataError(f"no bag {bag!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                 f"; there are {len(self.bags)} bags (e.g. {self.bags[0]!r})."))
        return pos[bag]

    def bag_rows(self, bag: str | int) -> np.ndarray:
        """Row indices of one bag (by id or position).

        Example:
            >>> b = BagInfo(); b.bags = ["s1", "s2"]; b.bag_ids = ["s1", "s2", "s1"]
            >>> b.bag_rows("s1").tolist()
            [0, 2]
        """
        name = self.bags[self.bag_index(bag)]
        return np.flatnonzero(np.asarray(self.bag_ids, dtype=object) == name)


def _bag_metadata(df: Any, uri: str, *, data_col: str) -> dict[str, Any]:
    """Validate the bag columns of a manifest table and return the per-bag metadata."""
    cols = list(df.columns)
    for need in ("bag_id", "label"):
        if need not in cols:
            close = difflib.get_close_matches(need, cols, n=1)
            raise DataError(f"{uri}: missing required column {need!r} (found: {', '.join(cols) or 'none'})"
                            + (f"; did you mean {close[0]!r}?" if close else "")
                            + ". Columns: bag_id,label,path|features[,patient_id][,split][,fold].")
    for c in cols:
        if c not in BAG_COLUMNS and not _FOLD_COLUMN.match(c):
            close = difflib.get_close_matches(c, BAG_COLUMNS, n=1, cutoff=0.75)
            if close and close[0] not in cols:
                raise DataError(f"{uri}: column {c!r} looks like a misspelt {close[0]!r}; rename it "
                                f"(known columns: {', '.join(BAG_COLUMNS)}, fold_<name>).")
    if len(df) == 0:
        raise DataError(f"{uri}: the manifest has no rows; list one row per instance (bag_id,label,path).")
    if df["bag_id"].isna().any():
        raise DataError(f"{uri}: blank bag_id at line {_lines(np.flatnonzero(df['bag_id'].isna()))}; give every row "
                        "its bag, or drop those rows.")
    bag_ids = df["bag_id"].astype(str).tolist()
    empty = df[data_col].isna().to_numpy()
    if empty.any():
        has = set(np.asarray(bag_ids, dtype=object)[~empty])
        for i in np.flatnonzero(empty):
            if bag_ids[i] not in has:
                raise DataError(f"{uri}: bag {bag_ids[i]!r} has no instances (line {i + 2} has no {data_col}); "
                                f"list its {data_col} or drop the bag.")
        raise DataError(f"{uri}: blank {data_col!r} at line {_lines(np.flatnonzero(empty))}; fill it or drop "
                        "those rows.")
    bags = list(dict.fromkeys(bag_ids))
    first = {b: bag_ids.index(b) for b in bags}

    def per_bag(col: str, what: str, fix: str) -> list[str]:
        values = df[col].tolist()
        seen: dict[str, tuple[Any, int]] = {}
        for i, (b, v) in enumerate(zip(bag_ids, values)):
            v = None if v is None or v != v else str(v)
            if b not in seen:
                seen[b] = (v, i)
            elif seen[b][0] != v:
                v0, i0 = seen[b]
                raise DataError(f"{uri}: bag {b!r} has {what} {v0!r} (line {i0 + 2}) and {v!r} (line {i + 2}); "
                                f"{fix}")
        blank = [b for b in bags if seen[b][0] is None]
        if blank:
            raise DataError(f"{uri}: bag {blank[0]!r} has no {what} (line {first[blank[0]] + 2}); {fix}")
        return [seen[b][0] for b in bags]

    raw = per_bag("label", "label", "a bag takes one label: write the same label on every row of the bag.")
    raw = [_class_label(v, uri, b, first[b]) for b, v in zip(bags, raw)]
    try:  # integer labels sort numerically ("2" < "10")
        raw = [str(int(v)) for v in raw]
        classes = [str(c) for c in sorted({int(v) for v in raw})]
    except ValueError:
        classes = sorted(set(raw))

    index = {c: i for i, c in enumerate(classes)}
    meta: dict[str, Any] = {"bag_ids": bag_ids, "bags": bags, "classes": classes,
                            "bag_labels": np.array([index[v] for v in raw], dtype=np.int64)}
    if "patient_id" in cols:
        patients = per_bag("patient_id", "patient_id", "a bag belongs to one patient: fix the patient_id on every "
                                                       "row of the bag.")
    else:
        patients = list(bags)
    meta["bag_patients"] = patients
    meta["bag_split"] = None
    if "split" in cols:
        splits = per_bag("split", "split", "give every row of a bag the same split.")
        splits = [normalise_split(s, f"{uri} bag {b!r} line {first[b] + 2}") for b, s in zip(bags, splits)]
        _one_group_per_patient(uri, bags, patients, splits, first, "split")
        meta["bag_split"] = splits
    folds = {}
    for c in cols:
        if _FOLD_COLUMN.match(c):
            folds[c] = per_bag(c, f"{c}", f"give every row of a bag the same {c}.")
            _one_group_per_patient(uri, bags, patients, folds[c], first, c)
    meta["bag_folds"] = folds
    meta["bag_fold"] = folds.get("fold")
    return meta


def _class_label(v: str, uri: str, bag: str, row: int) -> str:
    """A bag label as a class: ``"1.0"`` is class ``"1"``; a number that is not whole (``"0.5"``) is refused,
    naming the bag and line (MIL labels are classes, not scores)."""
    try:
        x = float(v)
    except ValueError:
        return v  # a class name (tumour, normal)
    if x != x or x in (float("inf"), float("-inf")) or not x.is_integer():
        raise DataError(f"{uri}: bag {bag!r} (line {row + 2}) has label {v!r}, a number that is not a whole class "
                        "index; MIL labels are classes (0/1, or names such as tumour/normal). Threshold or map the "
                        "scores to classes first.")
    return str(int(x))


def _one_group_per_patient(uri: str, bags: list[str], patients: list[str], groups: list[str],
                           first: dict[str, int], col: str) -> None:
    """A patient's bags share one split / fold (else a patient leaks between training and test)."""
    seen: dict[str, tuple[str, str]] = {}
    for b, p, g in zip(bags, patients, groups):
        if p not in seen:
            seen[p] = (g, b)
        elif seen[p][0] != g:
            g0, b0 = seen[p]
            raise DataError(f"{uri}: patient {p!r} is in {col} {g0!r} (bag {b0!r}, line {first[b0] + 2}) and {col} "
                            f"{g!r} (bag {b!r}, line {first[b] + 2}); put all of a patient's bags in one {col} (else "
                            "the patient leaks between training and test).")


def _resolve_files(df: Any, col: str, base: Path, uri: str) -> list[Path]:
    files = [p if p.is_absolute() else base / p for p in map(Path, df[col].astype(str))]
    missing = np.array([not f.is_file() for f in files])
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"{uri}: {int(missing.sum())} listed file(s) do not exist, at line {_lines(np.flatnonzero(missing))} "
                        f"(first: {files[i]}, bag {df['bag_id'].iloc[i]!r}). Paths are relative to {base}.")
    return files


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


def _open_manifest(manifest: str | Path, table: Any, instance_column: str) -> tuple[Path, str, Any]:
    """``(path, uri, table)`` of a bag manifest: the given table, or the file read (one clear line if missing)."""
    path = Path(manifest).expanduser()
    uri = f"bags:{path}"
    if table is None:
        if not path.is_file():
            raise DataError(f"{uri}: no such manifest file; pass a CSV, TSV or Parquet with "
                            f"bag_id,label,{instance_column}.")
        table = _read(path, uri)
    return path, uri, table


class BagSource(BagInfo, DataSource):
    """Instance images grouped in bags (``bags:<manifest>`` with a ``path`` column).

    A :class:`~vitlab.data.base.DataSource` over the instances: ``labels`` are the bag's label on
    each of its rows, ``groups`` the bag ids, ``split_column`` the bag's split (if any). Per-bag
    metadata: see :class:`BagInfo`. The fingerprint covers the table and the image files' stats
    (``fingerprint="content"``: their bytes).

    Example:
        >>> import tempfile, pathlib
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


def _instance_coords(df: Any, uri: str) -> np.ndarray | None:
    """``[n, 2]`` tile positions from the ``x``/``y`` columns (both or neither), or ``None``."""
    has = [c for c in ("x", "y") if c in df.columns]
    if not has:
        return None
    if len(has) == 1:
        other = "y" if has == ["x"] else "x"
        raise DataError(f"{uri}: column {has[0]!r} without {other!r}; give both tile coordinates (x,y) or neither.")
    import pandas as pd

    out = []
    for c in ("x", "y"):
        v = pd.to_numeric(df[c], errors="coerce")
        bad = np.flatnonzero(v.isna().to_numpy() | ~np.isfinite(v.to_numpy(dtype=float, na_value=np.nan)))
        if bad.size:
            raise DataError(f"{uri}: line {_lines(bad)}: {c} {df[c].iloc[bad[0]]!r} is not a finite number; write the "
                            "tile's position (e.g. its pixel offset on the slide) on every row.")
        out.append(v.to_numpy(dtype=np.float64))
    return np.stack(out, axis=1)


def _instance_labels(df: Any, uri: str) -> np.ndarray:
    col = df["instance_label"]
    if col.isna().any():
        raise DataError(f"{uri}: blank instance_label at line {_lines(np.flatnonzero(col.isna()))}; fill it (an integer "
                        "per instance) or drop the column.")
    try:
        return np.array([int(v) for v in col], dtype=np.int64)
    except ValueError:
        bad = next(i for i, v in enumerate(col) if not str(v).lstrip("-").isdigit())
        raise DataError(f"{uri}: line {bad + 2}: instance_label {col.iloc[bad]!r} is not an integer; write 0/1 (or a "
                        "class index).") from None


def read_feature_file(f: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one feature file: ``(features [n, d] float32, coords [n, 2] or None)``.

    ``.npy``: the array; ``.pt``/``.pth``: a tensor, a list of tensors (concatenated) or a dict
    with ``features`` (and ``coords``); ``.h5``/``.hdf5``: the ``features`` and ``coords``
    datasets (TRIDENT, CLAM). ``[1, n, d]`` is squeezed, a 1-D vector is one instance.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "x.npy"; np.save(f, np.ones((1, 3, 2)))
        >>> x, c = read_feature_file(f); x.shape, x.dtype, c
        ((3, 2), dtype('float32'), None)
    """
    f = Path(f)
    suffix = f.suffix.lower()
    coords = None
    try:
        if suffix == ".npy":
            x = np.load(f, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            import torch

            obj = torch.load(f, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if "features" not in obj:
                    raise DataError(f"feature file {f} is a dict without a 'features' entry (keys: "
                                    f"{', '.join(map(str, obj)) or 'none'}); save {{'features': tensor [n, d]}} or the "
                                    "tensor itself.")
                coords, obj = obj.get("coords"), obj["features"]
            if isinstance(obj, (list, tuple)):
                obj = torch.cat([torch.as_tensor(t).reshape(-1, t.shape[-1]) for t in obj]) if obj else torch.empty(0, 0)
            x = obj.detach().float().numpy() if isinstance(obj, torch.Tensor) else np.asarray(obj)
            if coords is not None:
                coords = np.asarray(coords.numpy() if isinstance(coords, torch.Tensor) else coords)
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(f, "r") as h:
                if "features" not in h:
                    raise DataError(f"feature file {f} has no 'features' dataset (found: {', '.join(h.keys()) or 'none'}); "
                                    "write the instance features as dataset 'features' [n, d].")
                x = h["features"][()]
                coords = h["coords"][()] if "coords" in h else None
        else:
            raise DataError(f"feature file {f}: unsupported type {suffix or '(none)'}; use one of "
                            f"{', '.join(FEATURE_SUFFIXES)}.")
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt file of any of three formats
        raise DataError(f"feature file {f}: cannot read it ({type(e).__name__}: {e}); re-export it.") from e
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise DataError(f"feature file {f} holds an array of shape {tuple(x.shape)}; save features as [n, d] "
                        "(or [1, n, d]).")
    if coords is not None:
        coords = np.asarray(coords)
        if coords.ndim == 3 and coords.shape[0] == 1:
            coords = coords[0]
        if len(coords) != len(x):
            raise DataError(f"feature file {f} has {len(x)} feature rows but {len(coords)} coords; write one coord per "
                            "instance, or drop 'coords'.")
    return x.astype(np.float32, copy=False), coords


class FeatureBagSource(BagInfo, DataSource):
    """Bags of precomputed instance features (``bags:<manifest>`` with a ``features`` column).

    One row per bag (``ids`` = ``bags``, ``labels`` = ``bag_labels``, ``groups`` = patients,
    ``split_column`` = ``bag_split``); there are no images (:meth:`load_image` raises). Feature
    files are read on demand by :meth:`load_bag_features`, which checks that every file has the
    same feature dimension. The fingerprint covers the table and the files' stats
    (``fingerprint="content"``: their bytes).

    Attributes:
        bag_files: per bag, its feature files (several rows of one bag are concatenated).
        dim: the feature dimension, once a file has been read (``None`` before).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); np.save(d / "a.npy", np.ones((2, 3)))
        >>> _ = (d / "m.csv").write_text("bag_id,label,features\\nA,1,a.npy\\nA,1,a.npy\\n")
        >>> src = FeatureBagSource(d / "m.csv"); src.load_bag_features("A").shape, src.dim
        ((4, 3), 3)
    """

    kind = "bags"

    def __init__(self, manifest: str | Path, *, fingerprint: str = "stat", table: Any = None) -> None:
        path, uri, df = _open_manifest(manifest, table, "features")
        self._fp_mode = check_fingerprint_mode(uri, fingerprint)
        if "features" not in df.columns:
            raise DataError(f"{uri}: missing column 'features' (a feature file per bag); use BagSource for a 'path' "
                            "column of instance images.")
        if "path" in df.columns:
            raise DataError(f"{uri}: has both 'path' and 'features' columns; a bag manifest lists instance images "
                            "(path) or feature files (features). Drop one of them.")
        meta = _bag_metadata(df, uri, data_col="features")
        files = _resolve_files(df, "features", path.parent.resolve(), uri)
        bad = [f for f in files if f.suffix.lower() not in FEATURE_SUFFIXES]
        if bad:
            i = files.index(bad[0])
            raise DataError(f"{uri}: line {i + 2}: feature file {bad[0]} is not one of {', '.join(FEATURE_SUFFIXES)}; "
                            "convert it (np.save, torch.save or an .h5 'features' dataset).")
        for k in ("bag_ids", "bags", "bag_labels", "bag_patients", "bag_split", "bag_fold", "bag_folds"):
            setattr(self, k, meta[k])
        self.bag_ids = list(meta["bags"])  # rows are bags
        self.files = files
        self.bag_files: list[list[Path]] = [[] for _ in meta["bags"]]
        pos = {b: i for i, b in enumerate(meta["bags"])}
        for b, f in zip(meta["bag_ids"], files):
            self.bag_files[pos[b]].append(f)
        self.path = path
        self.dim: int | None = None
        self._dim_file: Path | None = None
        self._coords: dict[int, np.ndarray | None] = {}
        super().__init__(with_query(uri, fingerprint=None if fingerprint == "stat" else fingerprint),
                         list(meta["bags"]), meta["bag_labels"], meta["classes"], list(meta["bag_patients"]),
                         meta["bag_split"])

    def load_image(self, i: int) -> Image.Image:
        raise DataError(f"{self.uri}: a feature bag source has no images (bag {self.ids[i]!r}); read its features "
                        "with load_bag_features(bag), or list instance images in a 'path' column.")

    def _read_bag(self, bag: str | int) -> tuple[int, np.ndarray, np.ndarray | None]:
        i = self.bag_index(bag)
        parts, coords = [], []
        for f in self.bag_files[i]:
            x, c = read_feature_file(f)
            if self.dim is None:
                self.dim, self._dim_file = x.shape[1], f
            elif x.shape[1] != self.dim:
                raise DataError(f"{self.uri}: feature file {f} (bag {self.bags[i]!r}) has dimension {x.shape[1]} but "
                                f"{self._dim_file} has {self.dim}; extract every bag with the same backbone.")
            if len(x) == 0:
                raise DataError(f"{self.uri}: bag {self.bags[i]!r} has no instances: feature file {f} holds 0 rows; "
                                "re-extract it or drop the bag.")
            bad = ~np.isfinite(x)
            if bad.any():
                r, c = (int(v[0]) for v in np.nonzero(bad))
                raise DataError(f"{self.uri}: feature file {f} (bag {self.bags[i]!r}) holds {int(bad.sum())} NaN or "
                                f"infinite value(s) (first at row {r}, column {c}: {x[r, c]}); re-extract it or drop "
                                "the bag.")
            parts.append(x)
            coords.append(c)
        feats = parts[0] if len(parts) == 1 else np.concatenate(parts)
        xy = None if any(c is None for c in coords) else (coords[0] if len(coords) == 1 else np.concatenate(coords))
        return i, feats, xy

    def load_bag_features(self, bag: str | int) -> np.ndarray:
        """``[n, d]`` float32 features of one bag (by id or position).

        Raises:
            DataError: a file is unreadable, lacks ``features``, is empty, or its dimension differs.
        """
        i, x, c = self._read_bag(bag)
        self._coords[i] = c
        return x

    def coords(self, bag: str | int) -> np.ndarray | None:
        """``[n, 2]`` instance coordinates of one bag when its files have them, else ``None``."""
        i = self.bag_index(bag)
        if i not in self._coords:
            self.load_bag_features(i)
        return self._coords[i]

    def describe_item(self, i: int) -> str:
        return f"bag {self.ids[i]!r} ({', '.join(map(str, self.bag_files[i]))}; manifest {self.path})"

    def _content_key(self) -> Any:
        key: dict[str, Any] = {"bag_files": [[str(f) for f in fs] for fs in self.bag_files],
                               "folds": self.bag_folds}
        if self._fp_mode == "content":
            key["files"] = file_content_key(self.files)
        else:
            key["files"] = [[str(f), *st] for f, st in zip(self.files, file_stat_key(self.files))]
        return key


# --------------------------------------------------------------------------- sample:fashion-mnist-bags

BAG_SAMPLES = ("fashion-mnist-bags",)
#: Recipe of ``sample:fashion-mnist-bags`` (part of the fingerprint).
BAGS_POSITIVE_CLASS = 8        # Fashion-MNIST "Bag": a bag is positive when it holds at least one
BAGS_COUNT = 200
BAGS_SIZE = (5, 50)            # inclusive
BAGS_PATIENT_BAGS = (1, 3)     # bags per patient, inclusive
BAGS_KEY_ITEMS = 1             # a positive bag holds exactly one item of the positive class (as in MNIST-bags'
                               # hardest setting): mean pooling dilutes it in up to 49 others, attention need not
BAGS_SEED = 0


def make_fashion_bags(labels: np.ndarray, *, n_bags: int = BAGS_COUNT, positive_class: int = BAGS_POSITIVE_CLASS,
                      seed: int = BAGS_SEED) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """MNIST-bags style bags: ``(items per bag, bag labels [n_bags] 0/1, patient per bag)``.

    Exactly half of the bags (rounded down) are positive. Each bag draws a size in
    :data:`BAGS_SIZE`; a positive bag holds :data:`BAGS_KEY_ITEMS` item(s) of
    ``positive_class``, the rest (and all of a negative bag) come from the other classes.
    Items are drawn without replacement within a bag; an item may appear in several bags.
    Consecutive bags are grouped into patients of 1–3 bags.

    Example:
        >>> items, y, patients = make_fashion_bags(np.arange(100) % 10, n_bags=6)
        >>> [bool(((np.arange(100) % 10)[it] == 8).any()) for it in items] == y.astype(bool).tolist()
        True
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    pos_pool, neg_pool = np.flatnonzero(labels == positive_class), np.flatnonzero(labels != positive_class)
    y = np.zeros(n_bags, np.int64)
    y[rng.permutation(n_bags)[: n_bags // 2]] = 1
    lo, hi = BAGS_SIZE
    items = []
    for yi in y:
        size = int(rng.integers(lo, hi + 1))
        k = BAGS_KEY_ITEMS if yi else 0
        chosen = np.concatenate([rng.choice(pos_pool, k, replace=False), rng.choice(neg_pool, size - k, replace=False)])
        items.append(rng.permutation(chosen))
    patients, p = [], 0
    while len(patients) < n_bags:
        patients += [f"patient-{p:03d}"] * int(rng.integers(BAGS_PATIENT_BAGS[0], BAGS_PATIENT_BAGS[1] + 1))
        p += 1
    return items, y, patients[:n_bags]


class FashionBagsSource(BagInfo, ArraySource):
    """``sample:fashion-mnist-bags``: 200 bags of 5–50 Fashion-MNIST test images (about 5,500 instances).

    A bag is positive (class ``"bag"``) when it holds at least one item of Fashion-MNIST
    class 8 (``"Bag"``), else negative (``"no-bag"``); exactly 100 of the 200 bags are
    positive. Instances are the bundled 28 x 28 images (an image can sit in several bags);
    ``instance_labels`` is 1 for a class-8 item, else 0, ``instance_classes`` its
    Fashion-MNIST class, ``items`` its row in ``sample:fashion-mnist``. Patients own 1–3
    consecutive bags. Deterministic (:func:`make_fashion_bags`, seed 0); no split column.

    Example:
        >>> src = FashionBagsSource()
        >>> len(src.bags), src.classes, int(src.bag_labels.sum()), src.groups[0], src.ids[0]
        (200, ['no-bag', 'bag'], 100, 'bag-000', 'bag-000/00')
    """

    kind = "sample"

    def __init__(self, name: str = "fashion-mnist-bags") -> None:
        from vitlab.data.sample import sample_path

        if name not in BAG_SAMPLES:
            from vitlab.errors import UnknownNameError

            raise UnknownNameError("bundled bag sample", name, BAG_SAMPLES)
        path = sample_path("fashion-mnist")
        raw = path.read_bytes()
        with np.load(path) as z:
            images, labels = z["images"], z["labels"].astype(np.int64)
        items, y, patients = make_fashion_bags(labels)
        self.bags = [f"bag-{b:03d}" for b in range(len(items))]
        self.bag_labels = y
        self.bag_patients = patients
        self.bag_split, self.bag_fold, self.bag_folds = None, None, {}
        self.items = np.concatenate(items)
        self.bag_ids = [b for b, it in zip(self.bags, items) for _ in it]
        self.instance_classes = labels[self.items]
        self.instance_labels = (self.instance_classes == BAGS_POSITIVE_CLASS).astype(np.int64)
        ids = [f"{b}/{k:02d}" for b, it in zip(self.bags, items) for k in range(len(it))]
        recipe = {"positive_class": BAGS_POSITIVE_CLASS, "count": BAGS_COUNT, "size": BAGS_SIZE,
                  "patient_bags": BAGS_PATIENT_BAGS, "key_items": BAGS_KEY_ITEMS, "seed": BAGS_SEED}
        row_labels = np.repeat(y, [len(it) for it in items])
        super().__init__(f"sample:{name}", images[self.items], ids, row_labels, ["no-bag", "bag"],
                         {"bytes": hash_bytes(raw), "recipe": recipe}, groups=list(self.bag_ids))
