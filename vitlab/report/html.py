"""``render_html``: run records → one static, self-contained HTML report.

(About 400 lines by design: the page skeleton and the dispatch of every record kind to its section live
together; each section's body is in its own ``*_section.py``.)

Inline CSS, figures and images as base64 ``data:`` URIs, no script and no external
URL: the file can be mailed, archived or opened offline. Every string that comes
from a record is escaped with :func:`html.escape`.

Sections are chosen by ``record.kind`` through :data:`~vitlab.report.base.SECTIONS`; add a kind
with :func:`register_section`. Kinds without a renderer get a generic JSON summary. Inside each
eval run, every protocol of a task with a block in :data:`~vitlab.report.base.TASK_SECTIONS`
(retrieval, segmentation: :mod:`vitlab.report.task_sections`) gets that block; classification
protocols get per-class recall, confusion matrices and the misclassified-image gallery.

The registries, :class:`~vitlab.report.base.RenderContext` and the small HTML helpers live in
:mod:`vitlab.report.base`; the section modules import them from there, never from this module.

Example:
    >>> import vitlab
    >>> from vitlab.report import load_records, render_html
    >>> _ = vitlab.evaluate("demo:fmnist-vit", "sample:digits?limit=200", protocols="knn", n_resamples=20, out="runs/",
    ...                     progress=False)
    >>> render_html(load_records("runs/"), "report.html")
    PosixPath('report.html')
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from vitlab.record import RunRecord
from vitlab.report import gen_section as _gen_section  # noqa: F401  (registers the "gen-eval" section)
from vitlab.report import perf_section as _perf_section  # noqa: F401  (registers "bench" and "tradeoff")
from vitlab.report import task_sections as _task_sections  # noqa: F401  (registers retrieval, segmentation)
from vitlab.report import curate_section as _curate_section  # noqa: F401  (registers the "curate" section)
from vitlab.report import explore_section as _explore_section  # noqa: F401  (registers the "explore" section)
from vitlab.report import inspect_section as _inspect_section  # noqa: F401  (registers "inspect" and "robust")
from vitlab.report import tune_section as _tune_section  # noqa: F401  (registers the "tune" section)
from vitlab.report import pretrain_section as _pretrain_section  # noqa: F401  (registers "pretrain" and "distill")
from vitlab.report.base import (SECTIONS, TASK_SECTIONS, RenderContext, SectionRenderer, _kv, _label, _table, _td,
                                data_fingerprint, e, image_note, register_section, task_of)
from vitlab.report.figures import cd_diagram_uri, confusion_matrix_uri
from vitlab.report.tables import FEWSHOT_KEY, MARKS, Board, fmt, fmt_ci, fmt_p, leaderboards

__all__ = ["render_html", "register_section", "SECTIONS", "RenderContext", "SectionRenderer", "headline_summary"]

_MARK_TEXT = {"leader": "★ leader", "worse": "▼ significantly worse", "same": "= not significantly different",
              None: ""}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d232a;margin:0;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{border-bottom:2px solid #d8dde3;padding-bottom:4px;margin-top:36px}h3{margin:22px 0 8px}
.sub,.note,caption,.ci,.small{color:#5b6672}.ci{font-size:12px}.small{font-size:12px}
.note{background:#fff6db;border-left:4px solid #e0b400;padding:8px 12px;color:#4a3b00}
.warn{color:#a15c00;font-weight:600}
table{border-collapse:collapse;background:#fff;margin:8px 0 4px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #dde2e7;padding:4px 8px;text-align:left;vertical-align:top}th{background:#eef1f4}
td.num{text-align:right;white-space:nowrap}caption{caption-side:bottom;text-align:left;font-size:12px;padding-top:4px}
.scroll{overflow-x:auto}.worse{color:#b3261e;font-weight:600}.same{color:#5b6672}.leader{color:#0b6e3d;font-weight:600}
.bar{display:inline-block;height:8px;background:#4a7fc1;vertical-align:middle;margin-right:6px}
.figs{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}.figs figure{margin:0;background:#fff;padding:6px}
figcaption{font-size:12px;color:#5b6672;text-align:center}
details.run{background:#fff;border:1px solid #dde2e7;border-radius:6px;padding:4px 14px;margin:12px 0}
details.run>summary{cursor:pointer;font-weight:600;padding:6px 0}
.gallery{display:flex;flex-direction:column;gap:8px}.gal{display:flex;gap:10px;align-items:flex-start}
.tile{width:100px;font-size:11px;text-align:center;overflow-wrap:anywhere}.tile img{display:block;margin:0 auto;
image-rendering:pixelated;border:3px solid #ccd2d8}.tile.test img{border-color:#b3261e}
.tile.ok img{border-color:#0b6e3d}.sep{align-self:center;color:#9aa4ae;font-size:20px}
pre{background:#fff;border:1px solid #dde2e7;padding:8px;overflow-x:auto;font-size:12px;max-height:420px}
footer{margin-top:40px;font-size:12px}code{font-size:12px}nav a{margin-right:12px}
.tile.query img{border-color:#4a7fc1}.tile.rel img{border-color:#0b6e3d}.tile.irr img{border-color:#b3261e}
.swatch{display:inline-block;width:11px;height:11px;border:1px solid #8a949e;vertical-align:middle;margin:0 4px 0 2px}
.seg-row{display:flex;gap:4px}.seg-row img{image-rendering:pixelated;display:block}.sep.small{font-size:12px}
.seg-panel{text-align:center}.key{white-space:nowrap;margin-right:6px}
.seg-missing{width:112px;height:112px;display:flex;align-items:center;justify-content:center;background:#eef1f4}
figure.seg-example figcaption{max-width:360px;text-align:left}.legend{white-space:normal}
"""


