"""``vitlab.curate``: duplicates (exact, perceptual, semantic), leakage across splits, score filters and
label issues, as one run record (kind ``curate``) and an optional clean manifest.

Data flows one way: source -> backbone -> store (the cached embeddings) -> :mod:`vitlab.curation`
pieces -> :class:`~vitlab.record.RunRecord`. Rendering is the report's job (:mod:`vitlab.report`;
the CLI's ``--report`` calls it): nothing here writes HTML.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.curation.calibrate import (AUGMENTATIONS, MAX_FPR, RECALL, Calibration, calibrate, check_calibration_size,
                                     check_edits, check_rates)
from vitlab.curation.clusters import Group, clique_groups, removal_curve, removed_rows
from vitlab.curation.filters import FilterResult, outlier_filter, prompt_filter, target_filter
from vitlab.curation.hashing import exact_groups, hash_images, perceptual_pairs, require_imagehash
from vitlab.curation.label_issues import LabelIssues, check_label_issue_inputs, find_label_issues
from vitlab.curation.leakage import Leakage, check_has_splits, cross_split_duplicates, find_leaks, leak_effect
from vitlab.curation.manifest import check_has_files, check_new_manifest, check_removed
from vitlab.curation.manifest import write_manifest as _write_manifest
from vitlab.curation.options import (DEFAULT_FOLDS, DEFAULT_PERCEPTUAL_DISTANCE, check_max_removed,
                                   check_option_pairs)
from vitlab.curation.pairs import MAX_NEIGHBOURS
from vitlab.curation.semantic import NeighbourTable, check_threshold, neighbour_table
from vitlab.errors import ConfigError
from vitlab.record import RunRecord, start_record
from vitlab.outputs import check_output_dir

__all__ = ["curate", "CurateResult"]

MAX_GROUPS_RECORDED = 200


@dataclass
class CurateResult:
    """What :func:`curate` found.

    Attributes:
        record: the ``curate`` run record (written to ``out`` when given).
        threshold: the semantic cosine threshold (for ``auto``: the calibrated one, bounded by ``max_fpr``).
        calibration: the ``auto`` evidence, or ``None``.
        groups: semantic duplicate groups (every two members above the threshold); empty when the calibration
            found no threshold separating copies from random pairs (``semantic_skipped`` says why).
        removed: ``[r]`` embedding rows removed by the keep rule and exact duplicates. kept: ``[n]`` bool, kept
            after dedup and filters.
        leakage: the split's :class:`~vitlab.curation.leakage.Leakage`, or ``None``.
        filters: the filter results. ids: ``[n]`` ids of the embedding rows. index: their source rows.
        label_issues: the :class:`~vitlab.curation.label_issues.LabelIssues`, or ``None``.
        semantic_skipped: why no semantic duplicates were removed (``""`` when they were).
        manifest, path: written files (or ``None``).
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
    label_issues: LabelIssues | None = None
    semantic_skipped: str = ""
    manifest: Path | None = None
    path: Path | None = None


def _curve_grid(t: float) -> list[float]:
    lo = min(0.8, t - 0.05)
    return sorted({round(float(v), 4) for v in np.linspace(max(lo, -1.0), 1.0, 21)} | {round(t, 6)})


def _check(threshold: Any, target_min: Any, prompt_min: Any, outlier_drop: float, outlier_k: int, k: int,
           perceptual_distance: int, max_neighbours: int, write: Any, out: Any, embed_kwargs: dict[str, Any]
           ) -> float | str:
    if "report" in embed_kwargs:
        raise ConfigError("curate() writes no HTML: render its record with vitlab.report.render_html([res.record], "
                          "'curate.html') (the CLI's --report does).")
    if isinstance(threshold, str) and threshold.strip().lower() == "auto":
        thr: float | str = "auto"
    else:
        thr = check_threshold(threshold)
    for name, v in (("target_min", target_min), ("prompt_min", prompt_min)):
        if v is not None:
            check_threshold(v, name)
    if not 0.0 <= outlier_drop < 1.0:
        raise ConfigError(f"outlier_drop must be a fraction in [0, 1), e.g. 0.01; got {outlier_drop}.")
    if outlier_k < 1 or k < 1 or max_neighbours < 1:
        raise ConfigError(f"k, outlier_k and max_neighbours must be >= 1, got {k}, {outlier_k} and {max_neighbours}.")
    if not 0 <= perceptual_distance <= 64:
        raise ConfigError(f"perceptual_distance must be 0..64 bits of the 64-bit pHash, got {perceptual_distance}.")
    check_new_manifest(write)
    check_output_dir(out, "--out")
    return thr


