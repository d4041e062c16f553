"""``vitlab.mil_eval``: MIL heads on bags of cached instance embeddings, patient-grouped K-fold, patient CIs.

Data flows as everywhere else: a bag source (``bags:<manifest>``, ``sample:fashion-mnist-bags``) →
the embedding store (each tile embedded once; a feature bag source skips the backbone) → per-bag
features (:mod:`vitlab.mil.data`) → stratified K folds grouped by patient (or the manifest's own
folds, checked for leakage: :mod:`vitlab.mil.cv`) → one head per fold (:mod:`vitlab.mil.train`:
early stopping on a patient-disjoint validation part of the training folds) → out-of-fold
probabilities pooled over folds → the classification scorer with **patients** as bootstrap clusters
(AUROC, balanced accuracy, macro-F1 with 95% CIs) → paired tests between heads on the same folds
(paired bootstrap, McNemar, DeLong for two classes; Holm) → an ``eval`` run record whose protocols
are ``mil-<head>``, so ``vitlab report`` shows its leaderboard.

Example:
    >>> res = mil_eval("demo:fmnist-vit", "sample:fashion-mnist-bags", heads="abmil,mean")  # doctest: +SKIP
    >>> res.record.metrics["mil-abmil"]["auroc"]  # doctest: +SKIP
    {'value': 0.97, 'low': 0.94, 'high': 0.99, ...}
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.record import RunRecord, check_output_dir

__all__ = ["mil_eval", "MILResult", "N_ATTENTION_EXAMPLES"]

N_ATTENTION_EXAMPLES = 4
MAX_HEAT_POINTS = 4096
HEADLINE = "auroc"  # the leaderboard metric of MIL runs (slide-level studies report AUROC first)


@dataclass
class MILResult:
    """The run record plus the in-memory results (for paired tests and inspection).

    Attributes:
        record: the ``eval`` :class:`~vitlab.record.RunRecord` (protocols ``mil-<head>``).
        results: ``mil-<head>`` → classification :class:`~vitlab.protocols.base.Result` of the pooled
            out-of-fold predictions (units: bag ids; groups: patients).
        attention: ``mil-<head>`` → per bag ``[n_i]`` attention from its out-of-fold model (``None`` for
            mean / max pooling).
        path: where the record was written.
    """

    record: RunRecord
    results: dict[str, Any]
    attention: dict[str, list[np.ndarray | None]]
    path: Path | None = None

    def metric(self, protocol: str, name: str | None = None) -> float:
        """A metric's value (default AUROC) of ``mil-<head>`` (or ``<head>``; ``mil-<head>@test`` for the
        held-out ensemble)."""
        label = protocol if protocol.startswith("mil-") else f"mil-{protocol}"
        return float(self.record.metrics[label][name or HEADLINE]["value"])


def _instance_auroc(attention: list[np.ndarray | None], instance_labels: list[np.ndarray] | None,
                    bag_labels: np.ndarray) -> float | None:
    """AUROC of attention scores for key (label 1) vs other instances, within positive bags."""
    if instance_labels is None or any(a is None for a in attention):
        return None
    from vitlab.metrics.classification import auroc

    scores, labels = [], []
    for a, il, y in zip(attention, instance_labels, bag_labels):
        if y > 0 and len(np.unique(il)) == 2:
            scores.append(a * len(a))  # normalise for bag size: 1.0 = uniform attention
            labels.append(il)
    if not scores:
        return None
    s, t = np.concatenate(scores), np.concatenate(labels).astype(int)
    return float(auroc(t, np.stack([1 - s, s], 1)))


def _heat(xy: np.ndarray, a: np.ndarray) -> dict[str, Any]:
    """A bag's attention at its tiles' coordinates for the report's heat map.

    Up to :data:`MAX_HEAT_POINTS` tiles are kept as they are; a larger bag is binned onto a
    64 × 64 grid over its extent (mean attention per occupied cell, at the cell centre).
    """
    xy = np.asarray(xy, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64) * len(a)  # 1.0 = uniform attention
    binned = len(a) > MAX_HEAT_POINTS
    if binned:
        lo, hi = xy.min(0), xy.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        cell = np.minimum((64 * (xy - lo) / span).astype(np.int64), 63)
        key = cell[:, 0] * 64 + cell[:, 1]
        uniq, inv = np.unique(key, return_inverse=True)
        a = np.bincount(inv, weights=a) / np.bincount(inv)
        xy = lo + (np.stack([uniq // 64, uniq % 64], 1) + 0.5) * span / 64
    return {"x": np.round(xy[:, 0], 3).tolist(), "y": np.round(xy[:, 1], 3).tolist(),
            "attention": np.round(a, 4).tolist(), "binned": bool(binned), "scale": "attention x bag size"}


def _examples(ids: list[str], rows: list[np.ndarray], attention: list[np.ndarray | None], labels: np.ndarray,
              row_ids: list[str], seed: int, coords: list[np.ndarray | None] | None = None) -> list[dict[str, Any]]:
    """For a few positive bags, the most and least attended instances (ids and weights), for the report;
    with tile coordinates, the bag's attention heat map too."""
    pos = [i for i in range(len(ids)) if labels[i] > 0 and attention[i] is not None]
    if not pos:
        return []
    pick = np.sort(np.random.default_rng(seed).choice(pos, min(N_ATTENTION_EXAMPLES, len(pos)), replace=False))
    out = []
    for i in pick:
        a = attention[i]
        order = np.argsort(-a, kind="stable")
        top, low = order[:3], order[::-1][:3]
        # image bags name each instance by its row id; feature bags by its index in the bag's file
        name = ((lambda j: row_ids[rows[i][j]]) if len(rows[i]) == len(a) else (lambda j: f"{ids[i]}#{j}"))
        ex = {"bag": ids[i], "size": int(len(a)),
              "top": [{"id": name(j), "attention": float(a[j])} for j in top],
              "bottom": [{"id": name(j), "attention": float(a[j])} for j in low]}
        if coords is not None and coords[i] is not None and len(coords[i]) == len(a):
            ex["heatmap"] = _heat(coords[i], a)
        out.append(ex)
    return out


