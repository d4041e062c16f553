"""``vitlab.evaluate``: protocols on cached embeddings, every metric with a 95% CI.

Data flows one way: source → backbone → store → protocol (:mod:`vitlab.protocols`) →
scorer of the protocol's task (:mod:`vitlab.scorers`) → run record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.backbones import Backbone, load_backbone
from vitlab.backbones.base import check_pool
from vitlab.data import DataSource, load_source
from vitlab.data.splits import check_fractions
from vitlab.errors import ConfigError, DataError
from vitlab.neighbors import search
from vitlab.protocols.base import Protocol, Result, Split, parse_protocols
from vitlab.record import RunRecord, start_record
from vitlab.outputs import check_output_dir
from vitlab.scorers import pair_results, scorer_for
from vitlab.store import Embeddings, EmbeddingStore
from vitlab.evaluation.views import BagViews, Views

GALLERY_SIZE = 12


@dataclass
class EvalResult:
    """A run record plus the in-memory protocol results that paired tests need.

    Attributes:
        record: the :class:`RunRecord` (also written to ``out`` when given).
        results: protocol label → :class:`~vitlab.protocols.base.Result` on the test split.
        y_test: ``[n_test]`` labels; test_ids: their sample ids; groups_test: their groups or ``None``.
        embeddings: the cached :class:`Embeddings` used.
    """

    record: RunRecord
    results: dict[str, Result]
    y_test: np.ndarray
    test_ids: list[str]
    groups_test: np.ndarray | None
    embeddings: Embeddings
    path: Path | None = None

    @property
    def proba(self) -> dict[str, np.ndarray]:
        """Protocol → ``[n_test, C]`` test-set probabilities, for the classification protocols."""
        return {k: r.outputs["proba"] for k, r in self.results.items() if r.task == "classification"}

    def metric(self, protocol: str, name: str | None = None) -> float:
        """A metric's value; ``name`` defaults to the protocol's headline metric (top1, recall@1, miou; auroc
        for MIL)."""
        if name is None:
            names = set(self.record.metrics[protocol])
            preferred = self.record.config.get("headline")
            name = preferred if preferred in names else scorer_for(self.results[protocol].task).headline_for(names)
        return float(self.record.metrics[protocol][name]["value"])


def _gallery(train: Split, test: Split, proba: np.ndarray, ids: list[str], seed: int) -> list[dict[str, Any]]:
    """Up to 12 misclassified test images with their 3 nearest training neighbours (cosine)."""
    pred = proba.argmax(1)
    wrong = np.flatnonzero(pred != test.y)
    if not len(wrong) or train.X is None:
        return []
    pick = np.sort(np.random.default_rng(seed).choice(wrong, min(GALLERY_SIZE, len(wrong)), replace=False))
    nn = search(test.X[pick], train.X, min(3, len(train.X)), metric="cosine").indices
    return [{"id": ids[test.rows[i]], "true": int(test.y[i]), "pred": int(pred[i]),
             "neighbors": [{"id": ids[train.rows[j]], "label": int(train.y[j])} for j in row]}
            for i, row in zip(pick, nn)]


def evaluate(backbone: Backbone | str, data: DataSource | str, *,
             protocols: str | Protocol | list[str | Protocol] = "knn,linear,fewshot",
             layers: int | list[int] = -1, pool: str = "auto", seed: int = 0, test_fraction: float = 0.2,
             splits: np.ndarray | None = None, n_resamples: int = 1000, ordinal: bool = False,
             pretrained: bool = True, device: str | None = None,
             cache_dir: str | Path | None = None, out: str | Path | None = None,
             dataset_name: str | None = None, label: str | None = None, exclude_leaked: bool = False,
             leak_threshold: float | str = "auto", **embed_kwargs: Any) -> EvalResult:
    """Evaluate one backbone on one labelled data source with protocols; every metric gets a 95% CI.

    Args:
        backbone, data: objects or names (``"demo:fmnist-vit"``, ``"sample:fashion-mnist"``).
        protocols: protocol specs or :class:`~vitlab.protocols.base.Protocol` objects, e.g.
            ``"knn,linear"``, ``"knn:ks=[10,20],linear:max_iter=2000"`` or ``[KNN(ks=(10,))]``
            (``vitlab ls`` lists every protocol and its parameters).
        layers, pool: which embedding; ``pool="auto"`` = ``cls`` when the backbone has a class token, else ``mean``.
        seed: seeds the split, the protocols and the bootstrap.
        test_fraction: used when the data has no ``split`` column (stratified, group-aware).
        splits: ``[n_source]`` split names to use instead (``compare`` passes one split to all backbones).
        n_resamples: bootstrap resamples per CI (>= 1000 recommended).
        ordinal: labels are ordered (quadratic-weighted kappa).
        out: directory for the JSON run record.
        label: how tables name this run (default the backbone name), e.g. ``"demo:fmnist-vit (tome:r=2)"``.
        exclude_leaked: also score each classification protocol without the test items whose nearest train
            item has cosine >= ``leak_threshold`` (or whose group crosses splits), as a paired difference with
            CI against the full test set (``details[protocol]["exclude_leaked"]``, ``details["leakage"]``;
            :mod:`vitlab.curation.leakage`).
        leak_threshold: cosine in [-1, 1], or ``"auto"`` (calibrated on augmented copies, :mod:`vitlab.curation.calibrate`).
        **embed_kwargs: passed to the embedding store (``batch_size``, ``num_workers``, ``progress``...).

    Example:
        >>> import vitlab
        >>> res = vitlab.evaluate("demo:fmnist-vit", "sample:digits?limit=200", protocols="knn", n_resamples=20,
        ...                       progress=False)
        >>> top1 = res.record.metrics["knn"]["top1"]
        >>> top1["low"] <= top1["value"] <= top1["high"]
        True
    """
    # every cheap check first: nothing is loaded, downloaded or embedded before the config is known good
    protos = check_eval_config(protocols=protocols, test_fraction=test_fraction, n_resamples=n_resamples,
                               pool=pool, device=device, out=out, **embed_kwargs)
    if exclude_leaked and leak_threshold != "auto":
        from vitlab.curation.semantic import check_threshold

        leak_threshold = check_threshold(leak_threshold, "leak_threshold")
    source = load_source(data)
    _check_data(source, protos)
    on_bags = protos[0].view == "bags"
    if on_bags and exclude_leaked:
        raise ConfigError("exclude_leaked checks test images against training images; MIL protocols score bags "
                          "(patients in cross-validation folds are disjoint by construction). Drop it.")
    features_only = on_bags and _is_feature_bags(source)
    if features_only and backbone is not None:
        raise ConfigError(f"{source.uri} holds precomputed features, so no backbone embeds it; drop --backbone "
                          f"({getattr(backbone, 'name', backbone)}).")
    if not features_only:
        if backbone is None:
            raise ConfigError(f"{source.uri}: give a backbone to embed the images (--backbone).")
        if isinstance(backbone, str):
            backbone = load_backbone(backbone, pretrained=pretrained, device=device or "cpu")
        _check_backbone(backbone, protos)
        if pool == "auto":
            pool = "cls" if backbone.spec.has_cls_token else "mean"
    t0 = time.perf_counter()
    store = EmbeddingStore(cache_dir)
    emb = None if features_only else store.get_or_compute(backbone, source, layers=layers, pool=pool, **embed_kwargs)
    t_embed = time.perf_counter() - t0
    if on_bags:
        views = BagViews(source, emb, protos)
        train = test = None
    else:
        X = np.asarray(emb.get(), dtype=np.float32)
        y = emb.labels
        groups = np.asarray(emb.groups) if emb.groups is not None else None
        if splits is not None:
            if len(splits) != len(source):
                raise ConfigError(f"splits has {len(splits)} entries but {source.uri} has {len(source)} samples.")
            split = np.asarray(splits)[np.asarray(emb.index)]
            split_origin = "given"
        else:
            split = emb.splits(seed=seed, test_fraction=test_fraction)
            split_origin = ("split column" if emb.split_column is not None
                            else f"seeded stratified (test {test_fraction})")
        tr, te = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
        if any(p.needs_labels and p.task in ("classification", "episodes") for p in protos):
            check_split_classes(y, tr, te, emb.classes)
        elif len(tr) == 0 or len(te) == 0:
            raise DataError(f"the split has {len(tr)} train and {len(te)} test samples; both must be non-empty. "
                            "Check the split column or test_fraction.")
        ids = list(emb.ids)
        views = Views(backbone, source, emb, store, X, y, groups, ids, embed_kwargs)
        train, test = views.pooled(tr), views.pooled(te)
    n_classes = len(source.classes)
    metrics, hparams, details, timings, results = {}, {}, {}, {"embed_s": round(t_embed, 3)}, {}
    for proto in protos:
        name = proto.label
        t1 = time.perf_counter()
        if on_bags:
            p_train, p_test = views.train, views.test
        elif getattr(proto, "uses_roles", False) and (source.roles is not None or source.positives is not None):
            p_train, p_test = views.by_roles(tr, te)
        else:
            p_train, p_test = (train, test) if proto.view == "pooled" else views.for_protocol(proto, tr, te)
        timings[f"{name}_inputs_s"] = round(time.perf_counter() - t1, 3)
        t1 = time.perf_counter()
        res = proto.run(p_train, p_test, seed=seed, n_classes=n_classes, device=device or "cpu")
        timings[f"{name}_s"] = round(time.perf_counter() - t1, 3)
        for key, r in [(name, res), *((name + suffix, c) for suffix, c in res.companions.items())]:
            results[key] = r
            hparams[key] = r.hparams
            details[key] = dict(r.details)
            metrics[key], extra = scorer_for(r.task).score(r, n_resamples=n_resamples, seed=seed, ordinal=ordinal)
            details[key].update(extra)
            details[key]["task"] = r.task
        if res.task == "classification" and train is not None:
            details[name]["gallery"] = _gallery(train, test, res.outputs["proba"], ids, seed)
    if exclude_leaked:
        t1 = time.perf_counter()
        details["leakage"] = _exclude_leaked(results, details, backbone, source, store, emb, X, split, ids, groups,
                                             leak_threshold, n_resamples, seed, {"layers": layers, "pool": pool,
                                                                                 **embed_kwargs})
        timings["leakage_s"] = round(time.perf_counter() - t1, 3)
    # every pair of results of this run on the same units (zeroshot against linear; MIL heads on the same bags)
    protocol_pairs = pair_results(results, n_resamples=n_resamples, seed=seed)
    if protocol_pairs:
        details["protocol_pairs"] = protocol_pairs
    config = {"backbone": label or ("features" if backbone is None else backbone.name), "source_backbone": None if backbone is None else backbone.name,
              "accel": None if backbone is None else backbone.accel, "data": source.uri,
              "dataset": dataset_name or source.uri, "protocols": list(results),
              "layers": None if emb is None else list(emb.layers), "layer": None if emb is None else emb.layers[-1],
              "pool": None if emb is None else pool, "n_resamples": n_resamples, "seed": seed, "ordinal": ordinal,
              "protocol_config": {p.label: p.to_dict() for p in protos}}
    heads = {getattr(p, "headline", None) for p in protos}
    if len(heads) == 1 and None not in heads:
        config["headline"] = heads.pop()
    if on_bags:
        config.update(views.config(results[protos[0].label]))
        seeds = {"folds": seed, "heads": seed, "bootstrap": seed}
        data_details = views.data_details()
    else:
        config.update(test_fraction=test_fraction, split_origin=split_origin,
                      **({"exclude_leaked": True, "leak_threshold": leak_threshold} if exclude_leaked else {}))
        seeds = {"split": seed, "protocols": seed, "bootstrap": seed}
        data_details = {"classes": emb.classes, "n_train": int(len(tr)), "n_test": int(len(te)), "skipped": emb.skipped}
    record = start_record("eval", config, backbone=backbone, source=source,
                          embeddings=None if emb is None else emb.digest, seeds=seeds)
    record.metrics, record.hparams = metrics, hparams
    record.details = {**details, "data": data_details}
    record.timings = {**timings, **({} if emb is None else {"embedding_stats": emb.stats,
                                                            "embeddings_from_cache": emb.from_cache})}
    path = record.save(out) if out is not None else None
    if on_bags:  # cross-fitted: the scored units are the cross-validation bags
        first = results[protos[0].label]
        return EvalResult(record, results, first.outputs["y"], list(first.units), first.groups, emb, path)
    return EvalResult(record, results, test.y, list(test.ids), test.groups, emb, path)


def _exclude_leaked(results: dict[str, Result], details: dict[str, Any], backbone: Backbone, source: DataSource,
                    store: EmbeddingStore, emb: Embeddings, X: np.ndarray, split: np.ndarray, ids: list[str],
                    groups: np.ndarray | None, threshold: float | str, n_resamples: int, seed: int,
                    embed_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``exclude_leaked=True``: leaked test items and, per classification protocol, the paired clean-vs-full top-1."""
    from vitlab.curation.calibrate import calibrate
    from vitlab.curation.leakage import exclude_leaked

    cal = None
    if threshold == "auto":
        cal = calibrate(backbone, source, X, np.asarray(emb.index), store, seed=seed, embed_kwargs=embed_kwargs)
        threshold = cal.threshold
    summary, per = exclude_leaked(results, X, split, ids, float(threshold), groups=groups, labels=emb.labels,
                                  n_resamples=n_resamples, seed=seed)
    for name, eff in per.items():
        details[name]["exclude_leaked"] = eff
    if cal is not None:
        summary["calibration"] = {k: v for k, v in cal.to_dict().items() if k not in ("positives", "negatives", "pos_kinds")}
    return summary