def curate(backbone: Any, data: Any, *, dedup: bool = True, threshold: float | str = "auto", k: int = 16,
           backend: str = "auto", perceptual_distance: int | None = None, max_neighbours: int | None = None,
           leakage: bool | None = None, test_fraction: float = 0.2, protocol: str = "knn", n_resamples: int = 1000,
           seed: int = 0, target: Any = None, target_min: float | None = None, prompts: bool = False,
           prompt_min: float | None = None, templates: str = "simple", outlier_k: int = 10,
           outlier_drop: float = 0.0, calibration_sample: int | None = None, recall: float | None = None,
           max_fpr: float | None = None, edits: str | tuple[str, ...] | None = None, label_issues: bool = False,
           folds: int | None = None, label_method: str | None = None,
           write_manifest: str | Path | None = None, max_removed: float | None = None,
           layers: int = -1, pool: str = "auto", pretrained: bool = True, device: str | None = None,
           cache_dir: str | Path | None = None, out: str | Path | None = None, **embed_kwargs: Any) -> CurateResult:
    """Find duplicates, leakage and label issues in a data source and score filters, on its cached embeddings.

    Args:
        backbone, data: objects or names (``"demo:fmnist-vit"``, ``"folder:./imgs"``).
        dedup: remove duplicates (exact digests and semantic groups, one kept per group) from the kept set.
        threshold: semantic cosine threshold in ``[-1, 1]``, or ``"auto"`` (calibrated on copies of
            ``calibration_sample`` (200) images under ``edits`` (all four): at most ``max_fpr`` (1e-3) of random
            pairs above it, every edit at ``recall`` (0.99) or no semantic removal: :mod:`vitlab.curation.calibrate`).
        k: neighbours searched per item first (widened where an item has more partners above a threshold).
        backend: ``auto`` (exact up to 200k items, then faiss with measured recall), ``exact`` or ``faiss``.
        perceptual_distance: largest pHash Hamming distance (of 64 bits) reported as a perceptual pair (4).
        max_neighbours: the most partners searched per item (1024); items reaching it are warned about and recorded.
        leakage: check the eval split (``None``: whenever the data has a split column, labels or groups).
        test_fraction, seed: the split eval would draw when the data has no split column.
        protocol: the protocol re-run without leaked test items (a paired difference with CI).
        target, target_min: a target data source; items whose nearest target item has cosine < target_min are dropped.
        prompts, prompt_min, templates: image-text backbones: cosine to the own class prompt (dropped below prompt_min).
        outlier_k, outlier_drop: k-NN-distance outlier score; the ``outlier_drop`` fraction farthest is dropped.
        label_issues: flag probably wrong labels (cleanlab on out-of-fold probabilities,
            :func:`vitlab.curation.label_issues.find_label_issues`) with ``folds`` (5) and ``label_method``
            (``linear`` or ``knn``).
        write_manifest: a NEW csv file listing the kept items (``folder:``/``csv:`` data only), with ``issue``,
            ``suggested_label`` and ``self_confidence`` columns under ``label_issues``. Refused when it would drop
            more than ``max_removed`` (0.2) of the items.
        out: a folder for the JSON run record (render it with :func:`vitlab.report.render_html`).
        **embed_kwargs: ``batch_size``, ``num_workers``, ``progress``... for the embedding store.

    Returns:
        :class:`CurateResult`.

    Raises:
        ConfigError: a threshold outside [-1, 1], a manifest path that exists, an option given without the one it
            needs, a missing optional dependency (before any work); a manifest dropping more than ``max_removed``.
        DataError: data without splits asked for leakage, too few images to calibrate, no files for a manifest,
            no labels or too small a class for label issues.

    Example:
        >>> import vitlab
        >>> res = vitlab.curate("demo:fmnist-vit", "sample:digits?limit=300", threshold="auto", n_resamples=20,
        ...                     progress=False)  # threshold calibrated on augmented copies
        >>> 0 < res.threshold < 1, len(res.groups), res.record.details["semantic"]["fraction_removed"]
        (True, 0, 0.0)
    """
    from vitlab.backbones import load_backbone
    from vitlab.data import load_source
    from vitlab.data.splits import check_fractions
    from vitlab.protocols.base import parse_protocols
    from vitlab.store import EmbeddingStore

    check_option_pairs(threshold=threshold, dedup=dedup, target=target, target_min=target_min, prompts=prompts,
                       prompt_min=prompt_min, edits=edits, recall=recall, max_fpr=max_fpr,
                       calibration_sample=calibration_sample, perceptual_distance=perceptual_distance,
                       max_neighbours=max_neighbours, write_manifest=write_manifest, max_removed=max_removed,
                       label_issues=label_issues, folds=folds, label_method=label_method)
    pdist = DEFAULT_PERCEPTUAL_DISTANCE if perceptual_distance is None else perceptual_distance
    max_nb = MAX_NEIGHBOURS if max_neighbours is None else max_neighbours
    recall_t = RECALL if recall is None else recall
    max_fpr_t = MAX_FPR if max_fpr is None else max_fpr
    n_cal = 200 if calibration_sample is None else calibration_sample
    edits_t = check_edits(AUGMENTATIONS if edits is None else edits)
    n_folds = DEFAULT_FOLDS if folds is None else folds
    method = label_method or "linear"
    thr = _check(threshold, target_min, prompt_min, outlier_drop, outlier_k, k, pdist, max_nb, write_manifest, out,
                 embed_kwargs)
    max_rm = check_max_removed(max_removed)
    check_rates(recall_t, max_fpr_t)
    check_fractions(test_fraction)
    if dedup:
        require_imagehash()
    proto = parse_protocols(protocol)[0]
    source = load_source(data)
    if write_manifest is not None:
        check_has_files(source)
    if leakage:
        check_has_splits(source.uri, source.split_column is not None, source.labels is not None,
                         source.groups is not None)
    if label_issues:
        check_label_issue_inputs(source.labels, groups=source.groups, folds=n_folds, method=method,
                                 classes=list(source.classes), where=source.uri)
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
        perc = perceptual_pairs(h.phash, pdist, k=k, max_neighbours=max_nb)
        pp = perc.pairs
        timings["hash_s"] = round(time.perf_counter() - t1, 3)
        details["exact"] = {"n_groups": len(ex), "n_duplicates": sum(len(g) - 1 for g in ex),
                            "groups": [[ids[r] for r in g] for g in ex[:MAX_GROUPS_RECORDED]]}
        details["perceptual"] = {"max_distance": pdist, "n_pairs": len(pp), "max_neighbours": max_nb,
                                 "capped_items": [ids[r] for r in perc.capped[:MAX_GROUPS_RECORDED]],
                                 "n_capped": int(perc.capped.size),
                                 "pairs": [{"a": ids[a], "b": ids[b], "distance": d} for a, b, d in pp[:MAX_GROUPS_RECORDED]]}
        if perc.capped.size:
            warnings.warn(f"{perc.capped.size} image(s) have more than max_neighbours={max_nb} perceptual partners "
                          f"within {pdist} bits: their pairs beyond the cap are not listed (recorded as "
                          "perceptual.capped_items). Lower --perceptual-distance or raise --max-neighbours.", stacklevel=2)

    cal = None
    skipped = ""
    if thr == "auto":
        t1 = time.perf_counter()
        known = [(a, b) for a, b, _ in pp] + [(g[0], r) for g in ex for r in g[1:]]
        cal = calibrate(backbone, source, X, index, store, sample=n_cal, recall=recall_t, max_fpr=max_fpr_t,
                        seed=seed, edits=edits_t, embed_kwargs=kw, known_duplicates=known)
        thr = cal.threshold
        details["calibration"] = cal.to_dict()
        timings["calibrate_s"] = round(time.perf_counter() - t1, 3)
        if not cal.separable:
            skipped = cal.message
            warnings.warn(skipped, stacklevel=2)
    t_sem = float(thr)

    if dedup:
        t1 = time.perf_counter()
        if skipped:
            details["semantic"] = {"skipped": skipped, "threshold": t_sem, "n_pairs": None, "n_groups": 0,
                                   "n_removed": 0, "fraction_removed": 0.0, "groups": []}
            details["perceptual"]["n_also_semantic"] = None
        else:
            table = neighbour_table(X, k=k, backend=backend, seed=seed)
            timings["search_s"] = round(time.perf_counter() - t1, 3)
            t1 = time.perf_counter()
            sem = table.all_pairs(X, t_sem, max_neighbours=max_nb)
            groups = clique_groups(sem.i, sem.j, t_sem, X)
            sem_set = set(zip(sem.i.tolist(), sem.j.tolist()))
            details["perceptual"]["n_also_semantic"] = sum((a, b) in sem_set for a, b, _ in pp)
            rm_sem = removed_rows(groups)
            removed = np.union1d(rm_sem, [r for g in ex for r in g[1:]]).astype(np.int64)
            details["semantic"] = _semantic_details(table, groups, sem, ids, t_sem, n, X, removed)
            if sem.capped.size:
                warnings.warn(f"{sem.capped.size} item(s) have more than max_neighbours={max_nb} partners above the "
                              f"threshold {t_sem:.4f}: pairs beyond the cap are not seen (recorded as "
                              "semantic.capped_items). Raise the threshold or --max-neighbours.", stacklevel=2)
        if skipped:
            removed = np.asarray(sorted(r for g in ex for r in g[1:]), np.int64)
        timings["cluster_s"] = round(time.perf_counter() - t1, 3)

    split = None
    leak: Leakage | None = None
    has_splits = source.split_column is not None or source.labels is not None or source.groups is not None
    if leakage or (leakage is None and has_splits):
        t1 = time.perf_counter()
        split = emb.splits(seed=seed, test_fraction=test_fraction)
        leak = find_leaks(X, split, None if skipped else t_sem, ids=ids, groups=emb.groups, labels=emb.labels)
        details["leakage"] = leak.summary()
        details["leakage"]["split_origin"] = ("split column" if emb.split_column is not None
                                              else f"seeded stratified (test {test_fraction})")
        if skipped:
            details["leakage"]["note"] = "semantic near-duplicates not checked: the auto threshold does not separate " \
                                         "copies from random pairs (see calibration)"
        if dedup:
            details["leakage"].update(cross_split_duplicates(ex, pp, split, ids, MAX_GROUPS_RECORDED))
        if emb.labels is not None and proto.task == "classification":
            details["leakage"]["effect"] = leak_effect(proto, X, emb, split, leak, seed, n_resamples)
        timings["leakage_s"] = round(time.perf_counter() - t1, 3)

    issues = None
    if label_issues:
        t1 = time.perf_counter()
        issues = find_label_issues(X, emb.labels, groups=emb.groups, folds=n_folds, seed=seed, method=method,
                                   device=device or "cpu", classes=list(emb.classes))
        details["label_issues"] = issues.to_dict(ids, list(emb.classes), max_items=MAX_GROUPS_RECORDED)
        timings["label_issues_s"] = round(time.perf_counter() - t1, 3)

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
    record = start_record(
        "curate",
        {"backbone": backbone.name, "data": source.uri, "dedup": dedup, "threshold": threshold,
                "threshold_used": t_sem, "k": k, "backend": backend, "perceptual_distance": pdist,
                "max_neighbours": max_nb, "layer": emb.layers[-1], "pool": pool, "protocol": proto.label,
                "test_fraction": test_fraction, "target": getattr(target, "uri", target), "target_min": target_min,
                "prompts": prompts, "prompt_min": prompt_min, "outlier_k": outlier_k, "outlier_drop": outlier_drop,
                "recall": recall_t, "max_fpr": max_fpr_t, "calibration_sample": n_cal, "edits": list(edits_t),
                "n_resamples": n_resamples, "label_issues": label_issues,
                **({"folds": n_folds, "label_method": method} if label_issues else {}),
                **({"max_removed": max_rm} if write_manifest is not None else {})},
        backbone=backbone, source=source, embeddings=emb.digest,
        seeds={"split": seed, "calibration": seed, "bootstrap": seed})
    record.details, record.timings = details, timings
    manifest = None
    if write_manifest is not None:
        try:
            check_removed(int((~kept).sum()), n, max_rm, max_removed is not None)
        except ConfigError:
            if out is not None:
                record.save(out)  # the evidence is kept even when the manifest is refused
            raise
        full_split = None
        if split is not None:
            full_split = np.full(len(source), "train", dtype=object)
            full_split[index] = split
        extra = _issue_columns(issues, index, len(source), list(emb.classes)) if issues is not None else None
        manifest = _write_manifest(write_manifest, source, index[kept], full_split, extra)
        record.details["kept"]["manifest"] = str(manifest)
    path = record.save(out) if out is not None else None
    return CurateResult(record, t_sem, cal, groups, removed, kept, leak, filters, ids, index, issues, skipped,
                        manifest, path)


