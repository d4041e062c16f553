"""The ``gen-eval`` section of the HTML report, and the Markdown tables of ``gen-eval`` records.

One foldable block per :func:`vitlab.generative.gen_eval` record:

* the record's notes (small samples, precomputed features) in a highlighted box, before any number;
* the metric table: value, 95% CI (``[low, high]``, with its method: ``half-sample`` for FD,
  ``fd_debiased``, PRDC and Vendi, a subset or half-sample jackknife for KD), or ``± std`` for a
  spread that is a standard deviation (IS over splits; KD without a CI), or "no CI";
* the encoder (backbone, weights id, layer, pooling, preprocessing) and the sets (source,
  size, cache use, fingerprint), with every metric setting in a collapsed list;
* FD-infinity's extrapolation as a figure; Vendi per class; the most / least realistic samples;
* image grids of real and generated samples and, for the memorisation metrics, each generated
  sample closest to a training image side by side with that image and their distance.

Images are re-opened from the data URIs in the record (``vitlab.load_source``) through the
shared :class:`~vitlab.report.base.RenderContext`; a source that cannot be opened (moved,
deleted) or has changed since the run gets a note, and precomputed-feature sets say that they
have no images. Every string from a record is escaped.

Numbers go through :func:`vitlab.report.tables.fmt_sig` (4 significant digits, here also as ``num``);
the Markdown tables are :func:`vitlab.report.tables.gen_eval_markdown`.

Example:
    >>> from vitlab.report.base import SECTIONS
    >>> SECTIONS["gen-eval"][0]
    'Generative evaluation'
    >>> num(112.898)
    '112.9'
"""

from __future__ import annotations

from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from vitlab.record import RunRecord
from vitlab.report.base import RenderContext, _table, _td, e, register_section
from vitlab.report.figures import figure_to_data_uri
from vitlab.report.tables import fmt_sig, gen_eval_markdown, outside_ci, spread_text

__all__ = ["HEADING", "register", "render_gen_eval", "gen_eval_markdown", "num", "spread_text", "fd_inf_uri"]

HEADING = "Generative evaluation"
ROLES = ("real", "fake", "train", "test")
#: metric → (what it is, how to read it)
ABOUT: dict[str, tuple[str, str]] = {
    "fd": ("Fréchet distance (FID with the Inception encoder); biased upwards at finite n", "↓ lower is better"),
    "fd_debiased": ("FD minus its estimated finite-sample bias (half-samples): estimates the population FD",
                    "↓ lower is better; can be < 0 when the sets match"),
    "fd_inf": ("FD extrapolated to infinitely many samples (Chong & Forsyth)", "↓ lower is better"),
    "kd": ("kernel distance (KID with the Inception encoder)", "↓ lower is better"),
    "precision": ("share of generated samples inside the real manifold (fidelity)", "↑ higher is better"),
    "recall": ("share of real samples inside the generated manifold (diversity)", "↑ higher is better"),
    "density": ("how many real k-NN balls hold each generated sample, ÷ k (fidelity)",
                "↑ higher; ≈ 1 when matched"),
    "coverage": ("share of real samples with a generated sample in their k-NN ball (diversity)",
                 "↑ higher is better"),
    "realism": ("median realism score of the generated samples", "↑ higher is more realistic"),
    "is": ("Inception Score", "↑ higher is better"),
    "vendi": ("Vendi score: effective number of distinct samples (diversity)", "↑ higher is more diverse"),
    "vendi_per_class": ("mean Vendi score within each class", "↑ higher is more diverse"),
    "sw": ("sliced Wasserstein distance", "↓ lower is better"),
    "authpct": ("% of generated samples that are authentic (not closer to a training image than that "
                "image's own nearest neighbour)", "↑ higher = less copying"),
    "ct": ("C_T data-copying statistic (generated vs held-out distances to training data)",
           "≪ 0 copying, ≫ 0 underfitting"),
    "ct_modified": ("C_T with training and generated sets swapped (memorisation only)", "≪ 0 memorisation"),
    "ct_test": ("C_T on two halves of the test set (mode collapse only; no training data)", "far from 0: a problem"),
    "fls": ("Feature Likelihood Score (KDE on generated features, scored on test data)", "see gen_nll / baseline_nll"),
    "fls_pog": ("FLS percentage of overfit Gaussians (minus 50)", "higher = more overfitting"),
}
_STANDARD = {"value", "low", "high", "std", "se", "level", "n_resamples", "method", "caveat", "small_sample",
             "uncertainty", "note"}
