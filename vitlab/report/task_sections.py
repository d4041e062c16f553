"""Per-task blocks of an eval run in the HTML report: retrieval and segmentation.

Registered with :func:`~vitlab.report.base.register_task_section` under the task a protocol
declares (``details[protocol]["task"]``); :mod:`vitlab.report.html` shows one block per
protocol inside each eval run's details (classification keeps its per-class recall,
confusion matrices and misclassified-image gallery there).

* **retrieval**: the record's example queries, each with its top-5 retrieved gallery images
  (green border: relevant, i.e. same label as the query; red: not relevant), the query and gallery
  sizes, the search backend and, for approximate search, the measured recall of the exact
  neighbours;
* **segmentation**: per example, the image (cropped to the region the model saw), the
  ground-truth mask and the prediction side by side, coloured with the fixed palette
  :data:`vitlab.report.figures.SEG_PALETTE` (ignore pixels grey); the per-class IoU (and Dice)
  table with class names and colours; the mask resolution.

Images are re-opened from the record's data URI like the misclassified-image gallery
(:class:`~vitlab.report.base.RenderContext`); a source that cannot be opened or has changed
gets a note, and the ids and labels still come from the record. Every string from a record is
escaped.

Example:
    >>> from vitlab.report.base import TASK_SECTIONS
    >>> sorted(k for k in TASK_SECTIONS if k in ("retrieval", "segmentation"))
    ['retrieval', 'segmentation']
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitlab.record import RunRecord
from vitlab.report.base import (RenderContext, _label, _table, data_fingerprint, e, image_note,
                                register_task_section)
from vitlab.report.figures import attention_heatmap_uri, class_colour, label_map_uri, thumbnail_uri
from vitlab.report.tables import fmt

__all__ = ["retrieval_block", "segmentation_block", "attention_block", "ensemble_block", "SEG_SIZE"]

#: Side in pixels of the segmentation example panels (image, ground truth, prediction).
SEG_SIZE = 112


def _anchor(r: RunRecord, proto: str) -> str:
    return e("".join(ch if ch.isalnum() else "-" for ch in f"run-{r.run_id}-{proto}"))


def _classes(r: RunRecord, det: dict[str, Any]) -> list[str]:
    cls = det.get("classes") or (r.details.get("data") or {}).get("classes") or []
    return [str(c) for c in cls]


# ---------------------------------------------------------------- retrieval
def _ann_line(ann: dict[str, Any]) -> str:
    if not isinstance(ann, dict) or ann.get("recall_at_k") is None:
        return ""
    index = f" ({ann['index']})" if ann.get("index") else ""
    return (f" · approximate search{index}: recall@{ann.get('k')} of the exact neighbours = "
            f"{fmt(ann.get('recall_at_k'), 2)} on {ann.get('sampled_queries')} sampled queries")


@register_task_section("retrieval")
def retrieval_block(proto: str, r: RunRecord, ctx: RenderContext) -> str:
    """The retrieval block of eval run ``r`` for protocol ``proto``: example queries and their top-5.

    Example:
        >>> r = RunRecord(kind="eval", config={"data": "sample:x"}, metrics={}, details={"retrieval": {
        ...     "task": "retrieval", "n_queries": 4, "n_gallery": 9, "backend": "exact",
        ...     "examples": [{"id": "q<1>", "label": 0, "results": [{"id": "g1", "label": 0, "relevant": True}]}]}})
        >>> out = retrieval_block("retrieval", r, RenderContext([r], load_images=False))
        >>> "4 queries" in out and "q&lt;1&gt;" in out and 'class="tile rel"' in out
        True
    """
    d = r.details.get(proto) or {}
    classes = _classes(r, d)
    uri = str(r.config.get("data", ""))
    head = f'<h3 id="{_anchor(r, proto)}">Retrieval · {e(proto)}</h3>'
    mode = f" · mode {e(str(d['mode']))}" if d.get("mode") else ""
    info = (f"<p class=small>{e(str(d.get('n_queries', '?')))} queries against {e(str(d.get('n_gallery', '?')))} "
            f"gallery images{mode} · backend {e(str(d.get('backend', '?')))}{e(_ann_line(d.get('ann')))}</p>")
    examples = d.get("examples") or []
    if not examples:
        return head + info + "<p class=small>No example queries in the record (the data has no ids).</p>"
    show, note = image_note(ctx, uri, data_fingerprint(r))

    def tile(sid: str, caption: str, cls: str) -> str:
        img = ""
        if show:
            data = ctx.image(uri, sid)
            img = f'<img alt="{e(sid)}" src="{data}">' if data else "<div class=small>[image unavailable]</div>"
        return f'<div class="tile {cls}">{img}{caption}<br><span class=small>{e(sid)}</span></div>'

    rows = []
    for ex in examples:
        q = tile(str(ex.get("id")), f"query <b>{e(_label(classes, ex.get('label')))}</b>", "query")
        res = []
        for rank, hit in enumerate(ex.get("results") or [], 1):
            rel = bool(hit.get("relevant"))
            mark = '<span class="leader">✓</span>' if rel else '<span class="worse">✗</span>'
            res.append(tile(str(hit.get("id")), f"{rank}. {mark} {e(_label(classes, hit.get('label')))}",
                            "rel" if rel else "irr"))
        n_rel = sum(bool(h.get("relevant")) for h in ex.get("results") or [])
        rows.append(f'<div class="gal retrieval-example">{q}<span class="sep">→</span>{"".join(res)}'
                    f'<span class="sep small">{n_rel}/{len(res)} relevant</span></div>')
    return (head + info + note + "<p class=small>Query (blue border) → its top-5 retrieved gallery images, best "
            "first, with their labels; green border ✓ = relevant (same label as the query), red border ✗ = not "
            f'relevant.</p><div class="gallery">{"".join(rows)}</div>')


# ---------------------------------------------------------------- segmentation
def _view_crop(img: Any, shape: tuple[int, int], preprocessing: dict[str, Any] | None) -> Any:
    """The part of ``img`` the model saw, matching a mask of ``shape`` (``(H, W)``) cropped to the view box."""
    h, w = shape
    if img.size == (w, h):
        return img
    box = None
    if isinstance(preprocessing, dict):
        try:
            from vitlab.backbones.preprocessing import Preprocessing

            kw = {k: tuple(v) if isinstance(v, list) else v for k, v in preprocessing.items()
                  if k in Preprocessing.__dataclass_fields__}
            top, left, bh, bw = Preprocessing(**kw).view_box(img.height, img.width)
            if (bh, bw) == (h, w):
                box = (left, top, left + bw, top + bh)
        except Exception:  # noqa: BLE001 - fall back to a centre crop
            box = None
    if box is None and img.height >= h and img.width >= w:
        top, left = (img.height - h) // 2, (img.width - w) // 2
        box = (left, top, left + w, top + h)
    return img.crop(box) if box else img


def _pixel_accuracy(mask: np.ndarray, pred: np.ndarray, ignore: int | None) -> float | None:
    if mask.shape != pred.shape:
        return None
    keep = mask != ignore if ignore is not None else np.ones(mask.shape, bool)
    return float((mask[keep] == pred[keep]).mean()) if keep.any() else None


def _panel(inner: str, label: str) -> str:
    return f'<div class="seg-panel">{inner}<span class=small>{e(label)}</span></div>'


def _swatch(i: int, ignore: int | None = None) -> str:
    return f'<span class="swatch" style="background:{class_colour(i, ignore)}"></span>'


def _iou_table(d: dict[str, Any], classes: list[str]) -> str:
    iou, dice = d.get("per_class_iou") or [], d.get("per_class_dice") or []
    n = max(len(iou), len(classes))
    rows = []
    for i in range(n):
        v = iou[i] if i < len(iou) else None
        w = int(60 * v) if isinstance(v, (int, float)) and v == v else 0
        name = classes[i] if i < len(classes) else str(i)
        rows.append([f'<td class="num">{i}</td>', f"<td>{_swatch(i)}{e(name)}</td>",
                     f'<td class="num"><span class="bar" style="width:{w}px"></span>{fmt(v)}</td>',
                     f'<td class="num">{fmt(dice[i] if i < len(dice) else None)}</td>'])
    return _table(["#", "class", "IoU", "Dice"], rows, "Over all test pixels of the class (pixels with the ignore "
                  "index excluded); – = the class never occurs in the ground truth or the prediction.")


@register_task_section("segmentation")
def segmentation_block(proto: str, r: RunRecord, ctx: RenderContext) -> str:
    """The segmentation block of eval run ``r`` for protocol ``proto``: examples, per-class IoU, mask resolution.

    Example:
        >>> r = RunRecord(kind="eval", config={"data": "sample:x"}, metrics={}, details={"seg-knn": {
        ...     "task": "segmentation", "per_class_iou": [0.5, 0.25], "classes": ["sky", "<tree>"],
        ...     "ignore_index": 255, "grid": [2, 2], "mask_sizes": [[2, 2]], "mask_resolution": "native",
        ...     "examples": [{"id": "a", "mask": [[0, 1], [255, 1]], "pred": [[0, 1], [0, 0]]}]}})
        >>> out = segmentation_block("seg-knn", r, RenderContext([r], load_images=False))
        >>> out.count('class="seg-example"'), "&lt;tree&gt;" in out, "0.250" in out
        (1, True, True)
    """
    d = r.details.get(proto) or {}
    classes = _classes(r, d)
    ignore = d.get("ignore_index")
    uri = str(r.config.get("data", ""))
    head = f'<h3 id="{_anchor(r, proto)}">Segmentation · {e(proto)}</h3>'
    sizes = ", ".join("×".join(str(v) for v in s) for s in d.get("mask_sizes") or [] if isinstance(s, list))
    grid = "×".join(str(v) for v in d.get("grid") or [])
    res = (f"<p class=small>Mask resolution: {e(str(d.get('mask_resolution', 'not recorded')))}"
           f"{' (' + e(sizes) + ')' if sizes else ''}{' · patch grid ' + e(grid) if grid else ''}"
           f"{' · ignore index ' + e(str(ignore)) if ignore is not None else ''}</p>")
    out = [head, res, "<h4>Per-class IoU</h4>", _iou_table(d, classes)]
    examples = d.get("examples") or []
    if not examples:
        return "".join(out) + "<p class=small>No examples in the record.</p>"
    show, note = image_note(ctx, uri, data_fingerprint(r), what="ids and masks")
    pre = (r.fingerprints.get("backbone") or {}).get("preprocessing") \
        if isinstance(r.fingerprints.get("backbone"), dict) else None
    figs = []
    for ex in examples:
        sid = str(ex.get("id"))
        try:
            mask, pred = np.asarray(ex.get("mask"), dtype=np.int64), np.asarray(ex.get("pred"), dtype=np.int64)
            m_uri, p_uri = label_map_uri(mask, ignore_index=ignore, size=SEG_SIZE), \
                label_map_uri(pred, ignore_index=ignore, size=SEG_SIZE)
        except Exception as err:  # noqa: BLE001 - one malformed example must not sink the report
            figs.append(f'<figure class="seg-example"><p class="note">{e(sid)}: masks unreadable '
                        f"({e(type(err).__name__)})</p></figure>")
            continue
        img_html = ""
        if show:
            img = ctx.pil_image(uri, sid)
            try:
                data = thumbnail_uri(_view_crop(img, mask.shape, pre), SEG_SIZE) if img is not None else None
            except Exception:  # noqa: BLE001
                data = None
            img_html = _panel(f'<img alt="image {e(sid)}" src="{data}">' if data
                              else '<div class="seg-missing small">[image unavailable]</div>', "image")
        acc = _pixel_accuracy(mask, pred, ignore)
        present = sorted({int(v) for v in np.unique(np.concatenate([mask.ravel(), pred.ravel()]))} - {ignore})
        legend = " ".join(f'<span class="key">{_swatch(i)}{e(_label(classes, i))}</span>' for i in present)
        figs.append(f'<figure class="seg-example"><div class="seg-row">{img_html}'
                    + _panel(f'<img alt="ground truth {e(sid)}" src="{m_uri}">', "ground truth")
                    + _panel(f'<img alt="prediction {e(sid)}" src="{p_uri}">', "prediction") + "</div>"
                    f"<figcaption><code>{e(sid)}</code>{' · pixel accuracy ' + fmt(acc) if acc is not None else ''}"
                    f'<br><span class="legend">{legend}</span></figcaption></figure>')
    key = (f"Colours: the report's fixed palette (class <i>i</i> in colour <i>i</i> of matplotlib's tab20, its greys "
           f"swapped for indigo and gold; as in the table above); {_swatch(-1, -1)} grey = ignored (unlabelled) pixels"
           f"{' (value ' + e(str(ignore)) + ')' if ignore is not None else ''}.")
    what = "the image as the model saw it, " if show else ""
    out += ["<h4>Examples</h4>", note, f"<p class=small>Each example: {what}the ground-truth mask and the "
            f"prediction. {key}</p>", f'<div class="figs">{"".join(figs)}</div>']
    return "".join(out)



# ---------------------------------------------------------------- multiple-instance learning
def attention_block(proto: str, r: RunRecord, ctx: RenderContext) -> str:
    """Where a MIL head looks: for a few positive bags, its most and least attended instances (with their
    attention weights), and how well attention finds the key instances when instance labels exist.

    Example:
        >>> r = RunRecord(kind="eval", config={"data": "bags:m.csv"}, metrics={}, details={"mil-abmil": {
        ...     "task": "classification", "instance_auroc_of_attention": 0.98, "attention_examples": [
        ...         {"bag": "b<1>", "size": 12, "top": [{"id": "b1#3", "attention": 0.9}],
        ...          "bottom": [{"id": "b1#0", "attention": 0.001}]}]}})
        >>> out = attention_block("mil-abmil", r, RenderContext([r], load_images=False))
        >>> "b&lt;1&gt;" in out and "0.900" in out and "0.980" in out
        True
    """
    d = r.details.get(proto) or {}
    examples = d.get("attention_examples") or []
    if not examples:
        return ""
    uri = str(r.config.get("data", ""))
    head = f"<h3>Where {e(proto)} looks</h3>"
    auroc = d.get("instance_auroc_of_attention")
    info = ("<p class=small>Instance labels: attention ranks the key instances above the others with AUROC "
            f"{e(fmt(auroc))} (within positive bags).</p>" if auroc is not None else "")
    show, note = image_note(ctx, uri, data_fingerprint(r))

    def tile(item: dict[str, Any], cls: str) -> str:
        sid = str(item.get("id"))
        img = ""
        if show and "#" not in sid:  # feature bags name instances by index: no image to show
            data = ctx.image(uri, sid)
            img = f'<img alt="{e(sid)}" src="{data}">' if data else "<div class=small>[image unavailable]</div>"
        return (f'<div class="tile {cls}">{img}attention {e(fmt(item.get("attention")))}<br>'
                f"<span class=small>{e(sid)}</span></div>")

    rows, maps = [], []
    for ex in examples:
        top = "".join(tile(t, "rel") for t in ex.get("top") or [])
        low = "".join(tile(t, "irr") for t in ex.get("bottom") or [])
        rows.append(f'<div class="gal"><span class="sep">bag <code>{e(str(ex.get("bag")))}</code> '
                    f'({e(str(ex.get("size")))} instances): most attended</span>{top}'
                    f'<span class="sep">least</span>{low}</div>')
        hm = ex.get("heatmap")
        if hm and hm.get("x"):
            uri_hm = attention_heatmap_uri(hm["x"], hm["y"], hm["attention"], title=f"bag {ex.get('bag')}")
            maps.append(f'<figure class="heat"><img alt="attention heat map of bag {e(str(ex.get("bag")))}" '
                        f'src="{uri_hm}"><figcaption class=small>bag <code>{e(str(ex.get("bag")))}</code>'
                        + (" (binned to a 64 × 64 grid)" if hm.get("binned") else "") + "</figcaption></figure>")
    heat = ("<p class=small>Attention on the slide: each tile at its coordinates, coloured by attention × bag size "
            f"(1 = uniform; log scale).</p><div class=gallery>{''.join(maps)}</div>" if maps else "")
    return (head + info + note + "<p class=small>For a few positive bags (out-of-fold model): the three most "
            "attended instances (green) and the three least attended (red), with their attention weights "
            f'(summing to 1 over the bag).</p><div class="gallery">{"".join(rows)}</div>' + heat)


def ensemble_block(protos: list[str], r: RunRecord) -> str:
    """The K-fold ensemble on a held-out test set: its gain over the average single fold model.

    Example:
        >>> r = RunRecord(kind="eval", config={}, metrics={}, details={"mil-abmil@test": {"ensemble": {
        ...     "n_models": 5, "single_models": {"auroc": [0.9, 0.92]}, "gain": {"auroc": {
        ...         "value": 0.02, "low": 0.0, "high": 0.04, "mean_single": 0.91, "ensemble": 0.93}}}}})
        >>> "+0.020" in ensemble_block(["mil-abmil@test"], r)
        True
    """
    rows = []
    for p in protos:
        ens = r.details[p]["ensemble"]
        for m, g in (ens.get("gain") or {}).items():
            singles = ens.get("single_models", {}).get(m) or []
            rows.append([f"<td>{e(p)}</td>", f"<td>{e(m)}</td>", f"<td>{e(fmt(g.get('ensemble')))}</td>",
                         f"<td>{e(fmt(g.get('mean_single')))} ({e(', '.join(fmt(v) for v in singles))})</td>",
                         f"<td>{e(fmt(g.get('value'), signed=True))} "
                         f"[{e(fmt(g.get('low'), signed=True))}, {e(fmt(g.get('high'), signed=True))}]</td>"])
    if not rows:
        return ""
    return ("<h3>Held-out test: the K fold models as one ensemble</h3><p class=small>Each fold model scores the "
            "held-out test bags; the ensemble averages their probabilities. The gain is the ensemble minus the "
            "average single model, resampling patients.</p>"
            + _table(["protocol", "metric", "ensemble of the fold models", "single fold models: mean (each)",
                      "gain [95% CI, paired patients]"], rows))
