"""``vitlab.tune``: adapt a backbone with several methods on the same splits and seeds, scored like ``eval``.

Per seed ``s`` (``seed, seed + 1, ...``): the train/test split is the one ``vitlab eval --seed s`` uses
for the same data (:meth:`DataSource.splits`: the split column, else the seeded stratified holdout of
:mod:`vitlab.data.splits`); a stratified validation part of train (``val_fraction``, seed ``s + 1``)
drives early stopping. Every method is then scored on the same test images by the classification
scorer (percentile-bootstrap CIs) and paired with every other method of that seed (paired bootstrap
and McNemar, Holm-adjusted: :func:`vitlab.evaluation._protocol_pairs`). Across seeds, each metric's
mean gets a t-interval (seeds vary the split and the initialisation). The record also carries each
method's cost: trainable parameters, peak memory, wall time and training images/s.

Example:
    >>> res = tune("demo:fmnist-vit", "sample:digits", methods="linear,lora", seeds=2)  # doctest: +SKIP
    >>> res.record.details["vs_linear"]["lora"][0]["diff"]  # doctest: +SKIP
    0.08
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitlab._cache import open_entry
from vitlab.backbones import Backbone, load_backbone, resolve_device
from vitlab.data import DataSource, load_source
from vitlab.errors import ConfigError, DataError
from vitlab.record import RunRecord
from vitlab.outputs import check_output_dir
from vitlab.tune.methods import Method, clone_backbone, parse_methods
from vitlab.tune.recipe import TuneRecipe

__all__ = ["tune", "TuneResult", "seed_summary", "against"]


@dataclass
class TuneResult:
    """The run record plus what stays in memory.

    Attributes:
        record: the ``tune`` :class:`~vitlab.record.RunRecord`.
        results: seed → method label → classification :class:`~vitlab.protocols.base.Result` on that seed's test split.
        backbones: method label → the adapted :class:`Backbone` of the first seed (LoRA merged).
        artefacts: method label → the saved ``.vitlab`` file (with ``out``).
        path: the record's file (with ``out``).
    """

    record: RunRecord
    results: dict[int, dict[str, Any]]
    backbones: dict[str, Backbone] = field(default_factory=dict)
    artefacts: dict[str, Path] = field(default_factory=dict)
    path: Path | None = None

    def metric(self, method: str, name: str = "top1") -> float:
        """The headline value of ``name`` for ``method`` (mean over seeds with several seeds)."""
        return float(self.record.metrics[method][name]["value"])


def seed_summary(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of per-seed values with a Student-t interval (``None`` bounds with one seed).

    Example:
        >>> s = seed_summary([0.8, 0.9, 1.0])
        >>> round(s["value"], 3), round(s["low"], 3), round(s["high"], 3)
        (0.9, 0.652, 1.148)
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    out: dict[str, Any] = {"value": mean, "low": None, "high": None, "sd": None, "n_seeds": int(v.size),
                           "per_seed": v.tolist(), "level": level, "method": "t-interval over seeds"}
    if v.size > 1:
        sd = float(v.std(ddof=1))
        half = float(stats.t.ppf(0.5 + level / 2, v.size - 1)) * sd / np.sqrt(v.size)
        out.update(low=float(mean - half), high=float(mean + half), sd=sd)
    return out


def against(pairs: list[dict[str, Any]], reference: str) -> dict[str, list[dict[str, Any]]]:
    """Per method, its paired tests against ``reference`` (one per seed), as ``method - reference``.

    ``pairs`` are :func:`vitlab.evaluation._protocol_pairs` rows (``diff = a - b``, Holm-adjusted p-values)
    with a ``seed``; rows where ``reference`` is ``a`` are turned around.

    Example:
        >>> row = {"seed": 0, "a": "linear", "b": "lora", "diff": -0.1, "low": -0.2, "high": -0.01,
        ...        "p_bootstrap_holm": 0.01, "p_mcnemar_holm": 0.02, "significant": True}
        >>> against([row], "linear")["lora"][0]["diff"], against([row], "linear")["lora"][0]["low"]
        (0.1, 0.01)
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for p in pairs:
        if reference not in (p["a"], p["b"]):
            continue
        other = p["b"] if p["a"] == reference else p["a"]
        sign = 1.0 if p["b"] == reference else -1.0
        lo, hi = sorted((sign * p["low"], sign * p["high"]))
        out.setdefault(other, []).append({
            "seed": p["seed"], "diff": sign * p["diff"], "low": lo, "high": hi,
            "p_bootstrap": p.get("p_bootstrap_holm"), "p_mcnemar": p.get("p_mcnemar_holm"),
            "significant": bool(p.get("significant"))})
    return out


