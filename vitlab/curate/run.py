"""``vitlab.curate``: duplicates (exact, perceptual, semantic), leakage across splits and score filters,
as one run record (kind ``curate``), an optional HTML report and an optional clean manifest.

Data flows one way: source -> backbone -> store (the cached embeddings) -> :mod:`vitlab.curate`
pieces -> :class:`~vitlab.record.RunRecord` -> report.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.curate.calibrate import AUGMENTATIONS, Calibration, calibrate, check_calibration_size, check_edits
from vitlab.curate.clusters import Group, removal_curve, removed_rows, star_clusters
from vitlab.curate.filters import FilterResult, outlier_filter, prompt_filter, target_filter
from vitlab.curate.hashing import exact_groups, hash_images, perceptual_pairs
from vitlab.curate.leakage import Leakage, check_has_splits, clean_vs_full, find_leaks
from vitlab.curate.manifest import check_has_files, check_new_manifest
from vitlab.curate.manifest import write_manifest as _write_manifest
from vitlab.curate.semantic import NeighbourTable, check_threshold, neighbour_table
from vitlab.errors import ConfigError
from vitlab.record import RunRecord, check_output_dir, check_output_file

__all__ = ["curate", "CurateResult"]

MAX_GROUPS_RECORDED = 200


@dataclass
class CurateResult:
    """What :func:`curate` found.

    Attributes:
        record: the ``curate`` run record (written to ``out`` when given).
        threshold: the semantic cosine threshold used. calibration: the ``auto`` evidence, or ``None``.
        groups: semantic duplicate groups (star clusters). removed: ``[r]`` embedding rows removed by
            the keep rule and exact duplicates. kept: ``[n]`` bool, kept after dedup and filters.
        leakage: the split's :class:`~vitlab.curate.leakage.Leakage`, or ``None``.
        filters: the filter results. ids: ``[n]`` ids of the embedding rows. index: their source rows.
        manifest, report, path: written files (or ``None``).
    """

    record: RunRecord
    threshold: float
    calibration: Calibration | None
    groups: list[Group]
    removed: np.ndarray
    kept: np.ndarray
    leakage: Leakage | None
    filters: list[FilterResult] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    index: np.ndarray | None = None
    manifest: Path | None = None
    report: Path | None = None
    path: Path | None = None


def _curve_grid(t: float) -> list[float]:
    lo = min(0.8, t - 0.05)
    return sorted({round(float(v), 4) for v in np.linspace(max(lo, -1.0), 1.0, 21)} | {round(t, 6)})


def _check(threshold: Any, target_min: Any, prompt_min: Any, outlier_drop: float, outlier_k: int, k: int,
           perceptual_distance: int, write: Any, report: Any, out: Any) -> float | str:
    if isinstance(threshold, str) and threshold.strip().lower() == "auto":
        thr: float | str = "auto"
    else:
        thr = check_threshold(threshold)
    for name, v in (("target_min", target_min), ("prompt_min", prompt_min)):
        if v is not None:
            check_threshold(v, name)
    if not 0.0 <= outlier_drop < 1.0:
        raise ConfigError(f"outlier_drop must be a fraction in [0, 1), e.g. 0.01; got {outlier_drop}.")
    if outlier_k < 1 or k < 1:
        raise ConfigError(f"k and outlier_k must be >= 1, got {k} and {outlier_k}.")
    if not 0 <= perceptual_distance <= 64:
        raise ConfigError(f"perceptual_distance must be 0..64 bits of the 64-bit pHash, got {perceptual_distance}.")
    check_new_manifest(write)
    check_output_file(report, "--report")
    check_output_dir(out, "--out")
    return thr


def curate(backbone: Any, data: Any, *, dedup: bool = True, threshold: float | str = "auto", k: int = 16,
           backend: str = "auto", perceptual_distance: int = 4, leakage: bool | None = None,
           test_fraction: float = 0.2, protocol: str = "knn", n_resamples: int = 1000, seed: int = 0,
           target: Any = None, target_min: float | None = None, prompts: bool = False,
           prompt_min: float | None = None, templates: str = "simple", outlier_k: int = 10,
           outlier_drop: float = 0.0, calibration_sample: int = 200, recall: float = 0.99,
           max_fpr: float | None = None, edits: str | tuple[str, ...] = AUGMENTATIONS,
           write_manifest: str | Path | None = None, report: str | Path | None = None,
           layers: int = -1, pool: str = "auto", pretrained: bool = True, device: str | None = None,
           cache_dir: str | Path | None = None, out: str | Path | None = None, **embed_kwargs: Any) -> CurateResult:
    """Find duplicates and leakage in a data source and score filters, on its cached embeddings.

    Args:
        backbone, data: objects or names (``"demo:fmnist-vit"``, ``"folder:./imgs"``).
        dedup: remove duplicates (exact digests and semantic star groups, one kept per group) from the kept set.
        threshold: semantic cosine threshold in ``[-1, 1]``, or ``"auto"`` (calibrated on copies of
            ``calibration_sample`` images under ``edits`` to ``recall``; with ``max_fpr``, at most that fraction
            of random pairs above it: :mod:`vitlab.curate.calibrate`).
        k: neighbours searched per item. backend: ``auto`` (exact up to 200k items, then faiss with measured
            recall), ``exact`` or ``faiss``.
        perceptual_distance: largest pHash Hamming distance (of 64 bits) reported as a perceptual pair.
        leakage: check the eval split (``None``: whenever the data has a split column, labels or groups).
        test_fraction, seed: the split eval would draw when the data has no split column.
        protocol: the protocol re-run without leaked test items (a paired difference with CI).
        target, target_min: a target data source; items whose nearest target item has cosine < target_min are dropped.
        prompts, prompt_min, templates: image-text backbones: cosine to the own class prompt (dropped below prompt_min).
        outlier_k, outlier_drop: k-NN-distance outlier score; the ``outlier_drop`` fraction farthest is dropped.
        write_manifest: a NEW csv file listing the kept items (``folder:``/``csv:`` data only).
        report: an HTML report to write. out: a folder for the JSON run record.
        **embed_kwargs: ``batch_size``, ``num_workers``, ``progress``... for the embedding store.

    Returns:
        :class:`CurateResult`.

    Raises:
        ConfigError: a threshold outside [-1, 1], a manifest path that exists, bad options (before any work).
        DataError: data without splits asked for leakage, too few images to calibrate, no files for a manifest.

    Example:
        >>> res = vitlab.curate("demo:fmnist-vit", "folder:./imgs", threshold="auto")  # doctest: +SKIP
        >>> res.threshold, len(res.groups), res.record.details["semantic"]["fraction_removed"]  # doctest: +SKIP
        (0.962, 12, 0.024)
    """
    from vitlab.backbones import load_backbone
    from vitlab.data import load_source
    from vitlab.data.splits import check_fractions
    from vitlab.protocols.base import parse_protocols
    from vitlab.store import EmbeddingStore

    thr = _check(threshold, target_min, prompt_min, outlier_drop, outlier_k, k, perceptual_distance, write_manifest,
                 report, out)
    check_fractions(test_fraction)
    edits = check_edits(edits)
    proto = parse_protocols(protocol)[0]
    source = load_source(data)
    if write_manifest is not None:
        check_has_files(source)
    if leakage:
        check_has_splits(source.uri, source.split_column is not None, source.labels is not None,
                         source.groups is not None)
    if thr == "auto":
        check_calibration_size(len(source), source.uri)
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, pretrained=pretrained, device=device or "cpu")
    if prompts and not backbone.has_text:
        raise ConfigError(f"the prompt filter needs an image–text backbone with a text tower; {backbone.name} has none.")
    if pool == "auto":
        pool = "cls" if backbone.spec.has_cls_token else "mean"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    store = EmbeddingStore(cache_dir)
    kw = {"layers": layers, "pool": pool, **embed_kwargs}
    emb = store.get_or_compute(backbone, source, **kw)
    X = np.array(emb.get(), dtype=np.float32)  # a writable copy of the memory-mapped rows
    index, ids, n = np.asarray(emb.index), list(emb.ids), len(emb.ids)
    timings["embed_s"] = round(time.perf_counter() - t0, 3)
    details: dict[str, Any] = {"data": {"n": n, "classes": list(emb.classes), "skipped": emb.skipped}}

    cal = None
    if thr == "auto":
        t1 = time.perf_counter()
        cal = calibrate(backbone, source, X, index, store, sample=calibration_sample, recall=recall, max_fpr=max_fpr,
                        seed=seed, edits=edits, embed_kwargs=kw)
        thr = cal.threshold
        details["calibration"] = cal.to_dict()
        timings["calibrate_s"] = round(time.perf_counter() - t1, 3)
    t_sem = float(thr)

    t1 = time.perf_counter()
    removed = np.zeros(0, np.int64)
    groups: list[Group] = []
    ex: list[list[int]] = []
    pp: list[tuple[int, int, int]] = []
    if dedup:
        from vitlab.store.progress import image_progress, show_progress

        with image_progress(disable=not show_progress(embed_kwargs.get("progress"))) as bar:
            task = bar.add_task("hash images", total=n)
            h = hash_images((source.load_image(int(i)) for i in index), on_item=lambda _: bar.advance(task))
        ex = exact_groups(h.exact)
        pp = perceptual_pairs(h.phash, perceptual_distance, k=k)
        timings["hash_s"] = round(time.perf_counter() - t1, 3)
        t1 = time.perf_counter()
        table = neighbour_table(X, k=k, backend=backend, seed=seed)
        timings["search_s"] = round(time.perf_counter() - t1, 3)
        groups = star_clusters(table.indices, table.scores, t_sem, X)
        sem_pairs = table.pairs(t_sem)
        removed = np.union1d(removed_rows(groups), [r for g in ex for r in g[1:]]).astype(np.int64)
        details["exact"] = {"n_groups": len(ex), "n_duplicates": sum(len(g) - 1 for g in ex),
                            "groups": [[ids[r] for r in g] for g in ex[:MAX_GROUPS_RECORDED]]}
        sem_set = {(a, b) for a, b, _ in sem_pairs}
        details["perceptual"] = {"max_distance": perceptual_distance, "n_pairs": len(pp),
                                 "n_also_semantic": sum((a, b) in sem_set for a, b, _ in pp),
                                 "pairs": [{"a": ids[a], "b": ids[b], "distance": d} for a, b, d in pp[:MAX_GROUPS_RECORDED]]}
        details["semantic"] = _semantic_details(table, groups, sem_pairs, ids, t_sem, n, X, removed)
        if details["semantic"]["saturated_items"]:
            warnings.warn(f"{details['semantic']['saturated_items']} item(s) have all k={table.scores.shape[1]} "
                          "neighbours above the threshold: their duplicate groups may be larger than seen. Raise k.",
                          stacklevel=2)
        timings["cluster_s"] = round(time.perf_counter() - t1, 3)

    split = None
    leak: Leakage | None = None
    has_splits = source.split_column is not None or source.labels is not None or source.groups is not None
    if leakage or (leakage is None and has_splits):
        t1 = time.perf_counter()
        split = emb.splits(seed=seed, test_fraction=test_fraction)
        leak = find_leaks(X, split, t_sem, ids=ids, groups=emb.groups, labels=emb.labels)
        details["leakage"] = leak.summary()
        details["leakage"]["split_origin"] = ("split column" if emb.split_column is not None
                                              else f"seeded stratified (test {test_fraction})")
        if dedup:
            details["leakage"].update(_cross_split(ex, pp, split, ids))
        if emb.labels is not None and proto.task == "classification":
            details["leakage"]["effect"] = _effect(proto, X, emb, split, leak, seed, n_resamples)
        timings["leakage_s"] = round(time.perf_counter() - t1, 3)

    filters = _filters(backbone, store, kw, X, emb, target, target_min, prompts, prompt_min, templates,
                       outlier_k, outlier_drop)
    details["filters"] = [f.summary() for f in filters]
    kept = np.ones(n, bool)
    kept[removed] = False
    for f in filters:
        kept &= f.kept
    details["kept"] = {"n": int(kept.sum()), "fraction": float(kept.mean()) if n else 0.0,
                       "removed_by_dedup": int(len(removed)),
                       "removed_by_filters": {f.name: int((~f.kept).sum()) for f in filters}}
    record = RunRecord(
        kind="curate",
        config={"backbone": backbone.name, "data": source.uri, "dedup": dedup, "threshold": threshold,
                "threshold_used": t_sem, "k": k, "backend": backend, "perceptual_distance": perceptual_distance,
                "layer": emb.layers[-1], "pool": pool, "protocol": proto.label, "test_fraction": test_fraction,
                "target": getattr(target, "uri", target), "target_min": target_min, "prompts": prompts,
                "prompt_min": prompt_min, "outlier_k": outlier_k, "outlier_drop": outlier_drop,
                "recall": recall, "max_fpr": max_fpr, "calibration_sample": calibration_sample, "edits": list(edits),
                "n_resamples": n_resamples},
        metrics={}, details=details, timings=timings, seeds={"split": seed, "calibration": seed, "bootstrap": seed},
        fingerprints={"backbone": backbone.fingerprint(), "embeddings": emb.digest,
                      "data": {"kind": source.kind, "uri": source.uri, "fingerprint": source.fingerprint,
                               "n": len(source)}})
    manifest = None
    if write_manifest is not None:
        full_split = None
        if split is not None:
            full_split = np.full(len(source), "train", dtype=object)
            full_split[index] = split
        manifest = _write_manifest(write_manifest, source, index[kept], full_split)
        record.details["kept"]["manifest"] = str(manifest)
    path = record.save(out) if out is not None else None
    html = None
    if report is not None:
        from vitlab.report import curate_section  # noqa: F401  (registers the "curate" section)
        from vitlab.report import render_html

        html = render_html([record], report)
    return CurateResult(record, t_sem, cal, groups, removed, kept, leak, filters, ids, index, manifest, html, path)



def _semantic_details(table: NeighbourTable, groups: list[Group], pairs: list[tuple[int, int, float]],
                      ids: list[str], t: float, n: int, X: np.ndarray, removed: np.ndarray) -> dict[str, Any]:
    big = sorted(groups, key=lambda g: (-len(g.members), g.min_similarity))
    saturated = int(np.sum(table.scores[:, -1] >= t)) if table.scores.size else 0
    return {"threshold": t, "backend": table.backend, "k": int(table.scores.shape[1]), "recall": table.recall,
            "recall_queries": table.recall_queries, "n_pairs": len(pairs), "n_groups": len(groups),
            "n_removed": int(sum(len(g.members) - 1 for g in groups)),
            "fraction_removed": float(sum(len(g.members) - 1 for g in groups) / n),
            "fraction_removed_total": float(len(removed) / n),
            "min_internal_similarity": min((g.min_similarity for g in groups), default=None),
            "saturated_items": saturated,
            "groups": [{"members": [ids[m] for m in g.members], "centre": ids[g.centre], "keep": ids[g.keep],
                        "min_similarity": g.min_similarity, "min_to_centre": g.min_to_centre}
                       for g in big[:MAX_GROUPS_RECORDED]],
            "curve": removal_curve(table.indices, table.scores, X, _curve_grid(t))}


def _cross_split(ex: list[list[int]], pp: list[tuple[int, int, int]], split: np.ndarray, ids: list[str]
                 ) -> dict[str, Any]:
    """Exact-duplicate groups and perceptual pairs with members on both sides of the split (test vs the rest)."""
    te = np.asarray(split) == "test"
    ex_x = [g for g in ex if te[g].any() and (~te[g]).any()]
    pp_x = [(a, b, d) for a, b, d in pp if te[a] != te[b]]
    return {"exact_cross_split": {"n_groups": len(ex_x), "n_test_items": int(sum(te[g].sum() for g in ex_x)),
                                  "groups": [[ids[r] for r in g] for g in ex_x[:MAX_GROUPS_RECORDED]]},
            "perceptual_cross_split": {"n_pairs": len(pp_x), "n_test_items": len({a if te[a] else b for a, b, _ in pp_x}),
                                       "pairs": [{"a": ids[a], "b": ids[b], "distance": d}
                                                 for a, b, d in pp_x[:MAX_GROUPS_RECORDED]]}}


def _effect(proto: Any, X: np.ndarray, emb: Any, split: np.ndarray, leak: Leakage, seed: int, n_resamples: int
            ) -> dict[str, Any]:
    """The protocol on the split, then top-1 without the leaked test items paired against the full test set."""
    from vitlab.protocols.base import Split

    y = emb.labels
    g = np.asarray(emb.groups) if emb.groups is not None else None
    tr, te = leak.train_rows, leak.test_rows
    if len(np.unique(y[tr])) < 2:
        return {"skipped": "fewer than 2 classes in train"}
    ids = list(emb.ids)

    def side(rows: np.ndarray) -> Split:
        return Split(X[rows], y[rows], rows, None if g is None else g[rows], [ids[i] for i in rows])

    res = proto.run(side(tr), side(te), seed=seed, n_classes=len(emb.classes))
    if not leak.leaked.any():
        return {"protocol": proto.label, "n_leaked": 0, "note": "no leaked test items: nothing to remove"}
    if leak.leaked.all():  # the rest of the report still stands: say so instead of failing the whole run
        return {"protocol": proto.label, "n_leaked": int(leak.leaked.sum()),
                "note": "every test item is leaked at this threshold: nothing is left to evaluate (threshold too low?)"}
    groups = res.groups if res.groups is not None and len(np.unique(res.groups)) >= 2 else None
    out = clean_vs_full(res.outputs["y"], res.outputs["proba"], leak.leaked, groups=groups,
                        n_resamples=n_resamples, seed=seed)
    return {"protocol": proto.label, **out}


def _filters(backbone: Any, store: Any, kw: dict[str, Any], X: np.ndarray, emb: Any, target: Any,
             target_min: float | None, prompts: bool, prompt_min: float | None, templates: str, outlier_k: int,
             outlier_drop: float) -> list[FilterResult]:
    from vitlab.data import load_source

    out = []
    if len(X) > outlier_k:
        out.append(outlier_filter(X, k=outlier_k, drop=outlier_drop))
    elif outlier_drop > 0:
        raise ConfigError(f"outlier_k={outlier_k} needs more than {outlier_k} items; the data has {len(X)}.")
    if target is not None:
        T = store.get_or_compute(backbone, load_source(target), **kw).get()
        out.append(target_filter(X, np.asarray(T, np.float32), target_min))
    if prompts:
        from vitlab.protocols.zeroshot_math import templates as template_set
        from vitlab.store.text_cache import text_embeddings

        if backbone.spec.depth - 1 not in emb.layers:
            raise ConfigError("the prompt filter uses the image–text embedding of the last block; run with layers=-1.")
        E = np.asarray(emb.get(-1, "embed"), np.float32)
        text = text_embeddings(backbone, list(emb.classes), template_set(templates), cache_dir=store.root)
        out.append(prompt_filter(E, emb.labels, text, prompt_min))
    return out

