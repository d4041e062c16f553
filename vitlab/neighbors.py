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

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

import vitlab._neighbors_tiles as _tiles
from vitlab._neighbors_tiles import iter_blocks
from vitlab.errors import ConfigError, DataError

__all__ = ["Neighbors", "search", "kth_sq_dist", "recall_at_k", "iter_blocks", "METRICS", "DEFAULT_BLOCK",
           "DEFAULT_REF_BLOCK", "RECALL_SAMPLE",
           "resolve_dtype", "to_tensors", "sq_dist_tile", "kth_nn_sq_dists"]

METRICS = ("cosine", "ip", "l2")
Metric = Literal["cosine", "ip", "l2"]
#: Default query rows per tile (and the edge of a self-search's square tiles): a float64 tile of
#: 2048 x 2048 is 32 MiB.
DEFAULT_BLOCK = 2048
#: Default reference rows per tile of a query -> reference search.
DEFAULT_REF_BLOCK = 2048
#: Queries on which an approximate (faiss) result is checked against the exact search.
RECALL_SAMPLE = 1000


@dataclass(frozen=True)
class Neighbors:
    """Result of :func:`search`.

    Attributes:
        scores: ``[m, k]`` float, best first (similarity for cosine/ip, squared distance for l2).
        indices: ``[m, k]`` int64 reference rows, best first; ``-1`` where fewer than ``k`` exist.
        metric: the metric used.
        backend: ``"exact"`` or ``"faiss"``.
        index: for faiss, the index and its parameters (``index``, ``nlist``, ``nprobe``, ``device``, ...).
        recall: for faiss, recall@k against the exact search on ``recall_queries`` sampled queries
            (:func:`recall_at_k`); None when not measured.
        recall_queries: how many queries that recall was measured on.
    """

    scores: np.ndarray
    indices: np.ndarray
    metric: str
    backend: str = "exact"
    index: dict[str, Any] | None = None
    recall: float | None = None
    recall_queries: int = 0


def _check(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"{name} must be a non-empty 2-D array [n, d]; got shape {x.shape}. "
                        "Pool embeddings to one vector per item.")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{name} must be numeric, got dtype {x.dtype}.")
    if not np.isfinite(x.sum(axis=1)).all():  # one pass without an [n, d] mask; a row sum can also overflow
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        if bad.size:
            raise DataError(f"{name} contains NaN or inf values ({bad.size} row(s), first: row {bad[0]}). "
                            "Re-extract or drop those rows.")
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
    same = query is ref
    if metric == "l2":
        if same:
            (rt,) = to_tensors(r, dtype=tdtype, device=device)
            return rt, rt
        rt, qt = to_tensors(r, q, dtype=tdtype, device=device)
        return qt, rt
    dev = torch.device(device) if device is not None else torch.device("cpu")
    rt = torch.as_tensor(r, dtype=tdtype).to(dev)
    if metric == "cosine":
        rt = torch.nn.functional.normalize(rt, dim=1, eps=1e-12)
    if same:
        return rt, rt
    qt = torch.as_tensor(q, dtype=tdtype).to(dev)
    if metric == "cosine":
        qt = torch.nn.functional.normalize(qt, dim=1, eps=1e-12)
    return qt, rt


