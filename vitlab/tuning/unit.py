"""One method on one seed's split (a "unit" of a tune run): choose its learning rate and epoch on validation,
refit on train + validation, predict the test rows, measure its cost, and turn the trained network into an
adapted backbone (and its ``.vitlab`` artefact).

A unit is what a resumed run reads back: ``{"proba": test probabilities, "cost": per-seed costs, "counts":
parameter counts}`` (JSON-safe apart from ``proba``).

Example:
    >>> import vitlab, numpy as np, torch
    >>> from vitlab.tuning.runner import ImageBank
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> src = vitlab.load_source("sample:digits?limit=60")
    >>> m = parse_methods("linear")[0]
    >>> unit, net, _ = train_unit(m, bb, ImageBank(src, bb.spec.preprocessing), src.labels, np.arange(40),
    ...                           np.arange(40, 50), np.arange(50, 60), 10, "cls", TuneRecipe(epochs=1, lp_init=False),
    ...                           [1e-3, 1e-2], 0, torch.device("cpu"), False)
    >>> unit["proba"].shape, unit["counts"]["trainable_params"], [c["lr"] for c in unit["cost"]["lr_search"]]
    ((10, 10), 970, [0.001, 0.01])
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitlab.backbones import Backbone
from vitlab.tuning.methods import Method, clone_backbone, parse_methods  # noqa: F401  (parse_methods: doctest)
from vitlab.tuning.recipe import TuneRecipe

__all__ = ["train_unit", "adapted_backbone", "artefact_meta"]


def _train_once(m: Method, backbone: Backbone, bank: Any, y: np.ndarray, rows: np.ndarray, val: np.ndarray,
                groups: np.ndarray | None, n_cls: int, pool: str, recipe: TuneRecipe, lr: float, s: int,
                dev: torch.device, progress: bool | None, lp_cache: dict[str, Any] | None,
                stop_after: int | None = None) -> dict[str, Any]:
    """Train ``m`` once at learning rate ``lr`` on ``rows`` (LP-FT start on ``rows`` when the recipe says so),
    early-stopped on ``val``; with an empty ``val``, for exactly ``stop_after`` epochs (the refit)."""
    from vitlab.perf.measure import PeakMemory
    from vitlab.tuning.lpft import linear_probe_head, set_head
    from vitlab.tuning.runner import TuneNet, fit

    gen = torch.Generator().manual_seed(s)
    bb = m.apply(clone_backbone(backbone), gen).to(dev)
    net = TuneNet(bb, n_cls, pool, gen).to(dev)
    t0 = time.perf_counter()
    lp = None
    if recipe.lp_init:
        lp = linear_probe_head(net, bank, y, rows, groups, seed=s, n_classes=n_cls, device=dev, recipe=recipe,
                               cache=lp_cache)
        set_head(net, lp)
    lp_s = time.perf_counter() - t0
    with PeakMemory(dev) as pm:
        t0 = time.perf_counter()
        rep = fit(net, bank, y, rows, val, m, recipe, lr=lr, seed=s, device=dev, progress=progress, label=m.label,
                  start_candidate=recipe.lp_init and len(val) > 0, stop_after=stop_after)
        train_s = time.perf_counter() - t0
    return {"net": net, "bb": bb, "rep": rep, "pm": pm, "train_s": train_s, "lp": lp, "lp_s": lp_s, "lr": lr}


def train_unit(m: Method, backbone: Backbone, bank: Any, y: np.ndarray, tr: np.ndarray, val: np.ndarray,
               te: np.ndarray, n_cls: int, pool: str, recipe: TuneRecipe, lrs: float | list[float], s: int,
               dev: torch.device, progress: bool | None, groups: np.ndarray | None = None,
               lp_cache: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any, Backbone]:
    """Train ``m`` on a copy of ``backbone`` for seed ``s`` at each learning rate of ``lrs`` and keep the one with
    the best validation top-1 (ties: lower validation loss, then the smaller rate) and its best epoch; with
    ``recipe.refit``, train once more on ``tr + val`` with that rate for that many epochs. The test rows ``te``
    are only predicted, by the final network, after the choice.

    Returns ``(unit, net, adapted backbone before finalize)``; ``unit`` holds the test probabilities, the costs
    (of the chosen search run: time per epoch, images/s...), the search and the refit (what a resumed run reads
    back)."""
    from vitlab.tuning.runner import predict, trainable_parameters

    t_all = time.perf_counter()
    best: dict[str, Any] | None = None
    search = []
    peaks = []
    for lr in sorted([lrs] if isinstance(lrs, (int, float)) else lrs):
        c = _train_once(m, backbone, bank, y, tr, val, groups, n_cls, pool, recipe, float(lr), s, dev, progress,
                        lp_cache)
        rep = c["rep"]
        search.append({"lr": c["lr"], "val_top1": rep.best_val_top1, "val_loss": rep.best_val_loss,
                       "best_epoch": rep.best_epoch, "epochs_run": rep.epochs_run, "train_s": c["train_s"]})
        peaks.append(c["pm"].mb)
        key = (rep.best_val_top1 if rep.best_val_top1 is not None else -1.0,
               -(rep.best_val_loss if rep.best_val_loss is not None else np.inf))
        if best is None or key > best["key"]:
            best = {**c, "key": key}
        del c
    assert best is not None
    rep, train_s = best["rep"], best["train_s"]
    final, refit = best, None
    if recipe.refit:
        rows = np.sort(np.concatenate([tr, val]))
        final = _train_once(m, backbone, bank, y, rows, np.zeros(0, dtype=np.int64), groups, n_cls, pool, recipe,
                            best["lr"], s, dev, progress, lp_cache, stop_after=rep.best_epoch)
        peaks.append(final["pm"].mb)
        refit = {"n_rows": int(len(rows)), "lr": best["lr"], "epochs": int(rep.best_epoch),
                 "steps": final["rep"].steps, "train_s": final["train_s"], "history": final["rep"].history,
                 "lp_init": None if final["lp"] is None else {**final["lp"].info(), "fit_s": final["lp_s"]}}
    net, bb = final["net"], final["bb"]
    t0 = time.perf_counter()
    proba = predict(net, bank, te, dev, recipe)
    test_s = time.perf_counter() - t0
    trainable = trainable_parameters(net)
    n_train = sum(p.numel() for p in trainable.values())
    n_head = sum(p.numel() for n, p in trainable.items() if n.startswith("head."))
    finite = [p for p in peaks if p is not None and np.isfinite(p)]
    cost = {"seed": s, "train_s": train_s, "test_s": test_s, "peak_memory_mb": max(finite) if finite else peaks[0],
            "images_per_s": rep.images_seen / train_s if train_s > 0 else None, "epochs_run": rep.epochs_run,
            "best_epoch": rep.best_epoch, "steps": rep.steps, "images_seen": rep.images_seen,
            "features_cached": rep.features_cached, "history": rep.history,
            "n_train": int(len(tr)), "n_val": int(len(val)), "n_test": int(len(te)),
            "lr": best["lr"], "lr_search": search, "search_s": time.perf_counter() - t_all - test_s,
            "lp_init": None if best["lp"] is None else {**best["lp"].info(), "fit_s": best["lp_s"]}, "refit": refit}
    counts = {"trainable_params": int(n_train), "trainable_backbone_params": int(n_train - n_head),
              "total_params": int(sum(p.numel() for p in net.parameters())), "memory_kind": best["pm"].kind}
    return {"proba": proba, "cost": cost, "counts": counts}, net, bb


def artefact_meta(plan: Any, m: Method, seed: int, lr: float, test_top1: dict[str, Any]) -> dict[str, Any]:
    """The metadata a tune artefact carries: its base, the method, the recipe, the seed, the data, the score."""
    from vitlab.backbones.artefact import base_meta

    return {"base": base_meta(plan.backbone, seed=0, kwargs=plan.backbone_kwargs),
            "method": {**m.to_dict(), "spec": m.spec(), "label": m.label},
            "recipe": plan.recipe.to_dict(), "lr": lr, "pool": plan.pool, "seed": seed,
            "classes": list(plan.source.classes), "data": plan.fingerprints["data"], "run_id": plan.run_id,
            "test_top1": test_top1}


def adapted_backbone(plan: Any, m: Method, net: Any, bb: Backbone, seed: int, lr: float, test_top1: dict[str, Any],
                     art_path: Path | None) -> tuple[Backbone, Path | None]:
    """The trained ``net`` as a backbone for inference (LoRA merged, own ``weights_id``, ``tuned_head``), and its
    artefact saved at ``art_path`` (when given)."""
    from vitlab.tuning.artefact import save_tuned, tensor_digest, tuned_id
    from vitlab.tuning.runner import trainable_parameters

    tensors = trainable_parameters(net)
    saved = None
    if art_path is not None:
        saved = save_tuned(art_path, tensors, artefact_meta(plan, m, seed, lr, test_top1))
    digest = tensor_digest(tensors, m.spec())
    adapted = m.finalize(bb)
    adapted.model.eval().requires_grad_(False)
    adapted.weights_id = tuned_id(plan.backbone.weights_id, digest)
    adapted.__dict__["tuned_head"] = (net.head.weight.detach().cpu(), net.head.bias.detach().cpu())
    return adapted, saved
