"""Report sections for ``"inspect"`` and ``"robust"`` run records (registered with :func:`register_section`).

Everything shown comes from the record: input thumbnails (stored by the run), each map on the
patch grid as a colour-mapped PNG (matplotlib colormaps), PCA colours, the per-layer norm
histograms, the high-norm token positions, the sanity checks, robustness curves and clean vs
attacked examples with their predictions. Images are base64 PNGs, so the page stands alone.

Example:
    >>> from vitlab.report.base import SECTIONS
    >>> sorted(k for k in SECTIONS if k in ("inspect", "robust"))
    ['inspect', 'robust']
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from vitlab.record import RunRecord
from vitlab.report.base import RenderContext, _table, e, register_section
from vitlab.report.figures import figure_to_data_uri, png_data_uri
from vitlab.report.tables import fmt, fmt_p

__all__ = ["map_png_uri"]

_CELL = 96


def map_png_uri(values: Any, *, size: int = _CELL, cmap: str = "inferno") -> str:
    """A ``[h, w]`` map (or ``[h, w, 3]`` RGB in [0, 1]) as a nearest-upscaled PNG ``data:`` URI; a map is
    scaled between its 1st and 99th percentiles (clipped).

    Example:
        >>> map_png_uri([[0.0, 1.0], [0.5, 0.25]])[:22]
        'data:image/png;base64,'
    """
    from matplotlib import colormaps
    from PIL import Image

    a = np.asarray(values, dtype=np.float64)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        raise ValueError(f"a map must be [h, w] or [h, w, 3] RGB, got shape {a.shape}.")
    if a.ndim == 2:
        lo, hi = np.nanpercentile(a, 1), np.nanpercentile(a, 99)  # one extreme token must not blank the rest
        a = colormaps[cmap]((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a))[..., :3]
    img = Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8), "RGB")
    h, w = a.shape[:2]
    s = size / max(h, w)
    img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return png_data_uri(buf.getvalue())


def _ci(m: dict[str, Any] | None, digits: int = 3) -> str:
    if not m or m.get("value") is None:
        return '<td class="num">–</td>'
    return (f'<td class="num"><b>{fmt(m["value"], digits)}</b><br><span class="ci">[{fmt(m.get("low"), digits)}, '
            f'{fmt(m.get("high"), digits)}]</span></td>')


def _img(uri: str, alt: str) -> str:
    return f'<td><img alt="{e(alt)}" src="{uri}" width="{_CELL}"></td>'


def _map_grid(r: RunRecord) -> str:
    d = r.details
    maps = d.get("maps", {})
    cols = [k for k in ("attention", "registers", "rollout", "grad-rollout", "gradcam", "pca") if k in maps]
    head = ["image"] + [{"attention": "CLS attention (last layer, mean of heads)",
                         "registers": "register attention (last layer)", "pca": "PCA (foreground, 3 comps)"}.get(c, c)
                        for c in cols]
    rows = []
    for j, im in enumerate(d.get("images", [])):
        cap = e(str(im.get("label_name") or im.get("id")))
        if im.get("pred_name") is not None:
            cap += f"<br><span class=small>pred {e(str(im['pred_name']))}</span>"
        row = [f'<td><img alt="input {e(str(im.get("id")))}" src="{im["thumb"]}" width="{_CELL}"><br>{cap}</td>']
        for c in cols:
            a = np.asarray(maps[c][j], dtype=np.float64)
            if c == "attention":
                a = a[-1]  # [L, h, w] (mean over heads) → last layer
            elif c == "registers":
                a = a.mean(0)  # [R, h, w] at the last layer → mean over registers
            try:
                row.append(_img(map_png_uri(a), f"{c} map"))
            except ValueError as err:  # a record from another vitlab version: say so, keep the page
                row.append(f'<td class="note">{e(str(err))}</td>')
        rows.append(row)
    lay = d.get("layout", {})
    capn = (f"Maps on the {lay.get('grid')} patch grid ({lay.get('num_prefix')} prefix tokens, "
            f"{lay.get('num_registers')} registers); brighter = more. Grad maps explain the probe head's prediction.")
    return _table(head, rows, e(capn))


def _heads_uri(att: Any) -> str:
    """Every layer × head CLS-attention map of one image ``[L, H, h, w]`` as one small-multiples PNG."""
    from matplotlib.figure import Figure

    a = np.asarray(att, dtype=np.float64)
    L, H = a.shape[:2]
    fig = Figure(figsize=(0.7 * H + 0.6, 0.7 * L))
    axes = fig.subplots(L, H, squeeze=False)
    for i in range(L):
        for j in range(H):
            ax = axes[i][j]
            ax.imshow(a[i, j], cmap="inferno", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"L{i}", fontsize=6)
            if i == 0:
                ax.set_title(f"h{j}", fontsize=6)
    return figure_to_data_uri(fig, dpi=80)


def _curves_di(di: dict[str, Any]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4, 2.4))
    for k, mode in enumerate(("deletion", "insertion")):
        ax = fig.add_subplot(1, 2, k + 1)
        ax.plot(di["fractions"], di[mode]["curve"], marker="o", ms=2, label=di.get("map", "map"))
        ax.plot(di["fractions"], di[mode]["curve_random"], ls="--", label="random order")
        ax.set_title(mode, fontsize=8)
        ax.set_xlabel("share of patches", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.axes[0].set_ylabel("p(explained class)", fontsize=7)
    fig.axes[0].legend(fontsize=6)
    return figure_to_data_uri(fig)


def _histograms(a: dict[str, Any]) -> str:
    from matplotlib.figure import Figure

    h = a["norm_histograms"]
    edges = np.asarray(h["edges"])
    centres = np.sqrt(edges[:-1] * edges[1:]) if edges[0] > 0 else (edges[:-1] + edges[1:]) / 2
    fig = Figure(figsize=(5.2, 2.8))
    ax = fig.add_subplot(111)
    layers = list(h["counts"])
    cols = __import__("matplotlib").colormaps["viridis"](np.linspace(0, 1, max(len(layers), 2)))
    for c, layer in zip(cols, layers):
        ax.plot(centres, h["counts"][layer], color=c, lw=1.2, label=f"layer {layer}")
    ax.set_xscale("log")
    ax.set_yscale("symlog")
    ax.set_xlabel("patch token norm")
    ax.set_ylabel("tokens")
    if len(layers) <= 12:
        ax.legend(fontsize=6, ncol=2)
    return figure_to_data_uri(fig)


def _artefacts(r: RunRecord) -> str:
    a = r.details.get("artefacts")
    if not a:
        return ""
    out = a["outliers"]
    share = {s["layer"]: s for s in a["attention_share"]}
    regs = {s["layer"]: s for s in (a.get("registers") or [])}
    rows = []
    for p in out["per_layer"]:
        s, g = share.get(p["layer"], {}), regs.get(p["layer"], {})
        rows.append([f'<td class="num">{p["layer"]}</td>', f'<td class="num">{fmt(p["median"], 2)}</td>',
                     f'<td class="num">{p["count"]}</td>', f'<td class="num">{fmt(100 * p["share"], 2)}%</td>',
                     f'<td class="num">{fmt(s.get("to_outliers"), 3)}</td>',
                     f'<td class="num">{fmt(s.get("to_registers"), 3)}</td>',
                     f'<td class="num">{fmt(g.get("register_median_norm"), 2)}</td>'])
    first = out.get("first_layer")
    html = [f"<h4>Artefact tokens</h4><p class=small>High-norm patch tokens: robust z &gt; {fmt(out['z_thresh'], 1)} "
            f"(median/MAD per layer) and norm ≥ {fmt(out['ratio'], 1)}× the median. "
            f"{'They first appear at layer ' + str(first) if first is not None else 'None found'}; "
            f"{out['n_positions']} in all over {a['n_images']} images.</p>",
            f'<div class="figs"><figure><img alt="norm histograms" src="{_histograms(a)}"><figcaption>Patch-token '
            "norm per layer (log scale).</figcaption></figure></div>",
            _table(["layer", "median norm", "outliers", "share", "query attention → outliers",
                    "query attention → registers", "register median norm"], rows)]
    pa = r.details.get("position")
    if pa:
        html.append(f'<div class="figs"><figure><img alt="position artefact" src="{map_png_uri(pa["norm_map"])}" '
                    f'width="{_CELL}"><figcaption>Position term ‖G<sub>p</sub>‖ at layer {pa["layer"]} from '
                    f'{pa["n_shifts"]} shifted crops per image: {fmt(100 * pa["energy_share"], 1)}% of the token '
                    "variance (split-half estimate; centred datasets also put content at fixed positions)."
                    "</figcaption></figure></div>")
    pos = out.get("positions") or []
    if pos and first is not None:
        imgs = r.details.get("images", [])
        gh, gw = a["grid"]
        tiles = []
        for j, im in enumerate(imgs):
            m = np.zeros((gh, gw))
            for p in pos:
                if p["image"] == j and p["layer"] == a["layers"][-1]:
                    m[p["row"], p["col"]] = 1.0
            if m.any():
                tiles.append(f'<figure><img alt="input" src="{im["thumb"]}" width="{_CELL}"> <img alt="outlier '
                             f'positions" src="{map_png_uri(m, cmap="Reds")}" width="{_CELL}"><figcaption>'
                             f'{e(str(im.get("id")))}: {int(m.sum())} at the last layer</figcaption></figure>')
        if tiles:
            html.append('<div class="figs">' + "".join(tiles[:8]) + "</div>")
    return "".join(html)


def _sanity(r: RunRecord) -> str:
    m, d = r.metrics, r.details
    if "randomisation_spearman" not in m:
        return ""
    rt = d.get("randomisation", {})
    rows = [["<td>model randomisation: Spearman(map, map of randomised weights)</td>",
             _ci(m["randomisation_spearman"]), f"<td>{'passed (maps change)' if rt.get('changed') else 'FAILED'}</td>"]]
    di = d.get("deletion_insertion")
    if di:
        for mode, better in (("deletion", "lower"), ("insertion", "higher")):
            v = di[mode]
            rows.append([f"<td>{mode} AUC ({better} is better) vs random order</td>", _ci(v["auc"]),
                         f'<td>random {fmt(v["auc_random"]["value"])}; Δ {fmt(v["vs_random"]["diff"], 3, signed=True)} '
                         f'[{fmt(v["vs_random"]["low"])}, {fmt(v["vs_random"]["high"])}] p='
                         f'{fmt_p(v["vs_random"]["p_bootstrap"])}</td>'])
    fig = (f'<div class="figs"><figure><img alt="deletion and insertion curves" src="{_curves_di(di)}"><figcaption>'
           "Mean over images.</figcaption></figure></div>") if di else ""
    return (f"<h4>Sanity checks ({e(str(rt.get('map')))} map)</h4>" +
            _table(["check", "mean [95% CI over images]", "note"], rows) + fig)


@register_section("inspect", "Inspection: maps and artefact tokens")
def _inspect_section(records: list[RunRecord], ctx: RenderContext) -> str:
    out = []
    for r in records:
        c = r.config
        out.append(f"<h3><code>{e(str(c.get('backbone')))}</code> on <code>{e(str(c.get('data')))}</code> "
                   f"<span class=small>run <code>{e(r.run_id)}</code> · {e(r.created)}</span></h3>")
        if r.details.get("maps"):
            out.append(_map_grid(r))
            att = r.details["maps"].get("attention_heads")
            if att:
                out.append(f'<details><summary>Every layer and head, first image</summary><div class="figs"><figure>'
                           f'<img alt="attention per layer and head" src="{_heads_uri(att)}"><figcaption>'
                           "CLS attention (rows: layers, columns: heads).</figcaption></figure></div></details>")
        out.append(_sanity(r))
        out.append(_artefacts(r))
    return "".join(out)


def _curves_uri(r: RunRecord, key: str) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 2.8))
    ax = fig.add_subplot(111)
    for bb, m in r.metrics.items():
        cur = m.get(key)
        if not cur:
            continue
        for probe, ls in (("linear", "-"), ("knn", "--")):
            v = cur.get(probe) or []
            y = np.array([p["value"] for p in v])
            lo, hi = np.array([p["low"] for p in v]), np.array([p["high"] for p in v])
            ax.errorbar(cur["counts"], y, yerr=[y - lo, hi - y], ls=ls, marker="o", ms=3, capsize=2,
                        label=f"{bb} · {probe}")
    ax.set_xlabel("corrupted patches per image")
    ax.set_ylabel("top-1")
    ax.set_title(key.replace("|", ", "), fontsize=9)
    ax.legend(fontsize=6)
    return figure_to_data_uri(fig)


@register_section("robust", "Robustness: patch corruptions and attacks")
def _robust_section(records: list[RunRecord], ctx: RenderContext) -> str:
    out = []
    for r in records:
        c = r.config
        out.append(f"<h3><code>{e(', '.join(c.get('backbones', [])))}</code> on <code>{e(str(c.get('data')))}</code> "
                   f"<span class=small>run <code>{e(r.run_id)}</code> · {r.details.get('n_test')} test images</span></h3>")
        keys = sorted({k for m in r.metrics.values() for k in m if "|" in k})
        if keys:
            out.append('<div class="figs">' + "".join(
                f'<figure><img alt="accuracy under {e(k)}" src="{_curves_uri(r, k)}"><figcaption>Top-1 with 95% '
                "bootstrap CIs (solid: linear probe, dashed: kNN).</figcaption></figure>" for k in keys) + "</div>")
        for bb, m in r.metrics.items():
            rows = [["<td>clean</td>", "<td>–</td>", _ci(m["clean"].get("linear")), _ci(m["clean"].get("knn")),
                     "<td>–</td>", "<td>–</td>"]]
            att = m.get("attacks") or {}
            for a in (k for k in att if isinstance(att[k], dict)):
                v = att[a]
                for i, eps in enumerate(att["eps"]):
                    rows.append([f"<td>{e(a)}</td>", f'<td class="num">{fmt(eps * 255, 1)}/255</td>',
                                 _ci(v["linear"][i]), _ci(v["knn"][i]), f'<td class="num">{fmt(v["success"][i])}</td>',
                                 f'<td class="num">{fmt(v["cosine"][i])}</td>'])
            out.append(f"<h4><code>{e(bb)}</code></h4>" + _table(
                ["attack", "ε", "top-1 linear [95% CI]", "top-1 kNN [95% CI]", "success (clean-correct fooled)",
                 "feature cosine to clean"], rows))
            for a in (k for k in att if isinstance(att[k], dict)):
                tiles = [f'<figure><img alt="clean" src="{x["clean"]}" width="{_CELL}"> <img alt="attacked" '
                         f'src="{x["attacked"]}" width="{_CELL}"><figcaption>label {x["label"]}: clean → '
                         f'{x["clean_pred"]}, attacked → {x["attacked_pred"]}</figcaption></figure>'
                         for x in att[a].get("examples", [])]
                if tiles:
                    out.append(f"<p class=small>{e(a)} at the largest ε: clean vs attacked (linear probe "
                               "predictions)</p><div class=\"figs\">" + "".join(tiles) + "</div>")
        paired = r.details.get("paired") or []
        if paired:
            rows = [[f"<td><code>{e(p['a'])}</code> − <code>{e(p['b'])}</code></td>", f"<td>{e(p['condition'])}</td>",
                     f'<td class="num">{fmt(p["diff"], 3, signed=True)} [{fmt(p["low"])}, {fmt(p["high"])}]</td>',
                     f'<td class="num">{fmt_p(p["p_bootstrap"])} ({fmt_p(p.get("p_holm"))})</td>'] for p in paired]
            out.append(_table(["pair", "condition", "Δ top-1 [95% CI]", "p (Holm)"], rows,
                              "Paired bootstrap on the same test images."))
    return "".join(out)
