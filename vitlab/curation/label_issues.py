"""Labels that are probably wrong: cleanlab's confident learning on out-of-fold probabilities from a vitlab probe.

cleanlab's ``find_label_issues`` (Northcutt et al., 2021, "Confident Learning") needs *out-of-sample*
predicted probabilities. :func:`find_label_issues` makes them on the cached embeddings by K-fold
cross-fitting: the data is cut into ``folds`` stratified folds (``StratifiedGroupKFold`` when the data
has groups, so no group is on both sides), and each fold's probabilities come from a probe fitted on the
other folds: a vitlab classification protocol, ``"linear"`` (the L-BFGS probe of
:mod:`vitlab.protocols.linear`, C chosen on a validation part of the training folds, exactly as
``vitlab eval`` runs it) or ``"knn"``. cleanlab (a well-kept library; not rewritten here) then flags the
issues and ranks them by self-confidence (the out-of-fold probability of the given label; lowest first).

``cleanlab`` is an optional dependency: ``pip install 'vitlab[curate]'``, checked before any work.

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(0, 1, (120, 4)); X[:60, 0] += 5; X[60:, 1] += 5; y = np.repeat([0, 1], 60)
    >>> y[[3, 70]] = 1 - y[[3, 70]]                       # two planted label errors
    >>> li = find_label_issues(X, y, folds=3, method="knn")
    >>> sorted(np.flatnonzero(li.is_issue).tolist())
    [3, 70]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError

__all__ = ["LabelIssues", "find_label_issues", "check_label_issue_inputs", "require_cleanlab", "METHODS"]

INSTALL_HINT = "pip install 'vitlab[curate]'"
#: Probes that can make the out-of-fold probabilities (any classification protocol spec is accepted), and the
#: protocol spec each runs. ``linear`` fits in float64: with ``eval``'s float32 default the coarse C sweep can
#: stop on a fit that made no progress at C = 1e-6 (seen on scikit-learn's digits pixels: out-of-fold accuracy
#: 0.69 instead of 0.90), which would flag a third of the data.
METHODS = {"linear": "linear:dtype=float64", "knn": "knn"}


def require_cleanlab() -> None:
    """Refuse, in one line naming the extra, when ``cleanlab`` is not installed.

    Example:
        >>> require_cleanlab()  # installed here: nothing happens
    """
    try:
        import cleanlab.filter  # noqa: F401
    except ImportError:
        raise ConfigError(f"--label-issues needs the cleanlab package (confident learning): {INSTALL_HINT}.") from None


@dataclass(frozen=True)
class LabelIssues:
    """Per-item label-issue results, in the order of the rows given.

    Attributes:
        given: ``[n]`` the given labels. suggested: ``[n]`` the class with the highest out-of-fold probability.
        self_confidence: ``[n]`` float64 out-of-fold probability of the given label.
        is_issue: ``[n]`` bool, flagged by cleanlab. rank: ``[n]`` int, 0 = most suspicious flagged item, -1 = not
            flagged. pred_probs: ``[n, C]`` float64 out-of-fold probabilities (columns: classes ``0..C-1``).
        fold: ``[n]`` the fold each row was predicted in. method, folds, grouped, seed, filter_by: how.
    """

    given: np.ndarray
    suggested: np.ndarray
    self_confidence: np.ndarray
    is_issue: np.ndarray
    rank: np.ndarray
    pred_probs: np.ndarray
    fold: np.ndarray
    method: str
    folds: int
    grouped: bool
    seed: int
    filter_by: str

    @property
    def ranked(self) -> np.ndarray:
        """Rows of the flagged items, most suspicious first."""
        flagged = np.flatnonzero(self.is_issue)
        return flagged[np.argsort(self.rank[flagged], kind="stable")]

    def to_dict(self, ids: list[str] | None = None, classes: list[str] | None = None, max_items: int = 200
                ) -> dict[str, Any]:
        """JSON-ready summary: counts, out-of-fold accuracy, and the ``max_items`` most suspicious items."""
        def name(c: int) -> Any:
            return classes[c] if classes is not None and 0 <= c < len(classes) else int(c)

        n = len(self.given)
        items = [{"row": int(r), "id": ids[r] if ids is not None else str(r), "given": name(int(self.given[r])),
                  "suggested": name(int(self.suggested[r])), "self_confidence": float(self.self_confidence[r]),
                  "rank": int(self.rank[r])} for r in self.ranked[:max_items]]
        return {"method": self.method, "folds": self.folds, "grouped": self.grouped, "seed": self.seed,
                "filter_by": self.filter_by, "n": n, "n_issues": int(self.is_issue.sum()),
                "fraction_issues": float(self.is_issue.mean()) if n else 0.0,
                "oof_accuracy": float(np.mean(self.suggested == self.given)) if n else None,
                "items": items, "n_items_listed": len(items)}


def check_label_issue_inputs(y: Any, *, groups: Any = None, folds: int = 5, method: str = "linear",
                             classes: list[str] | None = None, where: str = "the data") -> Any:
    """Every check of :func:`find_label_issues` that needs no fitting: labels, folds, class sizes, the
    method and cleanlab. Returns the parsed protocol. Raises one line each (before any work).

    Example:
        >>> check_label_issue_inputs(np.array([0, 0, 1]), folds=2)
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: the data: class 1 has 1 item(s), fewer than --folds 2: every class needs at least one item per fold. Lower --folds, or drop or merge the class.
    """
    from vitlab.protocols.base import parse_protocols

    if y is None:
        raise DataError(f"{where} has no labels: --label-issues compares each item's given label with out-of-fold "
                        "predictions. Use labelled data (class folders, or a csv: manifest with a label column).")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ConfigError(f"folds must be an integer >= 2 (K-fold cross-fitting), e.g. 5; got {folds!r}.")
    proto = parse_protocols(METHODS.get(method, method))[0]
    if proto.task != "classification":
        raise ConfigError(f"--label-method must be a classification probe ({', '.join(METHODS)}); "
                          f"{proto.name} is a {proto.task} protocol.")
    y = np.asarray(y)
    vals, counts = np.unique(y, return_counts=True)
    if len(vals) < 2:
        raise DataError(f"{where}: every item has the same label; label issues need at least 2 classes.")
    small = counts < folds
    if small.any():
        c = int(vals[small][0])
        nm = classes[c] if classes is not None and 0 <= c < len(classes) else c
        raise DataError(f"{where}: class {nm} has {int(counts[small][0])} item(s), fewer than --folds {folds}: every "
                        "class needs at least one item per fold. Lower --folds, or drop or merge the class.")
    if groups is not None and len(groups) != len(y):
        raise DataError(f"{where}: {len(groups)} groups for {len(y)} labels.")
    require_cleanlab()
    return proto


def _folds(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int) -> list[np.ndarray]:
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    z = np.zeros(len(y))
    if groups is None:
        it = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(z, y)
    else:
        it = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(z, y, groups)
    return [te for _, te in it]


def find_label_issues(X: np.ndarray, y: np.ndarray, *, groups: np.ndarray | None = None, folds: int = 5,
                      seed: int = 0, method: str = "linear", filter_by: str = "prune_by_noise_rate",
                      device: str = "cpu", classes: list[str] | None = None) -> LabelIssues:
    """Items whose given label is probably wrong, from out-of-fold probabilities of a probe on ``X``.

    Args:
        X: ``[n, d]`` embeddings. y: ``[n]`` integer labels (classes need not be ``0..C-1`` contiguous).
        groups: ``[n]`` group ids (patient, site): folds never split a group.
        folds: K of the K-fold cross-fitting (every class needs at least K items).
        seed: seeds the folds and the probe's validation split.
        method: ``"linear"`` (vitlab's L-BFGS probe, C chosen on validation, float64: :data:`METHODS`) or
            ``"knn"``, or any classification protocol spec (``"linear:Cs=[1.0]"``).
        filter_by: cleanlab's ``filter_by`` (``"prune_by_noise_rate"``, its default, ``"confident_learning"``...).
        device: torch device of the probe. classes: class names (for messages only).

    Returns:
        :class:`LabelIssues` (arrays in the order of ``y``).

    Raises:
        DataError: no labels, one class, a class with fewer than ``folds`` items, a class missing from
            the training folds of a fold (groups). ConfigError: bad ``folds``/``method``; cleanlab missing.

    Example:
        >>> X, y = np.random.default_rng(0).normal(size=(40, 3)), np.repeat([0, 1], 20)
        >>> li = find_label_issues(X, y, folds=4, method="knn")
        >>> li.pred_probs.shape, li.rank.shape, bool((li.rank[li.is_issue] >= 0).all())
        ((40, 2), (40,), True)
    """
    from cleanlab.filter import find_label_issues as cl_find_label_issues

    from vitlab.protocols.base import Split

    proto = check_label_issue_inputs(y, groups=groups, folds=folds, method=method, classes=classes)
    X = np.asarray(X)
    y = np.asarray(y).astype(np.int64)
    if X.ndim != 2 or len(X) != len(y):
        raise DataError(f"X must be [n, d] with one row per label; got {X.shape} for {len(y)} labels.")
    present, yy = np.unique(y, return_inverse=True)  # cleanlab wants classes 0..C-1, each present
    m = len(present)
    g = None if groups is None else np.asarray(groups).astype(str)
    P = np.zeros((len(y), m), np.float64)
    fold_of = np.full(len(y), -1, np.int64)
    rows = np.arange(len(y))
    for f, te in enumerate(_folds(yy, g, folds, seed)):
        tr = np.setdiff1d(rows, te)
        missing = np.setdiff1d(np.arange(m), yy[tr])
        if missing.size:
            c = int(present[missing[0]])
            nm = classes[c] if classes is not None and 0 <= c < len(classes) else c
            raise DataError(f"class {nm} has no training items in fold {f} (its groups all fall in that fold): each "
                            "class needs items in more than one group. Lower --folds, or check the group column.")

        def split(r: np.ndarray) -> Split:
            return Split(X[r], yy[r], r, None if g is None else g[r], [f"{i:09d}" for i in r])

        res = proto.run(split(tr), split(te), seed=seed, n_classes=m, device=device)
        p = np.asarray(res.outputs["proba"], np.float64)
        P[te] = p / p.sum(1, keepdims=True)
        fold_of[te] = f
    ranked = cl_find_label_issues(labels=yy, pred_probs=P, filter_by=filter_by,
                                  return_indices_ranked_by="self_confidence", n_jobs=1)
    ranked = np.asarray(ranked, np.int64)
    is_issue = np.zeros(len(y), bool)
    is_issue[ranked] = True
    rank = np.full(len(y), -1, np.int64)
    rank[ranked] = np.arange(len(ranked))
    return LabelIssues(y, present[P.argmax(1)], P[rows, yy], is_issue, rank, P, fold_of, proto.spec(), int(folds),
                       g is not None, int(seed), filter_by)