_MEMO_METRICS = ("authpct", "ct", "ct_modified", "ct_test", "fls", "fls_pog")
_GRID = 'style="display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start"'
_PAIR = 'style="background:#fff;border:1px solid #dde2e7;border-radius:4px;padding:6px"'


num = fmt_sig  # the report's significant-digits formatter (metrics spanning 1e-4 … 1e3), under its old name
_outside = outside_ci


# ---------------------------------------------------------------- figures
def fd_inf_uri(ns: list[float], fds: list[float], value: float, slope: float | None) -> str:
    """FD-infinity's fit ``FD_N = FD∞ + slope / N`` as a PNG ``data:`` URI (points and the fitted line).

    Example:
        >>> fd_inf_uri([10, 20, 40], [3.0, 2.0, 1.5], 1.0, 20.0).startswith("data:image/png;base64,")
        True
    """
    x = [1.0 / n for n in ns]
    fig = Figure(figsize=(4.4, 2.9))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(x, fds, "o", color="#4a7fc1", ms=4, label="FD on N generated samples")
    if slope is not None and x:
        xs = [0.0, max(x)]
        ax.plot(xs, [value + slope * t for t in xs], "-", color="#b3261e", lw=1.3,
                label=f"fit: FD∞ = {num(value)}")
        ax.plot([0.0], [value], "s", color="#b3261e", ms=5, clip_on=False)
    ax.set_xlabel("1 / N", fontsize=9)
    ax.set_ylabel("FD", fontsize=9)
    ax.set_xlim(left=-0.04 * max(x, default=1.0))  # room for the FD∞ marker at 1/N = 0
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("FD-infinity extrapolation", fontsize=10)
    return figure_to_data_uri(fig)


# ---------------------------------------------------------------- images
def _image_status(ctx: RenderContext, uri: str | None, fingerprint: str | None, what: str, origin: str) -> \
        tuple[bool, str]:
    """``(can_show_images, note_html)`` for the images of one set."""
    if not uri:
        src = f" (<code>{e(origin)}</code>)" if origin else ""
        return False, (f"<p class=small>No images for the {e(what)}: it was given as precomputed features or "
                       f"statistics{src}.</p>")
    if not ctx.load_images:
        return False, ('<p class="note">Images not embedded (<code>load_images=False</code>); ids only.</p>')
    err = ctx.source(uri)[2]
    if err is not None:
        return False, (f'<p class="note">Images of the {e(what)} not shown: the data source <code>{e(uri)}</code> '
                       f"could not be opened ({e(err)}). It may have moved; the ids below come from the record.</p>")
    if fingerprint and ctx.fingerprint(uri) not in (None, fingerprint):
        return True, (f'<p class="note">The data at <code>{e(uri)}</code> has changed since this run (fingerprint '
                      "differs): the images shown may not be the ones that were evaluated.</p>")
    return True, ""


def _tile(ctx: RenderContext, uri: str | None, sid: str, show: bool, caption: str = "", border: str = "") -> str:
    img = ""
    if show and uri:
        data = ctx.image(uri, sid)
        style = f' style="border-color:{border}"' if border else ""
        img = (f'<img alt="{e(sid)}" title="{e(sid)}" src="{data}"{style}>' if data
               else "<div class=small>[image unavailable]</div>")
    cap = f"{caption}<br>" if caption else ""
    return f'<div class="tile">{img}{cap}<span class=small>{e(sid)}</span></div>'


def _set_info(r: RunRecord, role: str) -> tuple[str | None, str | None, str]:
    """``(uri, fingerprint, origin)`` of one set: the data URI when it has images."""
    fp = r.fingerprints.get(role) if isinstance(r.fingerprints.get(role), dict) else {}
    origin = str((r.config.get("sets") or {}).get(role) or "")
    uri = fp.get("uri") if fp.get("kind") not in ("file", "array", "stats", None) else None
    if role == "real" and not origin and r.config.get("real_stats"):
        origin = str(r.config["real_stats"])
    return uri, fp.get("fingerprint"), origin


def _grid_html(r: RunRecord, ctx: RenderContext, role: str, ids: list[str], uri: str | None) -> str:
    label = {"real": "real samples", "fake": "generated samples"}[role]
    _, fp, origin = _set_info(r, role)
    show, note = _image_status(ctx, uri, fp, f"{role} set", origin)
    head = f"<h4>{e(label.capitalize())} <span class=small>({len(ids)} drawn at random, seeded)</span></h4>"
    if not ids:
        return head + (note or f"<p class=small>No {e(label)} in this run.</p>")
    if not uri:
        return head + note
    tiles = "".join(_tile(ctx, uri, str(i), show) for i in ids)
    return head + note + f'<div class="grid-{e(role)}" {_GRID}>{tiles}</div>'


