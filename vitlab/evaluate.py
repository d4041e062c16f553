"""``vitlab.evaluate``: frozen-feature protocols on cached embeddings, every metric with a 95% CI."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.backbones import Backbone, load_backbone
from vitlab.backbones.base import check_pool
from vitlab.data import DataSource, load_source
from vitlab.data.splits import check_fractions
from vitlab.errors import ConfigError, DataError
from vitlab.metrics.classification import METRIC_FUNCTIONS, classification_metrics
from vitlab.protocols.runners import PROTOCOLS, EvalConfig, ProtocolOutput, Split, parse_protocols
from vitlab.report.record import RunRecord, check_output_dir
from vitlab.stats.bootstrap import bootstrap_ci
from vitlab.store import Embeddings, EmbeddingStore

GALLERY_SIZE = 12


@dataclass
class EvalResult:
    """A run record plus the in-memory predictions that paired tests need.

    Attributes:
        record: the :class:`RunRecord` (also written to ``out`` when given).
        proba: protocol → ``[n_test, C]`` test-set probabilities.
        y_test: ``[n_test]`` labels; test_ids: their sample ids; groups_test: their groups or ``None``.
        embeddings: the cached :class:`Embeddings` used.
    """

    record: RunRecord
    proba: dict[str, np.ndarray]
    y_test: np.ndarray
    test_ids: list[str]
    groups_test: np.ndarray | None
    embeddings: Embeddings
    path: Path | None = None

    def metric(self, protocol: str, name: str = "top1") -> float:
        return float(self.record.metrics[protocol][name]["value"])


def _scalar_metrics(n_classes: int, ordinal: bool) -> list[str]:
    names = ["top1"] + (["top5"] if n_classes > 5 else []) + ["balanced_accuracy", "macro_f1", "auroc"]
    return names + ["cohen_kappa_quadratic" if ordinal else "cohen_kappa"]


def metrics_with_ci(y: np.ndarray, proba: np.ndarray, groups: np.ndarray | None, *, ordinal: bool,
                    n_resamples: int, seed: int) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Every scalar metric with a seeded percentile-bootstrap CI (by group when groups exist)."""
    full = classification_metrics(y, proba, ordinal=ordinal)
    out = {}
    for name in _scalar_metrics(proba.shape[1], ordinal):
        ci = bootstrap_ci(METRIC_FUNCTIONS[name], y, proba, n_resamples=n_resamples, seed=seed, groups=groups)
        out[name] = {"value": ci.value, "low": ci.low, "high": ci.high, "n_resamples": ci.n_resamples,
                     "n_skipped": ci.n_skipped, "method": ci.method}
    details = {"per_class_recall": full["per_class_recall"], "confusion_matrix": full["confusion_matrix"]}
    return out, details


def _gallery(train: Split, test: Split, proba: np.ndarray, ids: list[str], seed: int) -> list[dict[str, Any]]:
    """Up to 12 misclassified test images with their 3 nearest training neighbours (cosine)."""
    pred = proba.argmax(1)
    wrong = np.flatnonzero(pred != test.y)
    if not len(wrong):
        return []
    pick = np.sort(np.random.default_rng(seed).choice(wrong, min(GALLERY_SIZE, len(wrong)), replace=False))
    a = test.X[pick] / np.linalg.norm(test.X[pick], axis=1, keepdims=True).clip(1e-12)
    b = train.X / np.linalg.norm(train.X, axis=1, keepdims=True).clip(1e-12)
    nn = np.argsort(-(a @ b.T), axis=1)[:, :3]
    return [{"id": ids[test.rows[i]], "true": int(test.y[i]), "pred": int(pred[i]),
             "neighbors": [{"id": ids[train.rows[j]], "label": int(train.y[j])} for j in row]}
            for i, row in zip(pick, nn)]