def _train_unit(m: Method, backbone: Backbone, bank: Any, y: np.ndarray, tr: np.ndarray, val: np.ndarray,
                te: np.ndarray, n_cls: int, pool: str, recipe: TuneRecipe, lr: float, s: int, dev: torch.device,
                progress: bool | None) -> tuple[dict[str, Any], Any, Backbone]:
    """Train one method on one seed's split: ``(unit, net, adapted backbone)``; ``unit`` holds the test
    probabilities and the costs (what a resumed run reads back)."""
    from vitlab.perf.measure import PeakMemory
    from vitlab.tune.runner import TuneNet, fit, predict, trainable_parameters

    gen = torch.Generator().manual_seed(s)
    bb = m.apply(clone_backbone(backbone), gen).to(dev)
    net = TuneNet(bb, n_cls, pool, gen).to(dev)
    with PeakMemory(dev) as pm:
        t0 = time.perf_counter()
        rep = fit(net, bank, y, tr, val, m, recipe, lr=lr, seed=s, device=dev, progress=progress, label=m.label)
        train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    proba = predict(net, bank, te, dev, recipe)
    test_s = time.perf_counter() - t0
    trainable = trainable_parameters(net)
    n_train = sum(p.numel() for p in trainable.values())
    n_head = sum(p.numel() for n, p in trainable.items() if n.startswith("head."))
    cost = {"seed": s, "train_s": train_s, "test_s": test_s, "peak_memory_mb": pm.mb,
            "images_per_s": rep.images_seen / train_s if train_s > 0 else None, "epochs_run": rep.epochs_run,
            "best_epoch": rep.best_epoch, "steps": rep.steps, "images_seen": rep.images_seen,
            "features_cached": rep.features_cached, "history": rep.history,
            "n_train": int(len(tr)), "n_val": int(len(val)), "n_test": int(len(te))}
    counts = {"trainable_params": int(n_train), "trainable_backbone_params": int(n_train - n_head),
              "total_params": int(sum(p.numel() for p in net.parameters())), "memory_kind": pm.kind}
    return {"proba": proba, "cost": cost, "counts": counts}, net, bb


#: label of the frozen-probe reference in a tune record
PROBE = "probe"


def _frozen_probe(backbone: Backbone, source: DataSource, seed: int, test_fraction: float, pool: str,
                  test_ids: list[str], cache_dir: str | Path | None, dev: torch.device) -> tuple[Any, dict[str, Any]]:
    """``vitlab eval --protocol linear --seed <seed>`` on the same data: its test predictions in ``test_ids``
    order (a classification ``Result``), and the probe's chosen C and head size."""
    from vitlab.evaluation import evaluate
    from vitlab.protocols.base import Result

    import warnings

    with warnings.catch_warnings():  # eval's own intervals are discarded (tune scores the predictions itself)
        warnings.filterwarnings("ignore", message="bootstrap: metric undefined", category=RuntimeWarning)
        ev = evaluate(backbone, source, protocols="linear", seed=seed, test_fraction=test_fraction, pool=pool,
                      n_resamples=10, cache_dir=cache_dir, device=str(dev), progress=False)
    r = ev.results["linear"]
    pos = {u: i for i, u in enumerate(r.units)}
    if sorted(pos) != sorted(test_ids):
        raise DataError(f"seed {seed}: vitlab eval's test split differs from the tuning split "
                        f"({len(pos)} vs {len(test_ids)} items); this is a bug, please report it.")
    order = np.array([pos[u] for u in test_ids])
    groups = None if r.groups is None else np.asarray(r.groups)[order]
    res = Result("classification", list(test_ids), {"y": np.asarray(r.outputs["y"])[order],
                                                    "proba": np.asarray(r.outputs["proba"])[order]},
                 groups=groups, hparams=dict(r.hparams))
    n_cls, dim = int(res.outputs["proba"].shape[1]), int(backbone.spec.embed_dim)
    return res, {"C": r.hparams.get("C"), "head_params": n_cls * (dim + 1)}