def search(query: Any, ref: Any, k: int, *, metric: Metric = "cosine", exclude_self: bool = False,
           block: int | None = None, ref_block: int | None = None, dtype: Any = "float32",
           device: Any = None, backend: Literal["exact", "faiss"] = "exact", index: str = "auto",
           nlist: int | None = None, nprobe: int | None = None, recall_sample: int = RECALL_SAMPLE,
           seed: int = 0) -> Neighbors:
    """The ``k`` nearest reference rows of every query row.

    Args:
        query: ``[m, d]`` query features.
        ref: ``[n, d]`` reference (gallery / training) features.
        k: neighbours per query (``1 <= k``; fewer than ``k`` available are padded with index ``-1``).
        metric: ``"cosine"``, ``"ip"`` or ``"l2"`` (squared Euclidean).
        exclude_self: ``query`` *is* ``ref`` (same rows, same order): row ``i`` never returns itself.
            Exact duplicates at other rows still count. In float32 each tile of a self-search serves
            both its row blocks (scores are symmetric): half the GEMMs.
        block: query rows per tile, and the edge of a self-search's square tiles (default
            :data:`DEFAULT_BLOCK`).
        ref_block: reference rows per tile (default :data:`DEFAULT_REF_BLOCK`).
        dtype: ``"float32"`` (fast) or ``"float64"`` (statistics that need it); exact backend only.
        device: torch device (default CPU). With ``backend="faiss"`` a CUDA device puts the faiss
            index on that GPU when faiss has GPU support (the record says where it ran).
        backend: ``"exact"`` (this blocked search: the ground truth) or ``"faiss"`` (approximate:
            a faiss index chosen by ``index``; needs ``pip install 'vitlab[faiss]'``; float32).
        index: faiss index: ``"auto"`` / ``"ivf"`` (IVF-Flat, ``nlist`` and ``nprobe`` from the
            reference size), ``"ivfpq"`` (IVF with product-quantised vectors: ``d / 8`` bytes each,
            for memory), ``"hnsw"`` (a graph; its build is slow) or ``"flat"`` (faiss's exact
            search). See :mod:`vitlab._neighbors_faiss`.
        nlist, nprobe: IVF lists and lists scanned per query (defaults from the reference size).
        recall_sample: with faiss, queries (sampled with ``seed``) on which recall@k against the
            exact search is measured and recorded in the result (0: not measured).
        seed: seeds the recall sample and the IVF training sample.

    Returns:
        :class:`Neighbors` with ``scores [m, k]`` and ``indices [m, k]``, best first (exact: ties
        to the smaller index), and for faiss the index used and its measured recall.

    Raises:
        ConfigError: bad ``k``, ``metric``, ``block``, ``dtype``, ``backend`` or ``index``; faiss
            missing.
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
    if backend not in ("exact", "faiss"):
        raise ConfigError(f"unknown backend {backend!r}; choose 'exact' or 'faiss'.")
    if backend == "faiss":
        return _approximate(query, ref, int(k), metric, exclude_self, index, nlist, nprobe, recall_sample, seed,
                            device, block)
    q, r = _prepare(query, ref, metric, dtype, device)
    if exclude_self and q.shape != r.shape:
        raise ConfigError("exclude_self=True needs the query to be the reference itself (same shape).")
    m, n, k = q.shape[0], r.shape[0], int(k)
    q_sq = (q * q).sum(1) if metric == "l2" else None
    r_sq = q_sq if (metric == "l2" and q is r) else ((r * r).sum(1) if metric == "l2" else None)
    kk = min(k, n - 1 if exclude_self else n)
    out_s = torch.full((m, k), float("nan"), dtype=q.dtype, device=q.device)
    out_i = torch.full((m, k), -1, dtype=torch.long, device=q.device)
    if kk >= 1:
        if kk >= n - int(exclude_self):  # a whole ranking: one stable sort per query block
            s, i = _tiles.full_ranking(q, r, q_sq, r_sq, metric, exclude_self, block)
        elif exclude_self and q.dtype == torch.float32:
            s, i = _tiles.self_topk_search(r, r_sq, kk, metric, block)
        else:
            s, i = _tiles.topk_search(q, r, q_sq, r_sq, kk, metric, exclude_self, block, ref_block)
        out_s[:, :kk], out_i[:, :kk] = s[:, :kk], i[:, :kk]
    scores = out_s.neg() if metric == "l2" else out_s
    return Neighbors(scores.cpu().numpy(), out_i.cpu().numpy(), metric)


def _approximate(query: Any, ref: Any, k: int, metric: str, exclude_self: bool, index: str, nlist: int | None,
                 nprobe: int | None, recall_sample: int, seed: int, device: Any, block: int) -> Neighbors:
    """``search(backend="faiss")``: validate, run the faiss index, measure recall on sampled queries."""
    from vitlab._neighbors_faiss import INDEXES, faiss_search, load_faiss

    load_faiss()  # the install hint before any work
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    if index not in INDEXES:
        raise ConfigError(f"unknown faiss index {index!r}; choose one of {', '.join(INDEXES)}.")
    if isinstance(recall_sample, bool) or not isinstance(recall_sample, (int, np.integer)) or recall_sample < 0:
        raise ConfigError(f"recall_sample must be an integer >= 0, got {recall_sample!r}.")
    q, r = _check(query, "query"), _check(ref, "reference")
    if q.shape[1] != r.shape[1]:
        raise DataError(f"query has d={q.shape[1]} but the reference has d={r.shape[1]}. "
                        "Embed both with the same backbone, layer and pooling.")
    if exclude_self and q.shape != r.shape:
        raise ConfigError("exclude_self=True needs the query to be the reference itself (same shape).")
    qf = np.ascontiguousarray(q, dtype=np.float32)
    rf = qf if query is ref else np.ascontiguousarray(r, dtype=np.float32)
    if metric == "cosine":
        rf = rf / np.maximum(np.linalg.norm(rf, axis=1, keepdims=True), 1e-12)
        qf = rf if query is ref else qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
    s, i, desc = faiss_search(qf, rf, k, metric, exclude_self, index=index, nlist=nlist, nprobe=nprobe, seed=seed,
                              device=device)
    recall, n_q = None, 0
    if recall_sample:
        rows = np.sort(np.random.default_rng(seed).choice(len(q), min(int(recall_sample), len(q)), replace=False))
        exact = _exact_rows(q, r, rows, k, metric, exclude_self, device, block)
        recall, n_q = recall_at_k(i[rows], exact), len(rows)
    return Neighbors(s, i, metric, backend="faiss", index=desc, recall=recall, recall_queries=n_q)


def _exact_rows(q: np.ndarray, r: np.ndarray, rows: np.ndarray, k: int, metric: str, exclude_self: bool,
                device: Any, block: int) -> np.ndarray:
    """Exact top-``k`` indices ``[len(rows), k]`` of the chosen query rows (their own row dropped for a self-search)."""
    nb = search(q[rows], r, k + int(exclude_self), metric=metric, device=device, block=block)
    if not exclude_self:
        return nb.indices
    out = np.full((len(rows), k), -1, np.int64)
    for j, (row, idx) in enumerate(zip(rows, nb.indices)):
        keep = idx[idx != row][:k]
        out[j, :len(keep)] = keep
    return out


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
    return _tiles.kth_smallest_sq_dists(x, int(k) + 1, block)


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
