"""``vitlab.inspect_model``: maps, PCA, artefact tokens and sanity checks for a few images → an ``inspect`` run record.

Data flows as everywhere: a source → images resized as the backbone expects → one eager,
self-checked pass per batch (:mod:`vitlab.inspect.capture`) → maps on the token grid
(:mod:`~vitlab.inspect.maps`), PCA maps fitted once and saved (:mod:`~vitlab.inspect.pca`), the
high-norm token report (:mod:`~vitlab.inspect.artefacts`), the model-randomisation test and
deletion / insertion curves with bootstrap CIs (:mod:`~vitlab.inspect.sanity`) → a run record. This
package renders no HTML: ``vitlab.report.render_html([res.record], "inspect.html")`` does
(:mod:`vitlab.report.inspect_section`; the CLI's ``-o/--report``). The user's model is only read.

Example:
    >>> res = inspect_model("demo:fmnist-vit", "sample:fashion-mnist", maps="attention,rollout,pca", sanity=False,
    ...                     n_probe=50, n_resamples=20)
    >>> res.maps["rollout"].shape  # [n, h, w]
    torch.Size([8, 7, 7])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitlab.errors import ConfigError
from vitlab.inspect.maps import GRAD_MAPS, check_maps
from vitlab.record import RunRecord
from vitlab.outputs import check_output_dir

__all__ = ["inspect_model", "InspectResult", "check_options"]


@dataclass
class InspectResult:
    """The ``inspect`` run record plus the maps as tensors (name → ``[n, ...]``), the fitted PCA and the record's path."""

    record: RunRecord
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    pca: Any = None
    path: Path | None = None


def _r(a: Any, digits: int = 7) -> Any:
    """``a`` rounded to ``digits`` significant digits (float32 precision), as nested lists (attention of a 37x37 grid is ~1e-3 with
    differences far below that, so fixed decimals would flatten it)."""
    a = np.asarray(a, dtype=np.float64)
    mag = np.floor(np.log10(np.where(a != 0, np.abs(a), 1.0)))
    f = 10.0 ** (digits - 1 - mag)
    return (np.round(a * f) / f).tolist()