def _save_unit(path: Path, unit: dict[str, Any]) -> None:
    """Write a finished method run (test probabilities, costs) for resumption (JSON floats round-trip exactly)."""
    from vitlab._io import atomic_write_json

    atomic_write_json(path, {**unit, "proba": np.asarray(unit["proba"]).tolist()})


def _load_unit(path: Path | None, artefact: Path | None) -> dict[str, Any] | None:
    """A finished method run of this same run id (same config and fingerprints), or ``None``. The first
    seed's run also needs its artefact."""
    import json

    if path is None or not path.is_file() or (artefact is not None and not artefact.is_file()):
        return None
    try:
        unit = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return {**unit, "resumed": True}


def _safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def _check_inputs(methods: Any, seeds: int, recipe: TuneRecipe, test_fraction: float, n_resamples: int,
                  device: str | None, out: Any) -> tuple[list[Method], torch.device]:
    from vitlab.data.splits import check_fractions

    ms = parse_methods(methods)
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ConfigError(f"seeds must be a whole number >= 1 (how many seeds to run), got {seeds!r}.")
    check_fractions(test_fraction)
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1 (1000+ recommended), got {n_resamples}.")
    dev = resolve_device(device or "cpu")
    if recipe.precision == "bf16" and dev.type != "cuda":
        raise ConfigError("precision bf16 (autocast) is for CUDA here; use --precision fp32 (or auto) on "
                          f"{dev.type}.")
    check_output_dir(out, "out")
    return ms, dev