# ---------------------------------------------------------------- small helpers
def _ci_cell(m: dict[str, Any] | None) -> str:
    if not m:
        return '<td class="num">–</td>'
    ci = f'<br><span class="ci">[{fmt(m.get("low"))}, {fmt(m.get("high"))}]</span>' if m.get("low") is not None else ""
    return f'<td class="num"><b>{fmt(m.get("value"))}</b>{ci}</td>'


def _board_html(b: Board) -> str:
    head = ["#", "backbone"] + [f"{m} [95% CI]" for m in b.metrics] + (["vs leader"] if b.paired else [])
    rows = []
    for i, row in enumerate(b.rows, 1):
        mark = [f'<td class="{row.mark}" title="{e(MARKS[row.mark][1])}">{e(_MARK_TEXT[row.mark])}</td>'] \
            if b.paired else []
        rows.append([f'<td class="num">{i}</td>', f"<td><code>{e(row.backbone)}</code></td>"]
                    + [_ci_cell(row.values.get(m)) for m in b.metrics] + mark)
    if b.paired:
        cap = (f"Sorted by {e(b.primary)}. 95% bootstrap CIs. ▼ significantly worse than the leader "
               f"(Holm-adjusted p &lt; {b.alpha:g}, paired bootstrap and McNemar); = not significantly different.")
    elif FEWSHOT_KEY.match(b.primary):
        cap = "Mean accuracy over episodes with 95% t-interval, at the largest shot every backbone ran. No paired test."
    else:
        cap = "95% bootstrap CIs. No paired tests (run <code>vitlab compare</code> for significance marks)."
    return f"<h3>{e(b.dataset)} · {e(b.protocol)}</h3>" + _table(head, rows, cap)


# ---------------------------------------------------------------- compare
@register_section("compare", "Comparisons")
def _compare_section(records: list[RunRecord], ctx: RenderContext) -> str:
    out = []
    for r in records:
        c = r.config
        out.append(f"<h3>Comparison <code>{e(r.run_id)}</code></h3><p class=small>"
                   f"Backbones: {e(', '.join(map(str, c.get('backbones', []))))}<br>"
                   f"Datasets: {e(', '.join(map(str, c.get('datasets', []))))}<br>"
                   f"Rule: {e(str(c.get('significance_rule', '')))}; alpha = {e(str(c.get('alpha', '')))}; "
                   f"{e(str(c.get('n_resamples', '')))} bootstrap resamples.</p>")
        for ds, per_proto in r.details.get("pairwise", {}).items():
            for proto, tests in per_proto.items():
                out.append(f"<h3>Pairwise tests · {e(ds)} · {e(proto)}</h3>" + _pairwise_table(tests))
        for proto, rk in r.details.get("ranks", {}).items():
            out.append(_ranks_html(proto, rk))
    return "".join(out)


