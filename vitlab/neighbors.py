"""One nearest-neighbour search for all of vitlab: blocked, exact, deterministic.

Every neighbour question in vitlab (kNN votes, retrieval rankings, the report's
neighbour gallery, PRDC radii, memorisation distances, duplicate search) goes
through :func:`search` (top-k) or :func:`kth_sq_dist` (k-th neighbour radius
within one set). Both work tile by tile (``[block_q, block_r]`` similarity or
distance tiles, one GEMM each) and keep only per-row top-k buffers, so the
working memory is ``O(block^2 + m * k)``, never ``O(m * n)``, on top of one
converted (and, for cosine, normalised; for l2, centred) copy of the query and
reference arrays (``(m + n) * d`` values). A whole ranking (``k`` = the
reference size, as retrieval's mAP needs) is one stable sort of each query
block's complete score row instead (at most 2^24 scores per block).

Metrics that reduce distance tiles in their own way (PRDC's ball counts, FLS's
kernel tiles) use the tensor-level primitives of this module: :func:`to_tensors`
(convert and centre), :func:`sq_dist_tile` (one squared-distance tile),
:func:`iter_blocks` and :func:`kth_nn_sq_dists` (the radii of :func:`kth_sq_dist`
on tensors that are already centred).

Scores:
    ``metric="cosine"``: cosine similarity of L2-normalised rows (larger is nearer).
    ``metric="ip"``: raw inner product (larger is nearer).
    ``metric="l2"``: squared Euclidean distance (smaller is nearer), computed as
    ``||a||^2 + ||b||^2 - 2 a.b`` after shifting both sets by the reference mean
    (which leaves distances unchanged and reduces cancellation), clamped at 0.

Ties are broken deterministically: among equal scores the smaller reference
index ranks first, inside a block and across blocks, whatever the block size or
device, so the same inputs give the same neighbours. (``torch.topk`` alone
does not promise an order among ties; rows where a tie straddles the k-th place
are re-ranked with a stable sort.)

Written here rather than taken from faiss or scikit-learn because exact search
must be the ground truth on CPU and GPU, on float64 when statistics need it,
with documented tie-breaking; :func:`search` can still hand large galleries to
faiss (``backend="faiss"``) and :func:`recall_at_k` measures how much an
approximate result agrees with the exact one.

Example:
    >>> import numpy as np
    >>> ref = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    >>> res = search(np.array([[2.0, 0.1]]), ref, k=2, metric="cosine")
    >>> res.indices.tolist()            # ties (rows 0 and 2) go to the smaller index first
    [[0, 2]]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from vitlab.errors import ConfigError, DataError

__all__ = ["Neighbors", "search", "kth_sq_dist", "recall_at_k", "iter_blocks", "METRICS", "DEFAULT_BLOCK",
           "resolve_dtype", "to_tensors", "sq_dist_tile", "kth_nn_sq_dists"]

METRICS = ("cosine", "ip", "l2")
Metric = Literal["cosine", "ip", "l2"]
#: Default query rows per tile (and the edge of a self-search's square tiles): a float64 tile of
#: 2048 x 2048 is 32 MiB.
DEFAULT_BLOCK = 2048
#: Default reference rows per tile of a query -> reference search.
DEFAULT_REF_BLOCK = 2048
#: Columns per group in a tile's two-stage top-k (:func:`_tile_topk`).
_GROUP = 16
#: Index of a padding candidate: larger than any reference row, so it loses every tie.
_PAD = torch.iinfo(torch.int64).max
#: A full ranking holds one query block's scores against the whole reference: at most this many entries.
_FULL_RANK_ENTRIES = 1 << 24


@dataclass(frozen=True)
class Neighbors:
    """Result of :func:`search`.

    Attributes:
        scores: ``[m, k]`` float, best first (similarity for cosine/ip, squared distance for l2).
        indices: ``[m, k]`` int64 reference rows, best first; ``-1`` where fewer than ``k`` exist.
        metric: the metric used.
        backend: ``"exact"`` or ``"faiss"``.
    """

    scores: np.ndarray
    indices: np.ndarray
    metric: str
    backend: str = "exact"


def iter_blocks(n: int, block: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges of size ``block`` covering ``range(n)``.

    Example:
        >>> list(iter_blocks(5, 2))
        [(0, 2), (2, 4), (4, 5)]
    """
    for start in range(0, n, block):
        yield start, min(start + block, n)


def _check(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"{name} must be a non-empty 2-D array [n, d]; got shape {x.shape}. "
                        "Pool embeddings to one vector per item.")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{name} must be numeric, got dtype {x.dtype}.")
    if not np.isfinite(x).all():
        raise DataError(f"{name} contains NaN or inf values. Re-extract or drop those rows.")
    return x


