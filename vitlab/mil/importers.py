"""Import slide features written by TRIDENT, CLAM and eva as a :class:`~vitlab.mil.data.BagTable`.

* **TRIDENT / CLAM** (:func:`from_trident`, :func:`from_clam`): one ``.h5`` per slide with the
  datasets ``features`` (``[n, d]``, sometimes ``[1, n, d]``) and ``coords`` (``[n, 2]``); the bag
  id is the file stem. A labels CSV in CLAM's layout gives ``slide_id`` (the stem; a slide file
  extension such as ``.svs`` is dropped), ``label`` and optionally ``case_id`` (the patient),
  ``split`` and ``fold``. CLAM's ``.pt`` copies (``pt_files/``) work too.
* **eva** (:func:`from_eva`): kaiko-ai/eva's embeddings manifest, a CSV with ``path`` (or
  ``embeddings``) to ``.pt`` embeddings relative to the manifest, ``target``, ``split`` and the slide
  in ``wsi_id`` / ``slide_id`` (several rows of a slide are concatenated; without it, the file
  stem); ``patient_id`` / ``case_id`` when present.

The table's :meth:`~vitlab.mil.data.BagTable.write_manifest` writes a ``bags:`` manifest.

Example:
    >>> import tempfile, h5py
    >>> d = Path(tempfile.mkdtemp())
    >>> with h5py.File(d / "s1.h5", "w") as h:
    ...     _ = h.create_dataset("features", data=np.ones((1, 4, 8), np.float32))
    ...     _ = h.create_dataset("coords", data=np.zeros((1, 4, 2), np.int64))
    >>> _ = (d / "labels.csv").write_text("case_id,slide_id,label\\np1,s1.svs,tumour\\n")
    >>> t = from_clam(d, d / "labels.csv")
    >>> t.bag_id, t.patient_id, t.label
    (['s1'], ['p1'], ['tumour'])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.errors import DataError
from vitlab.mil.data import BagTable

__all__ = ["from_trident", "from_clam", "from_eva"]

_SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".svslide", ".bif", ".czi",
                   ".dcm", ".h5", ".pt")


def _read_csv(path: Path, what: str) -> Any:
    import pandas as pd

    if not path.is_file():
        raise DataError(f"{what} {path}: no such file; pass the CSV path.")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise DataError(f"{what} {path}: cannot parse it as CSV ({e}).") from e
    df.columns = [str(c).strip().lower() for c in df.columns]
    return df


def _slide_files(dir_or_files: str | Path | Sequence[str | Path], suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Stem → file for a folder of feature files (also ``h5_files/``) or an explicit list."""
    if isinstance(dir_or_files, (str, Path)):
        d = Path(dir_or_files).expanduser()
        if not d.exists():
            raise DataError(f"{d}: no such folder of slide feature files; pass the folder TRIDENT/CLAM wrote "
                            "(features_<encoder>/ or h5_files/) or a list of files.")
        if d.is_file():
            files = [d]
        else:
            files = sorted(f for f in d.iterdir() if f.suffix.lower() in suffixes)
            if not files and (d / "h5_files").is_dir():
                files = sorted(f for f in (d / "h5_files").iterdir() if f.suffix.lower() in suffixes)
    else:
        files = [Path(f).expanduser() for f in dir_or_files]
        gone = [f for f in files if not f.is_file()]
        if gone:
            raise DataError(f"{gone[0]}: no such feature file ({len(gone)} of {len(files)} missing); fix the list.")
    if not files:
        raise DataError(f"{dir_or_files}: no {'/'.join(suffixes)} feature files found; pass the folder with one file "
                        "per slide.")
    out: dict[str, Path] = {}
    for f in files:
        if f.stem in out:
            raise DataError(f"slide {f.stem!r} has two feature files, {out[f.stem]} and {f}; keep one.")
        out[f.stem] = f
    return out


