"""Report sections for ``"pretrain"`` and ``"distill"`` run records: the verdict (each model's test top-1 with its
CI, the paired differences with Holm-adjusted bootstrap and McNemar p-values), the monitored curve (validation
top-1 against step, with its intervals, the base model's value and the best point), the feature-health curves,
the loss curve, the speed-up and the artefact (registered with :func:`~vitlab.report.base.register_section`).

Everything shown comes from the record; figures are matplotlib on an Agg canvas, embedded as base64 PNGs.

Example:
    >>> from vitlab.report.base import SECTIONS
    >>> SECTIONS["pretrain"][0], SECTIONS["distill"][0]
    ('Continued pretraining', 'Distillation')
"""

from __future__ import annotations

from typing import Any

from vitlab.record import RunRecord
from vitlab.report.base import RenderContext, _table, e, register_section
from vitlab.report.tables import fmt, fmt_ci, fmt_p

__all__ = ["curves_figure_uri", "verdict_rows"]


def verdict_rows(record: RunRecord) -> list[list[str]]:
    """Table rows of the verdict: per protocol, the first model, then each model it was paired with."""
    rows = []
    for proto, pairs in record.details.get("verdict", {}).items():
        if not pairs:
            continue
        a = pairs[0]["a"]
        rows.append([f"<td><code>{e(proto)}</code></td>", f"<td><b>{e(a)}</b></td>",
                     f'<td class="num"><b>{fmt_ci(record.metrics.get(a, {}).get(proto, {}).get("top1"))}</b></td>',
                     '<td class="num">–</td>', '<td class="num">–</td>', '<td class="num">–</td>'])
        for p in pairs:
            sig = p.get("significant")
            cls = ("leader" if p["diff"] > 0 else "worse") if sig else "same"
            rows.append(["<td></td>", f"<td>vs {e(p['b'])}</td>",
                         f'<td class="num">{fmt_ci(record.metrics.get(p["b"], {}).get(proto, {}).get("top1"))}</td>',
                         f'<td class="num {cls}">{fmt(p["diff"], 3, signed=True)} <span class=ci>'
                         f'[{fmt(p["low"], 3, signed=True)}, {fmt(p["high"], 3, signed=True)}]</span></td>',
                         f'<td class="num">{fmt_p(p.get("p_bootstrap_holm"))}</td>',
                         f'<td class="num">{fmt_p(p.get("p_mcnemar_holm"))}</td>'])
    return rows


