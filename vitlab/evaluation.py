"""``vitlab.evaluate`` (this module is ``vitlab.evaluation``): protocols on cached embeddings, every metric with a 95% CI.

Data flows one way: source → backbone → store → protocol (:mod:`vitlab.protocols`) →
scorer of the protocol's task (:mod:`vitlab.scorers`) → run record.
"""

from __future__ import annotations

import dataclasses
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
from vitlab.record import RunRecord, check_output_dir, start_record
from vitlab.scorers import pair_results, scorer_for
from vitlab.store import Embeddings, EmbeddingStore

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
        """A metric's value; ``name`` defaults to the protocol's headline metric (top1, recall@1, miou...)."""
        if name is None:
            name = scorer_for(self.results[protocol].task).headline_for(set(self.record.metrics[protocol]))
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
            :mod:`vitlab.curate.leakage`).
        leak_threshold: cosine in [-1, 1], or ``"auto"`` (calibrated on augmented copies, :mod:`vitlab.curate.calibrate`).
        **embed_kwargs: passed to the embedding store (``batch_size``, ``num_workers``, ``progress``...).

    Example:
        >>> res = vitlab.evaluate("demo:fmnist-vit", "sample:fashion-mnist", protocols="knn")  # doctest: +SKIP
        >>> res.record.metrics["knn"]["top1"]  # doctest: +SKIP
        {'value': 0.86, 'low': 0.83, 'high': 0.89, ...}
    """
    # every cheap check first: nothing is loaded, downloaded or embedded before the config is known good
    protos = check_eval_config(protocols=protocols, test_fraction=test_fraction, n_resamples=n_resamples,
                               pool=pool, device=device, out=out, **embed_kwargs)
    if exclude_leaked and leak_threshold != "auto":
        from vitlab.curate.semantic import check_threshold

        leak_threshold = check_threshold(leak_threshold, "leak_threshold")
    source = load_source(data)
    _check_data(source, protos)
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, pretrained=pretrained, device=device or "cpu")
    _check_backbone(backbone, protos)
    if pool == "auto":
        pool = "cls" if backbone.spec.has_cls_token else "mean"
    t0 = time.perf_counter()
    store = EmbeddingStore(cache_dir)
    emb = store.get_or_compute(backbone, source, layers=layers, pool=pool, **embed_kwargs)
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
    if any(p.needs_labels and p.task in ("classification", "episodes") for p in protos):
        _check_classes(y, tr, te, emb.classes)
    elif len(tr) == 0 or len(te) == 0:
        raise DataError(f"the split has {len(tr)} train and {len(te)} test samples; both must be non-empty. "
                        "Check the split column or test_fraction.")
    ids = list(emb.ids)
    views = _Views(backbone, source, emb, store, X, y, groups, ids, embed_kwargs)
    train, test = views.pooled(tr), views.pooled(te)
    metrics, hparams, details, timings, results = {}, {}, {}, {"embed_s": round(t_embed, 3)}, {}
    for proto in protos:
        name = proto.label
        t1 = time.perf_counter()
        if getattr(proto, "uses_roles", False) and (source.roles is not None or source.positives is not None):
            p_train, p_test = views.by_roles(tr, te)
        else:
            p_train, p_test = (train, test) if proto.view == "pooled" else views.for_protocol(proto, tr, te)
        timings[f"{name}_inputs_s"] = round(time.perf_counter() - t1, 3)
        t1 = time.perf_counter()
        res = proto.run(p_train, p_test, seed=seed, n_classes=n_classes, device=device or "cpu")
        timings[f"{name}_s"] = round(time.perf_counter() - t1, 3)
        results[name] = res
        hparams[name] = res.hparams
        details[name] = dict(res.details)
        metrics[name], extra = scorer_for(res.task).score(res, n_resamples=n_resamples, seed=seed, ordinal=ordinal)
        details[name].update(extra)
        details[name]["task"] = res.task
        if res.task == "classification":
            details[name]["gallery"] = _gallery(train, test, res.outputs["proba"], ids, seed)
    if exclude_leaked:
        t1 = time.perf_counter()
        details["leakage"] = _exclude_leaked(results, details, backbone, source, store, emb, X, split, ids, groups,
                                             leak_threshold, n_resamples, seed, {"layers": layers, "pool": pool,
                                                                                 **embed_kwargs})
        timings["leakage_s"] = round(time.perf_counter() - t1, 3)
    # every pair of protocols of this run that scored the same units (e.g. zeroshot against linear)
    protocol_pairs = pair_results(results, n_resamples=n_resamples, seed=seed)
    if protocol_pairs:
        details["protocol_pairs"] = protocol_pairs
    record = start_record(
        "eval",
        {"backbone": label or backbone.name, "source_backbone": backbone.name, "accel": backbone.accel,
         "data": source.uri, "dataset": dataset_name or source.uri,
         "protocols": [p.label for p in protos], "layers": list(emb.layers), "layer": emb.layers[-1],
         "pool": pool, "test_fraction": test_fraction, "split_origin": split_origin,
         "n_resamples": n_resamples, "seed": seed, "ordinal": ordinal,
         "protocol_config": {p.label: p.to_dict() for p in protos},
         **({"exclude_leaked": True, "leak_threshold": leak_threshold} if exclude_leaked else {})},
        backbone=backbone, source=source, embeddings=emb.digest,
        seeds={"split": seed, "protocols": seed, "bootstrap": seed})
    record.metrics, record.hparams = metrics, hparams
    record.details = {**details, "data": {"classes": emb.classes, "n_train": int(len(tr)), "n_test": int(len(te)),
                                          "skipped": emb.skipped}}
    record.timings = {**timings, "embedding_stats": emb.stats, "embeddings_from_cache": emb.from_cache}
    path = record.save(out) if out is not None else None
    return EvalResult(record, results, test.y, list(test.ids), test.groups, emb, path)


def _exclude_leaked(results: dict[str, Result], details: dict[str, Any], backbone: Backbone, source: DataSource,
                    store: EmbeddingStore, emb: Embeddings, X: np.ndarray, split: np.ndarray, ids: list[str],
                    groups: np.ndarray | None, threshold: float | str, n_resamples: int, seed: int,
                    embed_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``exclude_leaked=True``: leaked test items and, per classification protocol, the paired clean-vs-full top-1."""
    from vitlab.curate.calibrate import calibrate
    from vitlab.curate.leakage import exclude_leaked

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


