"""Patient-disjoint folds for multiple-instance learning: stratified K folds grouped by patient
(:func:`patient_folds`), a manifest's own folds checked (:func:`check_folds`: no patient in two folds),
and the early-stopping validation part of a training fold taken by whole patients (:func:`inner_validation`).
:mod:`vitlab.mil.cv` runs the cross-validation on them.

Example:
    >>> y = np.array([0, 1] * 20); patients = np.repeat(np.arange(20), 2)
    >>> fold = patient_folds(y, patients, k=4, seed=0)
    >>> sorted(set(fold.tolist())), all(len(set(fold[patients == p])) == 1 for p in range(20))
    ([0, 1, 2, 3], True)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError

__all__ = ["patient_folds", "check_folds", "inner_validation"]


def _as_labels(labels: Any, n: int | None = None, name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise DataError(f"{name} must be a non-empty 1-D array of class indices, got shape {y.shape}.")
    if n is not None and y.shape[0] != n:
        raise DataError(f"{name} has {y.shape[0]} entries but there are {n} bags; pass one per bag.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataError(f"{name} must be integer class indices 0..C-1, got dtype {y.dtype}"
                        + (f" with minimum {y.min()}" if np.issubdtype(y.dtype, np.number) else "") + ".")
    return y


def _as_groups(patients: Any, n: int) -> np.ndarray | None:
    if patients is None:
        return None
    g = np.asarray(patients)
    if g.shape != (n,):
        raise DataError(f"patients has shape {g.shape}, expected ({n},): one patient id per bag.")
    return g


def patient_folds(bag_labels: np.ndarray, patients: Sequence[Any] | np.ndarray | None = None,
                  k: int = 5, seed: int = 0) -> np.ndarray:
    """Stratified K-fold assignment of bags, grouped by patient: no patient is in two folds.

    Uses scikit-learn's ``StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)``;
    without ``patients`` each bag is its own group (plain stratified K-fold). Class proportions
    per fold follow the overall ones as closely as whole patients allow. The result is checked
    with :func:`check_folds` (so a class whose bags all belong to one patient, which would leave
    one fold's training part without it, is refused).

    Args:
        bag_labels: ``[n_bags]`` int class indices.
        patients: ``[n_bags]`` patient ids, or ``None`` (every bag its own patient).
        k: number of folds, >= 2.
        seed: seed of the shuffling.

    Returns:
        ``[n_bags]`` int fold index in ``0..k-1`` (the fold in which the bag is tested).

    Raises:
        ConfigError: ``k < 2``.
        DataError: fewer patients (bags) than folds, or a fold that :func:`check_folds` refuses.

    Example:
        >>> y = np.array([0, 0, 1, 1, 0, 1, 0, 1]); pat = np.array(list("aabbccdd"))
        >>> fold = patient_folds(y, pat, k=2, seed=0)
        >>> all(len(set(fold[pat == p])) == 1 for p in set(pat))
        True
    """
    from sklearn.model_selection import StratifiedGroupKFold

    if int(k) != k or k < 2:
        raise ConfigError(f"k={k} folds: cross-validation needs an integer k >= 2, e.g. 5.")
    k = int(k)
    y = _as_labels(bag_labels, name="bag_labels")
    n = y.shape[0]
    g = _as_groups(patients, n)
    gid = np.arange(n) if g is None else np.unique(g, return_inverse=True)[1].reshape(-1)
    n_groups = int(gid.max()) + 1
    if n_groups < k:
        what = "bags" if g is None else "patients"
        raise DataError(f"{k} folds need at least {k} {what}; got {n_groups}. Use fewer folds or more data.")
    fold = np.full(n, -1, dtype=np.int64)
    sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "least populated class has only m members": check_folds below says what matters
        warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
        for i, (_, test) in enumerate(sgkf.split(np.zeros(n), y, gid)):
            fold[test] = i
    assert (fold >= 0).all(), "StratifiedGroupKFold left bags without a fold"
    # the point of this function: no patient in two folds
    per_group = np.zeros((n_groups, k), dtype=bool)
    per_group[gid, fold] = True
    assert (per_group.sum(axis=1) == 1).all(), "a patient was assigned to two folds"
    check_folds(fold, g, labels=y, k=k)
    return fold


def check_folds(fold: np.ndarray, patients: Sequence[Any] | np.ndarray | None = None,
                bag_ids: Sequence[Any] | None = None, *, labels: np.ndarray | None = None,
                k: int | None = None, class_names: Sequence[str] | None = None) -> None:
    """Refuse folds (e.g. a manifest's own) that leak patients, are empty or miss a class.

    Checks, in this order, raising one :class:`DataError` for the first problem found:

    1. fold ids are integers ``0..K-1`` (``K = k``, or ``max(fold) + 1``) and ``K >= 2``;
    2. no fold is empty;
    3. no patient has bags in two folds (the message names the first such patient in bag order,
       the fold of its first bag and the other fold, with a bag of each);
    4. with ``labels``: every fold's training part (the bags of the other folds) holds every
       class present in the data (the message names the class and the fold).

    Args:
        fold: ``[n_bags]`` fold index per bag.
        patients: ``[n_bags]`` patient ids, or ``None`` (only checks 1, 2 and 4).
        bag_ids: ``[n_bags]`` bag ids for the messages (default: the bag's position).
        labels: ``[n_bags]`` int class indices (for check 4).
        k: the expected number of folds (default ``max(fold) + 1``).
        class_names: names of the classes, for the message of check 4.

    Raises:
        DataError: see above.

    Example:
        >>> check_folds(np.array([0, 0, 1, 1]), ["p1", "p1", "p2", "p3"])
        >>> check_folds(np.array([0, 1, 1, 0]), ["p1", "p1", "p2", "p3"], ["s1", "s2", "s3", "s4"])
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: patient 'p1' leaks across folds: bag 's1' is in fold 0 and bag 's2' in fold 1. All bags of a patient must be in one fold (pass patient-grouped folds, e.g. vitlab.mil.cv.patient_folds).
    """
    f = np.asarray(fold)
    if f.ndim != 1 or f.size == 0:
        raise DataError(f"fold must be a non-empty 1-D array (one fold index per bag), got shape {f.shape}.")
    n = f.shape[0]
    if not np.issubdtype(f.dtype, np.integer):
        if np.issubdtype(f.dtype, np.floating) and np.all(np.isfinite(f)) and np.all(f == np.round(f)):
            f = f.astype(np.int64)
        else:
            raise DataError(f"fold ids must be integers 0..K-1, got dtype {f.dtype}.")
    ids = [str(b) for b in bag_ids] if bag_ids is not None else [str(i) for i in range(n)]
    if len(ids) != n:
        raise DataError(f"bag_ids has {len(ids)} entries but fold has {n}; pass one per bag.")
    if f.min() < 0:
        i = int(np.argmax(f < 0))
        raise DataError(f"bag {ids[i]!r} has fold {int(f[i])}; fold ids must be 0..K-1.")
    n_folds = int(f.max()) + 1 if k is None else int(k)
    if n_folds < 2:
        raise DataError(f"{n_folds} fold(s): cross-validation needs at least 2 folds.")
    if f.max() >= n_folds:
        i = int(np.argmax(f >= n_folds))
        raise DataError(f"bag {ids[i]!r} has fold {int(f[i])} but there are {n_folds} folds (0..{n_folds - 1}).")
    counts = np.bincount(f, minlength=n_folds)
    if (counts == 0).any():
        empty = int(np.argmax(counts == 0))
        raise DataError(f"fold {empty} has no bags (folds 0..{n_folds - 1}); renumber the folds "
                        "or assign bags to it.")
    g = _as_groups(patients, n)
    if g is not None:
        first: dict[Any, int] = {}
        for i in range(n):
            p = g[i].item() if hasattr(g[i], "item") else g[i]
            j = first.setdefault(p, i)
            if f[j] != f[i]:
                raise DataError(
                    f"patient {str(p)!r} leaks across folds: bag {ids[j]!r} is in fold {int(f[j])} and bag "
                    f"{ids[i]!r} in fold {int(f[i])}. All bags of a patient must be in one fold "
                    "(pass patient-grouped folds, e.g. vitlab.mil.cv.patient_folds)."
                )
    if labels is not None:
        y = _as_labels(labels, n)
        present = np.unique(y)
        for i in range(n_folds):
            missing = np.setdiff1d(present, np.unique(y[f != i]))
            if missing.size:
                c = int(missing[0])
                name = repr(class_names[c]) if class_names is not None and c < len(class_names) else str(c)
                raise DataError(
                    f"the training part of fold {i} has no bag of class {name}: all its bags are in "
                    f"fold {i}. Stratified folds need every class in >= 2 folds (>= 2 patients per class)."
                )


def inner_validation(train_idx: np.ndarray, labels: np.ndarray,
                     patients: Sequence[Any] | np.ndarray | None, fraction: float = 0.2,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split a training fold into a fitting part and a patient-disjoint validation part.

    For early stopping / model selection inside a fold. Reuses
    :func:`vitlab.data.splits.holdout` (stratified; ``StratifiedGroupKFold`` by patient when
    ``patients`` are given, so the fraction is approximate), with its errors for data too small
    to split.

    Args:
        train_idx: indices (into all bags) of the training part of a fold.
        labels: ``[n_bags]`` int class indices of **all** bags.
        patients: ``[n_bags]`` patient ids of all bags, or ``None``.
        fraction: about this fraction of ``train_idx`` goes to validation, in (0, 1).
        seed: seed of the split.

    Returns:
        ``(fit_idx, val_idx)``: sorted indices into all bags, a partition of ``train_idx``.

    Raises:
        DataError: too few bags, classes or patients (see :func:`~vitlab.data.splits.holdout`).

    Example:
        >>> y = np.array([0, 1] * 10); pat = np.repeat(np.arange(10), 2)
        >>> fit, val = inner_validation(np.arange(20), y, pat, 0.2, seed=0)
        >>> len(fit) + len(val), set(pat[fit]) & set(pat[val])
        (20, set())
    """
    from vitlab.data.splits import holdout

    if not 0 < fraction < 1:
        raise ConfigError(f"fraction={fraction}: the validation fraction must be in (0, 1), e.g. 0.2.")
    y = _as_labels(labels)
    idx = np.asarray(train_idx, dtype=np.int64)
    if idx.ndim != 1 or idx.size == 0:
        raise DataError("train_idx must be a non-empty 1-D array of bag indices.")
    g = _as_groups(patients, y.shape[0])
    sub_g = None if g is None else g[idx]
    # relabel to 0..c-1 so holdout's class counts only see classes of this training part
    _, sub_y = np.unique(y[idx], return_inverse=True)
    kept, held = holdout(sub_y.reshape(-1), sub_g, fraction, seed)
    return np.sort(idx[kept]), np.sort(idx[held])