def _splits(source: DataSource, seeds: list[int], test_fraction: float, val_fraction: float
            ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per seed: ``(train_rows, val_rows, test_rows)``; the test split is eval's for that seed."""
    from vitlab.data.splits import holdout
    from vitlab.evaluation import _check_classes

    y = source.labels
    groups = None if source.groups is None else np.asarray(source.groups)
    out = {}
    for s in seeds:
        split = source.splits(seed=s, test_fraction=test_fraction)
        tr, te = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
        _check_classes(y, tr, te, source.classes)
        n_cls = len(np.unique(y[tr]))
        try:
            kept, held = holdout(y[tr], None if groups is None else groups[tr], val_fraction, s + 1)
        except DataError:
            raise DataError(f"the validation part of train is too small: {len(tr)} training images, {n_cls} classes, "
                            f"val_fraction={val_fraction} ({int(np.ceil(val_fraction * len(tr)))} images, "
                            "smallest class too small, or too few groups). Each class needs >= 2 training images and "
                            "the validation part >= one image per class: raise --val-fraction or use more data."
                            ) from None
        out[s] = (np.sort(tr[kept]), np.sort(tr[held]), te)
    return out


def tune(backbone: Backbone | str, data: DataSource | str, *, methods: str | list[Any] = "linear,lora,vpt,full",
         seeds: int = 1, seed: int = 0, recipe: TuneRecipe | None = None, test_fraction: float = 0.2,
         n_resamples: int = 1000, pretrained: bool = True, device: str | None = None,
         out: str | Path | None = None, progress: bool | None = None, probe: bool = True,
         cache_dir: str | Path | None = None,
         backbone_kwargs: dict[str, Any] | None = None, **recipe_changes: Any) -> TuneResult:
    """Adapt ``backbone`` to labelled ``data`` with each method, for ``seeds`` seeds, scored with CIs and paired tests.

    Args:
        backbone: a name (``"demo:fmnist-vit"``, ``"timm:vit_small_patch16_224"``...) or a :class:`Backbone`;
            it is never modified (each method trains a copy).
        data: a labelled source, e.g. ``"sample:digits"``.
        methods: method specs, e.g. ``"linear,lora:r=8,targets=[qkv,mlp],vpt:prompts=10,deep=true,full,bitfit"``
            (:data:`vitlab.tune.METHODS`).
        seeds: how many seeds (``seed``, ``seed + 1``, ...); each seed has its own eval split.
        recipe: the training recipe (:class:`TuneRecipe`); ``**recipe_changes`` override its fields
            (``epochs=3``, ``lr=1e-3``, ``batch_size=32``, ``max_steps=5``...).
        test_fraction: as in ``vitlab eval`` (used when the data has no split column).
        n_resamples: bootstrap resamples per CI and paired test.
        pretrained: for a backbone given by name (as in ``eval``).
        device: ``cpu`` (default), ``cuda``, ``cuda:N``; bf16 autocast on CUDA (recipe ``precision=auto``).
        out: folder for the record (``tune-<run>.json``) and the artefacts (``tune/<run>/<method>.vitlab``,
            first seed).
        progress: a bar per method (loss, images/s, ETA) on stderr; ``None`` = only on a terminal.
        probe: also score ``vitlab eval``'s frozen linear probe (L-BFGS over a C sweep, the exact probe of
            ``vitlab eval --protocol linear`` on the same split and seed) as the reference ``probe``, and pair
            every method against it (``details["vs_probe"]``). The ``linear`` method (an AdamW head trained
            with the tuning recipe) is the like-for-like baseline of the recipe; ``probe`` is the best frozen
            baseline, so a gain over ``linear`` that vanishes against ``probe`` is a weak recipe, not adaptation.
        cache_dir: embedding cache of the frozen probe's features (as ``vitlab eval``).
        backbone_kwargs: loader options for a backbone given by name (recorded so the artefact can rebuild it).

    Returns:
        :class:`TuneResult`.

    Raises:
        UnknownNameError: an unknown method. ConfigError / BackboneError: a bad setting, or a method the
        backbone cannot take. DataError: unlabelled data, or a split or validation part too small.

    Example:
        >>> res = tune("demo:fmnist-vit", "sample:digits?limit=300", methods="linear,bitfit", epochs=1)  # doctest: +SKIP
        >>> sorted(res.record.metrics)  # doctest: +SKIP
        ['bitfit', 'linear']
    """
    from vitlab.backbones.base import check_pool
    from vitlab.evaluation import _protocol_pairs
    from vitlab.protocols.base import Result
    from vitlab.scorers import scorer_for
    from vitlab.tune.artefact import SUFFIX, save_artefact, tensor_digest, tuned_id
    from vitlab.tune.runner import ImageBank, trainable_parameters

    recipe = (recipe or TuneRecipe()).replace(**recipe_changes) if recipe_changes else (recipe or TuneRecipe())
    ms, dev = _check_inputs(methods, seeds, recipe, test_fraction, n_resamples, device, out)
    source = load_source(data)
    if source.labels is None:
        raise DataError(f"{source.uri} has no labels; tuning trains a classifier: use labelled data (class "
                        "subfolders, or a label column).")
    seed_list = [int(seed) + k for k in range(int(seeds))]
    splits = _splits(source, seed_list, test_fraction, recipe.val_fraction)
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, pretrained=pretrained, seed=0, **(backbone_kwargs or {}))
        load_name, load_seed = backbone.name, 0
    else:
        load_name, load_seed = backbone.name, 0
    for m in ms:
        m.check(backbone)
    pool = recipe.pool if recipe.pool != "auto" else ("cls" if backbone.spec.has_cls_token else "mean")
    check_pool(pool, backbone.spec.has_cls_token)
    base_id = backbone.weights_id
    labels = [m.label for m in ms]
    lrs = {m.label: recipe.lr or m.default_lr for m in ms}
    config = {"backbone": backbone.name, "data": source.uri, "dataset": source.uri, "methods": labels,
              "method_config": {m.label: {**m.to_dict(), "spec": m.spec(), "source": m.source} for m in ms},
              "seeds": seed_list, "recipe": recipe.to_dict(), "lr": lrs, "pool": pool, "layer": backbone.spec.depth - 1,
              "test_fraction": test_fraction, "n_resamples": n_resamples, "device": str(dev),
              "split_origin": "split column" if source.split_column is not None
              else f"seeded stratified (test {test_fraction}), as vitlab eval --seed <s>",
              "val_origin": f"stratified holdout of train (val {recipe.val_fraction}, seed s + 1)"}
    fingerprints = {"backbone": backbone.fingerprint(), "data": {"kind": source.kind, "uri": source.uri,
                                                                 "fingerprint": source.fingerprint, "n": len(source)}}
    run_id = RunRecord(kind="tune", config=config, metrics={}, fingerprints=fingerprints).run_id
    run_dir = Path(out) / "tune" / run_id if out is not None else None
    resume_dir = open_entry("tune-resume", run_id, cache_dir, {"backbone": backbone.name, "data": source.uri,
                                                                "methods": labels, "seeds": seed_list})

    t_bank = time.perf_counter()
    bank = ImageBank(source, backbone.spec.preprocessing)
    t_bank = time.perf_counter() - t_bank
    y, ids = source.labels, list(source.ids)
    groups = None if source.groups is None else np.asarray(source.groups)
    scorer = scorer_for("classification")
    n_cls = len(source.classes)
    results: dict[int, dict[str, Result]] = {}
    per_seed: dict[str, dict[str, Any]] = {}
    costs: dict[str, dict[str, Any]] = {lab: {"per_seed": []} for lab in labels}
    pairs: list[dict[str, Any]] = []
    backbones: dict[str, Backbone] = {}
    artefacts: dict[str, Path] = {}
    done, n_units = 0, len(seed_list) * len(ms)
    probe_cost: dict[str, Any] = {"per_seed": [], "note": "vitlab eval's frozen linear probe (features cached once; "
                                                          "train s includes embedding on a cache miss)"}
    try:
        for s in seed_list:
            tr, val, te = splits[s]
            results[s], per_seed[str(s)] = {}, {}
            for m in ms:
                art_path = run_dir / f"{_safe_name(m.label)}{SUFFIX}" if run_dir is not None else None
                unit_path = resume_dir / "units" / f"s{s}-{_safe_name(m.label)}.json" if resume_dir is not None else None
                first = s == seed_list[0]
                unit = None if first and art_path is None else _load_unit(unit_path, art_path if first else None)
                if unit is None:
                    unit, net, bb = _train_unit(m, backbone, bank, y, tr, val, te, n_cls, pool, recipe, lrs[m.label],
                                                s, dev, progress)
                proba = np.asarray(unit["proba"], dtype=np.float64)
                res = Result("classification", [ids[i] for i in te], {"y": y[te], "proba": proba},
                             groups=None if groups is None else groups[te], hparams={"lr": lrs[m.label], **m.to_dict()})
                results[s][m.label] = res
                metrics, extra = scorer.score(res, n_resamples=n_resamples, seed=s)
                per_seed[str(s)][m.label] = {"metrics": metrics, **extra}
                costs[m.label]["per_seed"].append({**unit["cost"], "resumed": bool(unit.get("resumed"))})
                costs[m.label].update(unit["counts"])
                if first and unit.get("resumed"):
                    if art_path is not None:
                        from vitlab.tune.artefact import load_artefact

                        artefacts[m.label] = art_path
                        backbones[m.label] = load_artefact(art_path, device=dev)
                elif first:
                    tensors = trainable_parameters(net)
                    if art_path is not None:
                        meta = {"base": {"load_name": load_name, "name": backbone.name, "weights_id": base_id,
                                         "pretrained": True,  # a random-init base is named random:<name>
                                         "seed": load_seed, "kwargs": backbone_kwargs or {}},
                                "method": {**m.to_dict(), "spec": m.spec(), "label": m.label},
                                "recipe": recipe.to_dict(), "lr": lrs[m.label], "pool": pool, "seed": s,
                                "classes": list(source.classes), "data": fingerprints["data"], "run_id": run_id,
                                "test_top1": metrics["top1"]}
                        artefacts[m.label] = save_artefact(art_path, tensors, meta)
                    digest = tensor_digest(tensors, m.spec())
                    adapted = m.finalize(bb)
                    adapted.model.eval().requires_grad_(False)
                    adapted.weights_id = tuned_id(base_id, digest)
                    adapted.__dict__["tuned_head"] = (net.head.weight.detach().cpu(), net.head.bias.detach().cpu())
                    backbones[m.label] = adapted
                if unit_path is not None and not unit.get("resumed"):
                    _save_unit(unit_path, unit)
                done += 1
            if probe:
                t_p = time.perf_counter()
                res_p, fit_p = _frozen_probe(backbone, source, s, test_fraction, pool, [ids[i] for i in te],
                                             cache_dir, dev)
                results[s][PROBE] = res_p
                metrics, extra = scorer.score(res_p, n_resamples=n_resamples, seed=s)
                per_seed[str(s)][PROBE] = {"metrics": metrics, **extra}
                probe_cost["per_seed"].append({"seed": s, "train_s": time.perf_counter() - t_p, **fit_p})
            pairs += [{"seed": s, **p} for p in _protocol_pairs(results[s], n_resamples=n_resamples, seed=s)]
    except KeyboardInterrupt:
        from vitlab.errors import Interrupted

        if resume_dir is None:
            raise Interrupted(f"{done} of {n_units} method runs had finished; nothing is kept (the cache dir is not "
                              "writable: pass a writable --cache-dir to make tuning resumable).") from None
        raise Interrupted(f"{done} of {n_units} method runs are kept in {resume_dir / 'units'}: run the same command "
                          "again to resume (finished runs are not trained again"
                          f"{'' if out is not None else '; the first seed is, as its model is saved only with --out'}"
                          ").") from None

    metrics_out: dict[str, Any] = {}
    for lab in labels:
        names = list(per_seed[str(seed_list[0])][lab]["metrics"])
        if len(seed_list) == 1:
            metrics_out[lab] = {k: {**v, "n_seeds": 1} for k, v in per_seed[str(seed_list[0])][lab]["metrics"].items()}
        else:
            metrics_out[lab] = {k: seed_summary([per_seed[str(s)][lab]["metrics"][k]["value"] for s in seed_list])
                                for k in names}
        c = costs[lab]
        ps = c["per_seed"]
        c.update(train_s=float(np.mean([p["train_s"] for p in ps])),
                 time_per_epoch_s=float(np.mean([p["train_s"] / max(1, p["epochs_run"]) for p in ps])),
                 peak_memory_mb=float(np.nanmax([p["peak_memory_mb"] for p in ps])),
                 images_per_s=float(np.mean([p["images_per_s"] or 0.0 for p in ps])))
    if probe:
        ps = probe_cost["per_seed"]
        metrics_out[PROBE] = (
            {k: {**v, "n_seeds": 1} for k, v in per_seed[str(seed_list[0])][PROBE]["metrics"].items()}
            if len(seed_list) == 1 else
            {k: seed_summary([per_seed[str(s)][PROBE]["metrics"][k]["value"] for s in seed_list])
             for k in per_seed[str(seed_list[0])][PROBE]["metrics"]})
        probe_cost.update(trainable_params=int(ps[0]["head_params"]), trainable_backbone_params=0,
                          train_s=float(np.mean([p["train_s"] for p in ps])), time_per_epoch_s=None,
                          images_per_s=None, peak_memory_mb=None)
        costs[PROBE] = probe_cost
    vs_linear = against(pairs, "linear") if "linear" in labels else {}
    vs_probe = against(pairs, PROBE) if probe else {}
    record = RunRecord(
        kind="tune", config=config, fingerprints=fingerprints, metrics=metrics_out,
        hparams={lab: {"lr": lrs[lab], **m.to_dict()} for lab, m in zip(labels, ms)},
        details={"per_seed": per_seed, "pairs": pairs, "vs_linear": vs_linear, "vs_probe": vs_probe, "cost": costs,
                 "artefacts": {k: str(v) for k, v in artefacts.items()},
                 "data": {"classes": list(source.classes), "n": len(source)},
                 "interval": "per seed: percentile bootstrap over test images; across seeds: mean with a Student-t "
                             "interval (seeds vary the split and the initialisation)",
                 "cost_note": "peak memory: " + ("CUDA max allocated above the start" if dev.type == "cuda" else
                                                 "process RSS above the start, sampled (approximate)")
                 + "; images/s: training images through a step per second of training time (linear: head steps "
                   "on features computed once)"},
        timings={"load_images_s": t_bank, **{f"{lab}_train_s": costs[lab]["train_s"] for lab in labels}},
        seeds={"first": int(seed), "n_seeds": int(seeds), "bootstrap": int(seed)})
    path = record.save(out) if out is not None else None
    return TuneResult(record, results, backbones, artefacts, path)
