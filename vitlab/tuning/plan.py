"""What a ``vitlab.tune`` run will do, settled and checked before any training (:func:`plan_run`).

The plan holds the parsed methods, the device, the labelled source, the per-seed train / validation /
test rows, the pool, the learning rates, and the config and fingerprints that make the run id (and so
the resume folder and the record). Every bad setting fails here, in one line, before images are read.

Example:
    >>> p = plan_run("demo:fmnist-vit", "sample:digits?limit=150", methods="linear", seeds=1, seed=0,
    ...              recipe=TuneRecipe(), test_fraction=0.2, n_resamples=100, pretrained=True, device=None,
    ...              out=None, backbone_kwargs=None)
    >>> [m.label for m in p.methods], p.pool, [len(r) for r in p.splits[0]]
    (['linear'], 'cls', [108, 12, 30])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitlab.backbones import Backbone, load_backbone, resolve_device
from vitlab.data import DataSource, load_source
from vitlab.errors import ConfigError, DataError
from vitlab.outputs import check_output_dir
from vitlab.record import start_record
from vitlab.tuning.methods import Method, check_dependencies, parse_methods
from vitlab.tuning.recipe import TuneRecipe

__all__ = ["RunPlan", "plan_run", "check_inputs", "tune_splits"]


@dataclass
class RunPlan:
    """A checked tune run: what :func:`vitlab.tune` trains, on which rows, under which run id.

    Attributes:
        methods: the parsed methods (in the order given). device: where training runs.
        source: the labelled data. backbone: the loaded base (never modified).
        backbone_kwargs: the base's loader options (written into the artefacts to rebuild it).
        seeds: ``seed, seed + 1, ...``. splits: seed → ``(train_rows, val_rows, test_rows)``.
        pool: ``cls`` or ``mean``. lrs: method label → base learning rate (``recipe.lr`` or the method's
        default). lr_candidates: method label → the rates tried on validation (``recipe.lr_grid`` x base).
        config / fingerprints: the record's blocks. run_id: their hash. run_dir: ``<out>/tune/<run_id>``.
    """

    methods: list[Method]
    device: torch.device
    source: DataSource
    backbone: Backbone
    backbone_kwargs: dict[str, Any]
    seeds: list[int]
    splits: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]
    pool: str
    lrs: dict[str, float]
    lr_candidates: dict[str, list[float]]
    recipe: TuneRecipe
    config: dict[str, Any]
    fingerprints: dict[str, Any]
    run_id: str
    run_dir: Path | None

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.methods]


def check_inputs(methods: Any, seeds: int, recipe: TuneRecipe, test_fraction: float, n_resamples: int,
                 device: str | None, out: Any) -> tuple[list[Method], torch.device]:
    """The methods and the device, after checking every cheap setting (one line each)."""
    from vitlab.data.splits import check_fractions

    ms = parse_methods(methods)
    check_dependencies(ms)
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


def tune_splits(source: DataSource, seeds: list[int], test_fraction: float, val_fraction: float
                ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per seed: ``(train_rows, val_rows, test_rows)``; the test split is eval's for that seed, the validation
    part a stratified holdout of train (seed ``s + 1``)."""
    from vitlab.data.splits import holdout
    from vitlab.evaluation.run import check_split_classes

    y = source.labels
    groups = None if source.groups is None else np.asarray(source.groups)
    out = {}
    for s in seeds:
        split = source.splits(seed=s, test_fraction=test_fraction)
        tr, te = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
        check_split_classes(y, tr, te, source.classes)
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


#: how a tune run chooses its learning rate and epoch (written into the record's config)
SELECTION = ("per method and seed: each learning rate of the grid trains once on the training part; early stopping "
             "keeps the best epoch on the validation part (epoch 0 = the LP-FT start, when lp_init), and the rate "
             "with the best validation top-1 is kept (ties: lower validation loss, then the smaller rate); with "
             "refit the method then trains once more on train + validation at that rate for that many epochs (as "
             "VTAB-1k: choose on val200, train on train800 + val200); the test split is predicted only by the final "
             "model")