def _slide_key(slide: str, files: dict[str, Path]) -> str | None:
    if slide in files:
        return slide
    p = Path(slide)
    if p.suffix.lower() in _SLIDE_SUFFIXES and p.stem in files:
        return p.stem
    return None


def _from_slide_files(dir_or_files: Any, labels_csv: str | Path, *, tool: str, on_missing: str) -> BagTable:
    if on_missing not in ("error", "skip"):
        raise DataError(f"on_missing must be 'error' or 'skip', got {on_missing!r}.")
    files = _slide_files(dir_or_files, (".h5", ".hdf5", ".pt"))
    labels_csv = Path(labels_csv).expanduser()
    df = _read_csv(labels_csv, "labels CSV")
    for need in ("slide_id", "label"):
        if need not in df.columns:
            raise DataError(f"labels CSV {labels_csv}: missing column {need!r} (found: {', '.join(df.columns)}); "
                            f"{tool} labels CSVs have slide_id,label[,case_id].")
    rows: dict[str, list[Any]] = {k: [] for k in ("bag_id", "label", "features", "patient_id", "split", "fold")}
    seen: dict[str, int] = {}
    for i, r in enumerate(df.to_dict("records")):
        slide, label = r["slide_id"], r["label"]
        if slide is None or slide != slide:
            raise DataError(f"labels CSV {labels_csv}: line {i + 2} has no slide_id; fill it or drop the row.")
        if label is None or label != label:
            raise DataError(f"labels CSV {labels_csv}: slide {slide!r} (line {i + 2}) has no label; fill it or drop "
                            "the row.")
        key = _slide_key(str(slide), files)
        if key is None:
            if on_missing == "skip":
                continue
            raise DataError(f"labels CSV {labels_csv}: slide {slide!r} (line {i + 2}) has no feature file among "
                            f"{len(files)} in {dir_or_files}; extract it, drop the row, or pass on_missing='skip'.")
        if key in seen:
            raise DataError(f"labels CSV {labels_csv}: slide {slide!r} is listed twice, on lines {seen[key] + 2} and "
                            f"{i + 2}; keep one row per slide.")
        seen[key] = i
        rows["bag_id"].append(key)
        rows["label"].append(str(label))
        rows["features"].append(files[key])
        case = r.get("case_id", r.get("patient_id"))
        rows["patient_id"].append(None if case is None or case != case else str(case))
        rows["split"].append(r.get("split"))
        rows["fold"].append(r.get("fold"))
    if not rows["bag_id"]:
        raise DataError(f"labels CSV {labels_csv}: none of its slides has a feature file in {dir_or_files}; check "
                        "that slide_id matches the .h5 file stems.")
    opt = {}
    for k in ("patient_id", "split", "fold"):
        present = k == "patient_id" and ("case_id" in df.columns or "patient_id" in df.columns) or k in df.columns
        opt[k] = rows[k] if present else None
    if opt["patient_id"] is not None and any(p is None for p in opt["patient_id"]):
        b = rows["bag_id"][opt["patient_id"].index(None)]
        raise DataError(f"labels CSV {labels_csv}: slide {b!r} has no case_id; fill it (the patient) or drop the "
                        "column.")
    return BagTable(rows["bag_id"], rows["label"], rows["features"], **opt)


def from_trident(dir_or_files: str | Path | Sequence[str | Path], labels_csv: str | Path, *,
                 on_missing: str = "error") -> BagTable:
    """Bag table of TRIDENT slide features (``features_<encoder>/<slide>.h5``) joined with a labels CSV.

    Args:
        dir_or_files: the folder of ``.h5`` files (one per slide; bag id = file stem) or a list of files.
        labels_csv: CSV with ``slide_id``, ``label`` and optionally ``case_id`` (patient), ``split``, ``fold``.
        on_missing: ``"error"`` (default) or ``"skip"``: a labelled slide without a feature file.
            Feature files without a row in the labels CSV are left out.

    Raises:
        DataError: naming the slide, file or CSV line that is wrong.

    Example:
        >>> from_trident("/nonexistent", "labels.csv")
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: /nonexistent: no such folder of slide feature files; pass the folder TRIDENT/CLAM wrote (features_<encoder>/ or h5_files/) or a list of files.
    """
    return _from_slide_files(dir_or_files, labels_csv, tool="TRIDENT", on_missing=on_missing)


