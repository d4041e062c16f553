"""``retrieval``: rank a gallery for every query on frozen embeddings; relevance from labels.

Queries and gallery come from the split: ``mode="split"`` (default) queries the test items
against the training items; ``mode="all"`` queries every test item against the other test
items (leave-one-out, as metric-learning benchmarks such as SOP and CUB are evaluated; the
query itself is never retrieved). A gallery item is relevant when it has the query's label.

Rankings come from :func:`vitlab.neighbors.search` (cosine by default; ties go to the smaller
gallery row, so rankings are deterministic). With the exact backend the whole gallery is ranked
(in query blocks that bound memory), so ``map`` and ``map@r`` are exact. Past
``exact_max_gallery`` rows, or with ``backend="faiss"``, only the top ``max(ks)`` are retrieved with
a faiss HNSW index, and its recall against exact search is **measured** on a seeded sample of
queries and reported beside the numbers (``details["ann"]``); mAP is then not reported.

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
from vitlab.neighbors import METRICS, recall_at_k, search
from vitlab.protocols.base import Protocol, Result, Split, check_finite, register_protocol

__all__ = ["Retrieval", "RetrievalConfig"]

_BLOCK_ENTRIES = 1 << 24  # query-block size x gallery size bound for full rankings (~200 MB with indices)
N_EXAMPLES = 8


@dataclass(frozen=True)
class RetrievalConfig:
    """``ks`` of recall@k / precision@k / nDCG@k; ``metric`` (cosine, ip, l2); ``mode`` (split or all);
    ``backend`` (``auto``: exact up to ``exact_max_gallery`` gallery rows, faiss HNSW beyond;
    ``exact``; ``faiss``); ``ann_sample``: queries on which the approximate search's recall is measured."""

    ks: tuple[int, ...] = (1, 5, 10)
    metric: str = "cosine"
    mode: str = "split"
    backend: str = "auto"
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


def _relevance(idx: np.ndarray, gallery_y: np.ndarray, query_y: np.ndarray) -> np.ndarray:
    rel = gallery_y[np.maximum(idx, 0)] == query_y[:, None]
    return rel & (idx >= 0)


@register_protocol
class Retrieval(Protocol):
    """Query → gallery retrieval with recall@k, precision@k, nDCG@k, mAP and MAP@R, per-query CIs."""

    name = "retrieval"
    task = "retrieval"
    Config = RetrievalConfig
    help = "rank a gallery per query: recall@k, mAP, MAP@R, nDCG@k"

    def _run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str = "cpu") -> Result:
        check_finite(train, "train")
        check_finite(test, "test")
        cfg = self.config
        if cfg.mode == "split":
            gallery, query, self_match = train, test, False
        else:
            gallery, query, self_match = test, test, True
        n_g = len(gallery)
        n_rel = _count_relevant(gallery.y, query.y, self_match)
        ids = list(query.ids) if query.ids is not None else [str(r) for r in query.rows]
        check_relevance(np.zeros((len(query), 0), bool), n_rel, ids)
        ks = tuple(k for k in cfg.ks if k <= n_g - self_match)
        if not ks:
            raise ConfigError(f"retrieval: every k in {cfg.ks} exceeds the {n_g - self_match} gallery items.")
        approximate = cfg.backend == "faiss" or (cfg.backend == "auto" and n_g > cfg.exact_max_gallery)
        details: dict[str, Any] = {"mode": cfg.mode, "n_queries": len(query), "n_gallery": n_g,
                                   "backend": "faiss-hnsw" if approximate else "exact",
                                   "ties": "equal scores rank the smaller gallery row first"}
        if approximate:
            kmax = max(ks)
            nb = search(query.X, gallery.X, kmax, metric=cfg.metric, exclude_self=self_match, backend="faiss")
            rel = _relevance(nb.indices, gallery.y, query.y)
            sample = np.sort(np.random.default_rng(seed).choice(len(query), min(cfg.ann_sample, len(query)),
                                                                replace=False))
            exact = search(query.X[sample], gallery.X, kmax + self_match, metric=cfg.metric, device=device)
            ex_idx = exact.indices
            if self_match:  # drop each sampled query itself from its exact list
                ex_idx = np.stack([r[r != s][:kmax] for r, s in zip(ex_idx, sample)])
            details["ann"] = {"recall_at_k": recall_at_k(nb.indices[sample], ex_idx), "k": kmax,
                              "sampled_queries": int(len(sample)), "index": "faiss HNSW (M=32)"}
            top = nb.indices
            per_query = retrieval_metrics(rel, n_rel, ks, full_ranking=False)
        else:
            per_query_parts, top_parts = [], []
            length = n_g - self_match
            block = max(1, _BLOCK_ENTRIES // max(n_g, 1))
            for q0 in range(0, len(query), block):
                q1 = min(q0 + block, len(query))
                qx = query.X[q0:q1]
                if self_match:  # exclude each query itself: search the block against the full test set
                    nb = _search_excluding(qx, gallery.X, np.arange(q0, q1), length, cfg.metric, device)
                else:
                    nb = search(qx, gallery.X, length, metric=cfg.metric, device=device)
                rel = _relevance(nb.indices, gallery.y, query.y[q0:q1])
                per_query_parts.append(retrieval_metrics(rel, n_rel[q0:q1], ks, full_ranking=True))
                top_parts.append(nb.indices[:, :max(ks)])
            per_query = {k: np.concatenate([p[k] for p in per_query_parts]) for k in per_query_parts[0]}
            top = np.concatenate(top_parts)
        details["examples"] = _examples(query, gallery, top, seed)
        return Result("retrieval", ids, {"per_query": per_query}, query.groups,
                      {"metric": cfg.metric, "mode": cfg.mode}, details)


def _count_relevant(gallery_y: np.ndarray | None, query_y: np.ndarray | None, self_match: bool) -> np.ndarray:
    if gallery_y is None or query_y is None:
        raise DataError("retrieval needs labels to decide relevance: use labelled data (class subfolders or a "
                        "label column).")
    counts = np.bincount(gallery_y, minlength=int(max(gallery_y.max(), query_y.max())) + 1)
    return counts[query_y] - int(self_match)


def _search_excluding(qx: np.ndarray, gx: np.ndarray, self_rows: np.ndarray, length: int, metric: str,
                      device: str) -> Any:
    """Full ranking of ``gx`` for each query row, without the query's own gallery row."""
    nb = search(qx, gx, length + 1, metric=metric, device=device)
    keep = nb.indices != self_rows[:, None]
    idx = np.stack([r[m][:length] for r, m in zip(nb.indices, keep)])
    sc = np.stack([r[m][:length] for r, m in zip(nb.scores, keep)])
    return type(nb)(sc, idx, nb.metric, nb.backend)


def _examples(query: Split, gallery: Split, top: np.ndarray, seed: int) -> list[dict[str, Any]]:
    """A few seeded queries with their top-5 results, for the report."""
    if query.ids is None or gallery.ids is None:
        return []
    pick = np.sort(np.random.default_rng(seed).choice(len(query), min(N_EXAMPLES, len(query)), replace=False))
    return [{"id": query.ids[i], "label": int(query.y[i]),
             "results": [{"id": gallery.ids[j], "label": int(gallery.y[j]),
                          "relevant": bool(gallery.y[j] == query.y[i])} for j in top[i, :5] if j >= 0]}
            for i in pick]
