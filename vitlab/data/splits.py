"""Train/val/test splits: from a ``split`` column, else seeded, stratified and group-aware.

:func:`holdout` is the one stratified, group-aware holdout of vitlab: :func:`make_splits` uses
it for the test (and val) split of a data set, the linear probe and kNN for the validation split
that picks ``C`` and ``k`` (:mod:`vitlab.protocols.linear`, :mod:`vitlab.protocols.classification`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vitlab.errors import ConfigError, DataError

__all__ = ["SPLIT_NAMES", "normalise_split", "check_fractions", "make_splits", "holdout"]

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

    Each split is a :func:`holdout` with ``fallback=True`` (seed ``seed`` for test, ``seed + 1``
    for val out of the rest): ``StratifiedGroupKFold`` when groups exist (fractions are then
    approximate: whole groups move), else ``StratifiedShuffleSplit`` by label; unstratified when
    the data are too small to stratify.

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
    _, test = holdout(labels, groups, test_fraction, seed, n=n, fallback=True)
    out[test] = "test"
    if val_fraction > 0:
        rest = idx[out == "train"]
        sub_labels = labels[rest] if labels is not None else None
        sub_groups = [groups[i] for i in rest] if groups is not None else None
        _, val = holdout(sub_labels, sub_groups, val_fraction / (1 - test_fraction), seed + 1, n=len(rest),
                         fallback=True)
        out[rest[val]] = "val"
    return out.astype(str)


def holdout(labels: np.ndarray | None, groups: Sequence[str] | np.ndarray | None, fraction: float, seed: int,
            *, n: int | None = None, fallback: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Seeded holdout of about ``fraction`` of the samples: stratified by label, group-disjoint.

    * Without groups: ``StratifiedShuffleSplit(test_size=ceil(fraction * n))`` by ``labels``.
    * With groups: ``StratifiedGroupKFold(n_splits=max(2, round(1 / fraction)), shuffle=True)``,
      the first fold held out (so the fraction is approximate: whole groups move).

    ``fallback`` says what happens when the data are too small for that:

    * ``False`` (default; the probes' validation splits, where a bad split silently biases the
      choice of ``C`` or ``k``): raise a :class:`DataError` that says what is missing: a class
      with fewer than 2 samples, a split smaller than the number of classes (counting every
      class index up to ``max(labels)``), fewer groups than folds, or a class whose groups all
      fell in the held-out part. ``labels`` are required.
    * ``True`` (:func:`make_splits`' test/val splits, which must always produce a split): without
      groups, an unstratified ``train_test_split`` when a class has fewer than 2 samples or
      ``round(fraction * n)`` is below the number of classes present (or there are no labels);
      with groups, ``GroupShuffleSplit(test_size=fraction)`` when there are no labels or fewer
      groups than folds. Fewer than 2 groups is an error.

    Both settings draw identical splits whenever the data allow the stratified one.

    Args:
        labels: ``[n]`` int class indices, or ``None`` (only with ``fallback=True``).
        groups: ``[n]`` group ids (patient, slide, site, image of a patch) or ``None``.
        fraction: the fraction held out, in (0, 1).
        seed: random seed.
        n: the number of samples, needed only when there are neither labels nor groups.
        fallback: see above.

    Returns:
        ``(kept_idx, held_idx)``: integer indices into the samples, in scikit-learn's order
        (``StratifiedShuffleSplit`` permutes them; sort if order matters to you).

    Raises:
        DataError: too few samples, classes or groups (see ``fallback``), or groups of the wrong length.

    Example:
        >>> y = np.array([0, 1] * 10)
        >>> kept, held = holdout(y, None, 0.2, seed=0)
        >>> len(kept), sorted(np.bincount(y[held]).tolist())
        (16, [2, 2])
        >>> groups = np.repeat(np.arange(10), 2)
        >>> kept, held = holdout(y, groups, 0.2, seed=0)
        >>> set(groups[kept]) & set(groups[held])
        set()
    """
    from sklearn.model_selection import StratifiedShuffleSplit, train_test_split

    if labels is not None:
        labels = np.asarray(labels)
        n = labels.shape[0]
    elif groups is not None:
        n = len(groups)
    elif n is None:
        raise ConfigError("holdout needs labels, groups or n (the number of samples).")
    if labels is None and not fallback:
        raise ConfigError("a stratified holdout needs labels; pass fallback=True for an unstratified split.")
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise DataError(f"groups has shape {g.shape}, expected ({n},): one group id per sample.")
        return _group_holdout(labels, g, fraction, seed, fallback)
    zeros = np.zeros(n)
    if labels is not None:
        n_held = int(np.ceil(fraction * n))
        if fallback:
            counts = np.bincount(labels)
            counts = counts[counts > 0]
            stratify = counts.min() >= 2 and int(round(fraction * n)) >= len(counts)
        else:
            counts = np.bincount(labels)
            n_cls = counts.size
            if counts.min() < 2 or n_held < n_cls or n - n_held < n_cls:
                worst = int(np.argmin(counts))
                raise DataError(
                    f"too few samples for a stratified validation split: {n} samples, "
                    f"{n_cls} classes, val_fraction={fraction}, smallest class {worst} has "
                    f"{counts[worst]} sample(s). Each class needs >= 2 samples and the "
                    f"validation split >= {n_cls} samples; add data, raise val_fraction, or "
                    "fit a single C with fit_logistic."
                )
            stratify = True
        if stratify:
            sss = StratifiedShuffleSplit(n_splits=1, test_size=n_held, random_state=seed)
            kept, held = next(sss.split(zeros, labels))
            return kept, held
    # too small to stratify (fallback only): still seeded
    kept, held = train_test_split(np.arange(n), test_size=fraction, random_state=seed)
    return kept, held


def _group_holdout(labels: np.ndarray | None, g: np.ndarray, fraction: float, seed: int, fallback: bool
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The group-aware branch of :func:`holdout`."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    n = g.shape[0]
    n_groups = np.unique(g).size
    k = max(2, int(round(1.0 / fraction)))
    counts = None if labels is None else np.bincount(labels)
    smallest = None if counts is None else int(counts[counts > 0].min())  # StratifiedGroupKFold needs >= k per class
    if fallback:
        if n_groups < 2:
            raise DataError(f"only {n_groups} group present: a group-aware split needs at least 2 groups.")
        if labels is None or n_groups < k or smallest < k:
            return next(GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(np.zeros(n), groups=g))
    elif n_groups < k:
        raise DataError(
            f"{n_groups} group(s) cannot be split group-disjointly with "
            f"val_fraction={fraction} (needs >= {k} groups). Use more groups or "
            "a larger val_fraction."
        )
    per_class = np.unique(labels, return_counts=True)[1]
    if per_class.max() < k:  # scikit-learn would stop: "n_splits=k cannot be greater than the number of members"
        if fallback:
            return next(GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(np.zeros(n), groups=g))
        raise DataError(f"too few samples per class for a stratified group-aware validation split: {per_class.size} "
                        f"classes, the largest has {per_class.max()} sample(s), and val_fraction={fraction} needs >= "
                        f"{k} in at least one class. Use more data per class, fewer classes, or a larger val_fraction.")
    kept, held = next(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n), labels, g))
    if not fallback:
        missing = np.setdiff1d(np.unique(labels), np.unique(labels[kept]))
        if missing.size:
            raise DataError(
                f"the group-aware validation split left class(es) {missing[:10].tolist()} without "
                "training samples (all their groups fell in validation). Use a smaller "
                "val_fraction, another seed, or more groups per class."
            )
    return kept, held