def evaluate(backbone: Backbone | str, data: DataSource | str, *, protocols: str | list[str] = "knn,linear,fewshot",
             layers: int | list[int] = -1, pool: str = "auto", seed: int = 0, test_fraction: float = 0.2,
             splits: np.ndarray | None = None, n_resamples: int = 1000, ordinal: bool = False,
             config: EvalConfig | None = None, pretrained: bool = True, device: str | None = None,
             cache_dir: str | Path | None = None, out: str | Path | None = None,
             dataset_name: str | None = None, label: str | None = None, **embed_kwargs: Any) -> EvalResult:
    """Evaluate one backbone on one labelled data source with frozen-feature protocols.

    Args:
        backbone, data: objects or names (``"demo:fmnist-vit"``, ``"sample:fashion-mnist"``).
        protocols: ``knn``, ``linear``, ``fewshot`` (comma-separated or a list).
        layers, pool: which embedding; ``pool="auto"`` = ``cls`` when the backbone has a class token, else ``mean``.
        seed: seeds the split, the protocols and the bootstrap.
        test_fraction: used when the data has no ``split`` column (stratified, group-aware).
        splits: ``[n_source]`` split names to use instead (``compare`` passes one split to all backbones).
        n_resamples: bootstrap resamples per CI (>= 1000 recommended).
        ordinal: labels are ordered (quadratic-weighted kappa).
        config: protocol settings (:class:`EvalConfig`).
        out: directory for the JSON run record.
        label: how tables name this run (default the backbone name), e.g. ``"demo:fmnist-vit (tome:r=2)"``.
        **embed_kwargs: passed to the embedding store (``batch_size``, ``num_workers``, ``progress``...).

    Example:
        >>> res = vitlab.evaluate("demo:fmnist-vit", "sample:fashion-mnist", protocols="knn")  # doctest: +SKIP
        >>> res.record.metrics["knn"]["top1"]  # doctest: +SKIP
        {'value': 0.86, 'low': 0.83, 'high': 0.89, ...}
    """
    # every cheap check first: nothing is loaded, downloaded or embedded before the config is known good
    names, cfg = check_eval_config(protocols=protocols, test_fraction=test_fraction, n_resamples=n_resamples,
                                   pool=pool, config=config, device=device, out=out, **embed_kwargs)
    source = load_source(data)
    if source.labels is None:
        raise DataError(f"{source.uri} has no labels; evaluation protocols need labelled data "
                        "(class subfolders, or a label column).")
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, pretrained=pretrained, device=device or "cpu")
    if pool == "auto":
        pool = "cls" if backbone.spec.has_cls_token else "mean"
    t0 = time.perf_counter()
    emb = EmbeddingStore(cache_dir).get_or_compute(backbone, source, layers=layers, pool=pool, **embed_kwargs)
    t_embed = time.perf_counter() - t0
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
        split_origin = "split column" if emb.split_column is not None else f"seeded stratified (test {test_fraction})"
    tr, te = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
    n_classes = len(emb.classes)
    _check_classes(y, tr, te, emb.classes)
    train = Split(X[tr], y[tr], tr, None if groups is None else groups[tr])
    test = Split(X[te], y[te], te, None if groups is None else groups[te])

    metrics, hparams, details, timings, proba = {}, {}, {}, {"embed_s": round(t_embed, 3)}, {}
    for name in names:
        t1 = time.perf_counter()
        res: ProtocolOutput = PROTOCOLS.get(name)(train, test, cfg, seed, n_classes)
        timings[f"{name}_s"] = round(time.perf_counter() - t1, 3)
        hparams[name] = res.hparams
        details[name] = dict(res.details)
        if res.proba is not None:
            proba[name] = res.proba
            metrics[name], extra = metrics_with_ci(test.y, res.proba, test.groups, ordinal=ordinal,
                                                   n_resamples=n_resamples, seed=seed)
            details[name].update(extra)
            details[name]["gallery"] = _gallery(train, test, res.proba, emb.ids, seed)
        if res.episodes:
            metrics[name] = {**metrics.get(name, {}), **res.episodes}
    record = RunRecord(
        kind="eval",
        config={"backbone": label or backbone.name, "source_backbone": backbone.name, "accel": backbone.accel,
                "data": source.uri, "dataset": dataset_name or source.uri,
                "protocols": names, "layers": list(emb.layers), "layer": emb.layers[-1], "pool": pool,
                "test_fraction": test_fraction, "split_origin": split_origin, "n_resamples": n_resamples,
                "ordinal": ordinal, "protocol_config": asdict(cfg)},
        fingerprints={"backbone": backbone.fingerprint(), "data": {"kind": source.kind, "uri": source.uri,
                      "fingerprint": source.fingerprint, "n": len(source)}, "embeddings": emb.digest},
        metrics=metrics, hparams=hparams,
        details={**details, "data": {"classes": emb.classes, "n_train": int(len(tr)), "n_test": int(len(te)),
                                     "skipped": emb.skipped}},
        timings={**timings, "embedding_stats": emb.stats, "embeddings_from_cache": emb.from_cache},
        seeds={"split": seed, "protocols": seed, "bootstrap": seed})
    path = record.save(out) if out is not None else None
    return EvalResult(record, proba, test.y, [emb.ids[i] for i in te], test.groups, emb, path)


def check_eval_config(*, protocols: str | list[str] = "knn,linear,fewshot", test_fraction: float = 0.2,
                      n_resamples: int = 1000, pool: str = "auto", config: EvalConfig | None = None,
                      device: str | None = None, out: str | Path | None = None,
                      **embed_kwargs: Any) -> tuple[list[str], EvalConfig]:
    """Validate an evaluation's settings before anything expensive; returns (protocol names, config).

    Raises a one-line :class:`ConfigError` naming the value and the fix.

    Example:
        >>> check_eval_config(protocols="knn", test_fraction=1.5)
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: test_fraction must be between 0 and 1 (exclusive), e.g. 0.2; got 1.5.
    """
    names = parse_protocols(protocols)
    cfg = config or EvalConfig(device=device or "cpu")
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
    return names, cfg


def _check_classes(y: np.ndarray, tr: np.ndarray, te: np.ndarray, classes: list[str]) -> None:
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
