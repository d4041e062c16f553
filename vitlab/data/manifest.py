"""``csv:<manifest>``: a CSV/TSV/Parquet table with columns ``path[,label][,split][,group][,id][,mask][,role][,positives]``.

``role`` (query, gallery, both; blank = both) and ``positives`` (ids of a query's relevant gallery
items, separated by ``;``) drive the ``retrieval`` protocol; see :func:`_retrieval_columns`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlab.data.base import DataSource, check_fingerprint_mode, file_content_key, file_stat_key, with_query
from vitlab.data.images import open_rgb
from vitlab.data.splits import normalise_split
from vitlab.errors import DataError

KNOWN_COLUMNS = ("path", "label", "split", "group", "id", "mask", "role", "positives")
ROLES = ("query", "gallery", "both")


def _rows(mask: np.ndarray, limit: int = 5) -> str:
    """File line numbers (header = line 1) of the first rows where ``mask`` holds."""
    rows = (np.flatnonzero(mask) + 2).tolist()
    return ", ".join(map(str, rows[:limit])) + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def read_table(path: Path):
    """Read a manifest with pandas; every column as string."""
    import pandas as pd

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
            return df.astype({c: "string" for c in df.columns})
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise DataError(f"csv:{path}: cannot parse the manifest ({e}).") from e


class ManifestSource(DataSource):
    """Images listed in a table. Paths are relative to the manifest's folder (or absolute).

    ``label`` may be text or integers (classes sorted numerically then); ``split``
    takes train/val/test (and synonyms); ``group`` is a patient/slide/site id.

    The fingerprint covers the table's rows (ids, labels, splits, groups) and, per listed
    file, its path, size, mtime, ctime and inode; ``csv:<file>?fingerprint=content``
    (``fingerprint="content"``) hashes the files' bytes instead of their stats.

    Segmentation: a ``mask`` column (PNG label maps, paths relative to the manifest like
    ``path``) makes it a mask source (``has_masks``; see :mod:`vitlab.data.seg`). Its
    ``classes`` then name the mask values: ``classes=`` a classes file (relative to the
    manifest: ``csv:m.csv?classes=classes.txt``) or, in Python, a list of names; without
    it, every mask is read once and the classes are ``"0" .. str(largest value)``.
    ``ignore_index=`` (default 255) marks unlabelled pixels. A manifest with a ``mask``
    column cannot also have a ``label`` column (both would be ``classes``). Mask files
    are in the fingerprint too.

    Example:
        >>> for name in ("a.png", "b.png", "c.png"):
        ...     Image.new("RGB", (16, 16)).save(name)
        >>> _ = Path("manifest.csv").write_text("path,label,split\\na.png,cat,train\\nb.png,dog,train\\nc.png,cat,test\\n")
        >>> src = ManifestSource("manifest.csv")
        >>> len(src), src.classes, src.labels.tolist()
        (3, ['cat', 'dog'], [0, 1, 0])
    """

    kind = "csv"

    def __init__(self, manifest: str | Path, *, fingerprint: str = "stat",
                 classes: str | Path | Sequence[str] | None = None, ignore_index: int | str | None = None) -> None:
        path = Path(manifest).expanduser()
        self._fp_mode = check_fingerprint_mode(f"csv:{path}", fingerprint)
        if not path.is_file():
            raise DataError(f"csv:{path}: no such manifest file.")
        df = read_table(path)
        cols = [str(c).strip().lower() for c in df.columns]
        df.columns = cols
        if "path" not in cols:
            close = difflib.get_close_matches("path", cols, n=1)
            raise DataError(f"csv:{path}: missing required column 'path' (found: {', '.join(cols) or 'none'})"
                            + (f"; did you mean {close[0]!r}?" if close else "")
                            + ". Columns: path,label[,split][,group].")
        for c in cols:
            if c not in KNOWN_COLUMNS:
                close = difflib.get_close_matches(c, KNOWN_COLUMNS, n=1, cutoff=0.75)
                if close and close[0] not in cols:
                    raise DataError(f"csv:{path}: column {c!r} looks like a misspelt {close[0]!r}; rename it "
                                    f"(known columns: {', '.join(KNOWN_COLUMNS)}).")
        if len(df) == 0:
            raise DataError(f"csv:{path}: the manifest has no rows.")
        for col in ("path", "label", "split", "group", "mask"):
            if col in df and df[col].isna().any():
                raise DataError(f"csv:{path}: blank {col!r} in row(s) at line {_rows(df[col].isna().to_numpy())}. "
                                f"Fill every {col}, or drop those rows.")
        base = path.parent.resolve()
        self.files = [p if p.is_absolute() else base / p for p in map(Path, df["path"].str.strip())]
        missing = np.array([not f.is_file() for f in self.files])
        if missing.any():
            first = self.files[int(np.flatnonzero(missing)[0])]
            raise DataError(f"csv:{path}: {int(missing.sum())} listed file(s) do not exist, at line "
                            f"{_rows(missing)} (first: {first}). Paths are relative to {base}.")
        self.mask_files: list[Path] | None = None
        if "mask" in df:
            if "label" in df:
                raise DataError(f"csv:{path}: has both a 'label' and a 'mask' column; a segmentation manifest names "
                                "its classes by mask value. Drop the 'label' column (or use two manifests).")
            self.mask_files = [p if p.is_absolute() else base / p for p in map(Path, df["mask"].str.strip())]
            gone = np.array([not f.is_file() for f in self.mask_files])
            if gone.any():
                first = self.mask_files[int(np.flatnonzero(gone)[0])]
                raise DataError(f"csv:{path}: {int(gone.sum())} mask file(s) do not exist, at line {_rows(gone)} "
                                f"(first: {first}). Mask paths are relative to {base}.")
            not_png = [f for f in self.mask_files if f.suffix.lower() != ".png"]
            if not_png:
                raise DataError(f"csv:{path}: mask {not_png[0]} is not a PNG; masks must be lossless PNG (a JPEG "
                                "blurs the label values). Re-export it as .png.")
        elif classes is not None or ignore_index is not None:
            raise DataError(f"csv:{path}: classes= and ignore_index= describe segmentation masks, but the manifest "
                            "has no 'mask' column. Add one (mask paths per row), or drop the option.")
        mask_classes = None
        if self.mask_files is not None:
            from vitlab.data.seg import (DEFAULT_IGNORE_INDEX, _check_ignore_vs_classes, parse_ignore_index,
                                         resolve_classes)

            self.ignore_index = parse_ignore_index(DEFAULT_IGNORE_INDEX if ignore_index is None else ignore_index,
                                                   f"csv:{path}")
            mask_classes, self._classes_from = resolve_classes(classes, base, None, self.mask_files,
                                                               self.ignore_index, f"csv:{path}")
            _check_ignore_vs_classes(f"csv:{path}", self.ignore_index, mask_classes)
            self.has_masks = True
        labels, class_names = None, mask_classes or []
        if "label" in df:
            raw = df["label"].str.strip().tolist()
            try:  # integer labels sort numerically ("2" < "10")
                raw = [str(int(v)) for v in raw]
                class_names = [str(c) for c in sorted({int(v) for v in raw})]
            except ValueError:
                class_names = sorted(set(raw))
            index = {c: i for i, c in enumerate(class_names)}
            labels = np.array([index[v] for v in raw])
        splits = None
        if "split" in df:
            splits = [normalise_split(v, f"csv:{path} line {i + 2}") for i, v in enumerate(df["split"])]
        groups = df["group"].str.strip().tolist() if "group" in df else None
        ids = df["id"].str.strip().tolist() if "id" in df else df["path"].str.strip().tolist()
        if len(set(ids)) != len(ids):
            raise DataError(duplicate_id_message(path, ids, "id" in df))
        self.path = path
        uri = with_query(f"csv:{path}", classes=classes if isinstance(classes, (str, Path)) else None,
                         ignore_index=None if ignore_index is None else self.ignore_index,
                         fingerprint=None if fingerprint == "stat" else fingerprint)
        super().__init__(uri, ids, labels, class_names, groups, splits)
        self.roles, self.positives = _retrieval_columns(df, ids, path)

    def load_image(self, i: int) -> Image.Image:
        return open_rgb(self.files[i])

    def mask(self, i: int) -> np.ndarray:
        """``[H, W]`` int64 label map of row ``i`` (its image's header gives the size to check)."""
        if self.mask_files is None:
            return super().mask(i)
        from vitlab.data.seg import load_mask

        return load_mask(self.mask_files[i], len(self.classes), self.ignore_index, image=self.files[i],
                         classes_from=self._classes_from)

    def describe_item(self, i: int) -> str:
        return f"{self.files[i]} (manifest {self.path} line {i + 2})"

    def _content_key(self) -> Any:
        files = self.files if self.mask_files is None else self.files + self.mask_files
        if self._fp_mode == "content":  # bytes only: the table's rows are in the metadata already
            key: Any = file_content_key(files)
        else:
            key = [[str(f), *st] for f, st in zip(files, file_stat_key(files))]
        if self.mask_files is None:  # unchanged for image-only manifests (existing cache keys stay valid)
            return key
        return {"ignore_index": self.ignore_index, "files": key}


def duplicate_id_message(path: Path, ids: list[str], id_column: bool) -> str:
    """Name the first duplicated id (or path) and the manifest lines it is on (header = line 1).

    Example:
        >>> print(duplicate_id_message(Path("m.csv"), ["a", "b", "a"], True))  # doctest: +NORMALIZE_WHITESPACE
        csv:m.csv: ids are not unique: id 'a' appears twice, on lines 2 and 4. Give each row its own id,
        or remove the duplicate row.
        >>> print(duplicate_id_message(Path("m.csv"), ["x.png"] * 3, False))  # doctest: +NORMALIZE_WHITESPACE
        csv:m.csv: ids are not unique: path 'x.png' is listed 3 times, on lines 2, 3 and 4 (without an 'id' column
        the path is the id). Remove the duplicate row, or add an 'id' column with unique values.
    """
    dup_rows = np.flatnonzero(pd_duplicated(ids))
    dup = ids[int(dup_rows[0])]
    lines = [i + 2 for i, v in enumerate(ids) if v == dup]
    where = (f"{'twice' if len(lines) == 2 else f'{len(lines)} times'}, on lines "
             + ", ".join(map(str, lines[:-1])) + f" and {lines[-1]}")
    if id_column:
        return (f"csv:{path}: ids are not unique: id {dup!r} appears {where}. Give each row its own id, or remove "
                "the duplicate row.")
    return (f"csv:{path}: ids are not unique: path {dup!r} is listed {where} (without an 'id' column the path "
            "is the id). Remove the duplicate row, or add an 'id' column with unique values.")


def pd_duplicated(values: list[str]) -> np.ndarray:
    seen: set[str] = set()
    out = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        out[i] = v in seen
        seen.add(v)
    return out


def _retrieval_columns(df: Any, ids: list[str], path: Path) -> tuple[list[str] | None, dict[str, list[str]] | None]:
    """The ``role`` column (query / gallery / both; blank = both) and the ``positives`` column (ids of a
    query's relevant gallery items, separated by ``;``), validated with the line that is wrong.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"role": ["query", "gallery", ""], "positives": ["b", "", ""]})
        >>> _retrieval_columns(df, ["a", "b", "c"], Path("m.csv"))
        (['query', 'gallery', 'both'], {'a': ['b']})
    """
    roles = None
    if "role" in df:
        roles = [str(v).strip().lower() or "both" for v in df["role"].fillna("")]
        bad = [i for i, r in enumerate(roles) if r not in ROLES]
        if bad:
            raise DataError(f"csv:{path}: line {bad[0] + 2}: role {roles[bad[0]]!r} is not one of "
                            f"{', '.join(ROLES)} (blank = both).")
    positives = None
    if "positives" in df:
        known = set(ids)
        positives = {}
        for i, v in enumerate(df["positives"].fillna("")):
            items = [t.strip() for t in str(v).split(";") if t.strip()]
            if not items:
                continue
            missing = [t for t in items if t not in known]
            if missing:
                raise DataError(f"csv:{path}: line {i + 2}: positive {missing[0]!r} is not an id in the manifest; "
                                "list gallery ids separated by ';'.")
            if roles is not None and roles[i] == "gallery":
                raise DataError(f"csv:{path}: line {i + 2}: a gallery-only row lists positives; give it role "
                                "query (or both), or drop its positives.")
            positives[ids[i]] = items
    return roles, positives