def _protocol_pairs(results: dict[str, Result], *, n_resamples: int, seed: int) -> list[dict[str, Any]]:
    """Deprecated name of :func:`vitlab.scorers.pairing.pair_results` (kept while callers move)."""
    return pair_results(results, n_resamples=n_resamples, seed=seed)


def _check_data(source: DataSource, protos: list[Protocol]) -> None:
    """What the data must hold for these protocols: labels, masks (one clear line each)."""
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


class _Views:
    """Builds each protocol's train/test :class:`Split` from the store's views (pooled, tokens, embed)."""

    def __init__(self, backbone: Backbone, source: DataSource, emb: Embeddings, store: EmbeddingStore,
                 X: np.ndarray, y: np.ndarray | None, groups: np.ndarray | None, ids: list[str],
                 embed_kwargs: dict[str, Any]) -> None:
        self.backbone, self.source, self.emb, self.store = backbone, source, emb, store
        self.X, self.y, self.groups, self.ids, self.embed_kwargs = X, y, groups, ids, embed_kwargs

    def _base(self, rows: np.ndarray, X: np.ndarray | None) -> Split:
        return Split(None if X is None else X[rows], None if self.y is None else self.y[rows], rows,
                     None if self.groups is None else self.groups[rows], [self.ids[i] for i in rows])

    def pooled(self, rows: np.ndarray) -> Split:
        return self._base(rows, self.X)

    def by_roles(self, tr: np.ndarray, te: np.ndarray) -> tuple[Split, Split]:
        """Retrieval with explicit roles and/or positives: ``(gallery, queries)``. With a ``role`` column the
        manifest decides (the split is ignored); otherwise the training split is the gallery."""
        roles, positives = self.source.roles, self.source.positives
        if roles is not None:
            per_row = np.asarray([roles[int(i)] for i in np.asarray(self.emb.index)])
            tr = np.flatnonzero(np.isin(per_row, ("gallery", "both")))
            te = np.flatnonzero(np.isin(per_row, ("query", "both")))
            if not len(tr) or not len(te):
                raise DataError(f"{self.source.uri}: the role column gives {len(te)} queries and {len(tr)} gallery "
                                "items; retrieval needs both.")
        extra = {} if positives is None else {"positives": positives}
        return (dataclasses.replace(self.pooled(tr), extra=extra), dataclasses.replace(self.pooled(te), extra=extra))

    def for_protocol(self, proto: Protocol, tr: np.ndarray, te: np.ndarray) -> tuple[Split, Split]:
        if proto.view == "embed":
            return self._embed(proto, tr, te)
        if proto.view == "tokens":
            return self._tokens(proto, tr, te)
        raise ConfigError(f"protocol {proto.label} asks for an unknown view {proto.view!r}.")

    def _same_rows(self, other: Embeddings) -> None:
        if not np.array_equal(np.asarray(other.index), np.asarray(self.emb.index)):
            raise DataError("the token / embed view holds different images than the pooled view (an image was "
                            "skipped in one of them); fix or remove the bad images and run again.")

    def _embed(self, proto: Protocol, tr: np.ndarray, te: np.ndarray) -> tuple[Split, Split]:
        from vitlab.store.text_cache import text_embeddings

        last = self.backbone.spec.depth - 1
        emb = self.emb
        if last not in emb.layers:
            kw = {k: v for k, v in self.embed_kwargs.items() if k not in ("view", "token_dtype")}
            emb = self.store.get_or_compute(self.backbone, self.source, layers=-1, **kw)
            self._same_rows(emb)
        X = np.asarray(emb.get(last, "embed"), dtype=np.float32)
        names, templates = proto.prompts(list(emb.classes))
        text = text_embeddings(self.backbone, names, templates, cache_dir=self.store.root)
        extra = {"text_embeddings": text, "classnames": names}
        return (dataclasses.replace(self._base(tr, X), extra=extra),
                dataclasses.replace(self._base(te, X), extra=extra))

    def _tokens(self, proto: Protocol, tr: np.ndarray, te: np.ndarray) -> tuple[Split, Split]:
        layers = self.backbone.resolve_layers(list(proto.config.layers))
        kw = {k: v for k, v in self.embed_kwargs.items() if k != "view"}
        emb = self.store.get_or_compute(self.backbone, self.source, layers=list(layers), view="tokens", **kw)
        self._same_rows(emb)
        tokens = np.concatenate([np.asarray(emb.tokens(layer), dtype=np.float32) for layer in layers], axis=-1)
        grid = tuple(emb.grid)
        index = np.asarray(emb.index)
        pre = self.backbone.spec.preprocessing
        extra = {"classes": list(emb.classes), "ignore_index": self.source.ignore_index, "layers": list(layers)}

        def side(rows: np.ndarray) -> Split:
            masks = []
            for r in rows:
                m = self.source.mask(int(index[r]))
                t, left, h, w = pre.view_box(*m.shape)
                masks.append(m[t:t + h, left:left + w])
            return dataclasses.replace(self._base(rows, None), tokens=tokens[rows], grid=grid, masks=masks,
                                       extra=extra)

        return side(tr), side(te)


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
