"""Leakage across splits: test items with a near-copy in train, groups that cross splits, and what
removing them does to the evaluation.

The split is the one ``vitlab eval`` uses (:meth:`vitlab.store.Embeddings.splits`: the source's
split column, else the seeded, stratified, group-aware :func:`vitlab.data.splits.make_splits`),
train meaning every non-test row (train and val), as in :func:`vitlab.evaluate`. Each test item's
nearest train item comes from :func:`vitlab.neighbors.search` (cosine, exact, blocked).

The effect on a classification result is a paired bootstrap (:func:`vitlab.stats.paired.paired_bootstrap`)
over the FULL test set: on each resample, top-1 on the resampled clean items (not leaked) minus top-1
on all resampled items, so the difference "clean - full" carries the same draws on both sides.

Example:
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.01], [0.6, 0.8]])
    >>> res = find_leaks(X, np.array(["train", "train", "test", "test"]), 0.99, ids=list("abcd"))
    >>> res.leaked.tolist(), res.pairs[0]["test_id"], res.pairs[0]["train_id"]
    ([True, False], 'c', 'a')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitlab.errors import DataError
from vitlab.neighbors import search

__all__ = ["Leakage", "find_leaks", "crossing_groups", "clean_vs_full", "check_has_splits", "exclude_leaked",
           "cross_split_duplicates", "leak_effect"]


@dataclass(frozen=True)
class Leakage:
    """Leaked test items of one split.

    Attributes:
        test_rows: ``[m]`` rows (of the embeddings) in the test split; train_rows likewise for train + val.
        nearest: ``[m]`` row of each test item's nearest train item; similarity: ``[m]`` its cosine.
        near_dup: ``[m]`` bool, similarity >= threshold. in_crossing_group: ``[m]`` bool, the item's
            group also has train rows. leaked: ``near_dup | in_crossing_group``.
        pairs: ``{"test_id", "train_id", "similarity", ...}`` of the near-duplicate test items, most similar first.
        groups: groups with rows in more than one split, ``{"group", "splits": {split: count}}``.
    """

    threshold: float | None
    test_rows: np.ndarray
    train_rows: np.ndarray
    nearest: np.ndarray
    similarity: np.ndarray
    near_dup: np.ndarray
    in_crossing_group: np.ndarray
    pairs: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def leaked(self) -> np.ndarray:
        return self.near_dup | self.in_crossing_group

    def summary(self, max_pairs: int = 50) -> dict[str, Any]:
        """JSON-ready summary (the ``max_pairs`` most similar pairs)."""
        return {"threshold": self.threshold, "n_test": int(len(self.test_rows)), "n_train": int(len(self.train_rows)),
                "n_near_duplicate": int(self.near_dup.sum()), "n_in_crossing_group": int(self.in_crossing_group.sum()),
                "n_leaked": int(self.leaked.sum()),
                "fraction_leaked": float(self.leaked.mean()) if len(self.leaked) else 0.0,
                "pairs": self.pairs[:max_pairs], "crossing_groups": self.groups[:max_pairs],
                "n_crossing_groups": len(self.groups),
                "nearest_similarity": np.round(self.similarity, 5).tolist()}


def check_has_splits(uri: str, has_split_column: bool, has_labels: bool, has_groups: bool) -> None:
    """Leakage needs the split ``eval`` would use: a split column, or labels / groups to draw the seeded split.

    Raises:
        DataError: none of them (one line naming the fix).

    Example:
        >>> check_has_splits("folder:x", False, False, False)
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: folder:x has no splits to check for leakage (no split column, no labels or groups for the seeded split eval would draw). Use a csv: manifest with a split column (path,label,split) or labelled class folders, or run without --leakage.
    """
    if not (has_split_column or has_labels or has_groups):
        raise DataError(f"{uri} has no splits to check for leakage (no split column, no labels or groups for the "
                        "seeded split eval would draw). Use a csv: manifest with a split column "
                        "(path,label,split) or labelled class folders, or run without --leakage.")


def crossing_groups(groups: np.ndarray | list[str] | None, split: np.ndarray) -> list[dict[str, Any]]:
    """Groups (patients, slides, sites) with rows in more than one split.

    Example:
        >>> crossing_groups(["p1", "p1", "p2"], np.array(["train", "test", "test"]))
        [{'group': 'p1', 'splits': {'test': 1, 'train': 1}}]
    """
    if groups is None:
        return []
    g = np.asarray(groups, dtype=object)
    out = []
    for name in sorted(set(g.tolist()), key=str):
        s, c = np.unique(split[g == name], return_counts=True)
        if len(s) > 1:
            out.append({"group": str(name), "splits": {str(a): int(b) for a, b in zip(s, c)}})
    return out


def find_leaks(X: np.ndarray, split: np.ndarray, threshold: float | None, *, ids: list[str],
               groups: np.ndarray | list[str] | None = None, labels: np.ndarray | None = None,
               block: int = 2048) -> Leakage:
    """Test items whose nearest train item has cosine >= ``threshold``, and test items of groups that cross.

    Args:
        X: ``[n, C]`` embeddings; split: ``[n]`` split names (``test`` vs the rest); ids: ``[n]`` ids.
        threshold: cosine in ``[-1, 1]``; ``None``: no semantic near-duplicates (only groups crossing splits),
            e.g. when the ``auto`` calibration found no threshold separating copies from random pairs.
        groups: ``[n]`` group ids or ``None``; labels: ``[n]`` labels (recorded with each pair) or ``None``.

    Raises:
        DataError: the split has no test or no train rows.
    """
    split = np.asarray(split).astype(str)
    te, tr = np.flatnonzero(split == "test"), np.flatnonzero(split != "test")
    if not len(te) or not len(tr):
        raise DataError(f"the split has {len(tr)} train and {len(te)} test rows; leakage needs both. "
                        "Check the split column or test_fraction.")
    nb = search(X[te], X[tr], k=1, metric="cosine", block=block)
    sim, nearest = nb.scores[:, 0].astype(np.float64), tr[nb.indices[:, 0]]
    near = sim >= threshold if threshold is not None else np.zeros(len(te), bool)
    cross = crossing_groups(groups, split)
    in_cross = np.zeros(len(te), bool)
    if cross:
        bad = {c["group"] for c in cross}
        g = np.asarray(groups, dtype=object)
        in_cross = np.array([str(g[r]) in bad for r in te], bool)
    pairs = []
    for i in np.flatnonzero(near)[np.argsort(-sim[near], kind="stable")]:
        p = {"test_id": ids[te[i]], "train_id": ids[nearest[i]], "similarity": float(sim[i]),
             "test_row": int(te[i]), "train_row": int(nearest[i])}
        if labels is not None:
            p.update(test_label=int(labels[te[i]]), train_label=int(labels[nearest[i]]))
        pairs.append(p)
    return Leakage(None if threshold is None else float(threshold), te, tr, nearest, sim, near, in_cross, pairs, cross)


def clean_vs_full(y: np.ndarray, proba: np.ndarray, leaked: np.ndarray, *, groups: np.ndarray | None = None,
                  n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Top-1 without the leaked test items, paired against top-1 on the full test set.

    Both sides are computed on the same bootstrap draws of the full test set
    (:func:`~vitlab.stats.paired.paired_bootstrap`): the "clean" side scores only the drawn items
    that are not leaked. A resample with no clean item is undefined and skipped (counted).

    Args:
        y: ``[m]`` labels; proba: ``[m, C]`` probabilities; leaked: ``[m]`` bool.
        groups: ``[m]`` bootstrap clusters or ``None``.

    Returns:
        ``{"metric", "n_test", "n_leaked", "full", "clean", "diff", "low", "high", "p_bootstrap"}``;
        ``full`` and ``clean`` are interval entries (:meth:`~vitlab.stats.interval.Interval.to_entry`),
        ``diff = clean - full`` with its percentile CI.

    Example:
        >>> y = np.array([0, 1] * 50); p = np.eye(2)[y]; p[:10] = p[:10, ::-1]
        >>> leaked = np.zeros(100, bool); leaked[50:60] = True
        >>> r = clean_vs_full(y, p, leaked, n_resamples=200)
        >>> round(r["full"]["value"], 3), round(r["clean"]["value"], 3), round(r["diff"], 4)
        (0.9, 0.889, -0.0111)
    """
    from vitlab.metrics.classification import top1
    from vitlab.stats.bootstrap import bootstrap_ci
    from vitlab.stats.paired import paired_bootstrap

    y, proba, leaked = np.asarray(y), np.asarray(proba, np.float64), np.asarray(leaked, bool)
    if leaked.all():
        raise DataError(f"all {len(y)} test items are leaked; nothing is left to evaluate without them. "
                        "Check the threshold (it may be too low).")

    def masked_top1(yy: np.ndarray, s: np.ndarray) -> float:
        keep = s[:, -1] == 0
        return float(top1(yy[keep], s[keep, :-1])) if keep.any() else float("nan")

    full_s = np.concatenate([proba, np.zeros((len(y), 1))], 1)
    clean_s = np.concatenate([proba, leaked[:, None].astype(np.float64)], 1)
    boot = paired_bootstrap(masked_top1, y, clean_s, full_s, n_resamples=n_resamples, seed=seed, groups=groups)
    keep = ~leaked
    g_clean = None if groups is None else np.asarray(groups)[keep]
    if g_clean is not None and len(np.unique(g_clean)) < 2:
        g_clean = None
    full = bootstrap_ci(top1, y, proba, n_resamples=n_resamples, seed=seed, groups=groups).to_entry()
    clean = bootstrap_ci(top1, y[keep], proba[keep], n_resamples=n_resamples, seed=seed, groups=g_clean).to_entry()
    return {"metric": "top1", "n_test": int(len(y)), "n_leaked": int(leaked.sum()), "full": full, "clean": clean,
            "diff": boot.diff, "low": boot.low, "high": boot.high, "p_bootstrap": boot.p_value,
            "n_resamples": boot.n_resamples, "n_skipped": boot.n_skipped}


