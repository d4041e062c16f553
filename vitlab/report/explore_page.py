"""The embedding explorer page: ONE self-contained HTML file (inline CSS, script and data; no network, no server).

:func:`write_explore_page` renders an :class:`~vitlab.exploration.ExploreResult`: every point is drawn on one
``<canvas>`` (an SVG element per point would not hold 1e5 points), coloured by label, split, predicted class,
correct/wrong, duplicate group or label-issue score; hovering shows the item's thumbnail, id, label and
prediction; clicking lists its ``k`` nearest neighbours (precomputed with :func:`vitlab.neighbors.search`) with
thumbnails and cosine similarities; classes can be hidden, an id found, and a selection (shift + drag) exported
as a ``csv:`` manifest (``path,label,split,group,id``; ``path`` only when the data's images are files).

Thumbnails are made by :func:`vitlab.report.figures.thumbnail_uri` (the one place vitlab makes them) for every
item when there are at most ``max_thumbs`` items (default 10,000), else for a seeded sample of ``max_thumbs``
items (the others show "no thumbnail"; every point is still drawn). Images smaller than ``thumb_size`` are
embedded at their own size and enlarged by the browser; grey images are stored as one channel.

Safety: the data travels as JSON inside ``<script type="application/json">`` with ``<``, ``>`` and ``&``
escaped as ``\\u003c``, ``\\u003e``, ``\\u0026``, and the script shows every string with ``textContent``, so an id
such as ``<script>alert(1)</script>`` is shown as text and never run. Header text is HTML-escaped.

Example:
    >>> import vitlab
    >>> res = vitlab.explore("demo:fmnist-vit", "sample:digits?limit=200", layout="pca", page="explore.html",
    ...                      n_resamples=20, progress=False)
    >>> write_explore_page(res)["n_points"]
    200
"""

from __future__ import annotations

import base64
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.report.base import e
from vitlab.report.figures import SEG_PALETTE, thumbnail_uri
from vitlab.report.tables import fmt, fmt_ci

__all__ = ["write_explore_page", "render_explore_page", "page_payload", "safe_json"]

_SPLITS = ("train", "val", "test")


