"""Report sections for ``"bench"`` and ``"tradeoff"`` run records (registered with :func:`register_section`).

Importing this module registers both sections; :mod:`vitlab.perf` imports it. Everything
shown comes from the records; the Pareto plot is drawn from the trade-off table and
embedded as a base64 PNG.

Example:
    >>> from vitlab.report.base import SECTIONS
    >>> sorted(k for k in SECTIONS if k in ("bench", "tradeoff"))
    ['bench', 'tradeoff']
"""

from __future__ import annotations

from typing import Any

from vitlab.record import RunRecord
from vitlab.report.base import RenderContext, _table, e, register_section
from vitlab.report.tables import fmt, fmt_p


def _num(x: Any, digits: int = 3) -> str:
    return f'<td class="num">{fmt(x, digits)}</td>'


def _range(v: Any, lo: Any, hi: Any, digits: int = 3, suffix: str = "") -> str:
    if v is None:
        return '<td class="num">–</td>'
    rng = f'<br><span class="ci">[{fmt(lo, digits)}, {fmt(hi, digits)}]</span>' if lo is not None else ""
    return f'<td class="num"><b>{fmt(v, digits)}{suffix}</b>{rng}</td>'


def _conditions(c: dict[str, Any], machine: dict[str, Any]) -> str:
    img = c.get("img_size")
    bits = [f"device {c.get('device')}", f"dtype {c.get('dtype')}", f"batch {c.get('batch_size')}"]
    if img:
        bits.append(f"input {img[0]}×{img[1]}")
    if c.get("compile") is not None:
        bits.append(f"compile {c['compile']}")
    bits.append(f"{c.get('repeats')} repeats, {c.get('warmup')} warm-up")
    m = ", ".join(f"{k} {v}" for k, v in machine.items() if k in ("processor", "cpu_count", "torch_threads", "gpu",
                                                                   "load_avg_1m", "torch"))
    return f"<p class=small>{e(' · '.join(map(str, bits)))}<br>machine: {e(m)}</p>"


@register_section("bench", "Benchmarks")
def _bench_section(records: list[RunRecord], ctx: RenderContext) -> str:
    from vitlab.report.perf_figures import bench_rows

    out = []
    for r in records:
        c = r.config
        out.append(f"<h3><code>{e(str(c.get('backbone')))}</code> <span class=small>run "
                   f"<code>{e(r.run_id)}</code> · {e(r.created)}</span></h3>")
        out.append(_conditions(c, r.details.get("machine", {})))
        rows = []
        for row in bench_rows(r):
            if row.get("error"):
                rows.append([f"<td><code>{e(row['variant'])}</code></td>",
                             f'<td class="worse" colspan="7">failed: {e(str(row["error"]))}</td>'])
                continue
            rows.append([f"<td><code>{e(row['variant'])}</code></td>",
                         _range(row["images_per_s"], row["images_per_s_min"], row["images_per_s_max"], 1),
                         _range(row["speedup"], row["speedup_low"], row["speedup_high"], 2, "×"),
                         f'<td class="num">{fmt(row["latency_p50_ms"], 2)} / {fmt(row["latency_p95_ms"], 2)}</td>',
                         _num(row["gflops"], 3), _num(row["flops_reduction"], 2), _num(row["params_m"], 2),
                         _num(row["peak_memory_mb"], 1)])
        head = ["variant", "images/s [min, max]", f"speed-up vs {c.get('baseline', 'none')} [min, max]",
                "latency p50 / p95 (ms, batch 1)", "GFLOPs / image", "FLOPs ÷", "params (M)", "peak memory (MB)"]
        out.append(_table(head, rows, e(r.details.get("method", ""))))
    return "".join(out)


def _delta_cell(d: dict[str, Any] | None) -> str:
    if not d:
        return '<td class="num">–</td>'
    sig = d.get("low", 0) > 0 or d.get("high", 0) < 0
    cls = ' class="num worse"' if sig and d.get("diff", 0) < 0 else ' class="num"'
    return (f"<td{cls}><b>{fmt(d.get('diff'), 4)}</b><br><span class=ci>[{fmt(d.get('low'), 4)}, "
            f"{fmt(d.get('high'), 4)}] p={fmt_p(d.get('p_bootstrap'))}</span></td>")