def _memo_html(r: RunRecord, ctx: RenderContext) -> str:
    mem = r.details.get("memorization") or {}
    pairs = mem.get("closest") or []
    present = [m for m in _MEMO_METRICS if m in r.metrics]
    if not pairs and not present:
        return ""
    out = ["<h3>Memorisation</h3>"]
    if present:
        out.append("<p class=small>" + " · ".join(f"<b>{e(m)}</b> = {e(num(r.metrics[m].get('value')))}"
                                                  for m in present) + " (see the table above).</p>")
    if not pairs:
        return "".join(out) + "<p class=small>No closest pairs in the record (no training set given).</p>"
    f_uri, f_fp, f_origin = _set_info(r, "fake")
    t_uri, t_fp, t_origin = _set_info(r, "train")
    f_uri, t_uri = mem.get("fake_uri") or f_uri, mem.get("train_uri") or t_uri
    f_show, f_note = _image_status(ctx, f_uri, f_fp, "generated set", f_origin)
    t_show, t_note = _image_status(ctx, t_uri, t_fp, "training set", t_origin)
    notes = f_note + (t_note if t_note != f_note else "")
    boxes = []
    for k, p in enumerate(pairs, 1):
        fid, tid = str(p.get("fake_id")), str(p.get("train_id"))
        boxes.append(f'<div class="gal memo-pair" {_PAIR}><span class="sep small">#{k}</span>'
                     f'{_tile(ctx, f_uri, fid, f_show, "generated", "#b3261e")}'
                     f'<span class="sep" style="font-size:13px;text-align:center">↔<br>d = '
                     f"{e(num(p.get('distance')))}</span>"
                     f'{_tile(ctx, t_uri, tid, t_show, "training", "#0b6e3d")}</div>')
    dist = e(str(mem.get("distance", "distance in encoder space")))
    return ("".join(out) + notes + f"<p class=small>The {len(pairs)} generated samples closest to any training "
            f"image ({dist}), nearest first: a generated sample (red) beside its nearest training image (green). "
            "Distances near 0 suggest copies; compare them with the typical distances of this encoder.</p>"
            f'<div {_GRID}>{"".join(boxes)}</div>')


def _realism_html(r: RunRecord, ctx: RenderContext) -> str:
    det = r.details.get("realism") or {}
    if not det:
        return ""
    uri, fp, origin = _set_info(r, "fake")
    show, note = _image_status(ctx, uri, fp, "generated set", origin)
    out = ["<h3>Realism score extremes</h3>", note]
    for key, label in (("most_realistic", "Most realistic generated samples"),
                       ("least_realistic", "Least realistic generated samples")):
        items = det.get(key) or []
        if items:
            tiles = "".join(_tile(ctx, uri, str(it.get("id")), show, f"score {e(num(it.get('score')))}")
                            for it in items)
            out.append(f"<h4>{label}</h4><div {_GRID}>{tiles}</div>")
    return "".join(out)


# ---------------------------------------------------------------- tables
def _metric_table(r: RunRecord) -> str:
    rows = []
    for name, m in r.metrics.items():
        if not isinstance(m, dict):
            continue
        about, read = ABOUT.get(name, ("", ""))
        flags = []
        if m.get("small_sample"):
            flags.append('<span class="worse" title="see the notes above">⚠ small sample</span>')
        if _outside(m):
            flags.append('<span class="worse">⚠ value outside its interval (an old bootstrap record)</span>')
        val = f'<td class="num"><b>{e(num(m.get("value")))}</b></td>'
        if m.get("low") is not None and m.get("high") is not None:
            how = f"{num(100 * float(m.get('level', 0.95)))}% {m.get('method', 'CI')}"
            how += f", {m['n_resamples']} resamples" if m.get("n_resamples") is not None else ""
            how += f", se {num(m['se'])}" if m.get("se") is not None else ""
            ci = f'<td class="num">{e(spread_text(m))}<br><span class="ci">{e(how)}</span></td>'
        elif m.get("std") is not None:
            ci = (f'<td class="num">± {e(num(m.get("std")))}<br><span class="ci">'
                  f'{e(str(m.get("uncertainty", "mean ± std")))}</span></td>')
        else:
            ci = f'<td class="num">–<br><span class="ci">{e(str(m.get("note") or "no CI"))}</span></td>'
        extra = {k: v for k, v in m.items() if k not in _STANDARD}
        bits = flags + ([e(str(m["caveat"]))] if m.get("caveat") else []) \
            + ([e(", ".join(f"{k} = {num(v) if isinstance(v, float) else v}" for k, v in extra.items()))]
               if extra else [])
        rows.append([f"<td><code>{e(name)}</code></td>", val, ci,
                     f"<td class=small>{e(about)}<br><b>{e(read)}</b></td>" if about else "<td></td>",
                     f"<td class=small>{'<br>'.join(bits)}</td>"])
    if not rows:
        return "<p class=small>No metrics in this record.</p>"
    return _table(["metric", "value", "95% CI / spread", "what it measures", "notes"], rows,
                  "Bracketed intervals are value ± z·se (z = 1.96 at 95%), se from random half-samples drawn "
                  "without replacement (delete-half jackknife; KD: from its subsets). FD, PRDC and Vendi intervals "
                  "cover the metric's "
                  "expected value at this sample size; fd_debiased and KD estimate the population value. ± is a "
                  "standard deviation over splits (IS) or subsets (KD without a CI), not a CI. Values are "
                  "encoder-specific: compare runs with the same encoder.")


