"""The final verdict of a run: ``vitlab eval`` on the monitor data for each model, paired tests, and (distill)
the measured speed-up.

Each model is scored by :func:`vitlab.evaluation.evaluate` itself (same split as ``vitlab eval --seed s``, same
protocol defaults, embeddings through the cache under the model's own ``weights_id``), so the verdict is exactly
what a user gets by running ``vitlab eval`` on the artefact and on the base. The results of one protocol are then
paired on the same test images by :func:`vitlab.scorers.pairing.pair_results` (paired bootstrap of the top-1
difference and McNemar, Holm-adjusted over the pairs of that protocol). The speed-up comes from
:func:`vitlab.perf.runner.bench_backbones`, the timing code of ``vitlab bench`` (interleaved repeats, paired
per-repeat ratios).

Example:
    >>> import vitlab
    >>> bb, bb2 = vitlab.load_backbone("demo:fmnist-vit"), vitlab.load_backbone("random:demo:fmnist-vit")
    >>> v = verdict({"adapted": bb2, "base": bb}, "sample:digits?limit=200", pairs=[("adapted", "base")],
    ...             protocols="knn", n_resamples=20)
    >>> p = v["pairs"]["knn"][0]
    >>> p["a"], p["b"], p["low"] <= p["diff"] <= p["high"]
    ('adapted', 'base', True)
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vitlab.backbones.base import Backbone

__all__ = ["verdict", "speed_up"]


def verdict(models: Mapping[str, Backbone], monitor: Any, *, pairs: list[tuple[str, str]],
            protocols: str = "knn,linear", seed: int = 0, test_fraction: float = 0.2, n_resamples: int = 1000,
            cache_dir: str | Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """Score every model with ``vitlab eval`` on ``monitor`` and pair them.

    Returns:
        ``{"metrics": {label: {protocol: {metric: entry}}}, "pairs": {protocol: [pair rows]}, "eval": {label:
        {"hparams", "n_train", "n_test", "split_origin", "weights_id"}}}``; ``diff = a - b`` in each row.
    """
    from vitlab.evaluation import evaluate
    from vitlab.scorers import pair_results

    results: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for label, bb in models.items():
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="kNN: default k", category=UserWarning)
            warnings.filterwarnings("ignore", message="bootstrap: metric undefined", category=RuntimeWarning)
            ev = evaluate(bb, monitor, protocols=protocols, seed=seed, test_fraction=test_fraction,
                          n_resamples=n_resamples, cache_dir=cache_dir, device=device, progress=False, label=label)
        results[label], metrics[label] = ev.results, ev.record.metrics
        d = ev.record.details.get("data", {})
        info[label] = {"backbone": bb.name, "weights_id": bb.weights_id, "hparams": ev.record.hparams,
                       "n_train": d.get("n_train"), "n_test": d.get("n_test"),
                       "split_origin": ev.record.config.get("split_origin"), "test_ids_digest": _digest(ev.test_ids)}
    out_pairs: dict[str, list[dict[str, Any]]] = {}
    for proto in next(iter(results.values())):
        by_label = {label: r[proto] for label, r in results.items() if proto in r}
        out_pairs[proto] = pair_results(by_label, n_resamples=n_resamples, seed=seed, pairs=pairs)
    return {"metrics": metrics, "pairs": out_pairs, "eval": info}


def _digest(ids: list[str]) -> str:
    import hashlib

    return hashlib.blake2b("\n".join(sorted(map(str, ids))).encode(), digest_size=8).hexdigest()


def speed_up(teacher: Backbone, student: Backbone, *, device: str = "cpu", batch_size: int = 32,
             repeats: int = 10) -> dict[str, Any]:
    """The student's throughput speed-up over the teacher, each at its own input size, with ``vitlab bench``'s
    timing code (:func:`~vitlab.perf.runner.bench_backbones`).

    Same input size: one interleaved loop and :func:`~vitlab.perf.runner.speedups` (median of paired per-repeat
    ratios, with their range). Different sizes: two loops, the ratio of medians (marked ``interleaved: false``).
    """
    from vitlab.perf.runner import bench_backbones, speedups
    from vitlab.stats.interval import Interval

    kw = {"device": device, "batch_size": batch_size, "repeats": repeats, "latency_repeats": 5, "warmup": 1}
    ts, ss = teacher.spec.preprocessing.input_size, student.spec.preprocessing.input_size
    if tuple(ts) == tuple(ss):
        res = bench_backbones({"teacher": teacher, "student": student}, **kw)
        ratio = speedups(res, "teacher").get("student")
        interleaved = True
    else:
        res = {**bench_backbones({"teacher": teacher}, img_size=tuple(ts), **kw),
               **bench_backbones({"student": student}, img_size=tuple(ss), **kw)}
        ratio = Interval.point(res["student"].throughput["median"] / res["teacher"].throughput["median"],
                               "ratio of median throughputs (separate loops)").to_entry()
        interleaved = False
    return {"speedup": ratio, "interleaved": interleaved, "batch_size": batch_size, "device": device,
            "teacher": _bench_summary(res["teacher"]), "student": _bench_summary(res["student"])}


def _bench_summary(r: Any) -> dict[str, Any]:
    return {"name": r.name, "img_size": list(r.img_size), "images_per_s": r.throughput.get("median"),
            "latency_ms_p50": r.latency_ms.get("p50"), "params": r.params, "flops": r.flops}