def resolve_dtype(dtype: Any) -> torch.dtype:
    """Map ``"float64"``/``"float32"`` (or the numpy / torch dtype) to a torch float dtype.

    Raises:
        ConfigError: any other dtype.

    Example:
        >>> resolve_dtype("float64"), resolve_dtype(np.float32)
        (torch.float64, torch.float32)
    """
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    if name in ("float64", "float32"):
        return torch.float64 if name == "float64" else torch.float32
    raise ConfigError(f"dtype must be 'float64' or 'float32' but got {dtype!r}.")


def to_tensors(*arrays: Any, dtype: Any = torch.float64, device: Any = None) -> list[torch.Tensor]:
    """Convert arrays to ``dtype`` tensors on ``device``, all shifted by the FIRST array's mean.

    The shift leaves Euclidean distances unchanged and reduces cancellation in
    ``||a||^2 + ||b||^2 - 2 a.b``; :func:`search` (``metric="l2"``) shifts by the reference's mean
    the same way. No validation: check the arrays first.

    Example:
        >>> a, b = to_tensors(np.array([[0.0], [2.0]]), np.array([[4.0]]))
        >>> a.ravel().tolist(), b.ravel().tolist()
        ([-1.0, 1.0], [3.0])
    """
    tdtype = resolve_dtype(dtype)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    tens = [torch.as_tensor(np.asarray(a), dtype=tdtype).to(dev) for a in arrays]
    centre = tens[0].mean(dim=0, keepdim=True)
    return [t - centre for t in tens]


def sq_dist_tile(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[len(a), len(b)]`` of two row blocks, given their squared norms.

    ``a_sq[:, None] + b_sq[None, :] - 2 a b^T`` (one GEMM), clamped at 0.

    Example:
        >>> a, b = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 4.0]])
        >>> sq_dist_tile(a, b, (a * a).sum(1), (b * b).sum(1)).tolist()
        [[25.0], [13.0]]
    """
    tile = torch.addmm(a_sq[:, None] + b_sq[None, :], a, b.T, beta=1.0, alpha=-2.0)
    return tile.clamp_min_(0.0)


def _prepare(query: Any, ref: Any, metric: str, dtype: Any, device: Any
             ) -> tuple[torch.Tensor, torch.Tensor]:
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    tdtype = resolve_dtype(dtype)
    q, r = _check(query, "query"), _check(ref, "reference")
    if q.shape[1] != r.shape[1]:
        raise DataError(f"query has d={q.shape[1]} but the reference has d={r.shape[1]}. "
                        "Embed both with the same backbone, layer and pooling.")
    if metric == "l2":
        rt, qt = to_tensors(r, q, dtype=tdtype, device=device)
        return qt, rt
    dev = torch.device(device) if device is not None else torch.device("cpu")
    qt = torch.as_tensor(q, dtype=tdtype).to(dev)
    rt = torch.as_tensor(r, dtype=tdtype).to(dev)
    if metric == "cosine":
        qt = torch.nn.functional.normalize(qt, dim=1, eps=1e-12)
        rt = torch.nn.functional.normalize(rt, dim=1, eps=1e-12)
    return qt, rt


def _scores_into(out: torch.Tensor, q: torch.Tensor, r: torch.Tensor, q_sq: torch.Tensor | None,
                 r_sq: torch.Tensor | None, metric: str, r_t: torch.Tensor | None = None) -> torch.Tensor:
    """Write the scores ``[len(q), len(r)]`` into ``out``, oriented so that LARGER is nearer.

    One GEMM into a reused buffer (no allocation per tile). l2: the negated, clamped
    :func:`sq_dist_tile` (the same arithmetic: ``a_sq + b_sq`` then ``addmm`` with ``alpha=-2``).
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
    """:func:`sq_dist_tile` written into ``out`` (same arithmetic, no allocation)."""
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


