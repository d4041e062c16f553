"""Early exit on a frozen backbone: pure pieces.

1. :func:`fit_exit_heads` fits one linear (logistic) head per layer on frozen
   intermediate embeddings ``[n, L, C]`` (the backbone is never trained);
2. :func:`exit_probabilities` gives each head's class probabilities ``[n, L, K]``;
3. :func:`exit_decisions` exits at the first layer whose max softmax probability
   reaches a threshold (else the last layer);
4. :func:`threshold_sweep` turns per-layer probabilities and per-layer cumulative
   wall-times into accuracy and expected time per threshold.

Example:
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 60); X = rng.normal(size=(60, 2, 4)); X[:, 1, 0] += 3 * y
    >>> heads = fit_exit_heads(X, y, C=1.0)
    >>> P = exit_probabilities(heads, X)
    >>> sweep = threshold_sweep(P, y, cum_time=[1.0, 2.0], thresholds=[0.0, 1.0])
    >>> sweep["expected_time"].tolist()          # threshold 0 exits at layer 0, threshold 1 runs all
    [1.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.protocols.linear import fit_logistic


@dataclass(frozen=True)
class ExitHead:
    """A linear head: ``softmax(X @ W + b)``; ``W [C, K]``, ``b [K]``."""

    W: np.ndarray
    b: np.ndarray

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``[n, K]`` class probabilities of ``X [n, C]``."""
        z = np.asarray(X, dtype=np.float64) @ self.W + self.b
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def _check_layers(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 3 or min(X.shape) == 0:
        raise DataError(f"expected per-layer embeddings [n, L, C], got shape {X.shape}. Stack the embeddings of "
                        "each exit layer along axis 1, e.g. np.stack([emb.get(l) for l in layers], 1).")
    return X


def fit_exit_heads(X: np.ndarray, y: np.ndarray, *, C: float = 1.0, num_classes: int | None = None,
                   max_iter: int = 1000) -> list[ExitHead]:
    """One L2-regularised logistic head per layer on frozen embeddings.

    Args:
        X: ``[n, L, C]`` embeddings of L exit layers (e.g. ``cls`` pooled).
        y: ``[n]`` integer labels.
        C: inverse regularisation strength (sklearn's C), shared by all heads.
        num_classes: number of classes (default ``max(y) + 1``).
        max_iter: L-BFGS iteration cap.

    Returns:
        L :class:`ExitHead` objects, in layer order.
    """
    X = _check_layers(X)
    return [ExitHead(*fit_logistic(X[:, l], y, C, num_classes=num_classes, max_iter=max_iter))
            for l in range(X.shape[1])]


def exit_probabilities(heads: Sequence[ExitHead], X: np.ndarray) -> np.ndarray:
    """``[n, L, K]`` probabilities of each layer's head on ``X [n, L, C]``."""
    X = _check_layers(X)
    if len(heads) != X.shape[1]:
        raise ConfigError(f"{len(heads)} heads for {X.shape[1]} layers; fit one head per exit layer.")
    return np.stack([h.predict_proba(X[:, l]) for l, h in enumerate(heads)], axis=1)


def exit_decisions(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Exit at the first layer whose max probability is ``>= threshold`` (else the last layer).

    Args:
        probs: ``[n, L, K]`` per-layer class probabilities.
        threshold: confidence threshold on the max softmax probability.

    Returns:
        ``(exit_layer [n] int, prediction [n] int)`` with exit layers as positions ``0..L-1``.

    Example:
        >>> p = np.array([[[0.6, 0.4], [0.1, 0.9]], [[0.95, 0.05], [0.2, 0.8]]])
        >>> exit_decisions(p, 0.9)
        (array([1, 0]), array([1, 0]))
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise DataError(f"expected probabilities [n, L, K], got shape {probs.shape}.")
    confident = probs.max(axis=2) >= threshold
    confident[:, -1] = True
    layer = confident.argmax(axis=1)
    pred = probs[np.arange(len(probs)), layer].argmax(axis=1)
    return layer, pred


def threshold_sweep(probs: np.ndarray, y: np.ndarray, cum_time: Sequence[float],
                    thresholds: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Accuracy and expected time of the confidence-threshold exit rule over a sweep.

    Args:
        probs: ``[n, L, K]`` per-layer probabilities (:func:`exit_probabilities`).
        y: ``[n]`` true labels.
        cum_time: ``[L]`` wall-time to reach and evaluate exit ``l`` (cumulative, non-decreasing),
            e.g. seconds per image.
        thresholds: thresholds to evaluate (default 0.0, 0.05, ..., 1.0).

    Returns:
        Dict of arrays, one entry per threshold: ``threshold``, ``accuracy``, ``expected_time``
        (mean ``cum_time`` at the exit layer), ``mean_exit_layer``, ``speedup`` (``cum_time[-1] / expected_time``),
        plus ``exit_fraction [T, L]`` (share of images exiting at each layer).
    """
    probs, y = np.asarray(probs), np.asarray(y)
    t = np.asarray(cum_time, dtype=np.float64)
    if probs.ndim != 3 or y.shape != (probs.shape[0],):
        raise DataError(f"probs {probs.shape} and labels {y.shape} do not match: expected [n, L, K] and [n].")
    if t.shape != (probs.shape[1],) or np.any(np.diff(t) < 0) or np.any(t < 0):
        raise ConfigError(f"cum_time must hold {probs.shape[1]} non-negative, non-decreasing cumulative times "
                          f"(one per exit layer), got {t.tolist()}.")
    ths = np.linspace(0, 1, 21) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    L = probs.shape[1]
    acc, exp_t, mean_l, frac = [], [], [], []
    for th in ths:
        layer, pred = exit_decisions(probs, float(th))
        acc.append(float(np.mean(pred == y)))
        exp_t.append(float(t[layer].mean()))
        mean_l.append(float(layer.mean()))
        frac.append(np.bincount(layer, minlength=L) / len(layer))
    exp_arr = np.asarray(exp_t)
    return {"threshold": ths, "accuracy": np.asarray(acc), "expected_time": exp_arr,
            "mean_exit_layer": np.asarray(mean_l),
            "speedup": np.divide(t[-1], exp_arr, out=np.full_like(exp_arr, np.nan), where=exp_arr > 0),
            "exit_fraction": np.stack(frac)}


__all__ = ["ExitHead", "fit_exit_heads", "exit_probabilities", "exit_decisions", "threshold_sweep"]