def mil_eval(backbone: Any, data: Any, *, heads: str | list[str] = "abmil,mean", folds: int = 5, seed: int = 0,
             n_resamples: int = 1000, epochs: int = 200, min_epochs: int = 50, patience: int = 20,
             lr: float = 2e-4, max_instances: int | None = None, head_cfg: dict[str, dict[str, Any]] | None = None,
             use_manifest_folds: bool = True, layer: int = -1, pool: str = "auto", pretrained: bool = True,
             device: str = "cpu",
             cache_dir: str | Path | None = None, out: str | Path | None = None, **embed_kwargs: Any) -> MILResult:
    """Train and score MIL heads on a bag source with patient-grouped K-fold cross-validation.

    Args:
        backbone: a name or :class:`~vitlab.backbones.base.Backbone` that embeds the instances (ignored,
            may be ``None``, for a feature bag source).
        data: ``bags:<manifest>``, ``sample:fashion-mnist-bags`` or a bag source object.
        heads: comma-separated heads (``mean``, ``max``, ``abmil``, ``transmil``, ``clam_sb``).
        folds: K of the patient-grouped stratified K-fold (when the manifest has no ``fold`` column, or
            ``use_manifest_folds=False``).
        seed: seeds the folds, the inner validation parts, the heads and the bootstrap.
        n_resamples: bootstrap resamples per CI (patients are the resampled unit).
        epochs, min_epochs, patience, lr, max_instances: the training recipe
            (:func:`vitlab.mil.train.fit_head`; CLAM's defaults).
        head_cfg: per-head keyword arguments, e.g. ``{"transmil": {"dim": 128}}``.
        layer, pool: which instance embedding (``pool="auto"``: ``cls`` when the backbone has a class
            token, else ``mean``), as in :func:`~vitlab.evaluation.evaluate`.
        out: directory for the run record.
        **embed_kwargs: to the embedding store (``batch_size``, ``num_workers``, ``progress``...).

    Returns:
        :class:`MILResult`.

    Raises:
        UnknownNameError: an unknown head. DataError: not a bag source, leaking folds, bad bags.
    """
    from vitlab.data import load_source
    from vitlab.data.bags import BagInfo, FeatureBagSource
    from vitlab.evaluation import _protocol_pairs
    from vitlab.mil.cv import cross_validate, patient_folds
    from vitlab.mil.data import bag_data
    from vitlab.mil.ensemble import evaluate_test
    from vitlab.mil.heads import HEADS
    from vitlab.mil.train import fit_head, predict
    from vitlab.scorers import scorer_for

    names = [h.strip() for h in (heads.split(",") if isinstance(heads, str) else heads) if h.strip()]
    if not names:
        raise ConfigError("no MIL head given; choose from " + ", ".join(HEADS.names()) + ".")
    for h in names:
        HEADS.entry(h)
    if folds < 2 or n_resamples < 1:
        raise ConfigError(f"folds must be >= 2 and n_resamples >= 1, got {folds} and {n_resamples}.")
    check_output_dir(out, "out")
    source = load_source(data)
    if not isinstance(source, BagInfo):
        raise DataError(f"{getattr(source, 'uri', source)} is not a bag source: MIL needs bags:<manifest> (bag_id, "
                        "label, patient_id, path or features columns) or sample:fashion-mnist-bags.")
    t0 = time.perf_counter()
    emb = None
    if isinstance(source, FeatureBagSource):
        bags = bag_data(source)
        bb_name, fingerprints, layer, pool = "features", {}, None, None
    else:
        from vitlab import embed
        from vitlab.backbones import load_backbone

        bb = load_backbone(backbone, pretrained=pretrained, device=device) if isinstance(backbone, str) else backbone
        if pool == "auto":
            pool = "cls" if bb.spec.has_cls_token else "mean"
        emb = embed(bb, source, cache_dir=cache_dir, device=device, layers=layer, pool=pool, **embed_kwargs)
        if len(emb) != len(source):
            raise DataError(f"{len(source) - len(emb)} instance image(s) could not be embedded; MIL needs every "
                            "instance of a bag. Fix or remove them.")
        bags = bag_data(source, np.asarray(emb.get(layer, pool), dtype=np.float32))
        bb_name, fingerprints = bb.name, {"backbone": bb.fingerprint(), "embeddings": emb.digest}
    t_embed = time.perf_counter() - t0
    n_cls = len(bags.classes)
    held = np.array([sp == "test" for sp in bags.split], bool) if bags.split is not None else np.zeros(len(bags), bool)
    test_bags = bags.subset(held) if held.any() else None
    if test_bags is not None:
        bags = bags.subset(~held)
        if len(bags) < folds:
            raise DataError(f"{source.uri}: only {len(bags)} bag(s) outside split 'test' for {folds}-fold "
                            "cross-validation; mark fewer bags as test or lower --folds.")
    patients = np.asarray(bags.patients)
    if use_manifest_folds and bags.fold is not None:
        uniq = sorted(set(bags.fold))
        fold = np.array([uniq.index(f) for f in bags.fold])
        fold_origin = "manifest fold column"
    else:
        fold = patient_folds(bags.labels, patients, k=folds, seed=seed)
        fold_origin = f"stratified {folds}-fold grouped by patient (seed {seed})"
    rows_of = _rows_per_bag(source, bags.ids)
    row_ids = list(source.ids)
    results, attention, metrics, details, hparams, timings = {}, {}, {}, {}, {}, {"embed_s": round(t_embed, 3)}
    for h in names:
        t1 = time.perf_counter()
        att: list[np.ndarray | None] = [None] * len(bags)
        fitted_epochs: list[int] = []
        test_probas: list[np.ndarray] = []

        def fit_predict(train_idx, val_idx, test_idx, k, h=h, att=att, fitted_epochs=fitted_epochs,
                        test_probas=test_probas):
            fitted = fit_head([bags.features[i] for i in train_idx], bags.labels[train_idx],
                              [bags.features[i] for i in val_idx] if len(val_idx) else None,
                              bags.labels[val_idx] if len(val_idx) else None, head=h, n_classes=n_cls,
                              seed=seed + int(k), device=device, epochs=epochs, min_epochs=min(min_epochs, epochs),
                              patience=patience, lr=lr, max_instances=max_instances,
                              head_cfg=(head_cfg or {}).get(h))
            fitted_epochs.append(int(fitted.best_epoch))
            proba, attn = predict(fitted, [bags.features[i] for i in test_idx])
            for i, a in zip(test_idx, attn):
                att[int(i)] = a
            if test_bags is not None:  # every fold model also scores the held-out test bags
                test_probas.append(predict(fitted, test_bags.features)[0])
            return proba

        cv = cross_validate(len(bags), bags.labels, patients, fold, fit_predict, seed=seed, bag_ids=bags.ids)
        label = f"mil-{h}"
        res = cv.to_result(bags.ids, patients)
        results[label], attention[label] = res, att
        metrics[label], extra = scorer_for("classification").score(res, n_resamples=n_resamples, seed=seed)
        per_fold = cv.per_fold()
        details[label] = {"task": "classification", **extra, "per_fold": per_fold,
                          "best_epochs": fitted_epochs,
                          "instance_auroc_of_attention": _instance_auroc(att, bags.instance_labels, bags.labels),
                          "attention_examples": _examples(bags.ids, rows_of, att, bags.labels, row_ids, seed,
                                                          bags.coords)}
        hparams[label] = {"head": h, "epochs": epochs, "lr": lr, "patience": patience, **((head_cfg or {}).get(h) or {})}
        if test_bags is not None:
            ev = evaluate_test(test_probas, test_bags.labels, test_bags.ids, test_bags.patients,
                               n_resamples=n_resamples, seed=seed)
            results[f"{label}@test"] = ev.result
            metrics[f"{label}@test"] = ev.metrics
            details[f"{label}@test"] = {"task": "classification", **ev.extra,
                                        "ensemble": {"n_models": len(test_probas), "combine": "mean probability",
                                                     "single_models": ev.single, "gain": ev.gain}}
            hparams[f"{label}@test"] = dict(hparams[label])
        timings[f"{label}_s"] = round(time.perf_counter() - t1, 3)
    pairs = _protocol_pairs(results, n_resamples=n_resamples, seed=seed)
    if pairs:
        details["protocol_pairs"] = pairs
    record = RunRecord(
        kind="eval",
        config={"backbone": bb_name, "data": source.uri, "dataset": source.uri, "protocols": list(results),
                "task": "mil", "headline": HEADLINE, "layer": layer, "pool": pool, "folds": int(len(set(fold.tolist()))), "fold_origin": fold_origin, "seed": seed,
                "n_resamples": n_resamples, "bootstrap_unit": "patient", "split_origin": fold_origin,
                "n_cv_bags": len(bags), "n_test_bags": 0 if test_bags is None else len(test_bags),
                "test": None if test_bags is None else "manifest split 'test': the K fold models' mean "
                                                        "probability (protocols mil-<head>@test)"},
        fingerprints={**fingerprints, "data": {"kind": source.kind, "uri": source.uri,
                                               "fingerprint": source.fingerprint, "n": len(source)}},
        metrics=metrics, hparams=hparams,
        details={**details, "data": {"classes": bags.classes,
                                     "n_bags": len(bags) + (0 if test_bags is None else len(test_bags)),
                                     "n_patients": int(len(set(bags.patients))
                                                       + (0 if test_bags is None else len(set(test_bags.patients)))),
                                     "bag_sizes": {"min": int(bags.sizes.min()), "median": float(np.median(bags.sizes)),
                                                   "max": int(bags.sizes.max())}}},
        timings=timings, seeds={"folds": seed, "heads": seed, "bootstrap": seed})
    path = record.save(out) if out is not None else None
    return MILResult(record, results, attention, path)


def _rows_per_bag(source: Any, bag_ids: list[str]) -> list[np.ndarray]:
    """The instance rows of each bag (row order), for naming attended instances."""
    try:
        return [np.asarray(source.bag_rows(b)) for b in bag_ids]
    except (AttributeError, KeyError):
        return [np.arange(0) for _ in bag_ids]