def check_eval_config(*, protocols: str | Protocol | list[str | Protocol] = "knn,linear,fewshot",
                      test_fraction: float = 0.2, n_resamples: int = 1000, pool: str = "auto",
                      device: str | None = None, out: str | Path | None = None,
                      **embed_kwargs: Any) -> list[Protocol]:
    """Validate an evaluation's settings before anything expensive; returns the parsed protocols.

    Raises a one-line :class:`ConfigError` naming the value and the fix.

    Example:
        >>> check_eval_config(protocols="knn", test_fraction=1.5)
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: test_fraction must be between 0 and 1 (exclusive), e.g. 0.2; got 1.5.
    """
    protos = parse_protocols(protocols)
    on_bags = [p.view == "bags" for p in protos]
    if any(on_bags) and not all(on_bags):
        raise ConfigError("MIL protocols (mil-<head>) score bags and cannot be mixed with instance protocols "
                          f"({', '.join(p.label for p, b in zip(protos, on_bags) if not b)}) in one run; run them "
                          "separately.")
    check_fractions(test_fraction)
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1 (1000+ recommended), got {n_resamples}.")
    if pool != "auto":
        check_pool(pool)
    workers = embed_kwargs.get("num_workers")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or workers < 0):
        raise ConfigError(f"num_workers must be a whole number >= 0 (0 = load images in the main process), "
                          f"got {workers!r}.")
    batch = embed_kwargs.get("batch_size")
    if batch is not None and (not isinstance(batch, (int, np.integer)) or batch < 1):
        raise ConfigError(f"batch_size must be a whole number >= 1, got {batch!r}.")
    check_output_dir(out, "out")
    return protos


