"""Report figures as self-contained ``data:image/png;base64,...`` URIs.

Every figure is a ``matplotlib.figure.Figure`` on an Agg canvas (never pyplot),
so rendering works headless and never changes the global backend. Images from
data sources become PNG thumbnails with PIL alone.

Example:
    >>> uri = confusion_matrix_uri([[5, 1], [0, 6]], ["cat", "dog"])
    >>> uri.startswith("data:image/png;base64,")
    True
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from vitlab.data.images import png_data_uri, thumbnail_uri  # noqa: F401  (figures of images; they live with the images)
from vitlab.stats.cd_diagram import plot_critical_difference

__all__ = ["png_data_uri", "figure_to_data_uri", "confusion_matrix_figure", "confusion_matrix_uri",
           "cd_diagram_uri", "thumbnail_uri", "SEG_PALETTE", "IGNORE_COLOUR", "class_colour", "label_map_image",
           "label_map_uri"]


#: Segmentation palette: class ``i`` is drawn in ``SEG_PALETTE[i % 20]``, the same colour in every figure and
#: legend of a report. It is matplotlib's ``tab20`` (dark shades first, then the light ones) with its two greys
#: (7 and 17) replaced by ``tab20b``'s indigo ``#393b79`` and gold ``#e7ba52``, so that grey only ever means
#: "ignored" (:data:`IGNORE_COLOUR`).
SEG_PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#393b79", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#e7ba52", "#dbdb8d", "#9edae5")
#: Pixels equal to the ignore index (unlabelled) are mid grey, whatever the palette.
IGNORE_COLOUR = "#9e9e9e"


def figure_to_data_uri(fig: Figure, *, dpi: int = 110) -> str:
    """Render a figure to PNG (tight bounding box) and return it as a ``data:`` URI.

    Example:
        >>> fig = Figure(figsize=(1, 1)); _ = FigureCanvasAgg(fig)
        >>> figure_to_data_uri(fig)[:22]
        'data:image/png;base64,'
    """
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.08, facecolor="white",
                metadata={"Software": None})
    return png_data_uri(buf.getvalue())


def _short(name: str, width: int = 18) -> str:
    """Keep both ends of a long name (``class_wi…name_12``): the end often tells classes apart."""
    return name if len(name) <= width else name[: width // 2] + "…" + name[-(width - width // 2 - 1):]


def confusion_matrix_figure(cm: Sequence[Sequence[int]] | np.ndarray, classes: Sequence[str], *,
                            title: str | None = None) -> Figure:
    """Heat-map of a confusion matrix: rows = true class, columns = predicted, colour = row share.

    Counts are written in the cells when there are at most 25 classes; class names label both axes
    (class indices above 50 classes).

    Args:
        cm: ``[C, C]`` counts, ``cm[i, j]`` = samples of true class ``i`` predicted as ``j``.
        classes: ``C`` class names.
        title: Optional title.

    Returns:
        The figure (Agg canvas).

    Example:
        >>> fig = confusion_matrix_figure([[3, 1], [0, 4]], ["a", "b"], title="knn")
        >>> len(fig.axes)
        2
    """
    m = np.asarray(cm, dtype=float)
    n = m.shape[0]
    names = [_short(str(c)) for c in classes] if len(classes) == n else [str(i) for i in range(n)]
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    side = min(12.0, max(3.0, 0.42 * n + 1.6))
    fig = Figure(figsize=(side + 0.9, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    font = 9 if n <= 12 else max(5, 9 - (n - 12) // 7)
    if n <= 50:
        ax.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor", fontsize=font)
        ax.set_yticks(range(n), names, fontsize=font)
    else:  # too many names to read: every k-th class index
        step = -(-n // 25)
        ax.set_xticks(range(0, n, step), [str(i) for i in range(0, n, step)], fontsize=font)
        ax.set_yticks(range(0, n, step), [str(i) for i in range(0, n, step)], fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if m[i, j]:
                    ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=font,
                            color="white" if share[i, j] > 0.55 else "black")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of true class", fontsize=8)
    cbar.ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def confusion_matrix_uri(cm: Sequence[Sequence[int]] | np.ndarray, classes: Sequence[str], *,
                         title: str | None = None) -> str:
    """:func:`confusion_matrix_figure` as a PNG ``data:`` URI.

    Example:
        >>> confusion_matrix_uri([[1, 0], [0, 1]], ["a", "b"]).startswith("data:image/png")
        True
    """
    return figure_to_data_uri(confusion_matrix_figure(cm, classes, title=title))


def cd_diagram_uri(mean_ranks: dict[str, float], cd: float, *, title: str | None = None) -> str:
    """Critical-difference diagram (:func:`vitlab.stats.cd_diagram.plot_critical_difference`) as a ``data:`` URI.

    Example:
        >>> cd_diagram_uri({"A": 1.2, "B": 2.1, "C": 2.7}, 1.0).startswith("data:image/png")
        True
    """
    return figure_to_data_uri(plot_critical_difference(mean_ranks, cd, title=title), dpi=120)


def class_colour(i: int, ignore_index: int | None = 255) -> str:
    """The fixed colour of class ``i`` in segmentation figures (:data:`SEG_PALETTE`; grey for ``ignore_index``).

    Example:
        >>> class_colour(0), class_colour(21), class_colour(255)
        ('#1f77b4', '#ff7f0e', '#9e9e9e')
    """
    if ignore_index is not None and i == ignore_index:
        return IGNORE_COLOUR
    return SEG_PALETTE[int(i) % len(SEG_PALETTE)]


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[k:k + 2], 16) for k in (1, 3, 5))  # type: ignore[return-value]


def label_map_image(labels: Sequence[Sequence[int]] | np.ndarray, *, ignore_index: int | None = 255,
                    size: int | None = None) -> Image.Image:
    """A ``[H, W]`` label map coloured with :data:`SEG_PALETTE` (ignore pixels :data:`IGNORE_COLOUR`).

    Args:
        labels: class index per pixel.
        ignore_index: label of unlabelled pixels (``None``: every value is a class).
        size: longest side in pixels (nearest-neighbour, so class borders stay sharp); ``None`` keeps the size.

    Returns:
        An RGB image.

    Example:
        >>> im = label_map_image([[0, 1], [255, 1]], size=4)
        >>> im.size, im.getpixel((0, 0)), im.getpixel((0, 3))
        ((4, 4), (31, 119, 180), (158, 158, 158))
    """
    lab = np.asarray(labels, dtype=np.int64)
    if lab.ndim != 2:
        raise ValueError(f"a label map is [H, W], got shape {lab.shape}.")
    lut = np.array([_rgb(c) for c in SEG_PALETTE], dtype=np.uint8)
    rgb = lut[np.mod(lab, len(SEG_PALETTE))]
    if ignore_index is not None:
        rgb[lab == ignore_index] = _rgb(IGNORE_COLOUR)
    im = Image.fromarray(rgb, "RGB")
    if size:
        h, w = lab.shape
        scale = size / max(h, w, 1)
        im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.NEAREST)
    return im


def label_map_uri(labels: Sequence[Sequence[int]] | np.ndarray, *, ignore_index: int | None = 255,
                  size: int | None = 112) -> str:
    """:func:`label_map_image` as a PNG ``data:`` URI.

    Example:
        >>> label_map_uri([[0, 1], [2, 255]]).startswith("data:image/png;base64,")
        True
    """
    buf = io.BytesIO()
    label_map_image(labels, ignore_index=ignore_index, size=size).save(buf, format="PNG", optimize=True)
    return png_data_uri(buf.getvalue())


def attention_heatmap_uri(x: Sequence[float], y: Sequence[float], attention: Sequence[float], *,
                          title: str | None = None) -> str:
    """A MIL bag's attention at its tiles' slide coordinates, as a PNG ``data:`` URI.

    Each tile is a square marker at ``(x, y)`` (image axes: ``y`` grows downwards, as slide
    coordinates do), coloured by its attention relative to uniform (``attention × bag size``; 1 =
    uniform) on a log scale, so a few highly attended tiles stand out from the rest.

    Example:
        >>> attention_heatmap_uri([0, 256, 0, 256], [0, 0, 256, 256], [0.5, 0.5, 2.0, 1.0])[:22]
        'data:image/png;base64,'
    """
    from matplotlib.colors import LogNorm

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    a = np.clip(np.asarray(attention, dtype=float), 1e-3, None)
    fig = Figure(figsize=(3.2, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    # marker size from the typical spacing of the tiles, so a regular grid looks like a filled slide
    span = max(float(np.ptp(xs)) if xs.size else 1.0, float(np.ptp(ys)) if ys.size else 1.0, 1.0)
    side = span / max(np.sqrt(max(xs.size, 1)), 1.0)
    s = max(2.0, (72 * 2.6 * side / (span + side)) ** 2)
    lo, hi = float(a.min()), float(a.max())
    sc = ax.scatter(xs, ys, c=a, s=s, marker="s", cmap="magma",
                    norm=LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 1.0001), linewidths=0)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(_short(title, 28), fontsize=8)
    cb = fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.04)
    cb.ax.tick_params(labelsize=6)
    cb.set_label("attention × bag size", fontsize=7)
    return figure_to_data_uri(fig, dpi=90)
