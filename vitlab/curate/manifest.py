"""The clean manifest: the kept rows as a ``csv:`` manifest (``path,label[,split][,group]``) other verbs read.

Never overwrites: an existing file is refused with one clear line before any work
(:func:`check_new_manifest`).

Example:
    >>> check_new_manifest(None)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from vitlab.data.base import DataSource
from vitlab.errors import ConfigError, DataError

__all__ = ["check_new_manifest", "check_has_files", "write_manifest"]


def check_new_manifest(path: str | Path | None) -> None:
    """Refuse a manifest path that exists (or cannot be created); ``None`` passes.

    Raises:
        ConfigError: the file exists, or is a folder.

    Example:
        >>> check_new_manifest(".")
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: --write-manifest .: is a folder, not a file. Pass a new file name, e.g. clean.csv.
    """
    if path is None:
        return
    from vitlab.record import check_output_file

    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"--write-manifest {p}: is a folder, not a file. Pass a new file name, e.g. clean.csv.")
    if p.exists():
        raise ConfigError(f"--write-manifest {p}: the file already exists and is not overwritten. Choose a new name "
                          "or delete it first.")
    check_output_file(p, "--write-manifest")


def check_has_files(source: DataSource) -> list[Path]:
    """The image file of each source row; sources without files (``idx:``, ``sample:``) are refused.

    Raises:
        DataError: the source holds no image files a manifest could list.

    Example:
        >>> check_has_files(vitlab.load_source("sample:fashion-mnist"))  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: sample:fashion-mnist: its images are not files (kind sample), ...
    """
    files = getattr(source, "files", None)
    if files is None or len(files) != len(source):
        raise DataError(f"{source.uri}: its images are not files (kind {source.kind}), so a manifest cannot list them. "
                        "--write-manifest needs folder: or csv: data.")
    return [Path(f) for f in files]


def write_manifest(path: str | Path, source: DataSource, rows: np.ndarray, split: np.ndarray | None = None) -> Path:
    """Write the source rows ``rows`` as a manifest: absolute paths, class names, split and group columns.

    Args:
        path: a new file (``.csv``).
        source: the data source the rows index.
        rows: source row indices to keep, in order.
        split: ``[len(source)]`` split names to record, or ``None`` (the source's split column, if any).

    Returns:
        The written path.

    Example:
        >>> write_manifest("clean.csv", vitlab.load_source("folder:./imgs"), np.array([0, 2]))  # doctest: +SKIP
        PosixPath('clean.csv')
    """
    p = Path(path).expanduser()
    check_new_manifest(p)
    files = check_has_files(source)
    if split is None and source.split_column is not None:
        split = np.asarray(source.split_column)
    head = ["path"] + (["label"] if source.labels is not None else []) + (["split"] if split is not None else []) \
        + (["group"] if source.groups is not None else [])
    with open(p, "x", newline="") as fh:  # "x": never overwrite, even if the file appeared meanwhile
        w = csv.writer(fh)
        w.writerow(head)
        for r in np.asarray(rows, dtype=np.int64).tolist():
            row = [str(Path(files[r]).resolve())]
            if source.labels is not None:
                row.append(source.classes[int(source.labels[r])])
            if split is not None:
                row.append(str(split[r]))
            if source.groups is not None:
                row.append(str(source.groups[r]))
            w.writerow(row)
    return p