def inspect_model(backbone: Any, data: Any, *, maps: str | list[str] = "attention,rollout,pca",
                  artefacts: bool = False, n_images: int = 8, layer: int = -1, pool: str | None = None,
                  head: Any = None, n_probe: int = 200, pca_path: str | Path | None = None, sanity: bool = True,
                  z_thresh: float = 6.0, seed: int = 0, n_resamples: int = 1000, pretrained: bool = True,
                  device: str = "cpu", batch_size: int = 8, out: str | Path | None = None,
                  log: Any = None) -> InspectResult:
    """What the backbone looks at on ``n_images`` images of ``data``, and where its artefact tokens are.

    Args:
        backbone: a name (``"demo:fmnist-vit"``, ``"timm:vit_small_patch14_reg4_dinov2"``) or a Backbone.
        data: a source URI or object (``sample:fashion-mnist``, ``photos:``, ``folder:./imgs``).
        maps: comma-separated :data:`~vitlab.inspect.maps.MAPS` (``attention``, ``rollout``,
            ``grad-rollout``, ``gradcam``, ``pca``); may be empty with ``artefacts=True``.
        artefacts: add the token-norm histograms, the high-norm token report and the position-artefact
            estimate from shifted crops (:mod:`vitlab.inspect.position`).
        n_images: images inspected (a seeded subset, in source order).
        layer: the block whose tokens Grad-CAM and PCA use.
        pool: pooling fed to the probe head (default ``cls`` with a class token, else ``mean``).
        head: ``f [B, C] -> logits [B, K]`` to explain; default: a linear probe fitted on ``n_probe``
            labelled images of ``data`` (needed by ``grad-rollout``, ``gradcam`` and deletion/insertion).
        pca_path: a saved PCA (``.npz``) to reuse; when missing it is fitted and saved there (default:
            the ``pca`` cache namespace, keyed by the weights, layer, data and images it was fitted on).
        sanity: run the model-randomisation test and deletion / insertion curves.
        out: folder for the run record (render it with ``vitlab.report.render_html([res.record], path)``).
        log: ``fn(str)`` for progress notes.

    Returns:
        :class:`InspectResult`.

    Example:
        >>> res = inspect_model("demo:fmnist-vit", "sample:fashion-mnist", maps="", artefacts=True, sanity=False,
        ...                     n_images=4, n_resamples=20)
        >>> res.record.kind
        'inspect'
    """
    from vitlab.backbones import Backbone, load_backbone
    from vitlab.backbones.base import check_pool
    from vitlab.data import load_source
    from vitlab.inspect.images import embed_raw, fit_probe_head, load_raw, normalize

    say = log or (lambda s: None)
    names = check_maps(maps) if (maps if isinstance(maps, str) else ",".join(maps)).strip() else []
    if not names and not artefacts:
        raise ConfigError("nothing to inspect: pass --maps (e.g. attention,rollout,pca) and/or --artefacts.")
    check_options(n_images=n_images, n_probe=n_probe, n_resamples=n_resamples, batch_size=batch_size,
                  z_thresh=z_thresh)
    if pca_path is not None and "pca" not in names:
        raise ConfigError(f"--pca {pca_path} is only used by the pca map; add pca to --maps, or drop --pca.")
    check_output_dir(out, "--out")
    bb = backbone if isinstance(backbone, Backbone) else load_backbone(backbone, pretrained=pretrained, device=device)
    pool = pool or ("cls" if bb.spec.has_cls_token else "mean")
    check_pool(pool, bb.spec.has_cls_token)
    src = load_source(data)
    need_head = head is None and (any(m in GRAD_MAPS for m in names) or sanity)
    if need_head and src.labels is None and any(m in GRAD_MAPS for m in names):
        bad = next(m for m in names if m in GRAD_MAPS)
        raise ConfigError(f"the {bad!r} map needs a probe head, and {src.uri} has no labels to fit one: use labelled "
                          "data (class folders, sample:fashion-mnist) or drop it from --maps.")
    check_maps(names or ["pca"], bb, has_head=head is not None or src.labels is not None)
    if artefacts:
        from vitlab.inspect.capture import require_ops

        require_ops(bb, "artefact-token norms")
    (li,) = bb.resolve_layers(layer)
    pca_file = Path(pca_path) if pca_path else None
    saved_pca = None
    if "pca" in names and pca_file is not None and pca_file.exists():  # a bad file fails here, before any work
        from vitlab.inspect.pca import PatchPCA

        saved_pca = PatchPCA.load(pca_file, backbone_id=bb.weights_id, layer=li)
    before = bb.weights_id
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(src), min(n_images, len(src)), replace=False))
    raw = load_raw(bb, src, idx)
    x = normalize(bb, raw)
    lay = bb.token_layout(tuple(x.shape[-2:]))
    fitted_head = None
    if need_head and src.labels is not None:
        pick = np.setdiff1d(np.arange(len(src)), idx)
        pick = np.sort(rng.choice(pick, min(n_probe, len(pick)), replace=False)) if len(pick) else idx
        say(f"fitting a linear probe head on {len(pick)} labelled images")
        f = embed_raw(bb, load_raw(bb, src, pick), pool=pool, layer=-1).numpy()
        head, _ = fit_probe_head(f, src.labels[pick], seed=seed, num_classes=len(src.classes))
        fitted_head = {"n_images": int(len(pick)), "pool": pool}
    attn_names = [m for m in names if m != "pca"]
    result_maps: dict[str, list[torch.Tensor]] = {}
    caps = []
    say(f"{bb.spec.name}: {len(idx)} images, grid {lay.grid[0]}x{lay.grid[1]}, maps {names or '-'}")
    from vitlab.inspect.capture import capture_attention
    from vitlab.inspect.maps import compute_maps

    for s in range(0, len(idx), batch_size):
        xb = x[s: s + batch_size]
        if attn_names:
            for k, v in compute_maps(bb, xb, attn_names, head=head, pool=pool, layer=layer).items():
                result_maps.setdefault(k, []).append(v.detach().cpu())
        if artefacts:
            caps.append(capture_attention(bb, xb))
    out_maps = {k: torch.cat(v) for k, v in result_maps.items()}
    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {"layout": lay.to_dict(), "layer": li, "head": fitted_head}
    pca = None
    if "pca" in names:
        from vitlab.inspect.pca import PatchPCA, cached_fit_path

        with torch.no_grad():
            toks = torch.cat([bb.forward_tokens(x[s: s + batch_size].to(bb.device), [li]).patch_tokens(li).cpu()
                              for s in range(0, len(idx), batch_size)])
        path = pca_file or cached_fit_path(bb.weights_id, li, src, idx)
        if saved_pca is None and pca_file is None and path is not None and path.exists():
            saved_pca = PatchPCA.load(path, backbone_id=bb.weights_id, layer=li)
        if saved_pca is not None:
            say(f"reusing the PCA saved at {path}")
            pca = saved_pca
        else:
            pca = PatchPCA(backbone_id=bb.weights_id, layer=li).fit(toks, lay.grid)
            if path is not None:
                path = pca.save(path)
        t = pca.transform(toks, lay.grid)
        out_maps["pca"] = torch.as_tensor(t["rgb"])
        details["pca"] = {"path": str(path) if path else None, "info": pca.info_, "threshold": pca.threshold_,
                          "foreground": t["foreground"].astype(int).tolist()}
    if artefacts:
        from vitlab.inspect.artefacts import artefact_report

        from vitlab.inspect.position import position_artefact

        details["artefacts"] = artefact_report(caps, z_thresh=z_thresh)
        say("position artefact from shifted crops")
        shift = max(1, min(2, min(lay.grid) // 4))
        details["position"] = position_artefact(bb, raw, layer=li, n_shifts=4, max_shift=shift, seed=seed,
                                                batch_size=batch_size)
        metrics["artefacts"] = {"first_outlier_layer": details["artefacts"]["outliers"]["first_layer"],
                                "n_outliers": details["artefacts"]["outliers"]["n_positions"],
                                "position_energy_share": details["position"]["energy_share"]}
    if sanity and attn_names:
        _sanity(bb, x, raw, attn_names, head, pool, out_maps, seed, n_resamples, metrics, details, say)
    details["images"] = _images(src, idx, raw, out_maps, bb, pool, head)
    details["maps"] = _record_maps(out_maps)
    if "pca" in out_maps:
        details["maps"]["pca"] = _r(out_maps["pca"], 4)
    if bb.weights_id != before:  # never expected: inspection only reads the model
        raise RuntimeError(f"{bb.spec.name}: inspection changed the model's weights; please report this bug.")
    config = {"backbone": bb.spec.name, "data": src.uri, "maps": names, "artefacts": artefacts, "n_images": len(idx),
              "layer": li, "pool": pool, "sanity": sanity, "z_thresh": z_thresh, "n_resamples": n_resamples}
    rec = RunRecord(kind="inspect", config=config, metrics=metrics,
                    fingerprints={"backbone": bb.fingerprint(), "data": src.describe()}, details=details,
                    timings={"total_s": time.perf_counter() - t0}, seeds={"seed": seed})
    return InspectResult(rec, out_maps, pca, rec.save(out) if out is not None else None)


def check_options(*, n_images: int = 1, n_probe: int = 1, n_resamples: int = 1, batch_size: int = 1,
                  z_thresh: float = 1.0) -> None:
    """Refuse a bad ``inspect`` option in one line, before any work.

    Example:
        >>> check_options(n_resamples=0)
        Traceback (most recent call last):
        vitlab.errors.ConfigError: --n-resamples 0 must be >= 1 (e.g. 1000).
    """
    for flag, v, eg in (("--n-images", n_images, 8), ("n_probe", n_probe, 200), ("--n-resamples", n_resamples, 1000),
                        ("batch_size", batch_size, 8)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ConfigError(f"{flag} {v} must be >= 1 (e.g. {eg}).")
    if not (np.isfinite(z_thresh) and z_thresh > 0):
        raise ConfigError(f"--z-thresh {z_thresh} must be a positive robust z-score (e.g. 6).")


def _record_maps(maps: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The maps as the record keeps them (small enough for JSON at 37x37 grids x 12 layers):
    ``attention`` ``[n, L, h, w]`` (mean over heads), ``attention_heads`` ``[L, H, h, w]`` of the first image,
    ``registers`` ``[n, R, h, w]`` (last layer, mean over heads), the others as computed."""
    out: dict[str, Any] = {}
    for k, v in maps.items():
        if k in ("target", "pca"):
            continue
        if k == "attention":
            out["attention"] = _r(v.mean(2))
            out["attention_heads"] = _r(v[0])
        elif k == "registers":
            out["registers"] = _r(v[:, -1].mean(2))
        else:
            out[k] = _r(v)
    return out


def _sanity(bb: Any, x: torch.Tensor, raw: torch.Tensor, names: list[str], head: Any, pool: str,
            maps: dict[str, torch.Tensor], seed: int, n_resamples: int, metrics: dict[str, Any],
            details: dict[str, Any], say: Any) -> None:
    from vitlab.inspect.images import embed_raw
    from vitlab.inspect.sanity import deletion_insertion, randomisation_test

    main = next((m for m in ("rollout", "grad-rollout", "gradcam", "attention") if m in names), names[0])
    say(f"sanity checks on the {main!r} map: model randomisation, deletion/insertion")
    rt = randomisation_test(bb, x, main, head=head, pool=pool, seed=seed, n_resamples=n_resamples)
    metrics["randomisation_spearman"] = rt["spearman"]
    details["randomisation"] = rt
    if head is None:  # deletion / insertion track a head's probability
        return
    sal = maps[main] if main != "attention" else maps[main][:, -1].mean(1)
    with torch.no_grad():
        target = head(embed_raw(bb, raw, pool=pool)).argmax(1)

    def score(imgs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p = torch.softmax(head(embed_raw(bb, imgs, pool=pool)), 1)
        return p.gather(1, target[:, None])[:, 0]

    di = deletion_insertion(bb, raw, sal, score, seed=seed, n_resamples=n_resamples)
    di["map"] = main
    metrics["deletion_auc"], metrics["insertion_auc"] = di["deletion"]["auc"], di["insertion"]["auc"]
    details["deletion_insertion"] = di


def _images(src: Any, idx: np.ndarray, raw: torch.Tensor, maps: dict[str, torch.Tensor], bb: Any, pool: str,
            head: Any) -> list[dict[str, Any]]:
    from vitlab.inspect.images import embed_raw
    from vitlab.inspect.images import to_pil
    from vitlab.data.images import thumbnail_uri

    preds = None
    if head is not None:
        with torch.no_grad():
            preds = head(embed_raw(bb, raw, pool=pool)).argmax(1).tolist()
    out = []
    for j, i in enumerate(idx):
        lab = None if src.labels is None else int(src.labels[i])
        out.append({"id": src.ids[i], "label": lab, "label_name": None if lab is None else src.classes[lab],
                    "pred": None if preds is None else preds[j],
                    "pred_name": None if preds is None or not src.classes else src.classes[preds[j]],
                    "thumb": thumbnail_uri(to_pil(raw[j]), 128)})
    return out