def _tradeoff_table(r: RunRecord) -> str:
    c = r.config
    head_p = c.get("headline", "knn")
    rows = []
    for row in r.details.get("table", []):
        is_exit = row.get("kind") == "early_exit"
        key = "exit" if is_exit else head_p
        acc = (row.get("accuracy") or {}).get(key) or {}
        sp = row.get("speedup") or {}
        name = f"<td><code>{e(row['variant'])}</code>" + (" <span class=small>(exit heads)</span>" if is_exit else "") \
            + "</td>"
        if row.get("error"):
            rows.append([name, f'<td class="worse" colspan="7">benchmark failed: {e(str(row["error"]))}</td>'])
            continue
        rows.append([name,
                     _range(row.get("images_per_s"), row.get("images_per_s_low"), row.get("images_per_s_high"), 1,
                            "*" if row.get("images_per_s_derived") else ""),
                     _range(sp.get("value"), sp.get("low"), sp.get("high"), 2, "×"),
                     _num(row.get("flops_reduction"), 2),
                     _range(acc.get("value"), acc.get("low"), acc.get("high"), 4),
                     _delta_cell((row.get("delta") or {}).get(key)),
                     _num(row.get("feature_cosine"), 4),
                     '<td class="leader">★</td>' if row.get("pareto") else "<td></td>"])
    head = ["variant", "images/s [min, max]", f"speed-up vs {c.get('baseline')}", "FLOPs ÷",
            f"top-1 ({head_p}) [95% CI]", "Δ top-1 vs baseline [95% CI], p", "feature cosine", "Pareto"]
    cap = (e(r.details.get("method", "")) + " ★ = on the Pareto front (accuracy vs images/s). Red Δ: the 95% CI "
           "excludes 0. * = derived (baseline throughput × measured exit speed-up).")
    return _table(head, rows, cap)


def _exit_tables(r: RunRecord) -> str:
    out = []
    for label, ex in r.details.get("exits", {}).items():
        sw = ex.get("sweep", {})
        rows = [[_num(t, 2), _num(a, 4), _num(s, 2), _num(f, 2), _num(m, 2)]
                for t, a, s, f, m in zip(sw.get("threshold", []), sw.get("accuracy", []), sw.get("speedup", []),
                                         sw.get("flops_reduction", []), sw.get("mean_exit_layer", []))
                if t >= 0.5 or t == ex.get("threshold")]
        times = ", ".join(f"{1000 * t:.3g}" for t in ex.get("cum_time_s", []))
        out.append(f"<h3>Early exit <code>{e(label)}</code>: threshold sweep</h3>"
                   f"<p class=small>Measured cumulative time per image to each exit layer (ms): {e(times)}. "
                   f"Last-layer head accuracy {fmt(ex.get('last_layer_accuracy'), 4)}.</p>"
                   + _table(["threshold", "accuracy", "measured speed-up", "FLOPs ÷", "mean exit layer"], rows))
    return "".join(out)


@register_section("tradeoff", "Accuracy / speed trade-offs")
def _tradeoff_section(records: list[RunRecord], ctx: RenderContext) -> str:
    from vitlab.report.perf_figures import tradeoff_plot_uri

    out = []
    for r in records:
        c = r.config
        out.append(f"<h3><code>{e(str(c.get('backbone')))}</code> on <code>{e(str(c.get('dataset')))}</code> "
                   f"<span class=small>run <code>{e(r.run_id)}</code></span></h3>")
        out.append(_conditions({**c.get("bench", {}), "img_size": None}, r.details.get("machine", {})))
        out.append(_tradeoff_table(r))
        try:
            uri = tradeoff_plot_uri(r)
            out.append(f'<div class="figs"><figure><img alt="Pareto plot, {e(str(c.get("backbone")))}" src="{uri}">'
                       "<figcaption>Accuracy vs measured images/s; red: Pareto front; bars: 95% CI."
                       "</figcaption></figure></div>")
        except Exception as err:  # noqa: BLE001 - a plot failure must not sink the report
            out.append(f'<p class="note">Pareto plot unavailable: {e(type(err).__name__)}: {e(str(err))}</p>')
        out.append(_exit_tables(r))
    return "".join(out)


__all__: list[str] = []
