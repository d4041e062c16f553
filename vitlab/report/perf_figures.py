"""The figures and table rows of ``bench`` and ``tradeoff`` records (only :mod:`vitlab.report` renders records).

Example:
    >>> pts = [{"label": "none", "speed": 100.0, "accuracy": 0.90, "front": True},
    ...        {"label": "tome:r=8", "speed": 160.0, "accuracy": 0.88, "front": True}]
    >>> pareto_plot_uri(pts).startswith("data:image/png;base64,")
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vitlab.record import RunRecord

__all__ = ["bench_rows", "tradeoff_plot_uri", "pareto_figure", "pareto_plot_uri"]


def bench_rows(record: RunRecord) -> list[dict[str, Any]]:
    """Flat rows of a ``"bench"`` record for tables: one per variant, in run order.

    Keys: ``variant``, ``images_per_s``, ``images_per_s_min``, ``images_per_s_max``, ``speedup``,
    ``speedup_low``, ``speedup_high``, ``latency_p50_ms``, ``latency_p95_ms``, ``gflops``,
    ``flops_reduction``, ``params_m``, ``peak_memory_mb``, ``error`` (``None`` when measured).
    """
    rows = []
    for label in record.config.get("variants", list(record.metrics)):
        m = record.metrics.get(label)
        err = (record.details.get("results", {}).get(label) or {}).get("error")
        if m is None:
            rows.append({"variant": label, "error": err or "not measured"})
            continue
        g = lambda key, part="value": (m.get(key) or {}).get(part)  # noqa: E731
        rows.append({"variant": label, "images_per_s": g("images_per_s"), "images_per_s_min": g("images_per_s", "low"),
                     "images_per_s_max": g("images_per_s", "high"), "speedup": g("speedup"),
                     "speedup_low": g("speedup", "low"), "speedup_high": g("speedup", "high"),
                     "latency_p50_ms": g("latency_p50_ms"), "latency_p95_ms": g("latency_p95_ms"),
                     "gflops": None if g("flops") is None else g("flops") / 1e9,
                     "flops_reduction": g("flops_reduction"), "params_m": (g("params") or 0) / 1e6,
                     "peak_memory_mb": g("peak_memory_mb"), "error": None})
    return rows


def tradeoff_plot_uri(record: RunRecord) -> str:
    """Pareto plot of a ``"tradeoff"`` record: headline accuracy vs images/s, front in red, exit sweeps dashed."""
    head = record.config.get("headline", "knn")
    pts = []
    for r in record.details.get("table", []):
        if r.get("kind") != "accel" or r.get("images_per_s") is None:
            continue
        a = r.get("accuracy", {}).get(head) or {}
        pts.append({"label": r["variant"], "speed": r["images_per_s"], "accuracy": a.get("value"),
                    "low": a.get("low"), "high": a.get("high"), "front": r.get("pareto")})
    curve = None
    base = next((r for r in record.details.get("table", []) if r["variant"] == record.config.get("baseline")), {})
    for label, e in list(record.details.get("exits", {}).items())[:1]:
        if base.get("images_per_s") is not None:
            sw, thr = e["sweep"], base["images_per_s"]
            keep = [i for i, t in enumerate(sw["threshold"]) if t >= 0.5]
            curve = {"label": f"{label}: linear exit heads,\nthresholds 0.5-1 (heads' accuracy)",
                     "speed": [thr * sw["speedup"][i] for i in keep], "accuracy": [sw["accuracy"][i] for i in keep],
                     "point": (thr * e["point"]["speedup"], e["point"]["accuracy"]),
                     "point_label": f"{label} @ {e['threshold']:g}"}
    return pareto_plot_uri(pts, curve=curve, ylabel=f"top-1 accuracy ({head})",
                           title=f"{record.config.get('backbone')} on {record.config.get('dataset')}")


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