def _pairwise_table(tests: list[dict[str, Any]]) -> str:
    if not tests:
        return '<p class="note">No pairs.</p>'
    delong = any("p_delong" in t for t in tests)
    metrics = sorted({str(t.get("metric") or "top1") for t in tests})
    what = metrics[0] if len(metrics) == 1 else "metric"
    head = ["A", "B", f"Δ {'top-1' if what == 'top1' else what} (A − B) [95% CI]", "p bootstrap (Holm)",
            "p McNemar (Holm)"] + (["p DeLong (Holm)"] if delong else []) + ["significant"]
    rows = []
    for t in tests:
        p = [f'<td class="num">{fmt_p(t.get(k))} ({fmt_p(t.get(k + "_holm"))})</td>'
             for k in ("p_bootstrap", "p_mcnemar") + (("p_delong",) if delong else ())]
        sig = '<td class="worse">yes</td>' if t.get("significant") else '<td class="same">no</td>'
        diff = fmt_ci({"value": t.get("diff"), "low": t.get("low"), "high": t.get("high")})
        rows.append([f"<td><code>{e(str(t.get('a')))}</code></td>", f"<td><code>{e(str(t.get('b')))}</code></td>",
                     f'<td class="num">{e(diff)}</td>', *p, sig])
    return _table(head, rows, "Raw p-values, Holm-adjusted within this (dataset, protocol) in parentheses. "
                              "Significant = both adjusted p &lt; alpha.")


def _ranks_html(proto: str, rk: dict[str, Any]) -> str:
    ranks = rk.get("mean_ranks", {})
    rows = [[f"<td><code>{e(str(b))}</code></td>", f'<td class="num">{fmt(v, 2)}</td>']
            for b, v in sorted(ranks.items(), key=lambda kv: kv[1])]
    out = f"<h3>Rank tests · {e(proto)}</h3>" + _table(["backbone", "mean rank (1 = best)"], rows)
    if "friedman_p" in rk:
        out += (f"<p>Friedman p = {fmt_p(rk['friedman_p'])}; "
                f"Nemenyi critical difference = {fmt(rk.get('nemenyi_cd'))}.</p>")
    if rk.get("nemenyi_cd") and len(ranks) >= 2:
        uri = cd_diagram_uri({str(k): float(v) for k, v in ranks.items()}, float(rk["nemenyi_cd"]))
        out += (f'<div class="figs"><figure><img alt="critical-difference diagram, {e(proto)}" src="{uri}">'
                "<figcaption>Critical-difference diagram: backbones joined by a bar are not significantly "
                "different (Nemenyi).</figcaption></figure></div>")
    elif rk.get("note"):
        out += f'<p class="small">{e(str(rk["note"]))}</p>'
    return out


# ---------------------------------------------------------------- eval
@register_section("eval", "Evaluation runs")
def _eval_section(records: list[RunRecord], ctx: RenderContext) -> str:
    many = len(records) > 4  # then only the first run starts unfolded
    return "".join(f'<details class="run"{"" if many and i else " open"}>{_eval_run(r, ctx)}</details>'
                   for i, r in enumerate(records))


def _convergence_mark(details: dict[str, Any]) -> str:
    """A visible warning when a protocol's solver stopped at its iteration cap (from ``details["convergence"]``)."""
    conv = details.get("convergence") if isinstance(details, dict) else None
    if not isinstance(conv, dict) or conv.get("all_converged", True):
        return ""
    if "not_converged_C" in conv:
        what = "C = " + ", ".join(f"{c:.3g}" for c in conv["not_converged_C"])
    else:
        what = f"{conv.get('n_not_converged')} of {conv.get('n_fits')} fits"
    return (f' <span class="warn" title="L-BFGS stopped at max_iter={e(str(conv.get("max_iter")))}">'
            f"&#9888; not converged: {e(what)}</span>")


