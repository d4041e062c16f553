"""``retrieval``: rank a gallery for every query on frozen embeddings; relevance from labels.

Queries and gallery come from the split: ``mode="split"`` (default) queries the test items
against the training items; ``mode="all"`` queries every test item against the other test
items (leave-one-out, as metric-learning benchmarks such as SOP and CUB are evaluated; the
query itself is never retrieved). A ``csv:`` manifest with a ``role`` column (query, gallery,
both) names them explicitly instead (:func:`vitlab.evaluate` passes queries as ``test`` and the
gallery as ``train``). A gallery item is relevant when it has the query's label, or, with a
``positives`` column (``extra["positives"]``: query id → relevant gallery ids, several allowed),
when the query lists it.

Rankings come from :func:`vitlab.neighbors.search` (cosine by default; ties go to the smaller
gallery row, so rankings are deterministic). With the exact backend the whole gallery is ranked
(one GEMM and one stable sort per query block of bounded size), so ``map`` and ``map@r`` are exact.
With ``backend="faiss"`` (or ``auto`` past ``exact_max_gallery`` rows), only the top ``max(ks)`` are
retrieved with a faiss IVF index (``nlist`` / ``nprobe`` from the gallery size, see
:func:`vitlab.neighbors.search`), and its recall against exact search is **measured** on a seeded
sample of queries and reported beside the numbers (``details["ann"]``); mAP is then not reported.

Example:
    >>> import numpy as np
    >>> from vitlab.protocols.base import Split
    >>> rng = np.random.default_rng(0); y = np.arange(60) % 3; X = np.eye(3)[y] + 0.3 * rng.normal(size=(60, 3))
    >>> res = Retrieval(ks=(1, 5)).run(Split(X[:40], y[:40], np.arange(40)), Split(X[40:], y[40:], np.arange(40, 60)),
    ...                                seed=0, n_classes=3)
    >>> sorted(res.outputs["per_query"])
    ['map', 'map@r', 'ndcg@1', 'ndcg@5', 'precision@1', 'precision@5', 'recall@1', 'recall@5']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.metrics.retrieval import check_relevance, retrieval_metrics
from vitlab._neighbors_faiss import describe
from vitlab.neighbors import METRICS, recall_at_k, search
from vitlab.protocols.base import Protocol, Result, Split, check_finite, register_protocol

__all__ = ["Retrieval", "RetrievalConfig"]

_BLOCK_ENTRIES = 1 << 24  # query-block size x gallery size bound for full rankings (~200 MB with indices)
N_EXAMPLES = 8


@dataclass(frozen=True)
class RetrievalConfig:
    """``ks`` of recall@k / precision@k / nDCG@k; ``metric`` (cosine, ip, l2); ``mode`` (split or all);
    ``backend``: ``exact`` (default: the whole ranking, so mAP is exact), ``faiss`` (IVF top-k), or
    ``auto`` (exact up to ``exact_max_gallery`` gallery rows, faiss beyond). An index is built for each
    run, so faiss pays off only for many queries against a large gallery (BENCHMARKS.md, issue 21);
    ``ann_sample``: queries on which the approximate search's recall against exact search is measured."""

    ks: tuple[int, ...] = (1, 5, 10)
    metric: str = "cosine"
    mode: str = "split"
    backend: str = "exact"
    exact_max_gallery: int = 100_000
    ann_sample: int = 1000

    def __post_init__(self) -> None:
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"retrieval: ks must be positive integers, got {self.ks}; e.g. ks=[1,5,10].")
        if self.metric not in METRICS:
            raise ConfigError(f"retrieval: metric must be one of {', '.join(METRICS)}, got {self.metric!r}.")
        if self.mode not in ("split", "all"):
            raise ConfigError(f"retrieval: mode must be 'split' (test queries, train gallery) or 'all' "
                              f"(every test item against the others), got {self.mode!r}.")
        if self.backend not in ("auto", "exact", "faiss"):
            raise ConfigError(f"retrieval: backend must be auto, exact or faiss, got {self.backend!r}.")
        if self.exact_max_gallery < 1 or self.ann_sample < 1:
            raise ConfigError("retrieval: exact_max_gallery and ann_sample must be >= 1.")


