"""Report section for ``"explore"`` run records: what the explorer page holds, a static overview of its map, and
a link to the page (registered with :func:`~vitlab.report.base.register_section`).

The report stays script-free: the section shows the map as a PNG scatter of the (seeded) sample of points the
record keeps (``details["map_sample"]``), coloured by label with the report's fixed palette, and links the
interactive page (a local file) written by ``vitlab explore``.

Example:
    >>> from vitlab.report.base import SECTIONS
    >>> SECTIONS["explore"][0]
    'Embedding explorer'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vitlab.record import RunRecord
from vitlab.report.base import RenderContext, _kv, e, register_section
from vitlab.report.figures import SEG_PALETTE
from vitlab.report.tables import fmt, fmt_ci

__all__ = ["map_figure_uri"]


def map_figure_uri(sample: dict[str, Any], classes: list[str]) -> str:
    """The record's map sample as a PNG ``data:`` URI (points coloured by label, legend by class name).

    Example:
        >>> uri = map_figure_uri({"x": [0.0, 1.0], "y": [1.0, 0.0], "label": [0, 1], "n": 2, "of": 2}, ["a", "b"])
        >>> uri.startswith("data:image/png;base64,")
        True
    """
    import numpy as np
    from matplotlib.figure import Figure

    from vitlab.report.figures import figure_to_data_uri

    x, y = np.asarray(sample.get("x", []), float), np.asarray(sample.get("y", []), float)
    lab = sample.get("label")
    fig = Figure(figsize=(5.2, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    size = 4 if len(x) > 1000 else 9
    if lab is None:
        ax.scatter(x, y, s=size, c="#4a7fc1", linewidths=0)
    else:
        lab = np.asarray(lab, int)
        for c in np.unique(lab):
            m = lab == c
            name = classes[c] if 0 <= c < len(classes) else str(c)
            ax.scatter(x[m], y[m], s=size, c=SEG_PALETTE[int(c) % len(SEG_PALETTE)], linewidths=0,
                       label=name if len(name) <= 24 else name[:23] + "…")
        if len(np.unique(lab)) <= 20:
            ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")
    return figure_to_data_uri(fig, dpi=100)


def _page_link(page: dict[str, Any]) -> str:
    p = page.get("path")
    if not p:
        return '<p class="note">No page was written for this run.</p>'
    path = Path(str(p))
    exists = path.is_file()
    href = path.resolve().as_uri() if path.is_absolute() or exists else None
    link = f'<a href="{e(href)}"><code>{e(str(p))}</code></a>' if href else f"<code>{e(str(p))}</code>"
    size = f"{page['bytes'] / 1e6:.1f} MB" if isinstance(page.get("bytes"), (int, float)) else "?"
    miss = "" if exists else ' <span class="warn">(not found where it was written)</span>'
    return (f"<p>Interactive page (opens offline in a browser): {link}{miss} · {size}, "
            f"{page.get('n_points', 0):,} points, thumbnails for {page.get('n_thumbnails', 0):,} items.</p>")


@register_section("explore", "Embedding explorer")
def _explore_section(records: list[RunRecord], ctx: RenderContext) -> str:
    out = []
    for r in records:
        c, d = r.config, r.details
        lay, data = d.get("layout", {}), d.get("data", {})
        out.append(f"<h3><code>{e(str(c.get('backbone')))}</code> on <code>{e(str(c.get('data')))}</code> "
                   f"<span class=small>run <code>{e(r.run_id)}</code> · layer {e(str(c.get('layer')))}, "
                   f"pool {e(str(c.get('pool')))}</span></h3>")
        out.append(_page_link(d.get("page") or {}))
        fitted = ("all items" if not lay.get("transformed") else
                  f"a seeded sample of {lay.get('fitted'):,}; {lay.get('transformed'):,} placed by "
                  f"{lay.get('placement')}")
        params = {k: v for k, v in (c.get("layout") or {}).items() if k != "method"}
        facts = [f"Map: {lay.get('method')} ({_kv(params)}) "
                 f"via {lay.get('library')} {lay.get('version')}, fitted on {fitted}"
                 + ("; read from the layout cache" if lay.get("from_cache") else "") + ".",
                 f"Neighbours: the {c.get('k')} nearest by cosine (vitlab.neighbors.search, exact)."]
        probe = d.get("probe")
        if probe:
            top1 = (r.metrics.get(probe.get("protocol")) or {}).get("top1")
            facts.append(f"Predictions: {probe.get('protocol')} probe on the split of vitlab eval --seed "
                         f"{c.get('seed')} ({probe.get('split_origin')}), {probe.get('n_test'):,} test items, "
                         f"top-1 {fmt_ci(top1)}.")
        if d.get("duplicates"):
            dd = d["duplicates"]
            facts.append(f"Duplicate groups: {dd.get('n_items'):,} items from curate run {dd.get('run_id')}.")
        if d.get("label_issues"):
            li = d["label_issues"]
            facts.append(f"Label issues: {li.get('n_issues'):,} flagged ({fmt(li.get('fraction'))}), "
                         f"{li.get('method')} probe, {li.get('folds')} folds.")
        out.append("<ul class=small>" + "".join(f"<li>{e(f)}</li>" for f in facts) + "</ul>")
        sample = d.get("map_sample")
        if sample and sample.get("x"):
            try:
                uri = map_figure_uri(sample, [str(x) for x in data.get("classes", [])])
                out.append(f'<div class="figs"><figure><img alt="map of the embeddings" src="{uri}"><figcaption>'
                           f"{sample.get('n', 0):,} of {sample.get('of', 0):,} points (seeded sample), coloured by "
                           "label</figcaption></figure></div>")
            except Exception as err:  # noqa: BLE001 - a plot failure must not sink the report
                out.append(f'<p class="note">Map unavailable: {e(type(err).__name__)}: {e(str(err))}</p>')
    return "".join(out)