def headline_summary(r: RunRecord) -> list[tuple[str, str, Any]]:
    """``[(protocol, headline metric, value)]`` of an eval record, the headline chosen by each protocol's task
    scorer (top1, recall@1, miou, the largest-shot SimpleShot…); old records without a task are classification.

    Example:
        >>> r = RunRecord(kind="eval", config={"protocols": ["knn", "retrieval"]},
        ...               metrics={"knn": {"top1": {"value": 0.9}, "auroc": {"value": 0.99}},
        ...                        "retrieval": {"map": {"value": 0.5}, "recall@1": {"value": 0.8}}},
        ...               details={"retrieval": {"task": "retrieval"}})
        >>> headline_summary(r)
        [('knn', 'top1', 0.9), ('retrieval', 'recall@1', 0.8)]
    """
    from vitlab.scorers import SCORERS, scorer_for

    out = []
    for p in r.config.get("protocols", list(r.metrics)) or list(r.metrics):
        names = {k for k, m in (r.metrics.get(p) or {}).items() if isinstance(m, dict) and "value" in m}
        if not names:
            continue
        try:
            scorer = scorer_for(task_of(r, p))
            if scorer.headline not in names:  # e.g. a record without a task: the scorer whose headline is there
                scorer = next((sc for sc in SCORERS.values() if sc.headline and sc.headline in names), scorer)
            head = scorer.headline_for(names)
        except Exception:  # noqa: BLE001 - an unknown task: its first metric
            head = "top1" if "top1" in names else sorted(names)[0]
        out.append((p, head, r.metrics[p][head].get("value")))
    return out


def _data_line(c: dict[str, Any], dd: dict[str, Any]) -> str:
    """What the run evaluated on: layer, pool and split sizes; for MIL runs bags, patients and folds."""
    if c.get("task") == "mil":
        test = f" + {c.get('n_test_bags')} held-out test bags" if c.get("n_test_bags") else ""
        return (f"{e(str(dd.get('n_bags')))} bags of {e(str(dd.get('n_patients')))} patients · "
                f"{e(str(c.get('folds')))} folds ({e(str(c.get('fold_origin')))}){e(test)} · bootstrap unit: patient")
    return (f"layer {e(str(c.get('layer')))} · pool {e(str(c.get('pool')))} · "
            f"{e(str(dd.get('n_train')))} train / {e(str(dd.get('n_test')))} test ({e(str(c.get('split_origin')))})")


def _eval_run(r: RunRecord, ctx: RenderContext) -> str:
    c, d = r.config, r.details
    classes = [str(x) for x in d.get("data", {}).get("classes", [])]
    protos = [p for p in c.get("protocols", list(r.metrics)) if p in r.metrics or p in d]
    heads = " · ".join(f"{p} {m} {fmt(v)}" for p, m, v in headline_summary(r))
    dd = d.get("data", {})
    out = [f"<summary><code>{e(str(c.get('backbone')))}</code> on <code>{e(str(c.get('dataset')))}</code>"
           f" <span class=small>{e(heads)}</span></summary>",
           f"<p class=small>{_data_line(c, dd)} · {len(classes)} classes · run <code>{e(r.run_id)}</code></p>"]
    hp = [[f"<td>{e(p)}</td>", f"<td>{e(_kv(r.hparams.get(p, {})))}{_convergence_mark(d.get(p, {}))}</td>",
           "<td>" + "<br>".join(f"{e(k.replace('_', ' '))}: {e(_sweep(v))}" for k, v in d.get(p, {}).items()
                                if isinstance(v, dict) and k.endswith(tuple(f"_by_{x}" for x in "kC"))) + "</td>"]
          for p in protos]
    out.append("<h3>Chosen hyper-parameters</h3>" + _table(["protocol", "chosen", "sweep"], hp))
    scored = [p for p in protos if "per_class_recall" in d.get(p, {})]
    if scored and classes:
        rows = [[f"<td>{e(cl)}</td>"] + [_recall_cell(d[p]["per_class_recall"], i) for p in scored]
                for i, cl in enumerate(classes)]
        out.append("<h3>Per-class recall</h3>" + _table(["class"] + scored, rows))
        figs = "".join(f'<figure><img alt="confusion matrix, {e(p)}" '
                       f'src="{confusion_matrix_uri(d[p]["confusion_matrix"], classes, title=p)}">'
                       f"<figcaption>confusion matrix · {e(p)}</figcaption></figure>"
                       for p in scored if d[p].get("confusion_matrix"))
        out.append(f'<h3>Confusion matrices</h3><div class="figs">{figs}</div>')
    for p in protos:
        if any(FEWSHOT_KEY.match(k) for k in r.metrics.get(p, {})):
            out.append(_fewshot_html(p, r.metrics[p]))
    if d.get("protocol_pairs"):
        out.append("<h3>Protocols compared on the same test items</h3>" + _pairwise_table(d["protocol_pairs"]))
    for p in scored:
        if d[p].get("gallery") is not None:
            out.append(_gallery_html(p, d[p]["gallery"], classes, str(c.get("data", "")), ctx, data_fingerprint(r)))
    ens = [p for p in protos if isinstance(d.get(p), dict) and d[p].get("ensemble")]
    if ens:
        from vitlab.report.task_sections import ensemble_block

        out.append(ensemble_block(ens, r))
    for p in protos:
        if isinstance(d.get(p), dict) and d[p].get("attention_examples"):  # MIL heads with attention
            from vitlab.report.task_sections import attention_block

            out.append(attention_block(p, r, ctx))
    for p in protos:
        block = TASK_SECTIONS.get(task_of(r, p))
        if block is not None:
            try:
                out.append(block(p, r, ctx))
            except Exception as err:  # noqa: BLE001 - one broken block must not sink the report
                out.append(f'<p class="note">{e(p)}: this block could not be rendered '
                           f"({e(type(err).__name__)}: {e(str(err))}).</p>")
    return "".join(out)


