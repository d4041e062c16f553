"""The tile kernels behind :mod:`vitlab.neighbors` (exact search): GEMM tiles into reused buffers and
exact per-row top-k merges. Private: use :func:`vitlab.neighbors.search` and :func:`vitlab.neighbors.kth_sq_dist`.

Measured on the 2-core AMD EPYC box (torch 2.14, MKL), single thread, a 2048 x 2048 tile at d = 384:
the GEMM 44 ms, ``torch.topk(k = 17)`` of the whole tile 18-21 ms, faiss's heap on the same tile 12 ms,
one strided max over column groups 2.3 ms. So the merges below avoid ranking whole tiles: they rank the
few column groups whose maximum can still change a row's top-k (:func:`_merge_tile`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

#: Columns per group in a tile merge (:func:`_merge_tile`).
_GROUP = 16
#: Index of a padding candidate: larger than any reference row, so it loses every tie.
_PAD = torch.iinfo(torch.int64).max
#: A full ranking holds one query block's scores against the whole reference: at most this many entries.
FULL_RANK_ENTRIES = 1 << 24


def iter_blocks(n: int, block: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges of size ``block`` covering ``range(n)``.

    Example:
        >>> list(iter_blocks(5, 2))
        [(0, 2), (2, 4), (4, 5)]
    """
    for start in range(0, n, block):
        yield start, min(start + block, n)


def _scores_into(out: torch.Tensor, q: torch.Tensor, r: torch.Tensor, q_sq: torch.Tensor | None,
                 r_sq: torch.Tensor | None, metric: str, r_t: torch.Tensor | None = None) -> torch.Tensor:
    """Write the scores ``[len(q), len(r)]`` into ``out``, oriented so that LARGER is nearer.

    One GEMM into a reused buffer (no allocation per tile). l2: the negated, clamped
    :func:`vitlab.neighbors.sq_dist_tile` (the same arithmetic: ``a_sq + b_sq`` then ``addmm`` with ``alpha=-2``).
    ``r_t``: the same block as ``[d, len(r)]`` columns of a transposed copy of the reference (see
    :func:`_ref_t`), used for the GEMM instead of ``r.T``.
    """
    if metric == "l2":
        return _sq_dist_into(out, q, r, q_sq, r_sq, r_t).neg_()
    return _gemm(out, q, r.T if r_t is None else r_t)


def _gemm(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, beta: float = 0.0, alpha: float = 1.0) -> torch.Tensor:
    if beta == 0.0 and alpha == 1.0:
        return torch.mm(a, b, out=out)
    return out.addmm_(a, b, beta=beta, alpha=alpha)


def _ref_t(r: torch.Tensor) -> torch.Tensor | None:
    """A ``[d, n]`` transposed copy of the reference for the float32 tile GEMMs on CPU, or None (use ``r.T``).

    Measured on the 2-core AMD EPYC (torch's MKL): ``q @ r_t`` ran 10-25% faster than ``q @ r.T``
    and gives the same bits in float32 (tested); in float64 the bits differ, so float64 keeps ``r.T``.
    """
    if r.dtype == torch.float32 and r.device.type == "cpu":
        return r.T.contiguous()
    return None


def _sq_dist_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor,
                  b_t: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`vitlab.neighbors.sq_dist_tile` written into ``out`` (same arithmetic, no allocation)."""
    torch.add(a_sq[:, None], b_sq[None, :], out=out)
    return _gemm(out, a, b.T if b_t is None else b_t, beta=1.0, alpha=-2.0).clamp_min_(0.0)


def _view(flat: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """A contiguous ``[rows, cols]`` view of the front of a preallocated flat buffer."""
    return flat[: rows * cols].view(rows, cols)


def _lex_topk(s: torch.Tensor, i: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` of each row of candidates ``s [b, c]`` / ``i [b, c]`` by (score desc, index asc).

    ``torch.topk`` orders distinct scores exactly but promises nothing among equal ones, so it
    takes ``k + 1`` and checks those few values: a row whose best ``k + 1`` are strictly
    decreasing is already right; a row with any equal neighbours there (a tie inside the
    top-k or straddling the k-th place) is redone with two stable sorts (index, then score).
    The check costs ``O(b k)``, not ``O(b c)``.
    """
    c = s.shape[1]
    kk = min(k, c)
    top_s, pos = torch.topk(s, min(kk + 1, c), dim=1, sorted=True)
    top_i = i.gather(1, pos)
    tied = (top_s[:, 1:] == top_s[:, :-1]).any(1)
    rows = torch.nonzero(tied).flatten()
    if rows.numel():
        rs, ri = s[rows], i[rows]
        by_index = torch.sort(ri, dim=1, stable=True).indices
        rs, ri = rs.gather(1, by_index), ri.gather(1, by_index)
        order = torch.sort(rs, dim=1, descending=True, stable=True).indices[:, : top_s.shape[1]]
        top_s[rows], top_i[rows] = rs.gather(1, order), ri.gather(1, order)
    return top_s[:, :kk], top_i[:, :kk]