def _notes_html(r: RunRecord) -> str:
    notes = [n for n in r.details.get("notes", []) if isinstance(n, dict)]
    skipped = {k: v for k, v in (r.details.get("skipped") or {}).items() if v}
    if not notes and not skipped:
        return ""
    seen, items = set(), []
    for n in sorted(notes, key=lambda n: n.get("metric") != "*"):
        key = (str(n.get("metric")), str(n.get("message")))
        if key in seen:
            continue
        seen.add(key)
        who = "all metrics" if key[0] == "*" else key[0]
        items.append(f"<li><b>{e(who)}</b>: {e(key[1])}</li>")
    for role, s in skipped.items():
        ids = ", ".join(str(x.get("id", x)) if isinstance(x, dict) else str(x) for x in s[:10])
        items.append(f"<li><b>{e(role)} set</b>: {len(s)} image(s) skipped as unreadable ({e(ids)}"
                     f"{', …' if len(s) > 10 else ''}).</li>")
    return (f'<div class="note gen-notes"><b>⚠ {len(items)} note(s): read before using these numbers</b>'
            f'<ul style="margin:4px 0 0 0;padding-left:20px">{"".join(items)}</ul></div>')


def _prep_text(p: dict[str, Any]) -> str:
    size = p.get("input_size")
    size_t = "×".join(str(s) for s in size) if isinstance(size, (list, tuple)) else str(size)
    parts = [f"{size_t} input", f"resize {p.get('resize')}", f"{p.get('interpolation')} interpolation"]
    if p.get("crop_pct") not in (None, 1.0, 1):
        parts.append(f"crop {p.get('crop_pct')}")
    if "mean" in p:
        parts.append(f"mean {_vec(p.get('mean'))}, std {_vec(p.get('std'))}")
    if p.get("antialias") is not None:
        parts.append(f"antialias {'on' if p.get('antialias') else 'off'}")
    return " · ".join(parts)


def _vec(v: Any) -> str:
    return "(" + ", ".join(f"{x:.3g}" if isinstance(x, float) else str(x) for x in v) + ")" \
        if isinstance(v, (list, tuple)) else str(v)


def _setup_html(r: RunRecord) -> str:
    c, enc = r.config, r.config.get("encoder") or None
    if enc:
        rows = [("encoder", enc.get("encoder")), ("backbone", enc.get("backbone")),
                ("weights id", enc.get("weights_id")),
                ("pretrained weights", "yes" if enc.get("pretrained") else "no (seeded random init or no weights)"),
                ("features", f"layer {enc.get('layer')} · {enc.get('pool')} pooling · {c.get('dim')}-d"),
                ("resize mode", enc.get("resize")),
                ("preprocessing", _prep_text(enc.get("preprocessing") or {}))]
        enc_html = _table(["encoder", ""], [[_td(k), _td(v)] for k, v in rows])
    else:
        enc_html = (f"<p class=small>Encoder: none — every set was given as precomputed features "
                    f"({e(str(c.get('dim')))}-d); vitlab could not check that they share an encoder and "
                    "preprocessing.</p>")
    cache = r.timings.get("from_cache") or {}
    srows = []
    for role in ROLES:
        if f"n_{role}" not in c:
            continue
        _, fp, origin = _set_info(r, role)
        fpd = r.fingerprints.get(role) if isinstance(r.fingerprints.get(role), dict) else {}
        how = {True: "embeddings from the cache", False: "embedded in this run",
               None: "precomputed features"}.get(cache.get(role), "")
        if fpd.get("kind") == "stats":
            how = "features from the reference-statistics file"
        srows.append([_td(role), f"<td><code>{e(origin)}</code></td>", f'<td class="num">{e(num(c.get(f"n_{role}")))}'
                      "</td>", _td(how), _td(fp or fpd.get("sha256") or "")])
    if c.get("real_stats") and "n_real" not in c:
        st = r.fingerprints.get("real_stats") if isinstance(r.fingerprints.get("real_stats"), dict) else {}
        srows.insert(0, [_td("real (statistics)"), f"<td><code>{e(str(c['real_stats']))}</code></td>",
                         f'<td class="num">{e(num(c.get("n_real_stats")))}</td>',
                         _td("mean and covariance only"), _td(st.get("sha256") or st.get("fingerprint") or "")])
    sets_html = _table(["set", "source", "n", "features", "fingerprint"], srows)
    mc = c.get("metric_config") or {}
    res = c.get("n_resamples") or {}
    settings = (f"<p class=small>seed {e(str(c.get('seed')))} · half-samples: "
                f"{e(', '.join(f'{k} {v}' for k, v in res.items()))} · run <code>{e(r.run_id)}</code> · "
                f"created {e(str(r.created))}</p>")
    if mc:
        settings += ("<details><summary class=small>all metric settings</summary><p class=small>"
                     + e(", ".join(f"{k} = {v}" for k, v in mc.items())) + "</p></details>")
    return "<h3>Encoder and sets</h3>" + enc_html + sets_html + settings