def _sweep(scores: dict[str, Any]) -> str:
    """A validation sweep ``{hparam value: score}`` with the scores through :func:`fmt`."""
    return ", ".join(f"{k} = {fmt(v)}" for k, v in scores.items())


def _recall_cell(recall: list[Any], i: int) -> str:
    v = recall[i] if i < len(recall) else None
    w = int(60 * v) if isinstance(v, (int, float)) and v == v else 0
    return f'<td class="num"><span class="bar" style="width:{w}px"></span>{fmt(v)}</td>'


def _fewshot_html(proto: str, metrics: dict[str, Any]) -> str:
    table: dict[int, dict[str, dict[str, Any]]] = {}
    for k, m in metrics.items():
        if g := FEWSHOT_KEY.match(k):
            table.setdefault(int(g["shot"]), {})[g["clf"]] = m
    clfs = sorted({c for per in table.values() for c in per})
    rows = [[f'<td class="num">{s}</td>'] + [_ci_cell(table[s].get(c)) for c in clfs] for s in sorted(table)]
    head = f"<h3>Few-shot{'' if proto == 'fewshot' else ' · ' + e(proto)}</h3>"
    return head + _table(["shots per class"] + clfs, rows, "Mean test accuracy over seeded episodes, 95% t-interval.")


def _gallery_html(proto: str, items: list[dict[str, Any]], classes: list[str], uri: str, ctx: RenderContext,
                  fingerprint: str | None = None) -> str:
    head = f"<h3>Misclassified test images · {e(proto)}</h3>"
    if not items:
        return head + "<p class=small>No misclassified test image.</p>"
    show, note = image_note(ctx, uri, fingerprint)

    def tile(sid: str, caption: str, cls: str) -> str:
        uri_img = ctx.image(uri, sid) if show else None
        img = f'<img alt="{e(sid)}" src="{uri_img}">' if uri_img else ("<div class=small>[image unavailable]</div>"
                                                                      if show else "")
        return f'<div class="tile {cls}">{img}{caption}<br><span class=small>{e(sid)}</span></div>'

    rows = []
    for it in items:
        true, pred = _label(classes, it.get("true")), _label(classes, it.get("pred"))
        nb = "".join(tile(str(n.get("id")), f"{e(_label(classes, n.get('label')))}",
                          "ok" if n.get("label") == it.get("true") else "")
                     for n in it.get("neighbors", []))
        test = tile(str(it.get("id")), f"true <b>{e(true)}</b><br>pred <b class=worse>{e(pred)}</b>", "test")
        rows.append(f'<div class="gal">{test}<span class="sep">→</span>{nb}</div>')
    return (head + note + "<p class=small>Test image (red border) → its 3 nearest training images in "
            "embedding space (cosine) with their labels; green border = same class as the test image.</p>"
            f'<div class="gallery">{"".join(rows)}</div>')


# ---------------------------------------------------------------- generic + footer
def _generic_section(records: list[RunRecord], ctx: RenderContext) -> str:
    out = []
    for r in records:
        blob = json.dumps({"config": r.config, "metrics": r.metrics, "hparams": r.hparams,
                           "details (keys)": sorted(r.details)}, indent=1, default=str)
        blob = blob if len(blob) < 20000 else blob[:20000] + "\n… (truncated)"
        out.append(f"<h3><code>{e(r.kind)}</code> run <code>{e(r.run_id)}</code></h3><pre>{e(blob)}</pre>")
    return "".join(out)