def from_clam(dir_or_files: str | Path | Sequence[str | Path], labels_csv: str | Path, *,
              on_missing: str = "error") -> BagTable:
    """Bag table of CLAM features (``h5_files/<slide>.h5`` or ``pt_files/<slide>.pt``) joined with a labels CSV.

    Same arguments as :func:`from_trident`; CLAM's dataset CSV (``case_id,slide_id,label``) is the labels CSV.

    Example:
        >>> from_clam([Path("/nonexistent/s1.h5")], "labels.csv")
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: /nonexistent/s1.h5: no such feature file (1 of 1 missing); fix the list.
    """
    return _from_slide_files(dir_or_files, labels_csv, tool="CLAM", on_missing=on_missing)


def from_eva(manifest: str | Path) -> BagTable:
    """Bag table of an eva embeddings manifest (``path``/``embeddings``, ``target``, ``split``, ``wsi_id``/``slide_id``).

    Paths are relative to the manifest's folder (or absolute). Rows of one slide (eva's
    multi-embedding files) become one bag; the slide must have one target and one split.

    Raises:
        DataError: a missing column, blank cell or file (naming the CSV line).

    Example:
        >>> import tempfile, torch
        >>> d = Path(tempfile.mkdtemp()); torch.save(torch.ones(3, 4), d / "a.pt")
        >>> _ = (d / "manifest.csv").write_text("origin,path,target,split\\nslide_a.svs,a.pt,1,train\\n")
        >>> t = from_eva(d / "manifest.csv"); t.bag_id, t.label, t.split
        (['a'], ['1'], ['train'])
    """
    manifest = Path(manifest).expanduser()
    df = _read_csv(manifest, "eva manifest")
    path_col = next((c for c in ("path", "embeddings") if c in df.columns), None)
    if path_col is None or "target" not in df.columns:
        raise DataError(f"eva manifest {manifest}: needs columns 'path' (or 'embeddings') and 'target' (found: "
                        f"{', '.join(df.columns)}); eva writes path,target,split[,wsi_id].")
    bag_col = next((c for c in ("wsi_id", "slide_id", "multi_id") if c in df.columns), None)
    patient_col = next((c for c in ("patient_id", "case_id") if c in df.columns), None)
    base = manifest.parent.resolve()
    bag_ids, labels, files, patients, splits = [], [], [], [], []
    for i, r in enumerate(df.to_dict("records")):
        p, t = r[path_col], r["target"]
        if p is None or p != p or t is None or t != t:
            raise DataError(f"eva manifest {manifest}: line {i + 2} has no {path_col if p is None or p != p else 'target'};"
                            " fill it or drop the row.")
        f = Path(str(p))
        f = f if f.is_absolute() else base / f
        if not f.is_file():
            raise DataError(f"eva manifest {manifest}: line {i + 2}: embeddings file {f} does not exist; paths are "
                            f"relative to {base}.")
        b = r.get(bag_col) if bag_col else None
        bag_ids.append(str(b) if b is not None and b == b else f.stem)
        labels.append(str(t))
        files.append(f)
        if patient_col:
            patients.append(r[patient_col] if r[patient_col] == r[patient_col] else None)
        if "split" in df.columns:
            splits.append(r["split"])
    if patient_col and any(p is None for p in patients):
        i = patients.index(None)
        raise DataError(f"eva manifest {manifest}: line {i + 2} has no {patient_col}; fill it or drop the column.")
    return BagTable(bag_ids, labels, files, patient_id=patients if patient_col else None,
                    split=splits if "split" in df.columns else None)
