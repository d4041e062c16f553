"""Pareto front of (speed, accuracy) points (the plot is drawn by :mod:`vitlab.report.perf_figures`).

Example:
    >>> pareto_front([100, 150, 120, 90], [0.90, 0.85, 0.80, 0.95]).tolist()
    [True, True, False, True]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pareto_front(speed: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """``[n]`` bool: points no other point beats on both axes (higher is better for both).

    A point is dominated when another is at least as fast and at least as accurate, and
    strictly better on one of the two. NaN points are never on the front.
    """
    s, a = np.asarray(speed, dtype=float), np.asarray(accuracy, dtype=float)
    if s.shape != a.shape or s.ndim != 1:
        raise ValueError(f"speed and accuracy must be 1-D of equal length, got {s.shape} and {a.shape}.")
    ok = ~(np.isnan(s) | np.isnan(a))
    front = np.zeros(len(s), dtype=bool)
    for i in np.flatnonzero(ok):
        ge = ok & (s >= s[i]) & (a >= a[i])
        gt = (s > s[i]) | (a > a[i])
        front[i] = not np.any(ge & gt)
    return front


__all__ = ["pareto_front"]
