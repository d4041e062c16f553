"""Score-based filters (DataComp, Data Filtering Networks) on cached embeddings, with retention histograms.

* ``target``: similarity of each item to its nearest item of a target set (kept when >= ``min``);
* ``prompt``: for image-text backbones, cosine of the image embedding to its own class's prompt
  embedding (CLIP-score filtering; the zero-shot text tower and prompt cache are reused);
* ``outlier``: cosine distance to the k-th nearest other item (large = isolated); the
  ``drop`` fraction with the largest distances is removed.

Every search is :func:`vitlab.neighbors.search`.

Example:
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.95, 0.05], [0.0, 1.0]])
    >>> f = outlier_filter(X, k=1, drop=0.25)
    >>> f.kept.tolist()
    [True, True, True, False]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.neighbors import search

__all__ = ["FilterResult", "target_filter", "prompt_filter", "outlier_filter", "retention"]


@dataclass(frozen=True)
class FilterResult:
    """One filter's per-item scores and decision.

    Attributes:
        name: ``target``, ``prompt`` or ``outlier``. scores: ``[n]`` float64.
        kept: ``[n]`` bool. threshold: the cut (``None``: scores reported, nothing dropped).
        higher_is_better: whether items with larger scores are kept.
    """

    name: str
    scores: np.ndarray
    kept: np.ndarray
    threshold: float | None
    higher_is_better: bool

    def summary(self, bins: int = 30) -> dict[str, Any]:
        """JSON-ready: threshold, counts and the retention histogram (:func:`retention`)."""
        return {"name": self.name, "threshold": self.threshold, "higher_is_better": self.higher_is_better,
                "n": int(len(self.scores)), "n_kept": int(self.kept.sum()),
                "retention": retention(self.scores, self.higher_is_better, bins=bins)}


def retention(scores: np.ndarray, higher_is_better: bool, bins: int = 30) -> dict[str, Any]:
    """Histogram of ``scores`` and the fraction kept if the cut were at each bin edge.

    Example:
        >>> r = retention(np.array([0.0, 0.5, 1.0]), True, bins=2)
        >>> r["counts"], r["kept_fraction"]
        ([1, 2], [1.0, 0.6666666666666666, 0.3333333333333333])
    """
    s = np.asarray(scores, np.float64)
    counts, edges = np.histogram(s, bins=bins)
    srt = np.sort(s)
    if higher_is_better:
        kept = (len(s) - np.searchsorted(srt, edges, side="left")) / len(s)
    else:
        kept = np.searchsorted(srt, edges, side="right") / len(s)
    return {"edges": edges.tolist(), "counts": counts.tolist(), "kept_fraction": kept.tolist()}


def _keep_min(scores: np.ndarray, minimum: float | None) -> np.ndarray:
    return np.ones(len(scores), bool) if minimum is None else scores >= minimum


def target_filter(X: np.ndarray, T: np.ndarray, minimum: float | None = None) -> FilterResult:
    """Cosine of each row of ``X [n, C]`` to its nearest row of the target set ``T [m, C]``.

    Example:
        >>> target_filter(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.1]]), 0.5).kept.tolist()
        [True, False]
    """
    s = search(X, T, k=1, metric="cosine").scores[:, 0].astype(np.float64)
    return FilterResult("target", s, _keep_min(s, minimum), minimum, True)


def prompt_filter(E: np.ndarray, labels: np.ndarray | None, text: np.ndarray, minimum: float | None = None
                  ) -> FilterResult:
    """Cosine of each image embedding ``E [n, D]`` to its class's prompt embedding.

    Args:
        E: image-text embeddings (``Embeddings.get(-1, "embed")``).
        labels: ``[n]`` class indices (required).
        text: ``[n_classes, n_templates, D]`` prompt embeddings (:func:`vitlab.protocols.text_cache.text_embeddings`),
            ensembled as zero-shot does (:func:`vitlab.protocols.zeroshot_math.zeroshot_weights`).

    Example:
        >>> E = np.array([[1.0, 0.0], [1.0, 0.0]]); text = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
        >>> prompt_filter(E, np.array([0, 1]), text).scores.tolist()
        [1.0, 0.0]
    """
    from vitlab.protocols.zeroshot_math import zeroshot_weights

    if labels is None:
        raise DataError("the prompt filter scores each image against its class's prompt, so it needs labels; "
                        "use labelled data (class folders or a label column).")
    W = zeroshot_weights(text)  # [D, n_classes], unit columns
    En = np.asarray(E, np.float64)
    En = En / np.maximum(np.linalg.norm(En, axis=1, keepdims=True), 1e-12)
    s = np.einsum("nd,dn->n", En, np.asarray(W, np.float64)[:, np.asarray(labels)])
    return FilterResult("prompt", s, _keep_min(s, minimum), minimum, True)


def outlier_filter(X: np.ndarray, k: int = 10, drop: float = 0.0) -> FilterResult:
    """k-NN-distance outlier score: cosine distance ``1 - cos`` to the k-th nearest other row.

    Args:
        X: ``[n, C]`` embeddings (``n > k``).
        k: which neighbour (1 = nearest).
        drop: fraction in ``[0, 1)`` of the items with the largest scores to remove (0 = score only).

    Example:
        >>> outlier_filter(np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]), k=1).threshold is None
        True
    """
    if not 0.0 <= drop < 1.0:
        raise ConfigError(f"outlier drop must be a fraction in [0, 1), e.g. 0.01; got {drop}.")
    n = len(X)
    if not 1 <= k < n:
        raise ConfigError(f"outlier k must be in [1, {n - 1}] for {n} items, got {k}.")
    s = 1.0 - search(X, X, k=k, metric="cosine", exclude_self=True).scores[:, k - 1].astype(np.float64)
    if drop == 0:
        return FilterResult("outlier", s, np.ones(n, bool), None, False)
    n_drop = int(np.floor(drop * n))
    order = np.argsort(-s, kind="stable")  # largest first, ties to the smaller row
    kept = np.ones(n, bool)
    kept[order[:n_drop]] = False
    cut = float(s[order[n_drop - 1]]) if n_drop else None
    return FilterResult("outlier", s, kept, cut, False)
