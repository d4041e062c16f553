"""``vitlab.pretrain``: continue self-supervised pretraining of the user's backbone on their own (unlabelled) images,
and prove with ``vitlab eval``'s statistics whether it helped.

The teacher (and the student) start as a copy of the user's pretrained weights; new projection heads warm up with
the backbone frozen before any backbone weight moves (the fix for dinov2 #204), then the backbone trains at a low
learning rate with layer-wise decay (:mod:`vitlab.pretraining.recipe`). Every few steps the monitor scores kNN on
the monitor data's validation part with CIs, plus feature health; the collapse guard stops a run whose monitored
metric falls below the base model's by more than its interval, keeping the best checkpoint. The best point
becomes a ``.vitlab`` artefact (a new backbone with its own ``weights_id``), and the verdict compares it with the
base on the monitor data's **test** part, the split of ``vitlab eval --seed s``: paired bootstrap and McNemar.

Outputs under ``out`` (default ``runs``): the record ``pretrain-<run>.json`` and ``pretrain/<run>/`` with
``model.vitlab``, ``checkpoint.pt`` (resume: run the same command again) and ``best.pt``.

Example:
    >>> res = pretrain("demo:fmnist-vit", "sample:digits?limit=200", monitor="sample:digits?limit=200", method="dino",
    ...                max_steps=1, batch_size=16, monitor_every=0,
    ...                n_resamples=20, verdict_protocols="knn", progress=False)  # one step: a smoke run
    >>> pair = res.record.details["verdict"]["knn"][0]  # adapted vs base, paired on the monitor's test split
    >>> pair["a"], pair["b"], pair["low"] <= pair["diff"] <= pair["high"]
    ('adapted', 'base', True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from vitlab.backbones import Backbone, load_backbone
from vitlab.data import DataSource, load_source
from vitlab.pretraining.common import PretrainResult, check_images, check_settings, run_training
from vitlab.pretraining.recipe import PretrainRecipe
from vitlab.record import data_block, start_record
from vitlab.outputs import check_output_dir

__all__ = ["pretrain"]


def _build_pretrain(job: dict[str, Any], bb: Backbone, source: DataSource, objs: dict[str, Any]) -> tuple[Any, Any]:
    from vitlab.pretraining.images import ImageStore
    from vitlab.pretraining.methods import parse_method

    method = parse_method(job["method"])
    program = method.build(bb, torch.Generator().manual_seed(job["seed"]))
    store = ImageStore(source, bb.spec.preprocessing)
    return program, store


def _load(backbone: Backbone | str, pretrained: bool, kwargs: dict[str, Any] | None) -> tuple[Backbone, str, bool]:
    """``(backbone, its loader name, random init?)``."""
    if isinstance(backbone, str):
        bb = load_backbone(backbone, pretrained=pretrained, seed=0, **(kwargs or {}))
        return bb, backbone, bb.name.startswith("random:")
    return backbone, backbone.name, backbone.name.startswith("random:")


def pretrain(backbone: Backbone | str, data: DataSource | str, *, monitor: DataSource | str | None = None,
             method: str = "dino", recipe: PretrainRecipe | None = None, seed: int = 0, test_fraction: float = 0.2,
             n_resamples: int = 1000, verdict_protocols: str = "knn,linear", nproc: int = 1,
             device: str | None = None, out: str | Path | None = "runs", cache_dir: str | Path | None = None,
             progress: bool | None = None, pretrained: bool = True, backbone_kwargs: dict[str, Any] | None = None,
             on_step: Callable[[int], None] | None = None, **recipe_changes: Any) -> PretrainResult:
    """Continue self-supervised pretraining of ``backbone`` on ``data``; monitor and judge it on ``monitor``.

    Args:
        backbone: a name (``"demo:fmnist-vit"``, ``"dinov2-s"``, a ``.vitlab`` artefact) or a :class:`Backbone`;
            never modified (training runs on copies).
        data: the unlabelled training images (labels, if any, are never read), e.g. ``"folder:./slides"``.
        monitor: labelled data for monitoring and the verdict (``None``: neither; the last step is exported).
        method: ``dino``, ``dinov2`` or ``mae``, with parameters as ``dino:n_local=6`` (:mod:`~vitlab.pretraining.methods`).
        recipe: the training recipe; ``**recipe_changes`` override its fields (``epochs=3``, ``max_steps=50``...).
        seed: seeds the views, the heads, the data order and the monitor's split (``vitlab eval --seed``).
        test_fraction: as ``vitlab eval`` (monitor data without a split column).
        n_resamples: bootstrap resamples per CI and paired test.
        verdict_protocols: protocols of the final verdict (``vitlab eval --protocol``).
        nproc: data-parallel processes (gloo on CPU, NCCL on CUDA); the record is the same.
        device: ``cpu`` (default), ``cuda``...; bf16 autocast on CUDA (``precision="auto"``).
        out: folder for the record, the artefact and the checkpoints (``None``: nothing written, no resume).
        cache_dir: the embedding cache of the verdict's ``vitlab eval`` runs.
        progress: loss, images/s and ETA on stderr; ``None``: only on a terminal.
        pretrained, backbone_kwargs: loader options for a backbone given by name (recorded in the artefact).
        on_step: called with the step count after each step (tests: simulate an interruption).

    Returns:
        :class:`~vitlab.pretraining.common.PretrainResult`.

    Raises:
        ConfigError / UnknownNameError: a bad setting, an unknown method, a missing optional dependency.
        BackboneError: a backbone that cannot take the method (e.g. MAE on one that cannot mask).
        DataError: too few images for a batch, monitor data without labels.
        Interrupted: Ctrl-C (the message says which checkpoint is kept and how to resume).
    """
    from vitlab.pretraining._deps import require_lightly
    from vitlab.pretraining.forward import check_trainable
    from vitlab.pretraining.methods import parse_method
    from vitlab.pretraining.monitor import monitor_splits

    require_lightly("vitlab pretrain")
    recipe = (recipe or PretrainRecipe()).replace(**recipe_changes) if recipe_changes else (recipe or PretrainRecipe())
    m = parse_method(method)
    dev = check_settings(nproc=nproc, batch_size=recipe.batch_size, device=device, precision=recipe.precision)
    check_output_dir(out, "--out")
    source = load_source(data)
    mon = load_source(monitor) if monitor is not None else None
    if mon is not None:
        monitor_splits(mon, seed, test_fraction, recipe.val_fraction)  # labels and split sizes, before training
    n = check_images(source, recipe.batch_size)
    bb, load_name, random_init = _load(backbone, pretrained, backbone_kwargs)
    check_trainable(bb)
    m.check(bb)
    res_r = recipe.resolved(random_init=random_init)
    total = recipe.total_steps(n)
    warmup = recipe.warmup_steps(total, random_init)
    export = m.export_default if recipe.export == "auto" else recipe.export
    config = {"backbone": bb.name, "data": source.uri, "monitor": None if mon is None else mon.uri,
              "method": m.to_dict(), "recipe": {k: v for k, v in recipe.to_dict().items() if k != "checkpoint_minutes"},
              "resolved": {**res_r, "total_steps": total, "head_warmup_steps": warmup, "export": export},
              "seed": seed, "test_fraction": test_fraction, "n_resamples": n_resamples,
              "verdict_protocols": verdict_protocols, "device": dev.type}
    record = start_record("pretrain", config, backbone=bb, source=source,
                          fingerprints={"monitor": data_block(mon)} if mon is not None else None,
                          seeds={"views": seed, "split": seed, "heads": seed, "bootstrap": seed})
    run_dir = Path(out) / "pretrain" / record.run_id if out is not None else None
    job = {"backbone": load_name, "pretrained": pretrained, "init_seed": 0, "backbone_kwargs": backbone_kwargs or {},
           "data": source.uri, "monitor": None if mon is None else mon.uri,
           "method": m.spec(), "build": _build_pretrain, "recipe": recipe, "seed": seed, "test_fraction": test_fraction,
           "n_resamples": n_resamples, "total": total, "warmup": warmup, "lr": res_r["lr"],
           "layer_decay": res_r["layer_decay"], "export": export, "device": str(dev), "run_dir": run_dir,
           "run_id": record.run_id, "progress": progress, "label": m.name, "on_step": on_step,
           "objects": {} if nproc > 1 else {"backbone": bb, "source": source, "monitor": mon}}
    loop = run_training(job, nproc)
    return finish(record, loop, bb, load_name, backbone_kwargs, source, mon, run_dir, kind="pretrain",
                  models_label="adapted", reference="base", info={"method": m.spec(), "export": export},
                  seed=seed, test_fraction=test_fraction, n_resamples=n_resamples,
                  verdict_protocols=verdict_protocols, cache_dir=cache_dir, device=str(dev), out=out, nproc=nproc)


def finish(record: Any, loop: Any, base: Backbone, load_name: str, kwargs: dict[str, Any] | None, source: DataSource,
           mon: DataSource | None, run_dir: Path | None, *, kind: str, models_label: str, reference: str,
           info: dict[str, Any], seed: int, test_fraction: float, n_resamples: int, verdict_protocols: str,
           cache_dir: Any, device: str, out: Any, nproc: int, others: dict[str, Backbone] | None = None,
           extra_details: dict[str, Any] | None = None) -> PretrainResult:
    """Write the artefact (the best point, else the last), judge it against ``reference`` (and ``others``) with
    ``vitlab eval`` on the monitor's test part, and fill and save the record."""
    from vitlab.pretraining.artefact import base_meta, load_model, save_model
    from vitlab.pretraining.common import adapted_in_memory, export_backbone
    from vitlab.pretraining.verdict import verdict

    use_best = loop.best_weights is not None and (mon is not None)
    weights = loop.best_weights if use_best else loop.final_weights
    step = loop.best["step"] if use_best else loop.steps_done
    artefact = None
    meta_info = {**info, "kind": kind, "run_id": record.run_id, "step": int(step), "seed": seed,
                 "data": data_block(source), "selected": "best monitored point" if use_best else "last step"}
    if run_dir is not None:
        body = export_backbone(base, weights).model
        artefact = save_model(run_dir / "model.vitlab", body, base_meta(base, load_name, kwargs), meta_info)
        adapted = load_model(artefact, device=device)
    else:
        adapted = adapted_in_memory(base, weights, base.name)
    details: dict[str, Any] = {
        "artefact": None if artefact is None else str(artefact), "selected": meta_info["selected"],
        "selected_step": int(step), "adapted_weights_id": adapted.weights_id, "base_weights_id": base.weights_id,
        "steps": {"total": loop.total, "done": loop.steps_done, "head_warmup": loop.warmup,
                  "resumed_from": loop.resumed_from},
        "curve": loop.curve, "monitor_curve": loop.history, "best": loop.best, "stop": loop.stop,
        "warmup_check": loop.warmup_check, "execution": {"nproc": nproc, "device": device},
        "run_dir": None if run_dir is None else str(run_dir), **(extra_details or {})}
    if mon is not None and source.fingerprint == mon.fingerprint:
        details["note"] = ("the training images are the monitor data's images, test part included (their labels are "
                           "never read in training); the verdict measures adaptation to these very images.")
    if mon is not None:
        models = {models_label: adapted, reference: base, **(others or {})}
        pairs = [(models_label, k) for k in models if k != models_label]
        v = verdict(models, mon, pairs=pairs, protocols=verdict_protocols, seed=seed, test_fraction=test_fraction,
                    n_resamples=n_resamples, cache_dir=cache_dir, device=device)
        record.metrics = v["metrics"]
        details["verdict"] = {p: rows for p, rows in v["pairs"].items()}
        details["eval"] = v["eval"]
    record.details = details
    batch = record.config["recipe"]["batch_size"]
    record.timings = {"train_s": round(loop.train_s, 3),
                      "images_per_s": loop.steps_done * batch / loop.train_s if loop.train_s > 0 else None,
                      "note": "wall time of the training loop, monitoring included"}
    path = record.save(out) if out is not None else None
    return PretrainResult(record, artefact, adapted, path, loop)
