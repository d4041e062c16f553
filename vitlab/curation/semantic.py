"""Semantic near-duplicates: each item's nearest neighbours by cosine on its cached embedding.

All searching goes through :func:`vitlab.neighbors.search` (blocked and exact: memory
``O(block^2 + n k)``, never an ``n x n`` matrix). Beyond ``exact_max`` items the faiss HNSW
backend of the same function is used, and its recall against the exact search is measured on a
seeded sample of queries and reported with the result.

Example:
    >>> X = np.array([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0]])
    >>> t = neighbour_table(X, k=1)
    >>> t.indices[:, 0].tolist(), t.backend
    ([1, 0, 1], 'exact')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitlab.curation.pairs import MAX_NEIGHBOURS, PairSet, pairs_within
from vitlab.errors import ConfigError
from vitlab.neighbors import recall_at_k, search

__all__ = ["NeighbourTable", "neighbour_table", "check_threshold", "EXACT_MAX", "RECALL_SAMPLE"]

#: Above this many items the faiss backend is used (``backend="auto"``).
EXACT_MAX = 200_000
#: Queries on which an approximate search is checked against the exact one.
RECALL_SAMPLE = 1000


def check_threshold(value: Any, what: str = "threshold") -> float:
    """A cosine threshold in ``[-1, 1]`` as float, else a one-line :class:`ConfigError`.

    Example:
        >>> check_threshold(0.9)
        0.9
        >>> check_threshold(1.5)
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: threshold must be a cosine similarity in [-1, 1] (e.g. 0.95) or 'auto'; got 1.5.
    """
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a cosine similarity in [-1, 1] (e.g. 0.95) or 'auto'; got {value!r}.") from None
    if not -1.0 <= t <= 1.0:  # also rejects NaN
        raise ConfigError(f"{what} must be a cosine similarity in [-1, 1] (e.g. 0.95) or 'auto'; got {value}.")
    return t


@dataclass(frozen=True)
class NeighbourTable:
    """Each item's ``k`` nearest other items by cosine similarity.

    Attributes:
        scores: ``[n, k]`` cosine similarities, best first. indices: ``[n, k]`` neighbour rows (-1: none).
        backend: ``"exact"`` or ``"faiss"``.
        recall: for faiss, recall@k against the exact search on ``recall_queries`` sampled queries.
    """

    scores: np.ndarray
    indices: np.ndarray
    backend: str
    recall: float | None = None
    recall_queries: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def pairs(self, threshold: float) -> list[tuple[int, int, float]]:
        """Unique pairs ``(i, j, cosine)``, ``i < j``, with cosine >= ``threshold`` IN THIS TABLE (either side
        found it); items with more than ``k`` partners lose some: :meth:`all_pairs` finds every one."""
        out: dict[tuple[int, int], float] = {}
        rows, cols = np.nonzero((self.scores >= threshold) & (self.indices >= 0))
        for i, c in zip(rows.tolist(), cols.tolist()):
            j = int(self.indices[i, c])
            out[(min(i, j), max(i, j))] = float(self.scores[i, c])
        return [(a, b, s) for (a, b), s in sorted(out.items())]

    def all_pairs(self, X: np.ndarray, threshold: float, *, max_neighbours: int = MAX_NEIGHBOURS,
                  block: int = 2048) -> PairSet:
        """Every pair with cosine >= ``threshold``: this table, then a wider search (same backend) for the
        items whose ``k``-th neighbour is still above it (:func:`vitlab.curation.pairs.pairs_within`), up to
        ``max_neighbours`` partners per item (items still above at the cap are ``capped``).

        Example:
            >>> X = np.ones((10, 3)); t = neighbour_table(X, k=2)
            >>> len(t.pairs(0.99)) < 45 == len(t.all_pairs(X, 0.99))
            True
        """
        return pairs_within(X, threshold, metric="cosine", k=self.scores.shape[1], max_neighbours=max_neighbours,
                            backend=self.backend, block=block, first=(self.scores, self.indices))


def neighbour_table(X: np.ndarray, *, k: int = 16, backend: str = "auto", exact_max: int = EXACT_MAX,
                    recall_sample: int = RECALL_SAMPLE, seed: int = 0, block: int = 2048) -> NeighbourTable:
    """The ``k`` nearest other rows of every row of ``X`` by cosine similarity.

    Args:
        X: ``[n, C]`` embeddings (``n >= 2``).
        k: neighbours per item (capped at ``n - 1``); :meth:`NeighbourTable.all_pairs` widens the search
            where an item has more partners above a threshold.
        backend: ``"exact"`` (blocked), ``"faiss"`` (HNSW) or ``"auto"`` (exact up to ``exact_max`` rows).
        recall_sample: queries on which a faiss result is compared with the exact search.
        seed: seeds the recall sample.

    Example:
        >>> X = np.random.default_rng(0).normal(size=(50, 8))
        >>> neighbour_table(X, k=3).scores.shape
        (50, 3)
    """
    if backend not in ("auto", "exact", "faiss"):
        raise ConfigError(f"backend must be 'auto', 'exact' or 'faiss', got {backend!r}.")
    n = len(X)
    if n < 2:
        raise ConfigError(f"near-duplicate search needs at least 2 items, got {n}.")
    k = int(min(k, n - 1))
    use = backend if backend != "auto" else ("exact" if n <= exact_max else "faiss")
    nb = search(X, X, k=k, metric="cosine", exclude_self=True, backend=use, block=block)
    if use == "exact":
        return NeighbourTable(nb.scores, nb.indices, "exact")
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(n, size=min(recall_sample, n), replace=False))
    exact = _exact_rows(X, q, k, block)
    return NeighbourTable(nb.scores, nb.indices, "faiss", recall_at_k(nb.indices[q], exact), len(q))


def _exact_rows(X: np.ndarray, rows: np.ndarray, k: int, block: int) -> np.ndarray:
    """Exact neighbour indices ``[len(rows), k]`` of the chosen rows against all of ``X``, self excluded."""
    nb = search(X[rows], X, k=k + 1, metric="cosine", block=block)
    out = np.full((len(rows), k), -1, np.int64)
    for r, (row, idx) in enumerate(zip(rows, nb.indices)):
        keep = idx[idx != row][:k]
        out[r, :len(keep)] = keep
    return out