def _is_feature_bags(source: DataSource) -> bool:
    from vitlab.data.bag_features import FeatureBagSource

    return isinstance(source, FeatureBagSource)


def _check_data(source: DataSource, protos: list[Protocol]) -> None:
    """What the data must hold for these protocols: labels, masks, bags (one clear line each)."""
    if protos and protos[0].view == "bags":
        from vitlab.data.bag_table import BagInfo

        if not isinstance(source, BagInfo):
            raise DataError(f"{getattr(source, 'uri', source)} is not a bag source: MIL needs bags:<manifest> "
                            "(bag_id, label, patient_id, path or features columns) or sample:fashion-mnist-bags.")
        return
    labelled = [p.label for p in protos  # explicit positives replace labels for retrieval
                if p.needs_labels and not (getattr(p, "uses_roles", False) and source.positives is not None)]
    if source.labels is None and labelled:
        hint = (" It has masks: use a segmentation protocol (seg-linear, seg-knn)." if source.has_masks else "")
        raise DataError(f"{source.uri} has no labels, needed by {', '.join(labelled)}: use labelled data (class "
                        f"subfolders, or a label column).{hint}")
    masked = [p.label for p in protos if p.needs_masks]
    if masked and not source.has_masks:
        raise DataError(f"{source.uri} has no segmentation masks, needed by {', '.join(masked)}: use seg:<dir> "
                        "(images/ + masks/), a csv: manifest with a mask column, or sample:fashion-mnist-mosaic.")