def _provenance(records: list[RunRecord]) -> str:
    rows = []
    for r in records:
        fp = r.fingerprints
        what = (f"{r.config.get('backbone')} @ {r.config.get('dataset')}" if r.kind == "eval" else
                f"{len(r.config.get('backbones', []))} backbones × {len(r.config.get('datasets', []))} datasets"
                if r.kind == "compare" else "")
        fps = "; ".join(x for x in (f"weights {fp.get('backbone', {}).get('weights_id', '')}"
                                    if isinstance(fp.get("backbone"), dict) else "",
                                    f"data {fp.get('data', {}).get('fingerprint', '')}"
                                    if isinstance(fp.get("data"), dict) else "",
                                    f"embeddings {fp['embeddings']}" if "embeddings" in fp else "") if x)
        if not fps and fp:
            fps = f"{len(fp)} runs' fingerprints in the record"
        rows.append([_td(x) for x in (r.kind, r.run_id, what, r.created, r.git, _kv(r.seeds), fps, r.schema_version)])
    versions: dict[str, list[str]] = {}
    for r in records:
        versions.setdefault(_kv({k: v for k, v in r.versions.items() if v}), []).append(r.run_id)
    vs = "".join(f"<p class=small>Versions{'' if len(versions) == 1 else ' (runs ' + e(', '.join(ids)) + ')'}: "
                 f"{e(v)}</p>" for v, ids in versions.items())
    return ("<h2 id=provenance>Provenance</h2>" + _table(["kind", "run id", "what", "created", "git", "seeds",
                                                          "fingerprints", "schema"], rows) + vs)


def render_html(records: list[RunRecord], path: str | Path, *, title: str = "vitlab report",
                load_images: bool = True, thumb_size: int = 84) -> Path:
    """Write one self-contained HTML report for ``records`` and return its path.

    Args:
        records: run records (e.g. from :func:`vitlab.report.load_records`); any mix of kinds.
        path: output file (parent folders are created).
        title: page title.
        load_images: embed the gallery's images, re-opened from each record's data URI (a source that
            cannot be opened gives a note, not an error).
        thumb_size: gallery thumbnail size in pixels.

    Returns:
        The path written.

    Example:
        >>> import vitlab
        >>> res = vitlab.compare(["demo:fmnist-vit", "pixels:8"], "sample:digits?limit=200", protocols="knn",
        ...                      n_resamples=20, progress=False)
        >>> render_html([res.record, *(r.record for r in res.runs.values())], "report.html")
        PosixPath('report.html')
    """
    ctx = RenderContext(list(records), load_images=load_images, thumb_size=thumb_size)
    by_kind: dict[str, list[RunRecord]] = {}
    for r in ctx.records:
        by_kind.setdefault(r.kind, []).append(r)
    order = [k for k in SECTIONS if k in by_kind] + [k for k in by_kind if k not in SECTIONS]
    boards = leaderboards(ctx.records)
    parts, toc = [], []
    if boards:
        toc.append('<a href="#leaderboards">Leaderboards</a>')
        parts.append("<h2 id=leaderboards>Leaderboards</h2>" + "".join(_board_html(b) for b in boards))
    for kind in order:
        heading, fn = SECTIONS.get(kind, (f"Records of kind “{kind}”", _generic_section))
        anchor = "sec-" + "".join(ch if ch.isalnum() else "-" for ch in kind)
        toc.append(f'<a href="#{e(anchor)}">{e(heading)}</a>')
        parts.append(f"<h2 id={e(anchor)}>{e(heading)}</h2>" + fn(by_kind[kind], ctx))
    toc.append('<a href="#provenance">Provenance</a>')
    kinds = ", ".join(f"{len(v)} {k}" for k, v in by_kind.items()) or "no records"
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="generator" content="vitlab">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{e(title)}</title>'
            f"<style>{CSS}</style></head><body><main><header><h1>{e(title)}</h1>"
            f'<p class="sub">{e(kinds)} record(s) · rendered {e(now)}</p><nav>{"".join(toc)}</nav></header>'
            + "".join(parts) + f"<footer>{_provenance(ctx.records)}</footer></main></body></html>\n")
    from vitlab._io import atomic_write

    return atomic_write(Path(path), page)