def _merge_whole(best_s: torch.Tensor, best_i: torch.Tensor, t: torch.Tensor, j0: int, k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top-``k`` of ``[best, every column of t]`` (columns ``j0 ..``)."""
    b, c = t.shape
    idx = torch.arange(j0, j0 + c, device=t.device).expand(b, c)
    return _lex_topk(torch.cat([best_s, t], 1), torch.cat([best_i, idx], 1), k)


def _group_reduce(t: torch.Tensor, main: int, w: int, op: Any) -> torch.Tensor:
    """``op`` (amax / amin) of each row's column groups ``[b, w]``: group ``g`` = columns ``g, w + g, ...``.

    ``t`` is row-major, or the transposed view of a row-major tile (a self-search reads each
    tile a second time as its transpose): either way the reduction runs over contiguous slices.
    """
    b = t.shape[0]
    if t.stride(1) == 1:
        return op(t[:, :main].view(b, _GROUP, w), 1)
    return op(t.T[:main].reshape(_GROUP, w, b), 0).T


def _merge_tile(best_s: torch.Tensor, best_i: torch.Tensor, t: torch.Tensor, j0: int, k: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-``k`` of each row of ``[best, tile]`` by (score desc, index asc); may update ``best`` in place.

    ``best_s``/``best_i`` ``[b, k]``: the exact top-k of the reference columns before ``j0``
    (padding: ``-inf`` with index ``_PAD``, which loses every tie); ``t [b, c]``: the scores of
    columns ``j0 .. j0 + c`` (row-major, or the transposed view of a row-major tile).

    ``torch.topk`` over a whole tile costs about 40% of the GEMM that made it (measured on a
    2-core CPU, k = 16; faiss's heap about 25%), so the tile is cut into ``W`` column groups of
    ``_GROUP`` columns (group ``w`` = tile columns ``w, W + w, 2W + w, ...``: one strided max
    over contiguous slices, about 5% of the GEMM). Every earlier index is smaller, so a tile entry
    can enter the top-k only if it is strictly above the row's current k-th score, and then so is
    its group's maximum ("live" groups). A row with at most ``g`` live groups has them among its
    ``g`` groups with the largest maxima; a row with more than ``k`` needs only its top ``k``
    groups when the k-th and (k+1)-th group maxima differ (an entry elsewhere is below ``k`` group
    maxima), and is merged from its whole tile row when they are equal. So the top ``g = min(k,
    most live groups in a row)`` groups are gathered (``g * _GROUP`` entries) and merged exactly
    (:func:`_lex_topk`), only for the rows with a live group once they are few; after the first
    tiles of a row ``g`` is 1 to 3 and about half the rows have none. Nothing that could enter is
    pruned, ties included.
    """
    b, c = t.shape
    w = c // _GROUP
    if w <= k:  # too few groups to pay
        return _merge_whole(best_s, best_i, t, j0, k)
    main = w * _GROUP
    gmax = _group_reduce(t, main, w, torch.amax)  # [b, w]
    counts = (gmax > best_s[:, k - 1:k]).sum(1)
    most = int(counts.max())
    if most:
        g = min(most, k)
        rows = torch.nonzero(counts).flatten() if most <= k else None
        if rows is not None and len(rows) > b * 3 // 4:
            rows = None
        gm = gmax if rows is None else gmax[rows]
        if g <= 3 and most <= k:  # one argmax pass per group: cheaper than topk for a few
            gm = gm.clone() if rows is None else gm
            gidx = torch.empty((gm.shape[0], g), dtype=torch.long, device=t.device)
            for a in range(g):
                gidx[:, a] = gm.argmax(1)
                gm.scatter_(1, gidx[:, a:a + 1], float("-inf"))
        else:
            gtop, gidx = torch.topk(gm, min(g + 1, w), dim=1, sorted=True)
            gidx = gidx[:, :g]
        cols = (gidx[:, None, :] + torch.arange(0, main, w, device=t.device)[None, :, None]).view(len(gidx), -1)
        if rows is None:
            vals, bs, bi = t.gather(1, cols), best_s, best_i
        else:
            vals, bs, bi = torch.take(t, rows[:, None] * c + cols), best_s[rows], best_i[rows]
        s, i = _lex_topk(torch.cat([bs, vals], 1), torch.cat([bi, cols.add_(j0)], 1), k)
        if most > k and k < w:
            tied = torch.nonzero((counts > k) & (gtop[:, k - 1] == gtop[:, k])).flatten()
            if tied.numel():  # ties across groups at the k-th group maximum: merge the whole tile rows
                s[tied], i[tied] = _merge_whole(best_s[tied], best_i[tied], t[tied, :main], j0, k)
        if rows is None:
            best_s, best_i = s, i
        else:
            best_s[rows], best_i[rows] = s, i
    if main < c:  # the (< _GROUP) columns past the last whole group
        best_s, best_i = _merge_whole(best_s, best_i, t[:, main:], j0 + main, k)
    return best_s, best_i


def topk_search(q: torch.Tensor, r: torch.Tensor, q_sq: torch.Tensor | None, r_sq: torch.Tensor | None,
                 k: int, metric: str, exclude_self: bool, block: int, ref_block: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` ``[m, k]`` of every query row, tile by tile in ascending reference order (``k < n``)."""
    m, n = q.shape[0], r.shape[0]
    out_s = torch.empty((m, k), dtype=q.dtype, device=q.device)
    out_i = torch.empty((m, k), dtype=torch.long, device=q.device)
    flat = torch.empty(min(block, m) * min(ref_block, n), dtype=q.dtype, device=q.device)
    r_t = _ref_t(r)
    for i0, i1 in iter_blocks(m, block):
        best_s = torch.full((i1 - i0, k), float("-inf"), dtype=q.dtype, device=q.device)
        best_i = torch.full((i1 - i0, k), _PAD, dtype=torch.long, device=q.device)
        for j0, j1 in iter_blocks(n, ref_block):
            t = _scores_into(_view(flat, i1 - i0, j1 - j0), q[i0:i1], r[j0:j1],
                             None if q_sq is None else q_sq[i0:i1], None if r_sq is None else r_sq[j0:j1], metric,
                             None if r_t is None else r_t[:, j0:j1])
            if exclude_self and j0 < i1 and i0 < j1:  # the diagonal crosses this tile
                rows = torch.arange(max(i0, j0), min(i1, j1), device=q.device)
                t[rows - i0, rows - j0] = float("-inf")
            best_s, best_i = _merge_tile(best_s, best_i, t, j0, k)
        out_s[i0:i1], out_i[i0:i1] = best_s, best_i
    return out_s, out_i


def _even_blocks(n: int, block: int) -> list[tuple[int, int]]:
    """``ceil(n / block)`` row ranges covering ``range(n)`` whose sizes differ by at most one."""
    nb = -(-n // block)
    edges = [(n * b) // nb for b in range(nb + 1)]
    return list(zip(edges[:-1], edges[1:]))


def self_topk_search(x: torch.Tensor, x_sq: torch.Tensor | None, k: int, metric: str, block: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` other rows ``[n, k]`` of every row of ``x`` (``k < n``), each tile computed once.

    Scores are symmetric, so tile ``(I, J)``, ``J >= I``, serves rows ``I`` and, read as its
    transpose, rows ``J``: half the GEMMs of :func:`topk_search`, and ``s(i, j) == s(j, i)``
    exactly. Every row still meets the column blocks in ascending order (rows ``J`` see blocks
    ``I < J`` at step ``I``, then their own), as :func:`_merge_tile` requires. The blocks have
    equal sizes (no thin edge tile), so every GEMM has the same shape both ways round; torch's
    float32 GEMM then gives ``a @ b.T == (b @ a.T).T`` bit for bit (tested here), and a row's
    scores against exact duplicates are equal, so they tie to the smaller index. On a BLAS
    without that property, scores may differ from :func:`topk_search`'s in the last bit.
    """
    n = x.shape[0]
    blocks = _even_blocks(n, block)
    best_s = torch.full((n, k), float("-inf"), dtype=x.dtype, device=x.device)
    best_i = torch.full((n, k), _PAD, dtype=torch.long, device=x.device)
    flat = torch.empty((blocks[0][1] - blocks[0][0] + 1) ** 2, dtype=x.dtype, device=x.device)
    x_t = _ref_t(x)
    for bi, (i0, i1) in enumerate(blocks):
        for j0, j1 in blocks[bi:]:
            t = _scores_into(_view(flat, i1 - i0, j1 - j0), x[i0:i1], x[j0:j1],
                             None if x_sq is None else x_sq[i0:i1], None if x_sq is None else x_sq[j0:j1], metric,
                             None if x_t is None else x_t[:, j0:j1])
            if j0 == i0:
                t.fill_diagonal_(float("-inf"))
            best_s[i0:i1], best_i[i0:i1] = _merge_tile(best_s[i0:i1], best_i[i0:i1], t, j0, k)
            if j0 != i0:
                best_s[j0:j1], best_i[j0:j1] = _merge_tile(best_s[j0:j1], best_i[j0:j1], t.T, i0, k)
    return best_s, best_i


def full_ranking(q: torch.Tensor, r: torch.Tensor, q_sq: torch.Tensor | None, r_sq: torch.Tensor | None,
                  metric: str, exclude_self: bool, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every reference row ranked for every query row ``[m, n]``: one GEMM and one stable sort per
    query block (at most ``FULL_RANK_ENTRIES`` scores), ties to the smaller index."""
    m, n = q.shape[0], r.shape[0]
    qb = max(1, min(block, m, FULL_RANK_ENTRIES // max(n, 1)))
    out_s = torch.empty((m, n), dtype=q.dtype, device=q.device)
    out_i = torch.empty((m, n), dtype=torch.long, device=q.device)
    flat = torch.empty(qb * n, dtype=q.dtype, device=q.device)
    for i0, i1 in iter_blocks(m, qb):
        t = _scores_into(_view(flat, i1 - i0, n), q[i0:i1], r, None if q_sq is None else q_sq[i0:i1],
                         r_sq, metric)
        if exclude_self:
            rows = torch.arange(i0, i1, device=q.device)
            t[rows - i0, rows] = float("-inf")
        torch.sort(t, dim=1, descending=True, stable=True, out=(out_s[i0:i1], out_i[i0:i1]))
    return out_s, out_i


def kth_smallest_sq_dists(x: torch.Tensor, k1: int, block: int) -> torch.Tensor:
    """The ``k1``-th smallest entry of each row of ``x``'s squared-distance matrix (zero diagonal), symmetric tiles."""
    n = x.shape[0]
    bl = min(block, n)
    sq = (x * x).sum(1)
    best = torch.full((n, k1), float("inf"), dtype=x.dtype, device=x.device)
    flat = torch.empty(bl * bl, dtype=x.dtype, device=x.device)
    x_t = _ref_t(x)
    for i0, i1 in iter_blocks(n, bl):
        for j0, j1 in iter_blocks(n, bl):
            if j0 < i0:
                continue
            tile = _sq_dist_into(_view(flat, i1 - i0, j1 - j0), x[i0:i1], x[j0:j1], sq[i0:i1], sq[j0:j1],
                                 None if x_t is None else x_t[:, j0:j1])
            if j0 == i0:
                tile.fill_diagonal_(0.0)
            best[i0:i1] = _smallest_merge(best[i0:i1], tile, k1)
            if j0 != i0:
                best[j0:j1] = _smallest_merge(best[j0:j1], tile.T, k1)
    return best.amax(1)


def _smallest_merge(best: torch.Tensor, t: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` smallest values ``[b, k]`` (any order) of each row of ``[best, t]``.

    Values only, so ties need no care. As in :func:`_merge_tile`, the tile's columns are cut
    into groups (one strided min); the ``k`` groups with the smallest minima hold the row's k-th
    smallest value: ``k`` group minima are at most the largest of them, and every group left out
    has its minimum at least that large, so nothing below it is left out.
    """
    b, c = t.shape
    w = c // _GROUP
    if w <= k:
        return torch.topk(torch.cat([best, t], 1), k, dim=1, largest=False, sorted=False).values
    main = w * _GROUP
    gidx = torch.topk(_group_reduce(t, main, w, torch.amin), k, dim=1, largest=False, sorted=False).indices
    cols = (gidx[:, None, :] + torch.arange(0, main, w, device=t.device)[None, :, None]).view(b, -1)
    cand = torch.cat([best, t.gather(1, cols), t[:, main:]], 1)
    return torch.topk(cand, k, dim=1, largest=False, sorted=False).values
