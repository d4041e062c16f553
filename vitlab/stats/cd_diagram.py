"""Critical-difference diagram (Demšar 2006, Fig. 1 style), drawn on an Agg canvas.

A new figure is a ``matplotlib.figure.Figure`` attached to an Agg canvas, not a
pyplot figure, so importing this module never changes the global backend and
works headless; ``fig.savefig(...)`` writes PNG/PDF/SVG.

A rank axis from 1 (best, left) to k, each method hung from its mean rank
with its name on the left (better half) or right (worse half), a CD scale bar
above the axis, and thick horizontal bars joining groups of methods whose mean
ranks differ by less than the critical difference (not significantly different).

Example:
    >>> fig = plot_critical_difference({"A": 1.2, "B": 2.1, "C": 2.7}, cd=1.0)
    >>> type(fig).__name__
    'Figure'
"""

from __future__ import annotations

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vitlab.errors import ConfigError, DataError

__all__ = ["plot_critical_difference", "cliques"]


def cliques(ranks: list[float], cd: float) -> list[tuple[int, int]]:
    """Maximal runs ``(i, j)`` of sorted ``ranks`` with ``ranks[j] - ranks[i] < cd`` and ``j > i``.

    Example:
        >>> cliques([1.0, 1.5, 3.0, 3.2], cd=1.0)
        [(0, 1), (2, 3)]
    """
    out: list[tuple[int, int]] = []
    for i in range(len(ranks)):
        j = i
        while j + 1 < len(ranks) and ranks[j + 1] - ranks[i] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in out):
            out.append((i, j))
    return out


def plot_critical_difference(
    mean_ranks: dict[str, float],
    cd: float,
    ax: Axes | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Draw a critical-difference diagram.

    Args:
        mean_ranks: ``{method: mean rank}`` (1 = best), e.g. from :func:`vitlab.stats.ranks.mean_ranks`.
        cd: Critical difference, e.g. from :func:`vitlab.stats.ranks.nemenyi_cd`.
        ax: Axes to draw into; a new figure is created when ``None``.
        title: Optional title.

    Returns:
        The matplotlib ``Figure`` containing the diagram.

    Example:
        >>> fig = plot_critical_difference({"dinov2": 1.5, "clip": 1.5}, cd=0.8)
    """
    if len(mean_ranks) < 2:
        raise DataError(f"need >= 2 methods for a CD diagram, got {list(mean_ranks)}.")
    if not cd > 0:
        raise ConfigError(f"cd={cd} must be > 0; compute it with nemenyi_cd(k, n_datasets).")
    items = sorted(mean_ranks.items(), key=lambda kv: (kv[1], kv[0]))
    names = [n for n, _ in items]
    ranks = [float(r) for _, r in items]
    k = len(items)
    lo, hi = 1, max(k, int(max(ranks) + 0.999))
    half = (k + 1) // 2
    n_rows = max(half, k - half)
    if ax is None:
        fig = Figure(figsize=(max(6.0, 1.2 * hi), 1.6 + 0.3 * n_rows))
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    else:
        fig = ax.figure
    ax.set_axis_off()
    span = hi - lo
    ax.set_xlim(lo - 0.45 * span - 0.6, hi + 0.45 * span + 0.6)
    ax.set_ylim(-(n_rows + 2.0), 2.2)
    # rank axis with ticks
    ax.plot([lo, hi], [0, 0], color="k", lw=1)
    for t in range(lo, hi + 1):
        ax.plot([t, t], [0, 0.15], color="k", lw=1)
        ax.text(t, 0.3, str(t), ha="center", va="bottom", fontsize=9)
    # CD scale bar
    ax.plot([lo, lo + cd], [1.4, 1.4], color="k", lw=1.5)
    for x in (lo, lo + cd):
        ax.plot([x, x], [1.3, 1.5], color="k", lw=1.5)
    ax.text(lo + cd / 2, 1.6, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    # methods: better half labelled left, worse half right
    for i, (name, r) in enumerate(zip(names, ranks)):
        left = i < half
        row = i if left else k - 1 - i
        y = -(row + 1.2)
        x_end = lo - 0.3 if left else hi + 0.3
        ax.plot([r, r, x_end], [0, y, y], color="k", lw=0.8)
        ax.text(x_end + (-0.05 if left else 0.05), y, f"{name} ({r:.2f})",
                ha="right" if left else "left", va="center", fontsize=9)
    # cliques of not-significantly-different methods
    for c, (i, j) in enumerate(cliques(ranks, cd)):
        y = -0.35 - 0.22 * c
        ax.plot([ranks[i] - 0.03, ranks[j] + 0.03], [y, y], color="k", lw=3, solid_capstyle="round")
    if title:
        ax.set_title(title)
    return fig
