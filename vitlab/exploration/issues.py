"""The one adapter between the explorer and label-issue finding (:mod:`vitlab.curation.label_issues`).

The explorer colours points by a *label-issue score* and marks flagged items. Those per-item arrays come
from ``vitlab.curation.label_issues.find_label_issues(X, y, *, groups=None, folds=5, seed=0, method="linear")``
(out-of-fold probabilities by K-fold cross-fitting, then cleanlab's ``find_label_issues``); this module only
checks that it is there (:func:`check_label_issues`, before any work) and turns its result into the page's
columns (:func:`issue_columns`). Nothing here re-implements confident learning.

What the adapter reads from the result (attributes, one value per row of ``X``, in row order):
``given`` (int labels), ``suggested`` (int labels), ``self_confidence`` (out-of-fold probability of the given
label, in [0, 1]), ``is_issue`` (bool) and ``rank`` (int: 0 = most suspicious among the flagged, negative for
items not flagged).

Example:
    >>> from types import SimpleNamespace
    >>> li = SimpleNamespace(given=np.array([0, 1]), suggested=np.array([0, 0]), self_confidence=np.array([0.9, 0.2]),
    ...                      is_issue=np.array([False, True]), rank=np.array([-1, 0]))
    >>> cols = issue_columns(li, 2)
    >>> cols["score"].round(2).tolist(), cols["is_issue"].tolist(), cols["rank"].tolist()
    ([0.1, 0.8], [False, True], [-1, 0])
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError

__all__ = ["MODULE", "label_issues_module", "check_label_issues", "issue_columns", "label_issue_columns"]

#: Where ``find_label_issues`` lives.
MODULE = "vitlab.curation.label_issues"
_FIELDS = ("given", "suggested", "self_confidence", "is_issue", "rank")


def label_issues_module() -> Any | None:
    """The label-issue module, or ``None`` when this vitlab has none yet.

    Example:
        >>> m = label_issues_module()
        >>> m is None or hasattr(m, "find_label_issues")
        True
    """
    try:
        if importlib.util.find_spec(MODULE) is None:
            return None
    except ModuleNotFoundError:
        return None
    return importlib.import_module(MODULE)


def check_label_issues(labels: np.ndarray | None, *, what: str, groups: Any = None, folds: int = 5,
                       method: str = "linear", classes: list[str] | None = None) -> None:
    """Refuse ``--label-issues`` before any work: no labels, no label-issue module, or what the module's own
    ``check_label_issue_inputs`` refuses (cleanlab missing, a class with fewer members than folds, bad folds).

    Example:
        >>> check_label_issues(None, what="folder:./imgs")
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: folder:./imgs has no labels, and --label-issues looks for wrong labels: use labelled data (class subfolders, or a label column).
    """
    if labels is None:
        raise DataError(f"{what} has no labels, and --label-issues looks for wrong labels: use labelled data "
                        "(class subfolders, or a label column).")
    mod = label_issues_module()
    if mod is None or not hasattr(mod, "find_label_issues"):
        raise ConfigError(f"--label-issues needs {MODULE}.find_label_issues, which this vitlab does not have yet; "
                          "drop --label-issues or update vitlab.")
    check = getattr(mod, "check_label_issue_inputs", None)
    if callable(check):
        check(np.asarray(labels), groups=None if groups is None else np.asarray(groups), folds=folds, method=method,
              classes=classes, where=what)


def issue_columns(result: Any, n: int) -> dict[str, np.ndarray]:
    """The page's label-issue columns from a ``find_label_issues`` result: ``score`` (``1 - self_confidence``:
    larger is more suspicious), ``suggested``, ``is_issue``, ``rank`` and ``self_confidence``, each ``[n]``.

    Raises:
        DataError: a field is missing or does not hold one value per row.
    """
    cols = {}
    for name in _FIELDS:
        if not hasattr(result, name):
            raise DataError(f"the label-issue result has no {name!r}; {MODULE} and vitlab.explore disagree "
                            "(update both).")
        a = np.asarray(getattr(result, name))
        if a.shape != (n,):
            raise DataError(f"the label-issue result's {name!r} has shape {a.shape}, not one value per item ({n}).")
        cols[name] = a
    conf = cols["self_confidence"].astype(np.float64)
    return {"score": 1.0 - conf, "self_confidence": conf, "suggested": cols["suggested"].astype(np.int64),
            "given": cols["given"].astype(np.int64), "is_issue": cols["is_issue"].astype(bool),
            "rank": cols["rank"].astype(np.int64)}


def label_issue_columns(X: np.ndarray, y: np.ndarray, *, groups: np.ndarray | None = None, folds: int = 5,
                        seed: int = 0, method: str = "linear") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run ``find_label_issues`` on the embeddings and return ``(columns, summary)`` for the page and record.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = np.repeat([0, 1], 50); X = rng.normal(size=(100, 8)) + 4 * y[:, None]  # two separated blobs
        >>> y[:3] = 1  # three wrong labels
        >>> cols, summary = label_issue_columns(X, y, folds=5, seed=0)
        >>> cols["score"].shape, summary["n_issues"] >= 3
        ((100,), True)
    """
    mod = label_issues_module()
    if mod is None:
        raise ConfigError(f"--label-issues needs {MODULE}, which this vitlab does not have yet.")
    res = mod.find_label_issues(X, y, groups=groups, folds=folds, seed=seed, method=method)
    cols = issue_columns(res, len(y))
    if not np.array_equal(cols["given"], np.asarray(y)):
        raise DataError("the label-issue result's given labels differ from the data's labels; it was computed on "
                        "other rows.")
    summary = {"method": method, "folds": folds, "seed": seed, "n_issues": int(cols["is_issue"].sum()),
               "fraction": float(cols["is_issue"].mean()) if len(y) else 0.0}
    return cols, summary
