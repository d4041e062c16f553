"""Vendi score (Friedman & Dieng 2023), as dgm-eval's ``dgm_eval/metrics/vendi.py``.

With rows L2-normalised (``x_i / ||x_i||``; all-zero rows stay zero, as
``sklearn.preprocessing.normalize``) and the linear (= cosine) kernel
``K = X X^T`` (``[n, n]``), let ``lambda_i`` be the eigenvalues of ``K / n`` (they
sum to 1 when no row is zero). Then

    VS_q = exp(H_q(lambda)),   H_1 = -sum_{lambda_i > 0} lambda_i log lambda_i,
    H_q = log(sum_{lambda_i > 0} lambda_i^q) / (1 - q),   H_inf = -log max_i lambda_i.

The non-zero eigenvalues of ``X X^T / n`` equal those of the ``[d, d]`` matrix
``X^T X / n``, so when ``n > d`` the small matrix is decomposed instead (same
value up to rounding; zero eigenvalues contribute nothing to ``H``).

dgm-eval notes:

* dgm-eval's run script reports ``mean vendi per class`` of the *generated*
  features via ``compute_per_class_vendi_scores``, which loops
  ``for i in range(len(np.unique(labels))): reps[labels == i]`` -- it assumes
  labels are exactly ``0..C-1``. :func:`per_class_vendi_scores` iterates over the
  actual unique labels instead (identical for ``0..C-1`` labels).
* For ``q < 1`` dgm-eval's ``[n, n]`` form (``n > d``) also sums its ``n - d``
  rounding-noise eigenvalues (~1e-17, contributing ``(1e-17)^q`` each); the
  ``[d, d]`` form has none, so values can differ in the 7th digit.
* ``kernel="polynomial"`` (dgm-eval: ``(x.y/d + 1)^3`` on normalised rows) has
  diagonal ``(1/d + 1)^3 != 1``, so its eigenvalues do not sum to 1; reproduced
  as is (``[n, n]`` form only).

Example:
    >>> import numpy as np
    >>> round(vendi_score(np.eye(4)), 6)          # 4 orthogonal directions
    4.0
    >>> round(vendi_score(np.ones((10, 3))), 6)   # 10 copies of one point
    1.0
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.metrics._validate import check_features

__all__ = ["vendi_score", "per_class_vendi_scores", "entropy_q"]


def entropy_q(p: np.ndarray, q: float | str = 1) -> float:
    """Order-``q`` Rényi entropy of the eigenvalue "distribution" ``p`` (dgm-eval ``entropy_q``).

    ``q = 1``: ``-sum p log p``; ``q = "inf"``: ``-log max p``; otherwise
    ``log(sum p^q) / (1 - q)``; sums run over ``p > 0``.

    Example:
        >>> bool(abs(entropy_q(np.array([0.5, 0.5])) - np.log(2)) < 1e-12)
        True
    """
    p = np.asarray(p, dtype=np.float64)
    p_ = p[p > 0]
    if q == "inf":
        return float(-np.log(np.max(p)))
    if isinstance(q, str):
        raise ConfigError(f"q must be a positive number or 'inf' but got {q!r}.")
    if q == 1:
        return float(-(p_ * np.log(p_)).sum())
    if q <= 0:
        raise ConfigError(f"q must be a positive number or 'inf' but got {q!r}.")
    return float(np.log((p_**q).sum()) / (1 - q))


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1)
    norms[norms == 0.0] = 1.0
    return x / norms[:, None]


def _eigenvalues(x: np.ndarray, kernel: str) -> np.ndarray:
    n, d = x.shape
    if kernel == "linear":
        gram = (x.T @ x) / n if n > d else (x @ x.T) / n
        return np.linalg.eigvalsh(0.5 * (gram + gram.T))
    if kernel == "polynomial":
        k = (x @ x.T / d + 1.0) ** 3
        return np.linalg.eigvalsh(k / n)
    raise ConfigError(f"kernel must be 'linear' or 'polynomial' but got {kernel!r}.")


def vendi_score(
    features: np.ndarray,
    *,
    q: float | str = 1,
    normalize: bool = True,
    kernel: str = "linear",
) -> float:
    """Vendi score ``exp(H_q(eig(K / n)))`` of one feature set.

    Args:
        features: ``[n, d]`` features (typically generated samples).
        q: Order of the entropy (1 = Shannon, dgm-eval default; a positive float; or ``"inf"``).
        normalize: L2-normalise rows first, making the linear kernel the cosine kernel (default).
        kernel: ``"linear"`` (default; uses the ``[d, d]`` form when ``n > d``) or
            ``"polynomial"`` (dgm-eval's KID kernel, ``[n, n]`` form).

    Returns:
        Vendi score in ``[1, min(n, d)]`` for the cosine kernel.

    Raises:
        DataError: empty features or NaN/inf rows.
        ConfigError: unknown ``kernel`` or invalid ``q``.

    Example:
        >>> x = np.random.default_rng(0).standard_normal((500, 16))
        >>> 1.0 < vendi_score(x) <= 16.0
        True
    """
    if kernel not in ("linear", "polynomial"):
        raise ConfigError(f"kernel must be 'linear' or 'polynomial' but got {kernel!r}.")
    x = check_features(features, "input")
    if normalize:
        x = _normalize_rows(x)
    return float(np.exp(entropy_q(_eigenvalues(x, kernel), q=q)))


def per_class_vendi_scores(
    features: np.ndarray,
    labels: Any,
    *,
    q: float | str = 1,
    normalize: bool = True,
    kernel: str = "linear",
) -> dict[Hashable, float]:
    """Vendi score of each class's features (dgm-eval ``compute_per_class_vendi_scores``).

    dgm-eval reports the mean of these values as ``mean vendi per class``:
    ``np.mean(list(per_class_vendi_scores(x, y).values()))``.

    Args:
        features: ``[n, d]`` features.
        labels: ``[n]`` class labels (any hashable values).
        q: Entropy order (see :func:`vendi_score`).
        normalize: L2-normalise rows.
        kernel: ``"linear"`` or ``"polynomial"``.

    Returns:
        ``{label: vendi}`` in sorted label order.

    Raises:
        DataError: ``labels`` length differs from the number of rows.

    Example:
        >>> x = np.vstack([np.ones((3, 2)), np.eye(2)])
        >>> {k: round(v, 6) for k, v in per_class_vendi_scores(x, [0, 0, 0, 1, 1]).items()}
        {0: 1.0, 1: 2.0}
    """
    x = check_features(features, "input")
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != x.shape[0]:
        raise DataError(
            f"labels have shape {lab.shape} but features have {x.shape[0]} rows: pass one "
            "label per row."
        )
    out: dict[Hashable, float] = {}
    for c in np.unique(lab):
        key = c.item() if hasattr(c, "item") else c
        out[key] = vendi_score(x[lab == c], q=q, normalize=normalize, kernel=kernel)
    return out