def curves_figure_uri(record: RunRecord) -> str:
    """Monitored top-1 (with its intervals) against step, and the feature-health and loss curves, as a PNG URI.

    Example:
        >>> pt = {"step": 0, "metrics": {"knn": {"top1": {"value": 0.8, "low": 0.7, "high": 0.9}}},
        ...       "health": {"normalized_std": 0.1, "normalized_std_ideal": 0.1, "effective_rank": 5.0},
        ...       "teacher_entropy": None}
        >>> r = RunRecord("pretrain", {}, {}, details={"monitor_curve": [pt, {**pt, "step": 4}],
        ...                                            "curve": [{"step": 1, "loss": 2.0}]})
        >>> curves_figure_uri(r).startswith("data:image/png;base64,")
        True
    """
    from matplotlib.figure import Figure

    from vitlab.report.figures import figure_to_data_uri

    d = record.details
    hist, curve = d.get("monitor_curve", []), d.get("curve", [])
    fig = Figure(figsize=(12.0, 3.0))
    axes = fig.subplots(1, 4)
    if hist:
        for proto in hist[0]["metrics"]:
            xs = [h["step"] for h in hist]
            ms = [h["metrics"][proto]["top1"] for h in hist]
            v = [m["value"] for m in ms]
            lo = [m["low"] if m.get("low") is not None else m["value"] for m in ms]
            hi = [m["high"] if m.get("high") is not None else m["value"] for m in ms]
            axes[0].plot(xs, v, marker="o", label=proto)
            axes[0].fill_between(xs, lo, hi, alpha=0.2)
            axes[0].axhline(v[0], ls="--", lw=0.8, color="gray")
        best = d.get("best")
        if best:
            axes[0].plot([best["step"]], [best["value"]], marker="*", ms=12, color="gold", mec="k", label="best")
        stop = d.get("stop")
        if stop:
            axes[0].axvline(stop["step"], color="#b3261e", lw=1, label=stop["reason"])
        axes[0].legend(fontsize=7)
        xs = [h["step"] for h in hist]
        axes[1].plot(xs, [h["health"]["normalized_std"] for h in hist], marker="o", label="std of normalised")
        axes[1].axhline(hist[0]["health"]["normalized_std_ideal"], ls="--", lw=0.8, color="gray", label="1/sqrt(d)")
        axes[1].legend(fontsize=7)
        axes[2].plot(xs, [h["health"]["effective_rank"] for h in hist], marker="o", color="tab:green")
        ent = [(h["step"], h["teacher_entropy"]) for h in hist if h.get("teacher_entropy") is not None]
        if ent:
            ax2 = axes[2].twinx()
            ax2.plot([s for s, _ in ent], [v for _, v in ent], marker="s", color="tab:purple")
            ax2.set_ylabel("teacher entropy (nats)", fontsize=8, color="tab:purple")
    if curve:
        axes[3].plot([c["step"] for c in curve], [c["loss"] for c in curve], lw=1)
    for ax, title in zip(axes, ("monitored top-1 (validation part)", "feature spread", "effective rank",
                                "training loss")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_data_uri(fig)


def _section(records: list[RunRecord], ctx: RenderContext) -> str:
    out = []
    for r in records:
        c, d = r.config, r.details
        who = c.get("backbone") or f"{', '.join(c.get('teachers', []))} → {c.get('student')}"
        method = c.get("method", {})
        out.append(f"<h3><code>{e(str(who))}</code> on <code>{e(str(c.get('data')))}</code> "
                   f"<span class=small>run <code>{e(r.run_id)}</code> · {e(str(method.get('spec') or method.get('name')))}"
                   f" · monitor <code>{e(str(c.get('monitor')))}</code></span></h3>")
        steps = d.get("steps", {})
        res = c.get("resolved", {})
        out.append(f"<p class=small>{e(str(steps.get('done')))} of {e(str(steps.get('total')))} steps; head warm-up "
                   f"{e(str(steps.get('head_warmup')))} steps (backbone frozen"
                   + (", weights unchanged: " + e(str(d["warmup_check"].get("backbone_unchanged")))
                      if d.get("warmup_check") else "") + f"); backbone lr {e(str(res.get('lr')))}, layer decay "
                   f"{e(str(res.get('layer_decay')))}; exported network: {e(str(res.get('export')))}; artefact: "
                   f"{e(str(d.get('selected')))} (step {e(str(d.get('selected_step')))}).</p>")
        if d.get("stop"):
            out.append(f'<p class="note">{e(d["stop"]["message"])}</p>')
        if d.get("note"):
            out.append(f'<p class="note">{e(d["note"])}</p>')
        rows = verdict_rows(r)
        if rows:
            out.append(_table(["protocol", "model", "test top-1 [95% CI]", "Δ top-1 [95% CI]",
                               "p bootstrap (Holm)", "p McNemar (Holm)"], rows,
                              "The monitor data's test part, the split of <code>vitlab eval --seed "
                              f"{e(str(c.get('seed')))}</code>; each model scored by vitlab eval. Δ: first model − "
                              "the other, paired bootstrap on the same test images and McNemar's test, Holm-adjusted "
                              "over the pairs of a protocol; green/red: both significant at 0.05."))
        for label, s in d.get("speedup", {}).items():
            sp = s.get("speedup") or {}
            out.append(f"<p>Speed-up of the student over {e(label)}: <b>{fmt(sp.get('value'), 2)}x</b> "
                       f"<span class=ci>range [{fmt(sp.get('low'), 2)}, {fmt(sp.get('high'), 2)}] over paired "
                       f"repeats; {fmt(s['teacher'].get('images_per_s'), 0)} vs "
                       f"{fmt(s['student'].get('images_per_s'), 0)} images/s at batch {e(str(s.get('batch_size')))} "
                       f"on {e(str(s.get('device')))} (vitlab bench's timing code)</span></p>")
        if d.get("monitor_curve") or d.get("curve"):
            try:
                out.append(f'<div class="figs"><figure><img alt="training curves" src="{curves_figure_uri(r)}">'
                           "<figcaption>Monitored top-1 on the validation part with its bootstrap interval (dashed: "
                           "the start), feature spread (std of L2-normalised features; dashed 1/sqrt(d)), effective "
                           "rank and teacher entropy, training loss.</figcaption></figure></div>")
            except Exception as err:  # noqa: BLE001 - a plot failure must not sink the report
                out.append(f'<p class="note">Curves unavailable: {e(type(err).__name__)}: {e(str(err))}</p>')
        if d.get("artefact"):
            out.append(f"<p class=small>Artefact (load with <code>vitlab.load_backbone(path)</code> or "
                       f"<code>--backbone path</code>): <code>{e(d['artefact'])}</code></p>")
    return "".join(out)


register_section("pretrain", "Continued pretraining")(_section)
register_section("distill", "Distillation")(_section)
