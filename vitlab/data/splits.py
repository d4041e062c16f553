"""Train/val/test splits: from a ``split`` column, else seeded, stratified and group-aware."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vitlab.errors import ConfigError, DataError

SPLIT_NAMES = ("train", "val", "test")
SPLIT_SYNONYMS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "dev": "val", "test": "test", "testing": "test", "eval": "test"}


def normalise_split(value: str, where: str) -> str:
    """Map a split name (``validation`` → ``val``) or raise naming ``where`` it came from."""
    key = str(value).strip().lower()
    if key not in SPLIT_SYNONYMS:
        raise DataError(f"{where}: unknown split {value!r}; allowed: {', '.join(SPLIT_NAMES)} "
                        f"(synonyms: {', '.join(k for k in SPLIT_SYNONYMS if k not in SPLIT_NAMES)}).")
    return SPLIT_SYNONYMS[key]


def check_fractions(test_fraction: float, val_fraction: float = 0.0) -> None:
    """Raise a one-line :class:`ConfigError` unless the split fractions are usable.

    Cheap, so callers run it before loading models or embedding anything.

    Example:
        >>> check_fractions(0.2)
        >>> check_fractions(1.5)
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: test_fraction must be between 0 and 1 (exclusive), e.g. 0.2; got 1.5.
    """
    try:
        test_fraction, val_fraction = float(test_fraction), float(val_fraction)
    except (TypeError, ValueError):
        raise ConfigError(f"test_fraction and val_fraction take numbers such as 0.2, got {test_fraction!r} and "
                          f"{val_fraction!r}.") from None
    if not 0 < test_fraction < 1:  # also rejects NaN
        raise ConfigError(f"test_fraction must be between 0 and 1 (exclusive), e.g. 0.2; got {test_fraction}.")
    if not 0 <= val_fraction < 1 or test_fraction + val_fraction >= 1:
        raise ConfigError(f"split fractions test={test_fraction}, val={val_fraction} must be in [0, 1) "
                          "and leave room for train (test + val < 1).")


def make_splits(labels: np.ndarray | None, groups: Sequence[str] | None = None, *, seed: int = 0,
                test_fraction: float = 0.2, val_fraction: float = 0.0, n: int | None = None) -> np.ndarray:
    """Assign each sample to ``train``/``val``/``test``: seeded, stratified by label, no group crossing.

    Uses scikit-learn's ``StratifiedGroupKFold`` when groups exist (fractions are then
    approximate: whole groups move), else ``train_test_split(stratify=labels)``.

    Args:
        labels: ``[n]`` int class indices or ``None`` (unstratified).
        groups: ``[n]`` group ids (patient, slide, site) or ``None``.
        seed: random seed.
        test_fraction, val_fraction: fractions of all samples.
        n: number of samples, needed only when there are neither labels nor groups.

    Returns:
        ``[n]`` array of split names.

    Example:
        >>> s = make_splits(np.array([0, 1] * 10), seed=0)
        >>> sorted(set(s.tolist())), int((s == "test").sum())
        (['test', 'train'], 4)
    """
    check_fractions(test_fraction, val_fraction)
    if labels is not None:
        n = len(labels)
    elif groups is not None:
        n = len(groups)
    elif n is None:
        raise ConfigError("make_splits needs labels, groups or n (the number of samples).")
    out = np.full(n, "train", dtype=object)
    idx = np.arange(n)
    test = _holdout(idx, labels, groups, test_fraction, seed)
    out[test] = "test"
    if val_fraction > 0:
        rest = idx[out == "train"]
        sub_labels = labels[rest] if labels is not None else None
        sub_groups = [groups[i] for i in rest] if groups is not None else None
        val = rest[_holdout(np.arange(len(rest)), sub_labels, sub_groups, val_fraction / (1 - test_fraction), seed + 1)]
        out[val] = "val"
    return out.astype(str)


def _holdout(idx: np.ndarray, labels: np.ndarray | None, groups: Sequence[str] | None,
             fraction: float, seed: int) -> np.ndarray:
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold, train_test_split

    n = len(idx)
    if groups is not None:
        g = np.asarray(groups)
        n_groups = len(set(g.tolist()))
        k = max(2, int(round(1 / fraction)))
        if n_groups < 2:
            raise DataError(f"only {n_groups} group present: a group-aware split needs at least 2 groups.")
        if labels is not None and n_groups >= k:
            folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            _, held = next(folds.split(idx, labels, g))
        else:
            _, held = next(GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(idx, groups=g))
        return idx[held]
    stratify = labels
    if labels is not None:
        counts = np.bincount(labels)
        counts = counts[counts > 0]
        if counts.min() < 2 or int(round(fraction * n)) < len(counts):
            stratify = None  # too few per class to stratify; still seeded
    _, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(held)