def _check_lp_holdout(source: DataSource, splits: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """LP-FT fits the linear probe on the training part, choosing C on a holdout of it: check it can, before work."""
    from vitlab.data.splits import holdout
    from vitlab.protocols.classification import LinearConfig

    groups = None if source.groups is None else np.asarray(source.groups)
    for s, (tr, _, _) in splits.items():
        try:
            holdout(source.labels[tr], None if groups is None else groups[tr], LinearConfig().val_fraction, s)
        except DataError:
            raise DataError(f"seed {s}: the training part ({len(tr)} images) is too small for LP-FT's linear probe, "
                            "which chooses C on a stratified holdout of it: use more data, or start from a random "
                            "head with --no-lp-init.") from None


def plan_run(backbone: Backbone | str, data: DataSource | str, *, methods: Any, seeds: int, seed: int,
             recipe: TuneRecipe, test_fraction: float, n_resamples: int, pretrained: bool, device: str | None,
             out: str | Path | None, backbone_kwargs: dict[str, Any] | None) -> RunPlan:
    """Check everything and settle the run (see the module docstring); loads the data's index and the backbone,
    reads no image.

    Raises:
        UnknownNameError / ConfigError / BackboneError / DataError: as :func:`vitlab.tune`.
    """
    from vitlab.backbones.base import check_pool

    ms, dev = check_inputs(methods, seeds, recipe, test_fraction, n_resamples, device, out)
    source = load_source(data)
    if source.labels is None:
        raise DataError(f"{source.uri} has no labels; tuning trains a classifier: use labelled data (class "
                        "subfolders, or a label column).")
    seed_list = [int(seed) + k for k in range(int(seeds))]
    splits = tune_splits(source, seed_list, test_fraction, recipe.val_fraction)
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, pretrained=pretrained, seed=0, **(backbone_kwargs or {}))
    for m in ms:
        m.check(backbone)
    pool = recipe.pool if recipe.pool != "auto" else ("cls" if backbone.spec.has_cls_token else "mean")
    check_pool(pool, backbone.spec.has_cls_token)
    labels = [m.label for m in ms]
    lrs = {m.label: recipe.lr or m.default_lr for m in ms}
    candidates = {m.label: recipe.learning_rates(m.default_lr) for m in ms}
    too_high = {lab: c[-1] for lab, c in candidates.items() if c[-1] > 1.0}
    if too_high:
        raise ConfigError(f"lr_grid x lr reaches a learning rate above 1 ({too_high}); lower --lr or --lr-grid.")
    if recipe.lp_init:
        _check_lp_holdout(source, splits)
    config = {"backbone": backbone.name, "data": source.uri, "dataset": source.uri, "methods": labels,
              "method_config": {m.label: {**m.to_dict(), "spec": m.spec(), "source": m.source} for m in ms},
              "seeds": seed_list, "recipe": recipe.to_dict(), "lr": lrs, "pool": pool, "layer": backbone.spec.depth - 1,
              "test_fraction": test_fraction, "n_resamples": n_resamples, "device": str(dev),
              "split_origin": "split column" if source.split_column is not None
              else f"seeded stratified (test {test_fraction}), as vitlab eval --seed <s>",
              "val_origin": f"stratified holdout of train (val {recipe.val_fraction}, seed s + 1)",
              "lr_candidates": candidates, "selection": SELECTION,
              "head_init": ("LP-FT: the linear probe (vitlab eval's linear protocol) on the step-0 features of the "
                            "rows trained on" if recipe.lp_init else "random (normal, std 0.01)")}
    started = start_record("tune", config, backbone=backbone, source=source)
    fingerprints, run_id = started.fingerprints, started.run_id
    run_dir = Path(out) / "tune" / run_id if out is not None else None
    return RunPlan(ms, dev, source, backbone, dict(backbone_kwargs or {}), seed_list, splits,
                   pool, lrs, candidates, recipe, config, fingerprints, run_id, run_dir)