def safe_json(obj: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: ``<``, ``>``, ``&`` and line separators escaped.

    Example:
        >>> safe_json({"id": "</script><b>&"})
        '{"id":"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e\\\\u0026"}'
    """
    s = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _b64(a: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def _thumb(img: Any, size: int) -> str:
    """:func:`thumbnail_uri` at ``min(size, longest side)`` (no enlarging); one channel when the image is grey."""
    if img.mode != "L":
        a = np.asarray(img.convert("RGB"))
        if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
            img = img.convert("L")
    return thumbnail_uri(img, min(int(size), max(img.size)))


def thumbnail_rows(n: int, max_thumbs: int, seed: int) -> np.ndarray:
    """The rows that get a thumbnail: all ``n`` when ``n <= max_thumbs``, else a seeded sample, sorted.

    Example:
        >>> thumbnail_rows(4, 10, 0).tolist(), len(thumbnail_rows(100, 10, 0))
        ([0, 1, 2, 3], 10)
    """
    if n <= max_thumbs:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, max_thumbs, replace=False)).astype(np.int64)


def _thumbnails(data: Any, max_thumbs: int, size: int, seed: int) -> tuple[list[int], list[str], int]:
    rows, uris, failed = [], [], 0
    for r in thumbnail_rows(len(data), max_thumbs, seed).tolist():
        try:
            uris.append(_thumb(data.source.load_image(int(data.index[r])), size))
            rows.append(r)
        except Exception:  # noqa: BLE001 - an unreadable image loses its thumbnail, not the page
            failed += 1
    return rows, uris, failed


def page_payload(res: Any, thumbs: tuple[list[int], list[str], int] | None = None) -> dict[str, Any]:
    """The page's data (what the script reads), from an :class:`~vitlab.exploration.ExploreResult`."""
    d = res.data
    n, k = len(d), int(d.nn_idx.shape[1])
    if thumbs is None:
        thumbs = _thumbnails(d, res.max_thumbs, res.thumb_size, int(res.record.config.get("seed", 0)))
    split = None
    if d.split is not None:
        names = [s for s in _SPLITS if s in set(d.split.tolist())] + sorted(set(d.split.tolist()) - set(_SPLITS))
        where = {s: i for i, s in enumerate(names)}
        split = {"names": names, "codes": [where[s] for s in d.split.tolist()]}
    issues = None
    if d.issues is not None:
        issues = {"score": np.round(np.clip(d.issues["score"], 0.0, 1.0), 4).tolist(),
                  "flag": d.issues["is_issue"].astype(int).tolist(), "rank": d.issues["rank"].astype(int).tolist(),
                  "suggested": d.issues["suggested"].astype(int).tolist()}
    return {"n": n, "k": k, "ids": list(d.ids), "classes": list(d.classes),
            "labels": None if d.labels is None else d.labels.astype(int).tolist(), "split": split,
            "pred": None if d.pred is None else d.pred.astype(int).tolist(),
            "dup": None if d.dup is None else d.dup.astype(int).tolist(), "dupKinds": d.dup_kinds, "issues": issues,
            "paths": d.paths, "groups": d.groups, "palette": list(SEG_PALETTE),
            "xy": _b64(d.xy, "<f4"), "nn": _b64(d.nn_idx, "<i4"), "nnSim": _b64(np.nan_to_num(d.nn_sim), "<f4"),
            "thumbRows": thumbs[0], "thumbs": thumbs[1]}


def _asset(name: str) -> str:
    return resources.files("vitlab.report").joinpath("assets", name).read_text(encoding="utf-8")


def _header(res: Any, n_thumbs: int, failed: int) -> tuple[str, list[str]]:
    r, c, d = res.record, res.record.config, res.data
    lay = r.details.get("layout", {})
    fitted = (f"fitted on all {lay.get('n'):,} items" if not lay.get("transformed") else
              f"fitted on a seeded sample of {lay.get('fitted'):,}, the other {lay.get('transformed'):,} placed by "
              f"{lay.get('placement')}")
    params = ", ".join(f"{k}={v}" for k, v in (c.get("layout") or {}).items() if k != "method")
    meta = (f"<code>{e(str(c.get('backbone')))}</code> on <code>{e(str(c.get('data')))}</code> · {len(d):,} items · "
            f"layer {e(str(c.get('layer')))}, pool {e(str(c.get('pool')))} · "
            f"layout <b>{e(str(lay.get('method')))}</b> "
            f"({e(params)}; {e(fitted)}) · run <code>{e(r.run_id)}</code>")
    notes = []
    probe = r.details.get("probe")
    if probe:
        top1 = (r.metrics.get(probe["protocol"]) or {}).get("top1")
        notes.append(f"Predicted class and correct/wrong: the {probe['protocol']} probe of vitlab eval --seed "
                     f"{c.get('seed')} ({probe.get('split_origin')}), fitted on its {probe['n_train']:,} train items; "
                     f"shown for its {probe['n_test']:,} test items (top-1 {fmt_ci(top1)}); train items are grey.")
    n = len(d)
    notes.append(f"Thumbnails for all {n_thumbs:,} items." if n_thumbs + failed == n else
                 f"Thumbnails for a seeded sample of {n_thumbs:,} of {n:,} items (max_thumbs={res.max_thumbs:,}); "
                 "every point is drawn, the others show no thumbnail.")
    if failed:
        notes.append(f"{failed} image(s) could not be read: no thumbnail.")
    if r.details.get("duplicates"):
        dd = r.details["duplicates"]
        notes.append(f"Duplicate groups from the curate record {dd.get('run_id')}: {dd.get('n_items'):,} items in "
                     f"{dd.get('n_groups_listed'):,} listed groups ({dd.get('note')}).")
    if r.details.get("label_issues"):
        li = r.details["label_issues"]
        notes.append(f"Label issues: {li.get('n_issues'):,} flagged ({fmt(li.get('fraction'))}) by cleanlab on "
                     f"out-of-fold {li.get('method')} probabilities ({li.get('folds')} folds).")
    if d.paths is None:
        notes.append("This data's images are not files: an exported selection lists ids (and labels), not paths.")
    return meta, notes


def render_explore_page(res: Any, *, title: str = "vitlab embedding explorer") -> tuple[str, dict[str, Any]]:
    """The page as a string, and what it holds (``n_points``, ``n_thumbnails``, ...)."""
    t0 = time.perf_counter()
    seed = int(res.record.config.get("seed", 0))
    thumbs = _thumbnails(res.data, res.max_thumbs, res.thumb_size, seed)
    payload = page_payload(res, thumbs)
    meta, notes = _header(res, len(thumbs[0]), thumbs[2])
    d = res.data
    modes = [("label", "label" if d.labels is not None else "label (none: one colour)", True),
             ("split", "split (eval's)", d.split is not None),
             ("pred", "predicted class", d.pred is not None), ("correct", "correct / wrong", d.pred is not None),
             ("dup", "duplicate group", d.dup is not None), ("issue", "label-issue score", d.issues is not None)]
    why = {"label": "the data has no labels", "split": "no split", "pred": "no probe (unlabelled data or --probe none)",
           "correct": "no probe", "dup": "pass --duplicates <curate record>", "issue": "pass --label-issues"}
    options = "".join(f'<option value="{m}"{"" if ok else " disabled"} title="{e("" if ok else why[m])}">'
                      f'{e(text)}{"" if ok else " (n/a)"}</option>' for m, text, ok in modes)
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)}</title><style>{_asset('explore.css')}</style></head><body>"
        f"<header><h1>{e(title)}</h1><div class=meta>{meta}</div></header><div id=app><aside id=side>"
        f'<h2>Colour by</h2><select id=colour aria-label="colour by">{options}</select>'
        '<div id=legend class=legend></div>'
        '<h2>Classes shown</h2><div class=classes id=classes></div><div class=btns><button id=cls-all>all</button>'
        '<button id=cls-none>none</button></div>'
        '<h2>Find by id</h2><input type=text id=find placeholder="an item id" aria-label="find by id">'
        '<div class=btns><button id=find-go>find</button></div><div id=found class=note></div>'
        '<h2>Selection</h2><p class=note>Shift + drag on the map adds points to the selection.</p>'
        '<div class=btns><button id=sel-visible>select visible</button><button id=sel-clear>clear</button>'
        '<button id=export>export csv: manifest</button></div>'
        '<h2>About</h2>' + "".join(f"<p class=note>{e(x)}</p>" for x in notes) +
        '<p class=note>Drag to pan, wheel to zoom, hover for an item, click for its nearest neighbours.</p>'
        '<div class=btns><button id=fit>reset view</button></div></aside>'
        '<div id=mapbox><canvas id=map></canvas><div id=tip></div><div id=status></div></div>'
        '<aside id=panel><h2>Item</h2><div id=item></div></aside></div>'
        f'<script type="application/json" id="vitlab-data">{safe_json(payload)}</script>'
        f"<script>{_asset('explore.js')}</script></body></html>\n")
    info = {"n_points": len(d), "n_thumbnails": len(thumbs[0]), "thumbnails_failed": thumbs[2],
            "max_thumbs": res.max_thumbs, "thumb_size": res.thumb_size, "bytes": len(html.encode("utf-8")),
            "render_s": round(time.perf_counter() - t0, 3)}
    return html, info


def write_explore_page(res: Any, path: str | Path | None = None, *, title: str = "vitlab embedding explorer"
                       ) -> dict[str, Any]:
    """Write the explorer page of ``res`` to ``path`` (default ``res.page``; never overwrites a file) and record
    what it holds in ``res.record.details["page"]``.

    Returns:
        ``{"path", "n_points", "n_thumbnails", "thumbnails_failed", "max_thumbs", "thumb_size", "bytes",
        "render_s"}``.

    Raises:
        ConfigError: no path, or the path exists (checked again just before writing).
    """
    from vitlab.errors import ConfigError
    from vitlab.exploration.run import check_new_page

    p = Path(path).expanduser() if path is not None else res.page
    if p is None:
        raise ConfigError("no page path: pass write_explore_page(res, 'explore.html') or explore(..., page=...).")
    check_new_page(p)
    html, info = render_explore_page(res, title=title)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "x", encoding="utf-8") as fh:  # "x": never overwrite, even if the file appeared meanwhile
        fh.write(html)
    info = {"path": str(p.resolve()), **info}
    res.record.details["page"] = info
    return info
