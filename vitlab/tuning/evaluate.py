"""``vitlab.tune``: adapt a backbone with several methods on the same splits and seeds, scored like ``eval``.

Per seed ``s`` (``seed, seed + 1, ...``): the train/test split is the one ``vitlab eval --seed s`` uses
for the same data (:meth:`DataSource.splits`: the split column, else the seeded stratified holdout of
:mod:`vitlab.data.splits`); a stratified validation part of train (``val_fraction``, seed ``s + 1``)
chooses the learning rate (from the recipe's ``lr_grid``) and the epoch (early stopping). By default the
head starts from the linear probe on the rows it trains on (LP-FT, :mod:`vitlab.tuning.lpft`); the chosen
rate and epoch are then trained once more on train + validation (``refit``). The test split is predicted
only by the final model. Every method is then scored on the same test images by the classification
scorer (percentile-bootstrap CIs) and paired with every other method of that seed (paired bootstrap
and McNemar, Holm-adjusted: :func:`vitlab.scorers.pair_results`). Across seeds, each metric's
mean gets a t-interval (seeds vary the split and the initialisation). The record also carries each
method's cost: trainable parameters, peak memory, wall time and training images/s.

Example:
    >>> res = tune("demo:fmnist-vit", "sample:digits?limit=300", methods="linear,lora", seeds=2, probe=False,
    ...            epochs=1, max_steps=1, lr_grid=(1.0,), lp_init=False, n_resamples=20, progress=False)  # a smoke run
    >>> sorted(res.record.details["vs_linear"]["lora"][0])  # lora vs linear on seed 0's test split
    ['diff', 'high', 'low', 'p_bootstrap', 'p_mcnemar', 'seed', 'significant']
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitlab._cache import open_entry
from vitlab.backbones import Backbone
from vitlab.data import DataSource
from vitlab.record import RunRecord
from vitlab.tuning.methods import Method
from vitlab.tuning.plan import RunPlan, plan_run
from vitlab.tuning.probe import PROBE
from vitlab.tuning.recipe import TuneRecipe
from vitlab.tuning.summary import against, seed_summary, tune_record

__all__ = ["tune", "TuneResult", "seed_summary", "against", "PROBE"]


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


def _save_unit(path: Path, unit: dict[str, Any]) -> None:
    """Write a finished method run (test probabilities, costs) for resumption (JSON floats round-trip exactly)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**unit, "proba": np.asarray(unit["proba"]).tolist()}))
    tmp.replace(path)


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
            (:data:`vitlab.tuning.METHODS`).
        seeds: how many seeds (``seed``, ``seed + 1``, ...); each seed has its own eval split.
        recipe: the training recipe (:class:`TuneRecipe`); ``**recipe_changes`` override its fields
            (``epochs=3``, ``lr=1e-3``, ``batch_size=32``, ``max_steps=5``, ``lr_grid=(1.0,)``,
            ``lp_init=False``...). Defaults: LP-FT head start, learning rate chosen on validation from
            0.3 / 1 / 3 x the method's default (``details["selection"]``).
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
            ``details["vs_probe_verdict"]`` says per method, plainly, whether it beats or loses to the probe,
            with the paired tests (and why, when no fine-tuning epoch beat the LP-FT start on validation).
        cache_dir: embedding cache of the frozen probe's features (as ``vitlab eval``).
        backbone_kwargs: loader options for a backbone given by name (recorded so the artefact can rebuild it).

    Returns:
        :class:`TuneResult`.

    Raises:
        UnknownNameError: an unknown method. ConfigError / BackboneError: a bad setting, or a method the
        backbone cannot take. DataError: unlabelled data, or a split or validation part too small.

    Example:
        >>> res = tune("demo:fmnist-vit", "sample:digits?limit=300", methods="linear,bitfit", probe=False, epochs=1,
        ...            max_steps=1, lr_grid=(1.0,), lp_init=False, n_resamples=20, progress=False)  # a smoke run
        >>> sorted(res.record.metrics)
        ['bitfit', 'linear']
    """
    from vitlab.tuning.runner import ImageBank

    recipe = (recipe or TuneRecipe()).replace(**recipe_changes) if recipe_changes else (recipe or TuneRecipe())
    plan = plan_run(backbone, data, methods=methods, seeds=seeds, seed=seed, recipe=recipe,
                    test_fraction=test_fraction, n_resamples=n_resamples, pretrained=pretrained, device=device,
                    out=out, backbone_kwargs=backbone_kwargs)
    t_bank = time.perf_counter()
    bank = ImageBank(plan.source, plan.backbone.spec.preprocessing)
    t_bank = time.perf_counter() - t_bank
    resume_dir = open_entry("tune-resume", plan.run_id, cache_dir, {"backbone": plan.backbone.name,
                                                                     "data": plan.source.uri, "methods": plan.labels,
                                                                     "seeds": plan.seeds})
    run = _Run(plan, bank, n_resamples, progress, resume_dir)
    try:
        for s in plan.seeds:
            for m in plan.methods:
                run.method(m, s)
            if probe:
                run.probe(s, test_fraction, cache_dir)
            run.pair(s)
    except KeyboardInterrupt:
        from vitlab.errors import Interrupted

        n_units = len(plan.seeds) * len(plan.methods)
        if resume_dir is None:
            raise Interrupted(f"{run.done} of {n_units} method runs had finished; nothing is kept (the cache dir is "
                              "not writable: pass a writable --cache-dir to make tuning resumable).") from None
        raise Interrupted(f"{run.done} of {n_units} method runs are kept in {resume_dir / 'units'}: run the same "
                          "command again to resume (finished runs are not trained again"
                          f"{'' if out is not None else '; the first seed is, as its model is saved only with --out'}"
                          ").") from None
    record = tune_record(plan, per_seed=run.per_seed, pairs=run.pairs, costs=run.costs,
                         probe_cost=run.probe_cost if probe else None, artefacts=run.artefacts, t_bank=t_bank,
                         seed=seed, seeds=seeds, probe_label=PROBE)
    path = record.save(out) if out is not None else None
    return TuneResult(record, run.results, run.backbones, run.artefacts, path)


class _Run:
    """The state of a tune run while it trains: results, scores, costs, pairs, adapted backbones, artefacts."""

    def __init__(self, plan: RunPlan, bank: Any, n_resamples: int, progress: bool | None,
                 resume_dir: Path | None = None) -> None:
        from vitlab.scorers import scorer_for

        self.plan, self.bank, self.n_resamples, self.progress = plan, bank, n_resamples, progress
        self.resume_dir = resume_dir  # finished units, in the cache's tune-resume namespace
        self.scorer = scorer_for("classification")
        self.ids = list(plan.source.ids)
        self.groups = None if plan.source.groups is None else np.asarray(plan.source.groups)
        self.results: dict[int, dict[str, Any]] = {}
        self.per_seed: dict[str, dict[str, Any]] = {}
        self.costs: dict[str, dict[str, Any]] = {lab: {"per_seed": []} for lab in plan.labels}
        self.pairs: list[dict[str, Any]] = []
        self.backbones: dict[str, Backbone] = {}
        self.artefacts: dict[str, Path] = {}
        self.probe_cost: dict[str, Any] = {"per_seed": [], "note": "vitlab eval's frozen linear probe (features "
                                                                   "cached once; train s includes embedding on a "
                                                                   "cache miss)"}
        self.lp_cache: dict[str, Any] = {}  # LP-FT heads by step-0 features (methods with the same ones share)
        self.done = 0

    def _score(self, s: int, label: str, res: Any) -> dict[str, Any]:
        self.results.setdefault(s, {})[label] = res
        metrics, extra = self.scorer.score(res, n_resamples=self.n_resamples, seed=s)
        self.per_seed.setdefault(str(s), {})[label] = {"metrics": metrics, **extra}
        return metrics

    def method(self, m: Method, s: int) -> None:
        """Train (or resume) method ``m`` on seed ``s``, score it, and keep the first seed's adapted backbone."""
        from vitlab.protocols.base import Result
        from vitlab.tuning.artefact import SUFFIX, load_artefact
        from vitlab.tuning.unit import adapted_backbone, train_unit

        plan = self.plan
        tr, val, te = plan.splits[s]
        y = plan.source.labels
        run_dir = plan.run_dir
        art_path = run_dir / f"{_safe_name(m.label)}{SUFFIX}" if run_dir is not None else None
        unit_path = (self.resume_dir / "units" / f"s{s}-{_safe_name(m.label)}.json"
                     if self.resume_dir is not None else None)
        first = s == plan.seeds[0]
        # the first seed's model is only kept as an artefact (with --out): without one it trains again
        unit = None if first and art_path is None else _load_unit(unit_path, art_path if first else None)
        if unit is None:
            unit, net, bb = train_unit(m, plan.backbone, self.bank, y, tr, val, te, len(plan.source.classes),
                                       plan.pool, plan.recipe, plan.lr_candidates[m.label], s, plan.device,
                                       self.progress, groups=self.groups, lp_cache=self.lp_cache)
        lr = unit["cost"].get("lr", plan.lrs[m.label])
        proba = np.asarray(unit["proba"], dtype=np.float64)
        res = Result("classification", [self.ids[i] for i in te], {"y": y[te], "proba": proba},
                     groups=None if self.groups is None else self.groups[te], hparams={"lr": lr, **m.to_dict()})
        metrics = self._score(s, m.label, res)
        self.costs[m.label]["per_seed"].append({**unit["cost"], "resumed": bool(unit.get("resumed"))})
        self.costs[m.label].update(unit["counts"])
        if first and unit.get("resumed"):
            if art_path is not None:
                self.artefacts[m.label] = art_path
                self.backbones[m.label] = load_artefact(art_path, device=plan.device)
        elif first:
            self.backbones[m.label], saved = adapted_backbone(plan, m, net, bb, s, lr, metrics["top1"], art_path)
            if saved is not None:
                self.artefacts[m.label] = saved
        if unit_path is not None and not unit.get("resumed"):
            _save_unit(unit_path, unit)
        self.done += 1

    def probe(self, s: int, test_fraction: float, cache_dir: str | Path | None) -> None:
        """Score ``vitlab eval``'s frozen linear probe on seed ``s`` (the reference every method is paired with)."""
        from vitlab.tuning.probe import frozen_probe

        te = self.plan.splits[s][2]
        t_p = time.perf_counter()
        res_p, fit_p = frozen_probe(self.plan.backbone, self.plan.source, s, test_fraction, self.plan.pool,
                                    [self.ids[i] for i in te], cache_dir, self.plan.device)
        self._score(s, PROBE, res_p)
        self.probe_cost["per_seed"].append({"seed": s, "train_s": time.perf_counter() - t_p, **fit_p})

    def pair(self, s: int) -> None:
        """Paired tests between every two of seed ``s``'s results (Holm within the seed)."""
        from vitlab.scorers import pair_results

        self.pairs += [{"seed": s, **p} for p in pair_results(self.results[s], n_resamples=self.n_resamples,
                                                                   seed=s)]