def exclude_leaked(results: dict[str, Any], X: np.ndarray, split: np.ndarray, ids: list[str], threshold: float,
                   *, groups: Any = None, labels: np.ndarray | None = None, n_resamples: int = 1000, seed: int = 0
                   ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """What ``vitlab eval --exclude-leaked`` adds: the leakage of the split and, per classification
    protocol, :func:`clean_vs_full` on its test outputs.

    Args:
        results: protocol label -> :class:`~vitlab.protocols.base.Result` on the test split.
        X, split, ids, groups, labels: the eval's pooled embeddings ``[n, C]`` and row metadata.
        threshold: cosine threshold in ``[-1, 1]`` (already calibrated when ``auto`` was asked).

    Returns:
        ``(leakage_summary, {protocol: clean_vs_full(...)})``; protocols of other tasks are left out.

    Example:
        >>> summary, per = exclude_leaked(res.results, X, split, ids, 0.99)  # doctest: +SKIP
        >>> per["knn"]["diff"], per["knn"]["low"], per["knn"]["high"]  # doctest: +SKIP
        (-0.019, -0.025, -0.013)
    """
    leak = find_leaks(X, split, threshold, ids=ids, groups=groups, labels=labels)
    leaked_ids = {ids[r] for r, bad in zip(leak.test_rows, leak.leaked) if bad}
    per: dict[str, dict[str, Any]] = {}
    for name, res in results.items():
        if res.task != "classification":
            continue
        mask = np.array([u in leaked_ids for u in res.units], bool)
        if not mask.any():
            per[name] = {"metric": "top1", "n_test": len(mask), "n_leaked": 0,
                         "note": "no leaked test items: nothing to remove"}
            continue
        g = res.groups if res.groups is not None and len(np.unique(res.groups)) >= 2 else None
        per[name] = clean_vs_full(res.outputs["y"], res.outputs["proba"], mask, groups=g,
                                  n_resamples=n_resamples, seed=seed)
    summary = leak.summary()
    summary.pop("nearest_similarity")
    return summary, per


def cross_split_duplicates(ex: list[list[int]], pp: list[tuple[int, int, int]], split: np.ndarray, ids: list[str],
                           max_listed: int = 200) -> dict[str, Any]:
    """Exact-duplicate groups and perceptual pairs with members on both sides of the split (test vs the rest).

    Example:
        >>> r = cross_split_duplicates([[0, 1]], [(0, 2, 3)], np.array(["train", "test", "train"]), list("abc"))
        >>> r["exact_cross_split"]["n_groups"], r["perceptual_cross_split"]["n_pairs"]
        (1, 0)
    """
    te = np.asarray(split) == "test"
    ex_x = [g for g in ex if te[g].any() and (~te[g]).any()]
    pp_x = [(a, b, d) for a, b, d in pp if te[a] != te[b]]
    return {"exact_cross_split": {"n_groups": len(ex_x), "n_test_items": int(sum(te[g].sum() for g in ex_x)),
                                  "groups": [[ids[r] for r in g] for g in ex_x[:max_listed]]},
            "perceptual_cross_split": {"n_pairs": len(pp_x), "n_test_items": len({a if te[a] else b for a, b, _ in pp_x}),
                                       "pairs": [{"a": ids[a], "b": ids[b], "distance": d}
                                                 for a, b, d in pp_x[:max_listed]]}}


def leak_effect(proto: Any, X: np.ndarray, emb: Any, split: np.ndarray, leak: Leakage, seed: int, n_resamples: int
                ) -> dict[str, Any]:
    """The protocol on the split, then top-1 without the leaked test items paired against the full test set."""
    from vitlab.protocols.base import Split

    y = emb.labels
    g = np.asarray(emb.groups) if emb.groups is not None else None
    tr, te = leak.train_rows, leak.test_rows
    if len(np.unique(y[tr])) < 2:
        return {"skipped": "fewer than 2 classes in train"}
    ids = list(emb.ids)

    def side(rows: np.ndarray) -> Split:
        return Split(X[rows], y[rows], rows, None if g is None else g[rows], [ids[i] for i in rows])

    res = proto.run(side(tr), side(te), seed=seed, n_classes=len(emb.classes))
    if not leak.leaked.any():
        return {"protocol": proto.label, "n_leaked": 0, "note": "no leaked test items: nothing to remove"}
    if leak.leaked.all():  # the rest of the report still stands: say so instead of failing the whole run
        return {"protocol": proto.label, "n_leaked": int(leak.leaked.sum()),
                "note": "every test item is leaked at this threshold: nothing is left to evaluate (threshold too low?)"}
    groups = res.groups if res.groups is not None and len(np.unique(res.groups)) >= 2 else None
    out = clean_vs_full(res.outputs["y"], res.outputs["proba"], leak.leaked, groups=groups,
                        n_resamples=n_resamples, seed=seed)
    return {"protocol": proto.label, **out}
