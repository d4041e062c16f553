"""Pareto front of (speed, accuracy) points and the trade-off plot (matplotlib Agg, no pyplot).

Example:
    >>> pareto_front([100, 150, 120, 90], [0.90, 0.85, 0.80, 0.95]).tolist()
    [True, True, False, True]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def pareto_figure(points: Sequence[dict[str, Any]], *, curve: dict[str, Any] | None = None,
                  xlabel: str = "images/s", ylabel: str = "top-1 accuracy", title: str = ""):
    """Accuracy vs speed scatter with the Pareto front highlighted.

    Args:
        points: ``{"label", "speed", "accuracy", "front", optional "low", "high"}`` (CI of accuracy).
        curve: optional extra curve ``{"label", "speed": [...], "accuracy": [...]}``
            (e.g. an early-exit threshold sweep), drawn dashed; an optional ``"point": (speed, accuracy)``
            with ``"point_label"`` marks its operating point.

    Returns:
        A ``matplotlib.figure.Figure`` on an Agg canvas.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.6, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    pts = [p for p in points if p.get("speed") is not None and p.get("accuracy") is not None
           and np.isfinite(p["speed"]) and np.isfinite(p["accuracy"])]
    colors = [f"C{i % 10}" for i in range(len(pts))]
    for p, color in zip(pts, colors):  # one legend entry per variant: labels never overlap
        on = bool(p.get("front"))
        yerr = None
        if p.get("low") is not None and p.get("high") is not None:
            yerr = [[max(0.0, p["accuracy"] - p["low"])], [max(0.0, p["high"] - p["accuracy"])]]
        ax.errorbar([p["speed"]], [p["accuracy"]], yerr=yerr, fmt="o", ms=8 if on else 6, color=color,
                    mec="#c0392b" if on else color, mew=2 if on else 1, ecolor=color, elinewidth=0.8, capsize=2,
                    alpha=0.9, zorder=3, label=f"{p['label']}{' ★' if on else ''}")
    front = sorted((p for p in pts if p.get("front")), key=lambda p: p["speed"])
    if len(front) > 1:
        ax.plot([p["speed"] for p in front], [p["accuracy"] for p in front], "-", color="#c0392b", lw=1.5,
                label="Pareto front", zorder=2)
    if curve and len(curve.get("speed", [])):
        ax.plot(curve["speed"], curve["accuracy"], "--", marker=".", color="#555555", lw=1, ms=4,
                label=str(curve.get("label", "")), zorder=1)
        if curve.get("point"):
            (sx, sy) = curve["point"]
            ax.plot([sx], [sy], "D", color="#555555", ms=6, zorder=4, label=str(curve.get("point_label", "")))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if pts or curve:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def pareto_plot_uri(points: Sequence[dict[str, Any]], **kwargs: Any) -> str:
    """:func:`pareto_figure` as a ``data:image/png;base64,...`` URI (for self-contained HTML)."""
    from vitlab.report.figures import figure_to_data_uri

    return figure_to_data_uri(pareto_figure(points, **kwargs))


__all__ = ["pareto_front", "pareto_figure", "pareto_plot_uri"]
