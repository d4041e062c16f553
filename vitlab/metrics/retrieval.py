"""Retrieval metrics from ranked relevance: per-query values, so CIs can resample queries.

Every function takes ``rel [m, L]``: for each of ``m`` queries, whether the gallery item
ranked ``1..L`` is relevant (best first, ties already broken: see
:mod:`vitlab.neighbors`), and ``n_rel [m]``: how many relevant items the gallery holds
for that query (self-matches excluded). They return ``[m]`` float64 per-query values;
the reported metric is their mean.

Definitions (binary relevance, ``R = n_rel``):

- ``recall@k``: 1 if at least one relevant item is in the top ``k``, else 0: the
  metric-learning convention (Musgrave et al., "A Metric Learning Reality Check", 2020;
  DINOv2's and most image-retrieval papers' Recall@K). ``precision@k``: relevant items in
  the top ``k`` divided by ``k``.
- ``ap`` (average precision): ``(1/R) * sum_{i: rel_i} P@i`` over the full ranking;
  ``map`` is its mean over queries. Equal to scikit-learn's ``average_precision_score``
  on one query's scores when they have no ties.
- ``ap@r``: ``(1/R) * sum_{i=1..R} P@i * rel_i`` (Musgrave et al.'s MAP@R).
- ``ndcg@k``: ``DCG@k / IDCG@k`` with gains ``rel_i`` and discounts ``1 / log2(i + 1)``;
  ``IDCG@k`` puts ``min(R, k)`` relevant items first. Equal to scikit-learn's
  ``ndcg_score(..., k=k)`` on untied scores.

A query with no relevant item in the gallery has undefined AP, recall and nDCG; callers
refuse such queries with a clear error (see :func:`check_relevance`).

Example:
    >>> rel = np.array([[True, False, True, False]]); n_rel = np.array([2])
    >>> recall_at_k(rel, 1), precision_at_k(rel, 2), average_precision(rel, n_rel)
    (array([1.]), array([0.5]), array([0.83333333]))
"""

from __future__ import annotations

import numpy as np

from vitlab.errors import ConfigError, DataError

__all__ = ["recall_at_k", "precision_at_k", "average_precision", "ap_at_r", "ndcg_at_k", "check_relevance",
           "retrieval_metrics"]


def check_relevance(rel: np.ndarray, n_rel: np.ndarray, query_ids: list[str] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``rel [m, L]`` (bool) and ``n_rel [m]``; refuse queries without a relevant item.

    Raises:
        DataError: shapes disagree, or a query has no relevant gallery item (named).

    Example:
        >>> check_relevance(np.array([[True]]), np.array([1]))[1].tolist()
        [1]
    """
    rel = np.asarray(rel, dtype=bool)
    n_rel = np.asarray(n_rel, dtype=np.int64)
    if rel.ndim != 2 or n_rel.shape != (rel.shape[0],):
        raise DataError(f"rel must be [m, L] and n_rel [m]; got {rel.shape} and {n_rel.shape}.")
    if (rel.sum(1) > n_rel).any():
        raise DataError("rel has more relevant items in a ranking than n_rel says the gallery holds.")
    empty = np.flatnonzero(n_rel == 0)
    if empty.size:
        who = (query_ids[empty[0]] if query_ids is not None else f"row {empty[0]}")
        raise DataError(f"{empty.size} query(ies) have no relevant item in the gallery (first: {who}), so "
                        "recall and AP are undefined for them. Add gallery items of their class, list their "
                        "positives explicitly, or drop those queries.")
    return rel, n_rel


def _check_k(k: int, length: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}.")
    if k > length:
        raise ConfigError(f"k={k} is larger than the ranking length {length}; rank at least k items.")
    return int(k)


def recall_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """``[m]`` 1.0 where a relevant item is in the top ``k`` (hit rate), else 0.0.

    Example:
        >>> recall_at_k(np.array([[False, True], [False, False]]), 2).tolist()
        [1.0, 0.0]
    """
    rel = np.asarray(rel, dtype=bool)
    k = _check_k(k, rel.shape[1])
    return rel[:, :k].any(1).astype(np.float64)


def precision_at_k(rel: np.ndarray, k: int) -> np.ndarray:
    """``[m]`` fraction of the top ``k`` that is relevant.

    Example:
        >>> precision_at_k(np.array([[True, False, True]]), 3).round(4).tolist()
        [0.6667]
    """
    rel = np.asarray(rel, dtype=bool)
    k = _check_k(k, rel.shape[1])
    return rel[:, :k].sum(1) / float(k)


def average_precision(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """``[m]`` average precision over the ranking (exact when it holds every relevant item).

    Example:
        >>> average_precision(np.array([[False, True, True]]), np.array([2])).round(4).tolist()
        [0.5833]
    """
    rel = np.asarray(rel, dtype=bool)
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    return (np.where(rel, hits / ranks, 0.0).sum(1) / np.asarray(n_rel, dtype=np.float64))


def ap_at_r(rel: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    """``[m]`` MAP@R's per-query term: precision at each relevant rank within the first ``R``.

    Example:
        >>> ap_at_r(np.array([[True, False, True]]), np.array([2])).tolist()
        [0.5]
    """
    rel = np.asarray(rel, dtype=bool)
    n_rel = np.asarray(n_rel, dtype=np.int64)
    if (n_rel > rel.shape[1]).any():
        raise ConfigError(f"ap@r needs the first R items ranked; a query has R={int(n_rel.max())} relevant items "
                          f"but the ranking holds {rel.shape[1]}.")
    hits = np.cumsum(rel, axis=1)
    ranks = np.arange(1, rel.shape[1] + 1)
    within = ranks[None, :] <= n_rel[:, None]
    return np.where(rel & within, hits / ranks, 0.0).sum(1) / n_rel.astype(np.float64)


def ndcg_at_k(rel: np.ndarray, n_rel: np.ndarray, k: int) -> np.ndarray:
    """``[m]`` normalised discounted cumulative gain of the top ``k`` (binary gains).

    Example:
        >>> ndcg_at_k(np.array([[False, True]]), np.array([1]), 2).round(4).tolist()
        [0.6309]
    """
    rel = np.asarray(rel, dtype=bool)
    k = _check_k(k, rel.shape[1])
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (rel[:, :k] * disc).sum(1)
    ideal = np.cumsum(disc)[np.minimum(np.asarray(n_rel), k) - 1]
    return dcg / ideal


def retrieval_metrics(rel: np.ndarray, n_rel: np.ndarray, ks: tuple[int, ...] = (1, 5, 10),
                      full_ranking: bool = True) -> dict[str, np.ndarray]:
    """Per-query values of every retrieval metric: ``{name: [m]}``.

    Names: ``recall@k`` and ``precision@k`` and ``ndcg@k`` for each ``k`` in ``ks`` that the
    ranking can hold, and, with ``full_ranking`` (the ranking holds the whole gallery),
    ``map`` and ``map@r``.

    Example:
        >>> sorted(retrieval_metrics(np.array([[True, False]]), np.array([1]), ks=(1,)))
        ['map', 'map@r', 'ndcg@1', 'precision@1', 'recall@1']
    """
    rel, n_rel = check_relevance(rel, n_rel)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        if k <= rel.shape[1]:
            out[f"recall@{k}"] = recall_at_k(rel, k)
            out[f"precision@{k}"] = precision_at_k(rel, k)
            out[f"ndcg@{k}"] = ndcg_at_k(rel, n_rel, k)
    if full_ranking:
        out["map"] = average_precision(rel, n_rel)
        out["map@r"] = ap_at_r(rel, n_rel)
    return out