def _issue_columns(li: LabelIssues, index: np.ndarray, n_source: int, classes: list[str]) -> dict[str, np.ndarray]:
    """``issue``, ``suggested_label``, ``self_confidence`` per source row (blank for rows not embedded)."""
    cols = {c: np.full(n_source, "", dtype=object) for c in ("issue", "suggested_label", "self_confidence")}
    cols["issue"][index] = np.where(li.is_issue, "true", "false")
    cols["suggested_label"][index] = [classes[int(c)] for c in li.suggested]
    cols["self_confidence"][index] = [f"{v:.6g}" for v in li.self_confidence]
    return cols


def _semantic_details(table: NeighbourTable, groups: list[Group], sem: Any, ids: list[str], t: float, n: int,
                      X: np.ndarray, removed: np.ndarray) -> dict[str, Any]:
    big = sorted(groups, key=lambda g: (-len(g.members), g.min_similarity))
    return {"threshold": t, "backend": table.backend, "k": int(table.scores.shape[1]), "recall": table.recall,
            "recall_queries": table.recall_queries, "n_pairs": len(sem), "n_groups": len(groups),
            "group_rule": "clique (every two members >= threshold)",
            "n_removed": int(sum(len(g.members) - 1 for g in groups)),
            "fraction_removed": float(sum(len(g.members) - 1 for g in groups) / n),
            "fraction_removed_total": float(len(removed) / n),
            "min_internal_similarity": min((g.min_similarity for g in groups), default=None),
            "max_neighbours": sem.max_neighbours, "k_searched": sem.k_used, "n_capped": int(sem.capped.size),
            "capped_items": [ids[r] for r in sem.capped[:MAX_GROUPS_RECORDED]],
            "groups": [{"members": [ids[m] for m in g.members], "centre": ids[g.centre], "keep": ids[g.keep],
                        "min_similarity": g.min_similarity, "min_to_centre": g.min_to_centre}
                       for g in big[:MAX_GROUPS_RECORDED]],
            "curve": removal_curve(table.indices, table.scores, X, _curve_grid(t))}


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
        from vitlab.protocols.text_cache import text_embeddings

        if backbone.spec.depth - 1 not in emb.layers:
            raise ConfigError("the prompt filter uses the image–text embedding of the last block; run with layers=-1.")
        E = np.asarray(emb.get(-1, "embed"), np.float32)
        text = text_embeddings(backbone, list(emb.classes), template_set(templates), cache_dir=store.root)
        out.append(prompt_filter(E, emb.labels, text, prompt_min))
    return out