def _ranked(relevant: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``[b, L]`` relevance of each ranked gallery row (``-1`` padding is never relevant)."""
    return np.take_along_axis(relevant, np.maximum(idx, 0), 1) & (idx >= 0)


def _relevance_fn(gallery: Split, query: Split, self_pos: np.ndarray):
    """``relevant(q0, q1) -> [q1 - q0, n_gallery]`` bool: from ``extra["positives"]`` (query id → ids of its
    relevant gallery items) when given, else from equal labels; a query is never its own relevant item
    (``self_pos[q]``: the gallery position of query ``q`` itself, or -1)."""
    positives = query.extra.get("positives")
    g_ids = [str(i) for i in gallery.ids] if gallery.ids is not None else None
    q_ids = [str(i) for i in query.ids] if query.ids is not None else None
    if positives is not None:
        if g_ids is None or q_ids is None:
            raise DataError("retrieval with explicit positives needs item ids on both sides.")
        where = {gid: j for j, gid in enumerate(g_ids)}
    elif gallery.y is None or query.y is None:
        raise DataError("retrieval needs labels to decide relevance, or a positives column in the manifest "
                        "(ids of each query's relevant gallery items).")

    def relevant(q0: int, q1: int) -> np.ndarray:
        if positives is not None:
            out = np.zeros((q1 - q0, len(g_ids)), bool)
            for r, qid in enumerate(q_ids[q0:q1]):
                cols = [where[p] for p in positives.get(qid, ()) if p in where]
                out[r, cols] = True
        else:
            out = gallery.y[None, :] == query.y[q0:q1, None]
        sp = self_pos[q0:q1]
        has = np.flatnonzero(sp >= 0)
        out[has, sp[has]] = False
        return out

    return relevant


def _self_positions(gallery: Split, query: Split) -> np.ndarray:
    """``[m]`` gallery position of each query's own row (same embedding row), or -1."""
    where = {int(r): j for j, r in enumerate(np.asarray(gallery.rows))}
    return np.array([where.get(int(r), -1) for r in np.asarray(query.rows)], dtype=np.int64)


def _drop_self(nb: Any, self_pos: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each query's own gallery row from its ranking; keep ``length`` columns (-1 padded)."""
    idx, sc = nb.indices, nb.scores
    keep = idx != self_pos[:, None]
    out_i = np.full((idx.shape[0], length), -1, np.int64)
    out_s = np.full((idx.shape[0], length), np.nan, np.float32)
    for r in range(idx.shape[0]):
        row_i, row_s = idx[r][keep[r]][:length], sc[r][keep[r]][:length]
        out_i[r, :len(row_i)], out_s[r, :len(row_s)] = row_i, row_s
    return out_i, out_s


@register_protocol
class Retrieval(Protocol):
    """Query → gallery retrieval with recall@k, precision@k, nDCG@k, mAP and MAP@R, per-query CIs."""

    name = "retrieval"
    task = "retrieval"
    Config = RetrievalConfig
    uses_roles = True  # evaluate() honours a manifest's role / positives columns
    help = "rank a gallery per query: recall@k, mAP, MAP@R, nDCG@k"

    def _run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str = "cpu") -> Result:
        check_finite(train, "train")
        check_finite(test, "test")
        cfg = self.config
        gallery, query = (train, test) if cfg.mode == "split" else (test, test)
        self_pos = _self_positions(gallery, query)  # mode all; or rows that are both query and gallery
        has_self = bool((self_pos >= 0).any())
        n_g = len(gallery)
        relevant = _relevance_fn(gallery, query, self_pos)
        n_rel = np.concatenate([relevant(q0, min(q0 + 4096, len(query))).sum(1)
                                for q0 in range(0, len(query), 4096)]).astype(np.int64)
        ids = list(query.ids) if query.ids is not None else [str(r) for r in query.rows]
        check_relevance(np.zeros((len(query), 0), bool), n_rel, ids)
        ks = tuple(k for k in cfg.ks if k <= n_g - has_self)
        if not ks:
            raise ConfigError(f"retrieval: every k in {cfg.ks} exceeds the {n_g - has_self} gallery items.")
        approximate = cfg.backend == "faiss" or (cfg.backend == "auto" and n_g > cfg.exact_max_gallery)
        details: dict[str, Any] = {"mode": cfg.mode, "n_queries": len(query), "n_gallery": n_g,
                                   "backend": "exact",
                                   "ties": "equal scores rank the smaller gallery row first",
                                   "queries_in_gallery": int(has_self and (self_pos >= 0).sum())}
        if approximate:
            kmax = max(ks)
            nb = search(query.X, gallery.X, kmax + has_self, metric=cfg.metric, backend="faiss", device=device,
                        recall_sample=0, seed=seed)  # recall measured below, after dropping each query's own row
            details["backend"] = f"faiss-{nb.index['index']}"
            top, _ = _drop_self(nb, self_pos, kmax)
            rel = _ranked(relevant(0, len(query)), top)
            sample = np.sort(np.random.default_rng(seed).choice(len(query), min(cfg.ann_sample, len(query)),
                                                                replace=False))
            exact = search(query.X[sample], gallery.X, kmax + has_self, metric=cfg.metric, device=device)
            ex_idx, _ = _drop_self(exact, self_pos[sample], kmax)
            details["ann"] = {"recall_at_k": recall_at_k(top[sample], ex_idx), "k": kmax,
                              "sampled_queries": int(len(sample)), "index": describe(nb.index),
                              "index_params": nb.index}
            per_query = retrieval_metrics(rel, n_rel, ks, full_ranking=False)
        else:
            per_query_parts, top_parts = [], []
            block = max(1, _BLOCK_ENTRIES // max(n_g, 1))
            for q0 in range(0, len(query), block):
                q1 = min(q0 + block, len(query))
                nb = search(query.X[q0:q1], gallery.X, n_g, metric=cfg.metric, device=device)
                idx = _drop_self(nb, self_pos[q0:q1], n_g)[0] if has_self else nb.indices
                rel = _ranked(relevant(q0, q1), idx)
                per_query_parts.append(retrieval_metrics(rel, n_rel[q0:q1], ks, full_ranking=True))
                top_parts.append(idx[:, :max(ks)])
            per_query = {k: np.concatenate([p[k] for p in per_query_parts]) for k in per_query_parts[0]}
            top = np.concatenate(top_parts)
        details["examples"] = _examples(query, gallery, top, relevant, seed)
        return Result("retrieval", ids, {"per_query": per_query}, query.groups,
                      {"metric": cfg.metric, "mode": cfg.mode}, details)


def _examples(query: Split, gallery: Split, top: np.ndarray, relevant: Any, seed: int) -> list[dict[str, Any]]:
    """A few seeded queries with their top-5 results (and whether each is relevant), for the report."""
    if query.ids is None or gallery.ids is None:
        return []
    pick = np.sort(np.random.default_rng(seed).choice(len(query), min(N_EXAMPLES, len(query)), replace=False))
    label = lambda s, i: None if s.y is None else int(s.y[i])  # noqa: E731
    out = []
    for i in pick:
        rel = relevant(int(i), int(i) + 1)[0]
        out.append({"id": query.ids[i], "label": label(query, i),
                    "results": [{"id": gallery.ids[j], "label": label(gallery, j), "relevant": bool(rel[j])}
                                for j in top[i, :5] if j >= 0]})
    return out