def _extras_html(r: RunRecord) -> str:
    out = []
    fi = r.details.get("fd_inf") or {}
    if fi.get("ns") and fi.get("fds") and "fd_inf" in r.metrics:
        m = r.metrics["fd_inf"]
        try:
            uri = fd_inf_uri(fi["ns"], fi["fds"], float(m["value"]), m.get("slope"))
            out.append(f'<div class="figs"><figure><img alt="FD-infinity extrapolation" src="{uri}">'
                       "<figcaption>FD on subsets of N generated samples against 1/N; FD∞ is the fitted line at "
                       "1/N = 0.</figcaption></figure></div>")
        except Exception:  # noqa: BLE001 - a figure must not sink the report
            pass
    per = r.details.get("vendi_per_class") or {}
    if per:
        rows = [[_td(k), f'<td class="num">{e(num(v))}</td>'] for k, v in per.items()]
        out.append("<h3>Vendi score per class</h3>" + _table(["class", "Vendi"], rows))
    return "".join(out)


def _summary(r: RunRecord) -> str:
    c = r.config
    sets = c.get("sets") or {}
    enc = (c.get("encoder") or {}).get("encoder") or "precomputed features"
    ref = sets.get("real") or c.get("real_stats") or "–"
    head = next((n for n in ("fd", "kd", "precision", "vendi") if n in r.metrics), next(iter(r.metrics), None))
    hv = f"{head} {num(r.metrics[head].get('value'))} {spread_text(r.metrics[head])}" if head else ""
    n_notes = len(r.details.get("notes", []))
    warn = f' <span class="worse">⚠ {n_notes} note(s)</span>' if n_notes else ""
    return (f"<summary><code>{e(str(sets.get('fake', '?')))}</code> vs <code>{e(str(ref))}</code> · encoder "
            f"<code>{e(str(enc))}</code> <span class=small>{e(hv)}</span>{warn}</summary>")


def _run_html(r: RunRecord, ctx: RenderContext) -> str:
    mem = r.details.get("memorization") or {}
    grid = mem.get("grid") or {}
    parts = [_summary(r), _notes_html(r), "<h3>Metrics</h3>", _metric_table(r), _setup_html(r), _extras_html(r)]
    parts.append("<h3>Samples</h3>")
    for role in ("real", "fake"):
        if role == "real" and not grid.get("real") and not r.config.get("n_real"):
            parts.append("<h4>Real samples</h4><p class=small>No real images: the reference set is a statistics "
                         "file or was not given.</p>")
            continue
        uri = grid.get(f"{role}_uri") or _set_info(r, role)[0]
        parts.append(_grid_html(r, ctx, role, [str(i) for i in grid.get(role) or []], uri))
    parts += [_realism_html(r, ctx), _memo_html(r, ctx)]
    return "".join(parts)


def render_gen_eval(records: list[RunRecord], ctx: RenderContext) -> str:
    """The section for ``gen-eval`` records (one foldable block each; the first open, all open up to 4)."""
    many = len(records) > 4
    return "".join(f'<details class="run gen-eval"{"" if many and i else " open"}>{_run_html(r, ctx)}</details>'
                   for i, r in enumerate(records))


def register() -> None:
    """(Re-)register :func:`render_gen_eval` as the report section of ``gen-eval`` records."""
    register_section("gen-eval", HEADING)(render_gen_eval)


register()
