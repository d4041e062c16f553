"""The faiss indexes behind ``vitlab.neighbors.search(backend="faiss")``: approximate search for large sets.

Private: call :func:`vitlab.neighbors.search`, which validates the inputs, picks the index, and measures
the result's recall against its exact search on sampled queries.

Indexes (``index=``):

* ``"ivf"`` (the default, ``"auto"``): ``IndexIVFFlat``. k-means splits the reference into ``nlist`` lists
  (trained on a seeded sample of ``TRAIN_PER_LIST * nlist`` rows, ``NITER`` iterations); a query scans the
  ``nprobe`` lists whose centres are nearest. Building costs one k-means, querying a fraction
  ``nprobe / nlist`` of an exact search. Defaults from the reference size ``n``: ``nlist`` = the power of
  two nearest ``4 * sqrt(n)`` (at most ``n // 39``: faiss wants 39 training rows a list) and ``nprobe =
  max(8, nlist / 64)``. Recall depends on the data: it is measured against exact search on sampled
  queries and recorded in every result (on 5,000 near-uniform synthetic items, recall@10 was only 0.54 at
  these defaults; ``bench/bench_neighbors.py scale`` measures it at 1e5 and 1e6). Raise ``nprobe`` when the
  recorded recall is too low.
* ``"ivfpq"``: ``IndexIVFPQ``, the same lists with each vector stored as ``m`` one-byte codes (``m`` = d / 8
  where it divides d): 4 * d / m times less memory, lower recall (scores from codes, not vectors).
* ``"hnsw"``: ``IndexHNSWFlat`` (M = 32, efConstruction = 80, efSearch = max(64, 4k)). Its build was 16x an
  exact top-10 search of 1,000 queries at 1e5 rows on a 2-core CPU: it pays only when one index serves many
  queries, which :func:`~vitlab.neighbors.search` (a fresh index per call) never does; kept on request.
* ``"flat"``: faiss's exact ``IndexFlat`` (float32; equal scores in no promised order): a reference point.

On a CUDA ``device`` with a faiss GPU build (``faiss-gpu``) the index is moved to that GPU
(``index_cpu_to_gpu``) before training; otherwise it runs on CPU and the record says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from vitlab.errors import ConfigError

INDEXES = ("auto", "ivf", "ivfpq", "hnsw", "flat")
#: Training rows per IVF list (faiss warns below 39).
TRAIN_PER_LIST = 64
#: k-means iterations of the IVF coarse quantizer (faiss's default is 25; 10 loses no recall here).
NITER = 10


def load_faiss() -> Any:
    """Import faiss or raise the one-line install hint."""
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        raise ConfigError("backend='faiss' needs faiss: pip install 'vitlab[faiss]' (faiss-cpu). "
                          "Or use the exact search (backend='exact').") from None
    return faiss


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` reference rows: the power of two nearest ``4 sqrt(n)``, at most ``n // 39`` (faiss: >= 39 training rows a list).

    Example:
        >>> default_nlist(100_000), default_nlist(1_000_000), default_nlist(500)
        (1024, 4096, 12)
    """
    nlist = 2 ** round(math.log2(max(1.0, 4.0 * math.sqrt(n))))
    return int(max(1, min(nlist, n // 39, 65536)))


def default_nprobe(nlist: int) -> int:
    """Lists scanned per query: ``max(8, nlist / 64)``, at most ``nlist``.

    Example:
        >>> default_nprobe(1024), default_nprobe(4096), default_nprobe(4)
        (16, 64, 4)
    """
    return int(min(nlist, max(8, nlist // 64)))


def _pq_m(d: int) -> int:
    """PQ sub-quantizers: ``d / 8`` when 8 divides ``d``, else the largest divisor of ``d`` up to ``d / 4``."""
    if d % 8 == 0:
        return d // 8
    return max(m for m in range(1, max(1, d // 4) + 1) if d % m == 0)


def _want_gpu(faiss: Any, device: Any) -> int | None:
    """The CUDA device id to build on, when ``device`` is CUDA and faiss has GPU support, else None."""
    if device is None:
        return None
    dev = torch.device(device)
    if dev.type != "cuda" or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return None
    return dev.index or 0


def faiss_search(q: np.ndarray, r: np.ndarray, k: int, metric: str, exclude_self: bool, *, index: str = "auto",
                 nlist: int | None = None, nprobe: int | None = None, seed: int = 0, device: Any = None
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Approximate top-``k`` of float32 rows ``q`` against ``r`` (cosine rows already normalised).

    Returns ``(scores [m, k], indices [m, k], description)``, best first (scores: similarity for
    cosine/ip, squared distance for l2), ``-1`` / NaN where the probed lists held fewer than ``k``
    rows; ``description`` names the index and its parameters (``index``, ``nlist``, ``nprobe``,
    ``train_rows``, ``device``), for the record.
    """
    faiss = load_faiss()
    kind = "ivf" if index == "auto" else index
    if kind not in INDEXES:
        raise ConfigError(f"unknown faiss index {index!r}; choose one of {', '.join(INDEXES)}.")
    n, d = r.shape
    if kind == "ivfpq" and n < 256 * 39:
        raise ConfigError(f"index='ivfpq' needs at least {256 * 39:,} reference rows to train its codebooks, got "
                          f"{n:,}; use index='ivf' (or the exact backend) for a set this small.")
    gpu = _want_gpu(faiss, device) if kind != "hnsw" else None  # faiss has no GPU HNSW
    metric_t = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    desc: dict[str, Any] = {"index": kind, "device": f"cuda:{gpu}" if gpu is not None else "cpu"}
    if device is not None and torch.device(device).type == "cuda" and gpu is None:
        desc["note"] = ("faiss has no GPU HNSW" if kind == "hnsw" else
                        "faiss has no GPU support here (faiss-cpu)") + ": the index ran on CPU"
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(torch.get_num_threads())  # the same threads as the exact search
    try:
        if kind in ("ivf", "ivfpq"):
            nl = default_nlist(n) if nlist is None else int(nlist)
            npb = default_nprobe(nl) if nprobe is None else int(nprobe)
            if not 1 <= nl <= n or not 1 <= npb:
                raise ConfigError(f"nlist must be in [1, {n}] and nprobe >= 1, got nlist={nl}, nprobe={npb}.")
            quantizer = faiss.IndexFlat(d, metric_t)
            if kind == "ivf":
                idx = faiss.IndexIVFFlat(quantizer, d, nl, metric_t)
            else:
                m_pq = _pq_m(d)
                idx = faiss.IndexIVFPQ(quantizer, d, nl, m_pq, 8, metric_t)
                desc["pq_bytes_per_vector"] = m_pq
            idx.cp.niter, idx.cp.seed = NITER, int(seed)
            n_train = min(n, max(TRAIN_PER_LIST * nl, 256 * 39 if kind == "ivfpq" else 0))
            rows = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False)) if n_train < n else None
            train = r if rows is None else r[rows]
            desc.update(nlist=nl, nprobe=min(npb, nl), train_rows=int(n_train))
        elif kind == "hnsw":
            idx = faiss.IndexHNSWFlat(d, 32, metric_t)
            idx.hnsw.efConstruction = 80
            train = None
            desc.update(M=32, efConstruction=80)
        else:
            idx, train = faiss.IndexFlat(d, metric_t), None
        if gpu is not None:
            idx = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), gpu, idx)
        if train is not None:
            idx.train(np.ascontiguousarray(train))
        idx.add(r)
        kq = min(k + int(exclude_self), n)
        if kind in ("ivf", "ivfpq"):
            faiss.ParameterSpace().set_index_parameter(idx, "nprobe", desc["nprobe"])  # CPU and GPU indexes
        elif kind == "hnsw":
            idx.hnsw.efSearch = max(64, 4 * kq)
            desc["efSearch"] = idx.hnsw.efSearch
        s, i = idx.search(q, kq)
    finally:
        faiss.omp_set_num_threads(threads)
    i = i.astype(np.int64)
    s = np.where(i >= 0, s, np.nan).astype(np.float32)
    if exclude_self:
        s, i = _drop_self(s, i, k)
    elif kq < k:
        s = np.concatenate([s, np.full((len(q), k - kq), np.nan, np.float32)], 1)
        i = np.concatenate([i, np.full((len(q), k - kq), -1, np.int64)], 1)
    return s, i, desc


def describe(desc: dict[str, Any]) -> str:
    """One line for a record or report: the faiss index and its parameters.

    Example:
        >>> describe({"index": "ivf", "nlist": 1024, "nprobe": 16, "device": "cpu"})
        'faiss IVF-Flat (nlist=1024, nprobe=16, cpu)'
    """
    name = {"ivf": "IVF-Flat", "ivfpq": "IVF-PQ", "hnsw": "HNSW", "flat": "Flat (exact)"}[desc["index"]]
    keys = ("nlist", "nprobe", "pq_bytes_per_vector", "M", "efConstruction", "efSearch")
    parts = [f"{k}={desc[k]}" for k in keys if k in desc] + [desc.get("device", "cpu")]
    return f"faiss {name} ({', '.join(parts)})"


def _drop_self(s: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index from its ``k + 1`` results (the last one when it is absent); pad to ``k``."""
    m = len(i)
    keep = i != np.arange(m)[:, None]
    keep &= np.cumsum(keep, 1) <= k  # at most k kept per row, the best first
    out_s = np.full((m, k), np.nan, np.float32)
    out_i = np.full((m, k), -1, np.int64)
    col = np.cumsum(keep, 1) - 1
    rows, cols = np.nonzero(keep)
    out_s[rows, col[rows, cols]] = s[rows, cols]
    out_i[rows, col[rows, cols]] = i[rows, cols]
    return out_s, np.where(out_i < 0, -1, out_i)
