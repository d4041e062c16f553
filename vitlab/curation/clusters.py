"""Duplicate groups whose members are all near each other (cliques), and the keep rule.

Connected components of a "similarity >= t" graph chain: A~B and B~C put A and C together even
when A and C are far apart (fastdup's 0.97 components hold 0.82 pairs). A star around a centre
chains too (two members of a star can be ``cos(2 arccos t)`` apart: 0.46 in a group of issue 20).
Here a group is a *clique*: the item with the most partners above ``t`` starts a group, its
still-unassigned partners are tried from the most similar to the least, and each joins only when
its cosine to EVERY member already in the group is ``>= t`` (checked exactly, in float64, on the
embeddings). So every pair of members of a group clears the threshold (complete linkage), and the
minimum internal similarity reported is ``>= t``. Ties go to the smaller row.

Keep rule (SemDeDup, Abbas et al. 2023, Sec. 3): from each group keep ONE item, the one with the
lowest cosine similarity to the centroid (the least prototypical), and remove the others. The
paper's centroid is its k-means cluster's; here it is the mean of the normalised embeddings of the
whole data set (no k-means is run). Written here because no maintained library offers greedy
clique grouping over a sparse pair list.

Example:
    >>> X = np.array([[1.0, 0.0], [0.999, 0.04], [0.0, 1.0], [0.03, 1.0]])
    >>> [g.members for g in clique_groups(np.array([0, 2]), np.array([1, 3]), 0.99, X)]
    [[0, 1], [2, 3]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["Group", "clique_groups", "removed_rows", "removal_curve"]


@dataclass(frozen=True)
class Group:
    """One duplicate group.

    Attributes:
        centre: the row that started the group. members: rows, sorted (centre included).
        keep: the row kept (SemDeDup rule). min_similarity: smallest cosine between any two members
            (``>= threshold``). min_to_centre: smallest cosine of a member to the centre.
    """

    centre: int
    members: list[int]
    keep: int
    min_similarity: float
    min_to_centre: float


def _normalise(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def clique_groups(i: np.ndarray, j: np.ndarray, threshold: float, X: np.ndarray,
                  centroid: np.ndarray | None = None) -> list[Group]:
    """Groups of rows, every two of them with cosine ``>= threshold``, from the pairs ``(i, j)`` above it.

    Args:
        i, j: ``[p]`` rows of the candidate pairs (:class:`vitlab.curation.pairs.PairSet`); their cosine is
            recomputed exactly, so a pair found slightly above ``threshold`` in float32 may not join.
        threshold: cosine similarity in ``[-1, 1]``.
        X: ``[n, C]`` embeddings (for the exact similarities and the keep rule).
        centroid: ``[C]`` centroid of the keep rule (default: mean of the normalised rows).

    Returns:
        Groups of >= 2 members, in the order they were started.

    Example:
        >>> ang = np.deg2rad([0, 10, 20])   # 0~10 and 10~20 are above cos(12 deg), 0~20 is not
        >>> X = np.c_[np.cos(ang), np.sin(ang)]
        >>> [g.members for g in clique_groups(np.array([0, 1]), np.array([1, 2]), np.cos(np.deg2rad(12)), X)]
        [[0, 1]]
    """
    n = len(X)
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    g = sp.coo_matrix((np.ones(2 * len(i)), (np.concatenate([i, j]), np.concatenate([j, i]))), shape=(n, n)).tocsr()
    g.sum_duplicates()
    deg = np.diff(g.indptr)
    Xn = _normalise(X)
    c = _normalise((Xn.mean(0) if centroid is None else np.asarray(centroid, np.float64))[None])[0]
    to_c = Xn @ c
    assigned = np.zeros(n, bool)
    out: list[Group] = []
    for r in np.argsort(-deg, kind="stable"):
        if deg[r] == 0:
            break
        if assigned[r]:
            continue
        nbrs = g.indices[g.indptr[r]:g.indptr[r + 1]]
        nbrs = np.sort(nbrs[~assigned[nbrs]])
        sims = Xn[nbrs] @ Xn[r]
        order = np.argsort(-sims, kind="stable")  # most similar first, ties to the smaller row
        members = [int(r)]
        for q in order:
            if sims[q] < threshold:
                continue
            cand = int(nbrs[q])
            if (Xn[members] @ Xn[cand]).min() >= threshold:  # complete linkage: near every member
                members.append(cand)
        if len(members) < 2:
            continue
        m = np.sort(np.asarray(members))
        assigned[m] = True
        gram = Xn[m] @ Xn[m].T
        keep = int(m[np.argmin(to_c[m])])  # argmin: ties to the smaller row
        out.append(Group(int(r), m.tolist(), keep, float(gram.min()), float((Xn[m] @ Xn[r]).min())))
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
    """Fraction of items removed by clique groups + keep rule at each threshold, from a top-k neighbour table.

    The pairs come from the table only (each item's ``k`` nearest), so where an item has more than ``k``
    partners above a threshold the curve is a lower bound.

    Example:
        >>> X = np.array([[1.0, 0.0], [0.999, 0.04], [0.0, 1.0]])
        >>> idx = np.array([[1], [0], [1]]); sim = X @ X[[1, 0, 1]].T
        >>> [c["removed"] for c in removal_curve(idx, np.diag(sim)[:, None], X, [0.5, 0.99])]
        [1, 1]
    """
    n = len(X)
    out = []
    for t in thresholds:
        r, c = np.nonzero((indices >= 0) & (scores >= t))
        groups = clique_groups(r, indices[r, c], float(t), X)
        rm = sum(len(g.members) - 1 for g in groups)
        out.append({"threshold": float(t), "removed": int(rm), "fraction": rm / n, "groups": len(groups)})
    return out
