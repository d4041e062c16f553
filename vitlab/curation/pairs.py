"""Every pair of rows scoring at or above a threshold, not only those among each row's first ``k`` neighbours.

A top-``k`` table misses pairs: in a group of 20 identical images each image lists only ``k`` of its 19
copies. :func:`pairs_within` searches ``k`` neighbours per row with :func:`vitlab.neighbors.search`,
then searches again, with twice the ``k``, only the rows whose last neighbour still scores at or above
the threshold (there may be more), until no row is *saturated* or ``max_neighbours`` is reached. The
rows still saturated at the cap are returned (``capped``) so the caller can warn and record them.
Built on the one neighbour search of vitlab (no range-search primitive exists there yet).

Example:
    >>> X = np.ones((20, 4))   # 20 identical rows: 190 pairs, found with k=4
    >>> p = pairs_within(X, 0.99, k=4)
    >>> len(p), p.capped.size
    (190, 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitlab.errors import ConfigError
from vitlab.neighbors import search

__all__ = ["PairSet", "pairs_within", "MAX_NEIGHBOURS"]

#: Default cap on the partners searched per row (a row with more is recorded as capped).
MAX_NEIGHBOURS = 1024


@dataclass(frozen=True)
class PairSet:
    """Pairs ``i < j`` with ``score >= threshold``, sorted by ``(i, j)``.

    Attributes:
        i, j: ``[p]`` int64 rows. score: ``[p]`` float64 (the larger of the two directions found).
        threshold: the threshold. capped: rows that still had partners at or above it at ``max_neighbours``
            (their pairs beyond the cap are missing). max_neighbours: the cap. k_used: the largest ``k`` searched.
    """

    i: np.ndarray
    j: np.ndarray
    score: np.ndarray
    threshold: float
    capped: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    max_neighbours: int = MAX_NEIGHBOURS
    k_used: int = 0

    def __len__(self) -> int:
        return int(len(self.i))

    def tuples(self) -> list[tuple[int, int, float]]:
        """``[(i, j, score)]`` as Python numbers."""
        return list(zip(self.i.tolist(), self.j.tolist(), self.score.tolist()))


def _collect(rows: np.ndarray, idx: np.ndarray, sc: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    ok = (idx >= 0) & (sc >= threshold) & (idx != rows[:, None])
    r, c = np.nonzero(ok)
    a, b = rows[r], idx[r, c]
    return np.minimum(a, b), np.maximum(a, b), sc[r, c].astype(np.float64)


def pairs_within(X: Any, threshold: float, *, metric: str = "cosine", k: int = 16,
                 max_neighbours: int = MAX_NEIGHBOURS, backend: str = "exact", block: int = 2048,
                 first: tuple[np.ndarray, np.ndarray] | None = None) -> PairSet:
    """All pairs of rows of ``X`` whose similarity is ``>= threshold``.

    Args:
        X: ``[n, d]`` rows.
        threshold: the smallest score kept (cosine, or inner product with ``metric="ip"``).
        metric: ``"cosine"`` or ``"ip"`` (higher is more similar).
        k: neighbours per row in the first search (doubled for saturated rows).
        max_neighbours: the most partners searched per row.
        backend: ``"exact"`` or ``"faiss"`` (:func:`vitlab.neighbors.search`).
        first: an existing ``(scores [n, k0], indices [n, k0])`` self-excluded table of every row, used
            as the first round instead of searching again.

    Returns:
        :class:`PairSet`.

    Example:
        >>> X = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0]])
        >>> pairs_within(X, 0.9, k=1).tuples()
        [(0, 1, 0.9949...)]
    """
    if metric not in ("cosine", "ip"):
        raise ConfigError(f"pairs_within: metric must be 'cosine' or 'ip', got {metric!r}.")
    if k < 1 or max_neighbours < 1:
        raise ConfigError(f"k and max_neighbours must be >= 1, got {k} and {max_neighbours}.")
    X = np.asarray(X)
    n = len(X)
    empty = np.zeros(0, np.int64)
    if n < 2:
        return PairSet(empty, empty, np.zeros(0), float(threshold), empty, max_neighbours, 0)
    cap = min(max_neighbours, n - 1)
    kk = min(k, cap)
    rows = np.arange(n)
    if first is not None:
        sc, idx = np.asarray(first[0]), np.asarray(first[1])
        kk = sc.shape[1]
    else:
        nb = search(X, X, k=kk, metric=metric, exclude_self=True, backend=backend, block=block)
        sc, idx = nb.scores, nb.indices
    parts = [_collect(rows, idx, sc, threshold)]
    sat = rows[(sc[:, -1] >= threshold) & (idx[:, -1] >= 0)] if kk < n - 1 else empty
    while sat.size and kk < cap:
        kk = min(2 * kk, cap)
        nb = search(X[sat], X, k=min(kk + 1, n), metric=metric, backend=backend, block=block)
        idx, sc = nb.indices, nb.scores
        keep = idx != sat[:, None]
        # drop each row's own index (where it appears) and keep the first kk others
        order = np.argsort(~keep, axis=1, kind="stable")[:, :kk]
        idx, sc = np.take_along_axis(idx, order, 1), np.take_along_axis(sc, order, 1)
        parts.append(_collect(sat, idx, sc, threshold))
        sat = sat[(sc[:, -1] >= threshold) & (idx[:, -1] >= 0)] if kk < n - 1 else empty
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    s = np.concatenate([p[2] for p in parts])
    if a.size:
        o = np.lexsort((-s, b, a))  # by (i, j), the larger score first
        a, b, s = a[o], b[o], s[o]
        first_of = np.ones(len(a), bool)
        first_of[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
        a, b, s = a[first_of], b[first_of], s[first_of]
    return PairSet(a.astype(np.int64), b.astype(np.int64), s, float(threshold), np.sort(sat).astype(np.int64),
                   max_neighbours, int(kk))
