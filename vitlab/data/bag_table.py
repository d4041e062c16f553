"""The bag manifest as a table: its columns, how it is read, and what every bag source knows about its bags
(:class:`BagInfo`: ids, labels, patients, splits, folds), checked row by row. The sources are in
:mod:`vitlab.data.bags` (instance images) and :mod:`vitlab.data.bag_features` (feature files)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.data.splits import normalise_split
from vitlab.errors import DataError

__all__ = ["BagInfo", "BAG_COLUMNS", "FEATURE_SUFFIXES"]

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
