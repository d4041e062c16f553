"""``vitlab.perf.tradeoff``: what each accelerator costs in accuracy and buys in speed, measured, with CIs.

For every variant of a ``--accel`` sweep: apply it to a copy of the backbone (PTQ variants
calibrate on images of the TRAIN split), evaluate it with the frozen-feature protocols on one
shared split (the embedding cache keys each variant by its ``accel`` dict), benchmark all
variants in one interleaved loop, and compare each with ``none``: speed-up, FLOPs reduction,
paired-bootstrap accuracy change with its CI and McNemar p on the same test images, and the
cosine similarity of its features to the baseline's. Early exit (``early_exit`` /
``exit:threshold=0.9``) is a variant too: per-layer heads on cached train embeddings and a
threshold sweep over MEASURED cumulative layer times.

Example:
    >>> res = tradeoff("demo:fmnist-vit", "sample:digits?limit=100", accel="none,tome:r=2", n_resamples=20,
    ...                progress=False, warmup=1, repeats=2, min_time=0.01, latency_repeats=3)  # tiny timing settings
    >>> [r["variant"] for r in res.table()], res.table()[0]["speedup"]["value"]
    (['none', 'tome:r=2'], 1.0)
    >>> res.table()[1]["flops"] < res.table()[0]["flops"]  # ToMe merges tokens: fewer FLOPs
    True
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.accel.compare import feature_cosine, tensor_digest
from vitlab.backbones import load_backbone
from vitlab.backbones.base import Backbone
from vitlab.data import DataSource, load_source
from vitlab.errors import ConfigError, DataError
from vitlab.evaluation import EvalResult, evaluate
from vitlab.perf.exit import ExitResult, run_early_exit
from vitlab.perf.measure import machine_info
from vitlab.perf.pareto import pareto_front
from vitlab.perf.runner import BenchResult, bench_backbones, speedups
from vitlab.perf.variants import (ExitSpec, apply_variant, calibration_rows, load_images, needs_calibration,
                                  parse_variants)
from vitlab.protocols.base import parse_protocols
from vitlab.record import RunRecord, start_record
from vitlab.scorers import pair_results
from vitlab.stats.interval import Interval

METHOD = ("Accuracy: frozen-feature protocols on one shared split; change vs the baseline = paired bootstrap of "
          "top-1 on the same test images (95% CI, p) and McNemar's p. Speed: all variants timed in one interleaved "
          "loop at the batch size (median images/s over repeats; speed-up = median of per-repeat paired ratios, "
          "min-max in brackets). FLOPs: FlopCounterMode on a real forward. Early exit: linear heads per layer "
          "fitted on train embeddings; speed-up = measured time of the full network / expected measured time to "
          "each image's exit layer; its accuracy change is vs the last-layer head, and its images/s is the "
          "baseline's measured throughput times that speed-up.")


@dataclass
class TradeoffResult:
    """Per-variant evaluations and benchmarks plus the ``"tradeoff"`` run record.

    Attributes:
        record: the trade-off record (``details["table"]`` holds one row per variant).
        runs: label → :class:`~vitlab.evaluation.EvalResult` of each accelerated variant.
        bench: label → :class:`~vitlab.perf.runner.BenchResult`.
        exits: label → :class:`~vitlab.perf.exit.ExitResult` of early-exit variants.
        paths: records written to ``out``.
    """

    record: RunRecord
    runs: dict[str, EvalResult] = field(default_factory=dict)
    bench: dict[str, BenchResult] = field(default_factory=dict)
    exits: dict[str, ExitResult] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)

    def table(self) -> list[dict[str, Any]]:
        """One row per variant: speed-up, FLOPs reduction, accuracy and its change vs the baseline, cosine."""
        return self.record.details["table"]



def tradeoff(backbone: Backbone | str, data: DataSource | str, *, accel: str = "none,tome:r=8,evit:keep=0.7,int8",
             protocols: str | list[Any] = "knn", layers: int | list[int] = -1, pool: str = "auto", seed: int = 0,
             test_fraction: float = 0.2, n_resamples: int = 1000,
             pretrained: bool = True, device: str = "cpu", cache_dir: str | Path | None = None,
             out: str | Path | None = None, calib_images: int = 32, batch_size: int = 32, dtype: str = "fp32",
             warmup: int = 2, repeats: int = 7, min_time: float = 0.05, latency_repeats: int = 20,
             cosine_images: int = 64, **embed_kwargs: Any) -> TradeoffResult:
    """Accuracy vs speed of accelerator variants of one backbone on one labelled data set.

    Args:
        backbone, data: objects or names (``"demo:fmnist-vit"``, ``"sample:fashion-mnist"``); the
            backbone object is never modified.
        accel: variants, e.g. ``"none,tome:r=2,tome:r=4,evit:keep=0.7,int8,w6a6,exit:threshold=0.9"``;
            ``none`` (the baseline) is added when missing.
        protocols: classification protocol specs, e.g. ``knn``, ``knn:ks=[5],linear``; the first is the
            headline of the table and plot (``protocol=``, the old name, still works with a DeprecationWarning).
        layers, pool, seed, test_fraction, n_resamples: as in :func:`vitlab.evaluate`.
        device: where evaluation and timing run.
        cache_dir: embedding cache root; out: directory for one eval record per variant + the tradeoff record.
        calib_images: images drawn (seeded) from the train split to calibrate PTQ variants.
        batch_size, dtype, warmup, repeats, min_time, latency_repeats: benchmark settings
            (see :func:`vitlab.perf.runner.bench_backbones`).
        cosine_images: test images for the feature-cosine fidelity check.
        **embed_kwargs: to the embedding store (``num_workers``, ``progress``, ``batch_size`` is ``embed_batch_size``).

    Returns:
        :class:`TradeoffResult`.

    Raises:
        UnknownNameError: an unknown accelerator (with suggestions). BackboneError: an unsupported architecture.
        DataError: unlabelled data.

    Example:
        >>> res = tradeoff("demo:fmnist-vit", "sample:digits?limit=100", accel="int8", n_resamples=20,
        ...                progress=False, warmup=1, repeats=2, min_time=0.01, latency_repeats=3)
        >>> [r["variant"] for r in res.table()]  # the baseline is added
        ['none', 'int8']
        >>> d = res.table()[1]["delta"]["knn"]  # top-1 change vs none: paired bootstrap CI and McNemar
        >>> sorted(d), d["low"] <= d["diff"] <= d["high"]
        (['diff', 'high', 'low', 'p_bootstrap', 'p_bootstrap_holm', 'p_mcnemar', 'p_mcnemar_holm', 'significant'], True)
        >>> res = tradeoff("demo:fmnist-vit", "sample:fashion-mnist", accel="exit")  # fits a head per layer: slow  # doctest: +SKIP
        >>> [r["variant"] for r in res.table()]  # doctest: +SKIP
        ['none', 'exit']
    """
    t0 = time.perf_counter()
    if "protocol" in embed_kwargs:  # the old name of protocols=
        old = embed_kwargs.pop("protocol")
        if protocols != "knn":
            raise ConfigError("tradeoff(protocol=...) is the old name of protocols=; pass only protocols=.")
        warnings.warn("tradeoff(protocol=...) is deprecated; use protocols=...", DeprecationWarning, stacklevel=2)
        protocols = old
    variants = parse_variants(accel, allow_exit=True)
    protos = parse_protocols(protocols)
    bad = [p.label for p in protos if p.task != "classification"]
    if bad:
        raise ConfigError(f"tradeoff measures accuracy: protocol(s) {', '.join(bad)} are not classification "
                          "protocols; use knn or linear.")
    labels = [p.label for p in protos]
    source = load_source(data)
    if source.labels is None:
        raise DataError(f"{source.uri} has no labels; a trade-off needs accuracy, so use labelled data "
                        "(class subfolders or a label column). `vitlab bench` needs no labels.")
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, pretrained=pretrained)
    pool = ("cls" if backbone.spec.has_cls_token else "mean") if pool == "auto" else pool
    if "embed_batch_size" in embed_kwargs:
        embed_kwargs["batch_size"] = embed_kwargs.pop("embed_batch_size")
    splits = source.splits(seed=seed, test_fraction=test_fraction)
    accs = {k: v for k, v in variants.items() if not isinstance(v, ExitSpec)}
    calib = None
    if any(needs_calibration(a) for a in accs.values()):
        rows = calibration_rows(splits, calib_images, seed)
        calib = load_images(source, backbone, rows)
    built = {label: apply_variant(backbone, acc, calib, label) for label, acc in accs.items()}
    baseline = next(iter(built))
    runs: dict[str, EvalResult] = {}
    for label, vb in built.items():
        res = evaluate(vb, source, protocols=protos, layers=layers, pool=pool, seed=seed, splits=splits,
                       n_resamples=n_resamples, device=device, cache_dir=cache_dir,
                       label=f"{backbone.name} ({label})", **embed_kwargs)
        runs[label] = res
    bench = bench_backbones(built, batch_size=batch_size, device=device, dtype=dtype, warmup=warmup, repeats=repeats,
                            min_time=min_time, latency_repeats=latency_repeats, seed=seed)
    exits = {label: run_early_exit(built[baseline], source, splits, spec, label=label, pool=pool, seed=seed,
                                   n_resamples=n_resamples, cache_dir=cache_dir, batch_size=batch_size, dtype=dtype,
                                   warmup=warmup, repeats=repeats,
                                   embed_kwargs={"device": device, **embed_kwargs})
             for label, spec in variants.items() if isinstance(spec, ExitSpec)}
    test_rows = np.flatnonzero(np.asarray(splits) == "test")
    pick = np.sort(np.random.default_rng(seed).choice(test_rows, min(cosine_images, len(test_rows)), replace=False))
    x_cos = load_images(source, backbone, pick)
    layer = backbone.resolve_layers(layers)[-1]
    cosine = {k: feature_cosine(built[baseline], vb, x_cos, layer=layer) for k, vb in built.items()}
    table = _table(list(variants), baseline, labels, runs, bench, exits, cosine, n_resamples, seed)
    record = start_record(
        "tradeoff",
        {"backbone": backbone.name, "data": source.uri, "dataset": source.uri, "accel": accel,
         "variants": list(variants), "baseline": baseline, "protocols": labels, "headline": labels[0],
         "layers": layers, "layer": layer, "pool": pool, "seed": seed, "test_fraction": test_fraction,
         "n_resamples": n_resamples, "protocol_config": {p.label: p.to_dict() for p in protos},
         "calibration": None if calib is None else {"n": int(len(calib)), "from": "train split",
                                                    "digest": tensor_digest(calib)},
         "bench": {"device": device, "dtype": dtype, "batch_size": batch_size, "warmup": warmup,
                   "repeats": repeats, "min_time": min_time, "latency_repeats": latency_repeats},
         "cosine_images": int(len(pick))},
        backbone=backbone, source=source, fingerprints={"variants": {k: b.accel for k, b in built.items()}},
        seeds={"split": seed, "bootstrap": seed, "calibration": seed, "inputs": seed})
    record.metrics = {row["variant"]: _row_metrics(row, labels, n_resamples) for row in table}
    record.details = {"table": table, "exits": {k: e.to_dict() for k, e in exits.items()},
                      "bench": {k: r.to_dict() for k, r in bench.items()}, "machine": machine_info(built[baseline].device),
                      "method": METHOD, "eval_runs": {k: r.record.run_id for k, r in runs.items()}}
    record.timings = {"total_s": round(time.perf_counter() - t0, 3)}
    paths = []
    if out is not None:
        for r in runs.values():
            r.path = r.record.save(out)
            paths.append(r.path)
        paths.append(record.save(out))
    return TradeoffResult(record, runs, bench, exits, paths)


def _table(labels: list[str], baseline: str, protocols: list[str], runs: dict[str, EvalResult],
           bench: dict[str, BenchResult], exits: dict[str, ExitResult], cosine: dict[str, float],
           n_resamples: int, seed: int) -> list[dict[str, Any]]:
    sp = speedups(bench, baseline)
    base_b = bench[baseline]
    paired = [p for p in protocols if p in runs[baseline].proba]
    # every accelerated variant against the baseline on the same test images: one family per protocol (Holm)
    tests = {p: {t["a"]: t for t in pair_results({k: r.results[p] for k, r in runs.items()}, reference=baseline,
                                                 n_resamples=n_resamples, seed=seed)} for p in paired}
    rows = []
    for label in labels:
        if label in exits:
            e = exits[label]
            thr = base_b.throughput.get("median") if base_b.ok else None
            rows.append({"variant": label, "kind": "early_exit", "error": None,
                         "images_per_s": None if thr is None else thr * e.point["speedup"],
                         "images_per_s_derived": True,
                         "speedup": Interval.point(e.point["speedup"], "expected time of the exit rule (measured per exit)").to_entry(),
                         "flops": e.cum_flops[-1] / e.point["flops_reduction"],
                         "flops_reduction": e.point["flops_reduction"], "params": base_b.params,
                         "accuracy": {"exit": Interval.point(e.point["accuracy"], "exit rule on the test split"
                                                             ).to_entry()}, "delta": {"exit": e.delta},
                         "threshold": e.spec.threshold, "mean_exit_layer": e.point["mean_exit_layer"],
                         "feature_cosine": None})
            continue
        b, run = bench[label], runs[label]
        row: dict[str, Any] = {"variant": label, "kind": "accel", "error": b.error,
                               "accel": run.record.fingerprints["backbone"]["accel"],
                               "accuracy": {p: {k: run.record.metrics[p]["top1"][k] for k in ("value", "low", "high")}
                                            for p in protocols if "top1" in run.record.metrics.get(p, {})},
                               "delta": {}, "feature_cosine": cosine.get(label), "eval_run": run.record.run_id}
        if b.ok:
            row.update({"images_per_s": b.throughput["median"], "images_per_s_low": b.throughput["min"],
                        "images_per_s_high": b.throughput["max"], "speedup": sp.get(label),
                        "latency_p50_ms": b.latency_ms["p50"], "latency_p95_ms": b.latency_ms["p95"],
                        "flops": b.flops, "params": b.params, "peak_memory_mb": b.peak_memory_mb,
                        "flops_reduction": base_b.flops / b.flops if base_b.ok and b.flops else None})
        for p in paired:
            if label == baseline:
                row["delta"][p] = {"diff": 0.0, "low": 0.0, "high": 0.0, "p_bootstrap": 1.0, "p_mcnemar": 1.0,
                                   "p_bootstrap_holm": 1.0, "p_mcnemar_holm": 1.0, "significant": False}
                continue
            t = tests[p][label]
            row["delta"][p] = {k: t[k] for k in ("diff", "low", "high", "p_bootstrap", "p_mcnemar",
                                                 "p_bootstrap_holm", "p_mcnemar_holm", "significant")}
        rows.append(row)
    head = protocols[0]
    acc_rows = [r for r in rows if r["kind"] == "accel"]
    speed = [r.get("images_per_s") if r.get("images_per_s") is not None else np.nan for r in acc_rows]
    acc = [(r["accuracy"].get(head) or {}).get("value", np.nan) for r in acc_rows]
    for r, on in zip(acc_rows, pareto_front(speed, acc)):
        r["pareto"] = bool(on)
    return rows


def _row_metrics(row: dict[str, Any], protocols: list[str], n_resamples: int) -> dict[str, Any]:
    m: dict[str, Any] = {}
    for p, v in row.get("accuracy", {}).items():
        m[f"{p}_top1"] = v
    for p, d in row.get("delta", {}).items():
        m[f"{p}_top1_change"] = Interval(d["diff"], d["low"], d["high"], "paired percentile bootstrap", 0.95,
                                         n_resamples).to_entry()
    if row.get("speedup"):
        m["speedup"] = row["speedup"]
    for k in ("images_per_s", "flops_reduction", "feature_cosine"):
        if row.get(k) is not None:
            m[k] = Interval.point(row[k], "measured").to_entry()
    return m


__all__ = ["TradeoffResult", "tradeoff", "METHOD"]
