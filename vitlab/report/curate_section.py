"""The report section of ``curate`` records: what was found, where the threshold sits, what it removes,
which test items leak and how much that moved the evaluation.

Blocks: a summary table; the calibration distributions (augmented copies vs random pairs) with the
threshold, the recall each edit reaches and, when no threshold separates them, why semantic removal
was skipped; the fraction removed against the threshold; duplicate groups and leaked test/train pairs
as images side by side; the leakage effect (top-1 with and without leaked test items, paired
difference with CI); the most suspicious labels (given, suggested, self-confidence); the filters'
retention histograms. Images are re-opened from the data source and made into PNG thumbnails by
the one helper of the report (:meth:`RenderContext.image` → :func:`vitlab.report.figures.thumbnail_uri`).
Registered with :func:`vitlab.report.base.register_section` on import.

Example:
    >>> from vitlab.record import RunRecord
    >>> rec = RunRecord("curate", {"data": "x", "backbone": "b", "threshold_used": 0.9}, {},
    ...                 details={"data": {"n": 3}})
    >>> "Curation" in SECTIONS["curate"][0] and "<table" in SECTIONS["curate"][1]([rec], RenderContext([rec], load_images=False))
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from vitlab.record import RunRecord
from vitlab.report.base import SECTIONS, RenderContext, _table, _td, data_fingerprint, e, image_note, register_section
from vitlab.report.figures import figure_to_data_uri
from vitlab.report.tables import fmt, fmt_p

__all__ = ["SECTIONS"]

MAX_SHOWN = 12
MAX_ISSUES_SHOWN = 24


def _img(ctx: RenderContext, uri: str, sid: str, show: bool) -> str:
    src = ctx.image(uri, sid) if show else None
    cap = f'<div class="note">{e(sid)}</div>'
    return f'<figure style="display:inline-block;margin:2px"><img src="{src}" alt="{e(sid)}">{cap}</figure>' \
        if src else f'<span class="note">{e(sid)}</span>'


def _calibration_fig(cal: dict[str, Any]) -> str:
    """Both score distributions with the threshold: the whole range, and zoomed on the threshold (log counts)."""
    fig = Figure(figsize=(8.4, 2.8))
    pos, neg, t = np.asarray(cal["positives"]), np.asarray(cal["negatives"]), float(cal["threshold"])
    lo = float(min(pos.min(initial=1.0), neg.min(initial=1.0)))
    zoom = max(lo, min(t - 0.05, float(np.quantile(pos, 0.01)) if len(pos) else t))
    for j, (a, log) in enumerate(((lo, False), (zoom, True))):
        ax = fig.add_subplot(1, 2, j + 1)
        bins = np.linspace(a, 1.0, 50)
        ax.hist(neg[neg >= a], bins=bins, alpha=0.6, label=f"random pairs (n={len(neg)})", log=log)
        ax.hist(pos[pos >= a], bins=bins, alpha=0.6, label=f"augmented copies (n={len(pos)})", log=log)
        ax.axvline(t, color="k", ls="--", lw=1, label=f"threshold {t:.4f}")
        ax.set_xlabel("cosine similarity" + (" (zoom, log counts)" if log else ""))
        ax.set_ylabel("pairs")
        if j == 0:
            ax.legend(fontsize=7)
    return figure_to_data_uri(fig)


def _curve_fig(curve: list[dict[str, Any]], t: float) -> str:
    fig = Figure(figsize=(4.4, 2.8))
    ax = fig.add_subplot()
    ax.plot([c["threshold"] for c in curve], [c["fraction"] for c in curve], marker="o", ms=3)
    ax.axvline(t, color="k", ls="--", lw=1)
    ax.set_xlabel("cosine threshold")
    ax.set_ylabel("fraction removed")
    return figure_to_data_uri(fig)


def _retention_fig(f: dict[str, Any]) -> str:
    r = f["retention"]
    edges = np.asarray(r["edges"])
    fig = Figure(figsize=(4.4, 2.6))
    ax = fig.add_subplot()
    ax.bar(edges[:-1], r["counts"], width=np.diff(edges), align="edge", alpha=0.7)
    ax.set_xlabel(f"{f['name']} score ({'higher kept' if f['higher_is_better'] else 'lower kept'})")
    ax.set_ylabel("items")
    ax2 = ax.twinx()
    ax2.plot(edges, r["kept_fraction"], color="C1")
    ax2.set_ylabel("fraction kept at cut", color="C1")
    if f.get("threshold") is not None:
        ax.axvline(f["threshold"], color="k", ls="--", lw=1)
    return figure_to_data_uri(fig)


def _ci(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "–"
    return f"{fmt(entry['value'])} [{fmt(entry['low'])}, {fmt(entry['high'])}]"


def _one(rec: RunRecord, ctx: RenderContext) -> str:
    d, c = rec.details, rec.config
    uri = c.get("data", "")
    show, note = image_note(ctx, uri, data_fingerprint(rec), "ids")
    sem, ex, pp = d.get("semantic", {}), d.get("exact", {}), d.get("perceptual", {})
    rows = [[_td("data"), _td(f"{uri} ({d.get('data', {}).get('n', '?')} items)")],
            [_td("backbone"), _td(c.get("backbone", ""))],
            [_td("semantic threshold"), _td(f"{fmt(c.get('threshold_used'), 4)} ({c.get('threshold')})")]]
    if sem.get("skipped"):
        rows += [[_td("exact duplicates"), _td(f"{ex.get('n_duplicates', 0)} in {ex.get('n_groups', 0)} groups")],
                 [_td(f"perceptual pairs (pHash ≤ {pp.get('max_distance')} bits)"), _td(pp.get("n_pairs", 0))],
                 [_td("semantic duplicates"), _td("not removed: " + sem["skipped"])]]
    elif sem:
        rec_txt = ("" if sem.get("recall") is None
                   else f", recall@{sem['k']} vs exact {fmt(sem['recall'])} on {sem['recall_queries']} queries")
        rows += [[_td("exact duplicates"), _td(f"{ex.get('n_duplicates', 0)} in {ex.get('n_groups', 0)} groups")],
                 [_td(f"perceptual pairs (pHash ≤ {pp.get('max_distance')} bits)"),
                  _td(f"{pp.get('n_pairs', 0)} ({pp.get('n_also_semantic', 0)} also semantic)")],
                 [_td("semantic groups (every two members above the threshold)"),
                  _td(f"{sem['n_groups']} groups, {sem['n_pairs']} pairs, min internal cosine "
                      f"{fmt(sem.get('min_internal_similarity'))}; search {sem['backend']}{rec_txt}")],
                 [_td("removed (keep one per group)"), _td(f"{sem['n_removed']} ({fmt(sem['fraction_removed'])})")]]
    kept = d.get("kept")
    if kept:
        rows.append([_td("kept after dedup and filters"), _td(f"{kept['n']} ({fmt(kept['fraction'])})")])
    out = [_table(["", ""], rows)]
    cal = d.get("calibration")
    if cal:
        by = ", ".join(f"{k} {fmt(v)}" for k, v in cal.get("recall_by_edit", {}).items())
        efp = cal.get("expected_false_pairs")
        sep = "" if cal.get("separable", True) else (
            '<p class="note"><b>No threshold separates the copies of '
            f'{e(", ".join(cal.get("failing_edits", [])))} from random pairs at this bound: no semantic duplicates '
            "were removed.</b></p>")
        out.append(f"<h4>Threshold calibration</h4><p>{e(cal['rule'])}: recall {fmt(cal['recall'])} on "
                   f"{cal['n_positive']} augmented copies (by edit: {e(by)}), {fmt(cal['fpr'])} of {cal['n_negative']} "
                   f"random pairs above (precision at balanced classes {fmt(cal['precision_balanced'])}"
                   + ("" if efp is None else f"; about {efp:.0f} false pairs expected among all pairs") + ").</p>" + sep
                   + 
                   f'<img src="{_calibration_fig(cal)}" alt="calibration distributions">')
    if sem.get("curve"):
        out.append(f'<h4>Fraction removed against the threshold</h4><img src="{_curve_fig(sem["curve"], sem["threshold"])}" '
                   'alt="fraction removed">')
    if sem.get("groups"):
        out.append(f"<h4>Largest duplicate groups (kept item first)</h4>{note}")
        grows = []
        for g in sem["groups"][:MAX_SHOWN]:
            order = [g["keep"]] + [m for m in g["members"] if m != g["keep"]]
            grows.append([f"<td>{''.join(_img(ctx, uri, m, show) for m in order[:8])}</td>",
                          _td(len(g["members"])), _td(fmt(g["min_similarity"]))])
        out.append(_table(["members", "size", "min cosine"], grows))
    out.append(_leakage(d.get("leakage"), ctx, uri, show))
    out.append(_label_issues(d.get("label_issues"), ctx, uri, show, note))
    for f in d.get("filters", []):
        out.append(f"<h4>Filter: {e(f['name'])}</h4><p>kept {f['n_kept']} of {f['n']}"
                   f"{'' if f.get('threshold') is None else ' (cut ' + fmt(f['threshold']) + ')'}.</p>"
                   f'<img src="{_retention_fig(f)}" alt="retention {e(f["name"])}">')
    return "".join(out)


def _leakage(lk: dict[str, Any] | None, ctx: RenderContext, uri: str, show: bool) -> str:
    if not lk:
        return ""
    near = (f"{lk['n_near_duplicate']} of {lk['n_test']} test items have a train item with cosine ≥ {fmt(lk['threshold'])}"
            if lk.get("threshold") is not None else f"semantic near-duplicates not checked ({e(lk.get('note', ''))})")
    out = [f"<h4>Leakage across splits ({e(lk.get('split_origin', ''))})</h4>"
           f"<p>{near}; {lk['n_in_crossing_group']} are in one of {lk['n_crossing_groups']} groups "
           f"that cross splits; {lk['n_leaked']} leaked in all ({fmt(lk['fraction_leaked'])}).</p>"]
    ecs, pcs = lk.get("exact_cross_split"), lk.get("perceptual_cross_split")
    if ecs is not None and pcs is not None:
        out.append(f"<p>Across the split: {ecs['n_groups']} exact-duplicate groups ({ecs['n_test_items']} test items), "
                   f"{pcs['n_pairs']} perceptual pairs ({pcs['n_test_items']} test items).</p>")
    eff = lk.get("effect") or {}
    if eff.get("note") or eff.get("skipped"):
        out.append(f'<p class="note">Effect on {e(str(eff.get("protocol", "the evaluation")))}: '
                   f'{e(str(eff.get("note") or eff.get("skipped")))}</p>')
    if "diff" in eff:
        out.append(_table(["protocol", "top-1, full test", "top-1, without leaked", "difference (clean − full)", "p"],
                          [[_td(eff["protocol"]), _td(_ci(eff["full"])), _td(_ci(eff["clean"])),
                            _td(f"{fmt(eff['diff'], signed=True)} [{fmt(eff['low'], signed=True)}, "
                                f"{fmt(eff['high'], signed=True)}]"), _td(fmt_p(eff["p_bootstrap"]))]]))
    if lk.get("pairs"):
        rows = [[f"<td>{_img(ctx, uri, p['test_id'], show)}</td>", f"<td>{_img(ctx, uri, p['train_id'], show)}</td>",
                 _td(fmt(p["similarity"]))] for p in lk["pairs"][:MAX_SHOWN]]
        out.append(_table(["test item", "nearest train item", "cosine"], rows))
    if lk.get("crossing_groups"):
        out.append(_table(["group", "rows per split"],
                          [[_td(g["group"]), _td(", ".join(f"{k}: {v}" for k, v in g["splits"].items()))]
                           for g in lk["crossing_groups"][:MAX_SHOWN]]))
    return "".join(out)


def _label_issues(li: dict[str, Any] | None, ctx: RenderContext, uri: str, show: bool, note: str) -> str:
    if not li:
        return ""
    head = (f"<h4>Label issues</h4><p>{li['n_issues']} of {li['n']} items flagged ({fmt(li['fraction_issues'])}) by "
            f"confident learning (cleanlab, {e(li['filter_by'])}) on out-of-fold probabilities of the {e(li['method'])} "
            f"probe ({li['folds']} folds{', grouped' if li['grouped'] else ''}; out-of-fold accuracy "
            f"{fmt(li['oof_accuracy'])}). Most suspicious first.</p>{note}")
    rows = [[f"<td>{_img(ctx, uri, it['id'], show)}</td>", _td(it["rank"] + 1), _td(it["given"]), _td(it["suggested"]),
             _td(fmt(it["self_confidence"]))] for it in li["items"][:MAX_ISSUES_SHOWN]]
    return head + (_table(["item", "rank", "given label", "suggested label", "self-confidence"], rows) if rows else "")


@register_section("curate", "Curation: duplicates, leakage, filters")
def _curate_section(records: list[RunRecord], ctx: RenderContext) -> str:
    return "".join(f"<h3>{e(str(r.config.get('data', '')))} · {e(str(r.config.get('backbone', '')))}</h3>{_one(r, ctx)}"
                   for r in records)
