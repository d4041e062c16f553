"""The clean manifest: the kept rows as a ``csv:`` manifest (``path,label[,split][,group]``) other verbs read.

Never overwrites: an existing file is refused with one clear line before any work
(:func:`check_new_manifest`), and the file is opened with ``"x"``. Never floods: a manifest that
would drop more than a stated fraction of the items (``max_removed``, default 20%) is refused with
the count (:func:`check_removed`). With ``--label-issues`` it carries ``issue``, ``suggested_label``
and ``self_confidence`` columns (the ``label`` column stays the given label).

Example:
    >>> check_new_manifest(None)
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.data.base import DataSource
from vitlab.errors import ConfigError, DataError

__all__ = ["check_new_manifest", "check_has_files", "check_removed", "write_manifest"]


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
    from vitlab.outputs import check_output_file

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
        >>> import vitlab
        >>> check_has_files(vitlab.load_source("sample:fashion-mnist"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: sample:fashion-mnist: its images are not files (kind sample), ...
    """
    files = getattr(source, "files", None)
    if files is None or len(files) != len(source):
        raise DataError(f"{source.uri}: its images are not files (kind {source.kind}), so a manifest cannot list them. "
                        "--write-manifest needs folder: or csv: data.")
    return [Path(f) for f in files]


def check_removed(n_dropped: int, n: int, max_removed: float, given: bool) -> None:
    """Refuse a manifest that drops more than ``max_removed`` of the ``n`` items (one line with the count).

    Raises:
        ConfigError: ``n_dropped / n > max_removed``.

    Example:
        >>> check_removed(20, 320, 0.2, False)
        >>> check_removed(286, 320, 0.2, False)
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: --write-manifest would drop 286 of 320 items (89.4%), more than the 20% allowed by default: check the duplicate groups (--report) first; pass --max-removed 0.9 to write it anyway. No manifest was written.
    """
    if n and n_dropped / n > max_removed:
        allowed = f"{max_removed:.0%} " + ("set by --max-removed" if given else "allowed by default")
        need = np.ceil(n_dropped / n * 100) / 100
        raise ConfigError(f"--write-manifest would drop {n_dropped} of {n} items ({n_dropped / n:.1%}), more than the "
                          f"{allowed}: check the duplicate groups (--report) first; pass --max-removed {need:g} to "
                          "write it anyway. No manifest was written.")


def write_manifest(path: str | Path, source: DataSource, rows: np.ndarray, split: np.ndarray | None = None,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write the source rows ``rows`` as a manifest: absolute paths, class names, split and group columns.

    Args:
        path: a new file (``.csv``).
        source: the data source the rows index.
        rows: source row indices to keep, in order.
        split: ``[len(source)]`` split names to record, or ``None`` (the source's split column, if any).
        extra: more columns, ``{name: [len(source)] values}`` (e.g. ``issue``, ``suggested_label``), after the others.

    Returns:
        The written path.

    Example:
        >>> import os, vitlab
        >>> from PIL import Image
        >>> os.makedirs("imgs/cat"); os.makedirs("imgs/dog")
        >>> for name in ("cat/a.png", "cat/b.png", "dog/c.png"):
        ...     Image.new("RGB", (16, 16)).save(f"imgs/{name}")
        >>> write_manifest("clean.csv", vitlab.load_source("folder:./imgs"), np.array([0, 2]))
        PosixPath('clean.csv')
        >>> len(Path("clean.csv").read_text().splitlines())  # the header and the two rows kept
        3
    """
    p = Path(path).expanduser()
    check_new_manifest(p)
    files = check_has_files(source)
    if split is None and source.split_column is not None:
        split = np.asarray(source.split_column)
    head = ["path"] + (["label"] if source.labels is not None else []) + (["split"] if split is not None else []) \
        + (["group"] if source.groups is not None else []) + list(extra or {})
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
            row += [str(v[r]) for v in (extra or {}).values()]
            w.writerow(row)
    return p
