"""Report section for ``"tune"`` run records: accuracy with CIs against trainable parameters and time, the
paired tests of every method against ``linear`` and the frozen probe, and a plain verdict beside each method that
does not beat the frozen probe (registered with :func:`~vitlab.report.base.register_section`).

Everything shown comes from the record; the two accuracy-vs-cost plots are matplotlib figures on an Agg
canvas embedded as base64 PNGs.

Example:
    >>> from vitlab.report.base import SECTIONS
    >>> SECTIONS["tune"][0]
    'Adaptation (fine-tuning, LoRA, VPT)'
"""

from __future__ import annotations

from typing import Any

from vitlab.record import RunRecord
from vitlab.report.base import RenderContext, _table, e, register_section
from vitlab.report.tables import fmt, fmt_ci, fmt_p

__all__ = ["tune_cost_figure_uri"]


def _num(x: Any, digits: int = 1) -> str:
    return f'<td class="num">{fmt(x, digits)}</td>'


def _vs_linear_cell(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<td class="num">–</td>'
    parts = []
    for v in rows:
        cls = "worse" if v.get("significant") and v["diff"] < 0 else ("leader" if v.get("significant") else "")
        parts.append(f'<span class="{cls}">seed {e(str(v["seed"]))}: <b>{fmt(v["diff"], 3, signed=True)}</b> '
                     f'<span class=ci>[{fmt(v["low"], 3, signed=True)}, {fmt(v["high"], 3, signed=True)}] '
                     f'p={fmt_p(v.get("p_bootstrap"))}, McNemar p={fmt_p(v.get("p_mcnemar"))}</span></span>')
    return '<td class="num">' + "<br>".join(parts) + "</td>"


def _verdict_cell(v: dict[str, Any] | None, cell: str) -> str:
    """The paired-test cell with the plain verdict (beats / loses to the frozen probe) above it."""
    if not v:
        return cell
    cls = "leader" if v["verdict"] == "beats" else "worse" if v["verdict"] == "loses" else ""
    words = {"beats": "beats the frozen probe", "loses": "LOSES to the frozen probe", "ties": "ties the frozen probe"}
    head = (f'<span class="{cls}"><b>{e(words.get(v["verdict"], v["verdict"]))}</b> '
            f'(mean Δ {fmt(v["mean_diff"], 3, signed=True)}; significant on {e(str(v["significant_seeds"]))} of '
            f'{e(str(v["n_seeds"]))} seeds)</span><br>')
    return cell.replace('<td class="num">', '<td class="num">' + head, 1)


def tune_cost_figure_uri(record: RunRecord) -> str:
    """Top-1 (with its interval) against trainable parameters (log scale) and against training time, one point
    per method, as a PNG ``data:`` URI.

    Example:
        >>> uri = tune_cost_figure_uri(RunRecord("tune", {}, {"linear": {"top1": {"value": 0.8, "low": 0.7,
        ...     "high": 0.9}}}, details={"cost": {"linear": {"trainable_params": 970, "train_s": 1.5}}}))
        >>> uri.startswith("data:image/png;base64,")
        True
    """
    from matplotlib.figure import Figure

    from vitlab.report.figures import figure_to_data_uri

    fig = Figure(figsize=(8.4, 3.2))
    axes = fig.subplots(1, 2, sharey=True)
    cost = record.details.get("cost", {})
    for label, ms in record.metrics.items():
        m, c = ms.get("top1", {}), cost.get(label, {})
        v = m.get("value")
        if v is None:
            continue
        lo, hi = m.get("low"), m.get("high")
        err = [[v - lo], [hi - v]] if lo is not None and hi is not None else None
        for ax, x in zip(axes, (max(1, c.get("trainable_params") or 1), c.get("train_s") or 0.0)):
            ax.errorbar([x], [v], yerr=err, fmt="o", capsize=3)
            ax.annotate(label, (x, v), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("trainable parameters (incl. head)")
    axes[1].set_xlabel("training time per seed (s)")
    axes[0].set_ylabel("test top-1")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_data_uri(fig)


@register_section("tune", "Adaptation (fine-tuning, LoRA, VPT)")
def _tune_section(records: list[RunRecord], ctx: RenderContext) -> str:
    out = []
    for r in records:
        c, d = r.config, r.details
        seeds = c.get("seeds", [])
        rec = c.get("recipe", {})
        out.append(f"<h3><code>{e(str(c.get('backbone')))}</code> on <code>{e(str(c.get('data')))}</code> "
                   f"<span class=small>run <code>{e(r.run_id)}</code> · seeds {e(', '.join(map(str, seeds)))} · "
                   f"{e(str(c.get('device')))}</span></h3>")
        sel = d.get("selection", {})
        lr_text = "; ".join(
            f"{k}: tried {', '.join(f'{x:g}' for x in c.get('lr_candidates', {}).get(k, [v]))}, chose "
            + (", ".join(f"{x['lr']:g} (seed {x['seed']})" for x in sel.get(k, [])) or f"{v:g}")
            for k, v in c.get("lr", {}).items())
        out.append(f"<p class=small>Recipe: {e(', '.join(f'{k} {v}' for k, v in rec.items() if v is not None))}. "
                   f"Head start: {e(str(c.get('head_init', 'random')))}. Learning rate per method: {e(lr_text)}"
                   f"{' (' + e(str(c['selection'])) + ')' if c.get('selection') else ''}. "
                   f"Split: {e(str(c.get('split_origin')))}; early stopping on {e(str(c.get('val_origin')))}.</p>")
        rows = []
        for label, ms in r.metrics.items():
            cost = d.get("cost", {}).get(label, {})
            per_seed = "<br>".join(
                f"seed {e(s)}: {fmt_ci(v.get(label, {}).get('metrics', {}).get('top1'))}"
                for s, v in d.get("per_seed", {}).items())
            total = cost.get("total_params") or 0
            share = 100.0 * cost.get("trainable_params", 0) / total if total else None
            rows.append([f"<td><code>{e(label)}</code></td>",
                         f'<td class="num"><b>{fmt_ci(ms.get("top1"))}</b></td>',
                         f'<td class="num small">{per_seed}</td>',
                         _vs_linear_cell(d.get("vs_linear", {}).get(label, [])),
                         _verdict_cell(d.get("vs_probe_verdict", {}).get(label),
                                       _vs_linear_cell(d.get("vs_probe", {}).get(label, []))),
                         f'<td class="num">{cost.get("trainable_params", 0):,}<br><span class=ci>'
                         f'{fmt(share, 2)}%</span></td>',
                         _num(cost.get("train_s")), _num(cost.get("time_per_epoch_s"), 2),
                         _num(cost.get("images_per_s"), 0), _num(cost.get("peak_memory_mb"), 0)])
        head = ["method", "top-1 [95% CI]", "per seed: top-1 [bootstrap CI]", "Δ top-1 vs linear [CI], Holm p",
                "Δ top-1 vs frozen probe [CI], Holm p",
                "trainable params (% of all)", "train s / seed", "s / epoch", "train images/s", "peak MB"]
        cap = (e(str(d.get("interval", ""))) + ". Δ: paired bootstrap of the top-1 difference on the same test "
               "images and McNemar's test, Holm-adjusted over all pairs of a seed; green/red: both significant at "
               "0.05. probe: vitlab eval's frozen linear probe (L-BFGS, C swept) on the same split, the strongest "
               "frozen baseline; linear: a head trained with the tuning recipe. " + e(str(d.get("cost_note", ""))) + ".")
        out.append(_table(head, rows, cap))
        losing = [v for v in d.get("vs_probe_verdict", {}).values() if v.get("verdict") != "beats"]
        if losing:
            out.append('<p class="note"><b>Not better than the frozen probe.</b> '
                       + " ".join(e(v["text"]) for v in losing) + "</p>")
        try:
            out.append(f'<div class="figs"><figure><img alt="top-1 against cost" src="{tune_cost_figure_uri(r)}">'
                       "<figcaption>Top-1 against trainable parameters and training time; bars: the interval "
                       "of the first column.</figcaption></figure></div>")
        except Exception as err:  # noqa: BLE001 - a plot failure must not sink the report
            out.append(f'<p class="note">Cost plot unavailable: {e(type(err).__name__)}: {e(str(err))}</p>')
        arts = d.get("artefacts", {})
        if arts:
            out.append("<p class=small>Adapted backbones (first seed; load with <code>vitlab.load_backbone(path)</code> "
                       "or <code>--backbone path</code>): " + ", ".join(
                           f"{e(k)} <code>{e(v)}</code>" for k, v in arts.items()) + "</p>")
    return "".join(out)
