"""Duplicate groups that do not chain: star clusters around a representative, and the keep rule.

Connected components of a "similarity >= t" graph chain: A~B and B~C put A and C together even
when A and C are far apart (fastdup's 0.97 components hold 0.82 pairs). A *star* cluster instead
joins an item only to a centre it is itself similar to: the item with the most neighbours above
``t`` becomes a centre, takes all its still-unassigned neighbours above ``t``, and so on (ties to
the smaller index). Every member is within ``t`` of its centre, so any two members are at least
``cos(2 arccos t)`` apart; the minimum internal similarity of each group is computed exactly and
reported.

Keep rule (SemDeDup, Abbas et al. 2023, Sec. 3): from each group keep ONE item, the one with the
lowest cosine similarity to the centroid (the least prototypical), and remove the others. The
paper's centroid is its k-means cluster's; here it is the mean of the normalised embeddings of the
whole data set (no k-means is run). Written here because no maintained library offers star
clustering over a top-k neighbour table.

Example:
    >>> X = np.array([[1.0, 0.0], [0.999, 0.04], [0.0, 1.0], [0.03, 1.0]])
    >>> idx = np.array([[1], [0], [3], [2]]); sim = np.array([[0.999], [0.999], [0.9995], [0.9995]])
    >>> [g.members for g in star_clusters(idx, sim, 0.99, X)]
    [[0, 1], [2, 3]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["Group", "star_clusters", "removed_rows", "removal_curve"]


@dataclass(frozen=True)
class Group:
    """One duplicate group.

    Attributes:
        centre: the star's centre row. members: rows, sorted (centre included).
        keep: the row kept (SemDeDup rule). min_similarity: smallest cosine between any two members.
        min_to_centre: smallest cosine of a member to the centre (>= the threshold).
    """

    centre: int
    members: list[int]
    keep: int
    min_similarity: float
    min_to_centre: float


def _graph(indices: np.ndarray, scores: np.ndarray, threshold: float, n: int) -> sp.csr_matrix:
    ok = (indices >= 0) & (scores >= threshold)
    r, c = np.nonzero(ok)
    j = indices[r, c]
    s = scores[r, c].astype(np.float64)
    a = sp.coo_matrix((np.concatenate([s, s]), (np.concatenate([r, j]), np.concatenate([j, r]))), shape=(n, n))
    a = a.tocsr()
    a.sum_duplicates()
    a.data[:] = 1.0  # duplicates summed: only the pattern matters
    return a


def _normalise(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def star_clusters(indices: np.ndarray, scores: np.ndarray, threshold: float, X: np.ndarray,
                  centroid: np.ndarray | None = None) -> list[Group]:
    """Star clusters of the pairs with cosine >= ``threshold`` in a neighbour table.

    Args:
        indices, scores: ``[n, k]`` neighbour rows and cosine similarities (:class:`NeighbourTable`).
        threshold: cosine similarity in ``[-1, 1]``.
        X: ``[n, C]`` embeddings (for the exact within-group similarities and the keep rule).
        centroid: ``[C]`` centroid of the keep rule (default: mean of the normalised rows).

    Returns:
        Groups of >= 2 members, in the order their centres were chosen.

    Example:
        >>> X = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
        >>> g = star_clusters(np.array([[1], [0], [0]]), np.array([[1.0], [1.0], [0.0]]), 0.99, X)
        >>> [(x.members, x.centre) for x in g]
        [([0, 1], 0)]
    """
    n = len(X)
    g = _graph(indices, scores, threshold, n)
    deg = np.diff(g.indptr)
    Xn = _normalise(X)
    c = _normalise((Xn.mean(0) if centroid is None else np.asarray(centroid, np.float64))[None])[0]
    to_c = Xn @ c
    assigned = np.zeros(n, bool)
    out: list[Group] = []
    for i in np.argsort(-deg, kind="stable"):
        if deg[i] == 0:
            break
        if assigned[i]:
            continue
        nbrs = g.indices[g.indptr[i]:g.indptr[i + 1]]
        # the graph holds pairs found from either side: keep those really above t from the centre
        nbrs = nbrs[~assigned[nbrs]]
        sims = Xn[nbrs] @ Xn[i]
        nbrs = nbrs[sims >= threshold - 1e-6]
        if not len(nbrs):
            continue
        members = np.sort(np.concatenate([[i], nbrs]))
        assigned[members] = True
        gram = Xn[members] @ Xn[members].T
        keep = int(members[np.argmin(to_c[members])])  # argmin: ties to the smaller row
        out.append(Group(int(i), members.tolist(), keep, float(gram.min()),
                         float((Xn[members] @ Xn[i]).min())))
    return out


def removed_rows(groups: Sequence[Group]) -> np.ndarray:
    """Rows removed by the keep rule (every member but the kept one), sorted.

    Example:
        >>> removed_rows([Group(0, [0, 1, 2], 1, 0.9, 0.95)]).tolist()
        [0, 2]
    """
    rows = [m for g in groups for m in g.members if m != g.keep]
    return np.asarray(sorted(rows), dtype=np.int64)


def removal_curve(indices: np.ndarray, scores: np.ndarray, X: np.ndarray, thresholds: Sequence[float]
                  ) -> list[dict[str, float]]:
    """Fraction of items removed by star clustering + keep rule at each threshold.

    Example:
        >>> X = np.array([[1.0, 0.0], [0.999, 0.04], [0.0, 1.0]])
        >>> idx = np.array([[1], [0], [1]]); sim = X @ X[[1, 0, 1]].T
        >>> [c["removed"] for c in removal_curve(idx, np.diag(sim)[:, None], X, [0.5, 0.99])]
        [1, 1]
    """
    n = len(X)
    out = []
    for t in thresholds:
        groups = star_clusters(indices, scores, float(t), X)
        r = sum(len(g.members) - 1 for g in groups)
        out.append({"threshold": float(t), "removed": int(r), "fraction": r / n, "groups": len(groups)})
    return out