def _topk_search(q: torch.Tensor, r: torch.Tensor, q_sq: torch.Tensor | None, r_sq: torch.Tensor | None,
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


def _self_topk_search(x: torch.Tensor, x_sq: torch.Tensor | None, k: int, metric: str, block: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` other rows ``[n, k]`` of every row of ``x`` (``k < n``), each tile computed once.

    Scores are symmetric, so tile ``(I, J)``, ``J >= I``, serves rows ``I`` and, read as its
    transpose, rows ``J``: half the GEMMs of :func:`_topk_search`, and ``s(i, j) == s(j, i)``
    exactly. Every row still meets the column blocks in ascending order (rows ``J`` see blocks
    ``I < J`` at step ``I``, then their own), as :func:`_merge_tile` requires. The blocks have
    equal sizes (no thin edge tile), so every GEMM has the same shape both ways round; torch's
    float32 GEMM then gives ``a @ b.T == (b @ a.T).T`` bit for bit (tested here), and a row's
    scores against exact duplicates are equal, so they tie to the smaller index. On a BLAS
    without that property, scores may differ from :func:`_topk_search`'s in the last bit.
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


def _full_ranking(q: torch.Tensor, r: torch.Tensor, q_sq: torch.Tensor | None, r_sq: torch.Tensor | None,
                  metric: str, exclude_self: bool, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every reference row ranked for every query row ``[m, n]``: one GEMM and one stable sort per
    query block (at most ``_FULL_RANK_ENTRIES`` scores), ties to the smaller index."""
    m, n = q.shape[0], r.shape[0]
    qb = max(1, min(block, m, _FULL_RANK_ENTRIES // max(n, 1)))
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


def search(query: Any, ref: Any, k: int, *, metric: Metric = "cosine", exclude_self: bool = False,
           block: int | None = None, ref_block: int | None = None, dtype: Any = "float32",
           device: Any = None, backend: Literal["exact", "faiss"] = "exact") -> Neighbors:
    """The ``k`` nearest reference rows of every query row.

    Args:
        query: ``[m, d]`` query features.
        ref: ``[n, d]`` reference (gallery / training) features.
        k: neighbours per query (``1 <= k``; fewer than ``k`` available are padded with index ``-1``).
        metric: ``"cosine"``, ``"ip"`` or ``"l2"`` (squared Euclidean).
        exclude_self: ``query`` *is* ``ref`` (same rows, same order): row ``i`` never returns itself.
            Exact duplicates at other rows still count.
        block: query rows per tile (default :data:`DEFAULT_BLOCK`).
        ref_block: reference rows per tile (default :data:`DEFAULT_REF_BLOCK`).
        dtype: ``"float32"`` (fast) or ``"float64"`` (statistics that need it).
        device: torch device (default CPU).
        backend: ``"exact"`` (this blocked search) or ``"faiss"`` (a flat faiss index: same
            neighbours up to float rounding; ``pip install faiss-cpu``).

    Returns:
        :class:`Neighbors` with ``scores [m, k]`` and ``indices [m, k]``, best first, ties to the
        smaller index.

    Raises:
        ConfigError: bad ``k``, ``metric``, ``block``, ``dtype`` or ``backend``.
        DataError: empty, non-2-D, non-finite or mismatched arrays.

    Example:
        >>> x = np.array([[0.0], [1.0], [3.0]])
        >>> r = search(x, x, k=1, metric="l2", exclude_self=True)
        >>> r.indices.ravel().tolist(), r.scores.ravel().tolist()
        ([1, 0, 1], [1.0, 1.0, 4.0])
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}.")
    block = DEFAULT_BLOCK if block is None else block
    ref_block = DEFAULT_REF_BLOCK if ref_block is None else ref_block
    if block < 1 or ref_block < 1:
        raise ConfigError(f"block and ref_block must be >= 1, got {block} and {ref_block}.")
    if backend == "faiss":
        return _faiss_search(query, ref, int(k), metric, exclude_self)
    if backend != "exact":
        raise ConfigError(f"unknown backend {backend!r}; choose 'exact' or 'faiss'.")
    q, r = _prepare(query, ref, metric, dtype, device)
    if exclude_self and q.shape != r.shape:
        raise ConfigError("exclude_self=True needs the query to be the reference itself (same shape).")
    m, n, k = q.shape[0], r.shape[0], int(k)
    q_sq = (q * q).sum(1) if metric == "l2" else None
    r_sq = (r * r).sum(1) if metric == "l2" else None
    kk = min(k, n - 1 if exclude_self else n)
    out_s = torch.full((m, k), float("nan"), dtype=q.dtype, device=q.device)
    out_i = torch.full((m, k), -1, dtype=torch.long, device=q.device)
    if kk >= 1:
        if kk >= n - int(exclude_self):  # a whole ranking: one stable sort per query block
            s, i = _full_ranking(q, r, q_sq, r_sq, metric, exclude_self, block)
        elif exclude_self and q.dtype == torch.float32:
            s, i = _self_topk_search(r, r_sq, kk, metric, block)
        else:
            s, i = _topk_search(q, r, q_sq, r_sq, kk, metric, exclude_self, block, ref_block)
        out_s[:, :kk], out_i[:, :kk] = s[:, :kk], i[:, :kk]
    scores = out_s.neg() if metric == "l2" else out_s
    return Neighbors(scores.cpu().numpy(), out_i.cpu().numpy(), metric)


def kth_sq_dist(x: Any, k: int, *, block: int = DEFAULT_BLOCK, dtype: Any = "float64", device: Any = None
                ) -> np.ndarray:
    """Squared Euclidean distance from each row of ``x`` to its k-th nearest *other* row.

    The row itself counts as its 0-th neighbour, exactly as the ``prdc`` package's
    ``get_kth_value(distances, k + 1)`` on the full distance matrix with a zero diagonal;
    duplicates of a row elsewhere in ``x`` are at distance 0. Validates ``x``, centres it
    (:func:`to_tensors`) and runs :func:`kth_nn_sq_dists`.

    Example:
        >>> np.round(kth_sq_dist(np.array([[0.0], [1.0], [3.0]]), k=1), 9).tolist()
        [1.0, 1.0, 4.0]
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < np.shape(x)[0]:
        raise ConfigError(f"k must be an integer in [1, {np.shape(x)[0] - 1}] for {np.shape(x)[0]} rows, got {k!r}.")
    t, _ = _prepare(x, x, "l2", dtype, device)
    return kth_nn_sq_dists(t, int(k), block).cpu().numpy()


def kth_nn_sq_dists(x: torch.Tensor, k: int, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """Tensor-level :func:`kth_sq_dist`: the k-th nearest-other-row squared distance of each row of ``x``.

    The ``(k + 1)``-th smallest entry of each row of the full distance matrix with a zero
    diagonal. Distances are symmetric, so each tile ``(I, J)`` with ``J >= I`` is computed once
    (the arithmetic of :func:`sq_dist_tile`, into a reused buffer) and serves rows ``I`` and, read
    as its transpose, rows ``J``: half the GEMMs of a general :func:`search`. Each tile is reduced
    by :func:`_smallest_merge` (values only, so ties need no care). No validation; centre ``x``
    first (:func:`to_tensors`) for accuracy.

    Args:
        x: ``[n, d]`` tensor, ``1 <= k < n``.
        k: neighbour index (1 = nearest other row).
        block: tile edge.

    Returns:
        ``[n]`` tensor of squared radii (``x``'s dtype and device).

    Example:
        >>> (x,) = to_tensors(np.array([[0.0], [1.0], [3.0]]))
        >>> [round(v, 9) for v in kth_nn_sq_dists(x, k=1).tolist()]
        [1.0, 1.0, 4.0]
    """
    n, k1 = x.shape[0], int(k) + 1
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


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Fraction of the exact top-k neighbours that an approximate search also returned.

    ``approx`` and ``exact`` are ``[m, k]`` index arrays (``-1`` entries of ``exact`` are ignored).

    Example:
        >>> recall_at_k(np.array([[0, 1], [2, 5]]), np.array([[0, 1], [2, 3]]))
        0.75
    """
    approx, exact = np.asarray(approx), np.asarray(exact)
    if approx.shape[0] != exact.shape[0]:
        raise DataError(f"approx has {approx.shape[0]} rows but exact has {exact.shape[0]}.")
    hits = total = 0
    for a, e in zip(approx, exact):
        e = e[e >= 0]
        hits += len(np.intersect1d(a, e))
        total += len(e)
    return float(hits / total) if total else float("nan")


def _faiss_search(query: Any, ref: Any, k: int, metric: str, exclude_self: bool) -> Neighbors:
    """Approximate search with a faiss HNSW graph (M = 32, efConstruction = 80, efSearch = max(64, 4k)).

    Cosine uses inner products of L2-normalised rows. Results are approximate: measure their
    agreement with :func:`search` (exact) with :func:`recall_at_k` on a sample of queries.
    """
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError("backend='faiss' needs faiss: pip install 'vitlab[faiss]' (faiss-cpu). "
                          "Or use the exact search (backend='exact').") from None
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    q = np.ascontiguousarray(_check(query, "query"), dtype=np.float32)
    r = np.ascontiguousarray(_check(ref, "reference"), dtype=np.float32)
    if metric == "cosine":
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        r = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexHNSWFlat(r.shape[1], 32, kind)
    index.hnsw.efConstruction = 80
    index.add(r)
    kq = min(k + int(exclude_self), r.shape[0])
    index.hnsw.efSearch = max(64, 4 * kq)
    s, i = index.search(q, kq)
    if exclude_self:
        s_out = np.full((q.shape[0], k), np.nan, np.float32)
        i_out = np.full((q.shape[0], k), -1, np.int64)
        for row in range(q.shape[0]):
            keep = i[row] != row
            m = min(k, int(keep.sum()))
            s_out[row, :m], i_out[row, :m] = s[row][keep][:m], i[row][keep][:m]
        s, i = s_out, i_out
    i = np.where(i < 0, -1, i).astype(np.int64)
    return Neighbors(s, i, metric, backend="faiss")