def _check_backbone(backbone: Backbone, protos: list[Protocol]) -> None:
    """What the backbone must provide: a text tower (zero-shot), patch tokens (dense protocols)."""
    for p in protos:
        if p.view == "embed" and not backbone.has_text:
            raise ConfigError(f"protocol {p.label} needs an image–text backbone with a text tower; {backbone.name} "
                              "has none. Use e.g. open_clip:ViT-B-32/laion2b_s34b_b79k or hf:openai/clip-vit-base-patch32.")
        if p.view == "tokens":
            from vitlab.store.store import check_patch_tokens

            try:
                check_patch_tokens(backbone)
            except ConfigError:
                raise ConfigError(f"protocol {p.label} works on patch tokens, and {backbone.name} has none (its one "
                                  "token is the whole image); use a ViT backbone.") from None
            backbone.resolve_layers(list(p.config.layers))


def check_split_classes(y: np.ndarray, tr: np.ndarray, te: np.ndarray, classes: list[str]) -> None:
    """One :class:`DataError` line when a train/test split cannot be scored: an empty side, or a class with no
    training sample (what ``vitlab eval`` and ``vitlab tune`` check before any work).

    Example:
        >>> check_split_classes(np.array([0, 1, 0, 1]), np.array([0, 1]), np.array([2, 3]), ["a", "b"])
    """
    if len(te) == 0 or len(tr) == 0:
        raise DataError(f"the split has {len(tr)} train and {len(te)} test samples; both must be non-empty. "
                        "Check the split column or test_fraction.")
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(f"only one class ({classes[int(present[0])]!r}) is present; classification needs >= 2.")
    missing = sorted(set(present.tolist()) - set(np.unique(y[tr]).tolist()))
    if missing:
        names = ", ".join(repr(classes[i]) for i in missing)
        raise DataError(f"class(es) {names} have no training samples (all fell in test). "
                        "Add training samples for them or change the split.")
