"""Feature health during self-supervised training: pure functions, float64.

* :func:`normalized_std`: the mean over dimensions of the standard deviation of L2-normalised features
  (SimSiam, Chen & He 2021, Sec. 4.1): about ``1 / sqrt(d)`` for well-spread features, 0 when every image maps to
  the same direction (collapse).
* :func:`effective_rank`: ``exp(H(p))`` with ``p`` the normalised singular values of the centred feature matrix
  (Roy & Vetterli 2007; RankMe, Garrido et al. 2023): how many directions the features really use, from 1
  (collapse to a line) to ``min(n, d)``.
* :func:`mean_entropy`: the mean entropy (nats) of the teacher's output distributions (DINO's collapse
  diagnostic, Caron et al. 2021, Sec. 5.3): near ``log K`` for collapse to the uniform distribution, near 0 for
  collapse to one prototype (too much sharpening).

Example:
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 16))
    >>> round(normalized_std(x) * 4, 2), effective_rank(np.ones((50, 16))) == 1.0
    (1.0, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["normalized_std", "effective_rank", "mean_entropy", "health"]


def normalized_std(x: Any) -> float:
    """Mean per-dimension standard deviation (ddof 0) of the L2-normalised rows of ``x [n, d]``.

    Example:
        >>> normalized_std(np.ones((10, 4)))
        0.0
    """
    x = np.asarray(x, dtype=np.float64)
    z = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return float(z.std(axis=0).mean())


def effective_rank(x: Any, eps: float = 1e-12) -> float:
    """``exp(-sum p log p)`` with ``p = s / sum(s)``, ``s`` the singular values of the centred ``x [n, d]``.

    Constant features have no spread at all; their effective rank is reported as 1.

    Example:
        >>> round(effective_rank(np.diag([1.0, 1.0, 1.0, 1.0])), 6)
        3.0
    """
    x = np.asarray(x, dtype=np.float64)
    s = np.linalg.svd(x - x.mean(axis=0, keepdims=True), compute_uv=False)
    total = s.sum()
    if total <= eps:
        return 1.0
    p = s / total
    p = p[p > eps]
    return float(np.exp(-(p * np.log(p)).sum()))


def mean_entropy(probs: Any) -> float:
    """Mean entropy (nats) of the rows of ``probs [n, K]`` (each row a distribution).

    Example:
        >>> round(mean_entropy(np.full((3, 4), 0.25)), 6) == round(float(np.log(4)), 6)
        True
    """
    p = np.asarray(probs, dtype=np.float64)
    return float(-(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1).mean())


def health(features: Any) -> dict[str, float]:
    """:func:`normalized_std` and :func:`effective_rank` of ``features [n, d]``, with their reference values.

    Example:
        >>> sorted(health(np.eye(4)))
        ['dim', 'effective_rank', 'normalized_std', 'normalized_std_ideal']
    """
    x = np.asarray(features, dtype=np.float64)
    return {"normalized_std": normalized_std(x), "normalized_std_ideal": float(1.0 / np.sqrt(x.shape[1])),
            "effective_rank": effective_rank(x), "dim": int(x.shape[1])}
