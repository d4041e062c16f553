"""``vitlab.perf.bench``: accelerator variants of one backbone, timed together, as a ``"bench"`` run record.

Example:
    >>> res = bench("demo:fmnist-vit", "none,tome:r=2,int8", batch_size=8, warmup=1, repeats=2, min_time=0.01,
    ...             latency_repeats=3)  # tiny timing settings
    >>> from vitlab.report.perf_figures import bench_rows
    >>> [(r["variant"], round(r["speedup"], 2) if r["variant"] == "none" else r["speedup"] > 0)
    ...  for r in bench_rows(res.record)]
    [('none', 1.0), ('tome:r=2', True), ('int8', True)]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitlab.accel.compare import calibration_images, tensor_digest
from vitlab.backbones import load_backbone, resolve_name
from vitlab.backbones.base import Backbone
from vitlab.data import DataSource, load_source
from vitlab.perf.measure import machine_info
from vitlab.perf.runner import BenchResult, bench_backbones, speedups
from vitlab.perf.variants import apply_variant, needs_calibration, parse_variants
from vitlab.record import RunRecord, start_record
from vitlab.stats.interval import Interval

CALIB_IMAGES = 32


@dataclass
class BenchSweep:
    """Benchmark of several variants: per-variant results plus the ``"bench"`` run record."""

    results: dict[str, BenchResult]
    record: RunRecord
    path: Path | None = None
    baseline: str = "none"
    speedup: dict[str, dict[str, float]] = field(default_factory=dict)



def load_bench_backbone(name: str, *, pretrained: bool = True, img_size: int | None = None, seed: int = 0) -> Backbone:
    """Load ``name`` on CPU; for ``timm:`` models ``img_size`` builds the model at that input size."""
    full = resolve_name(name)
    inner = resolve_name(full[len("random:"):]) if full.startswith("random:") else full
    kwargs = {"img_size": img_size} if img_size and inner.startswith("timm:") else {}
    return load_backbone(name, pretrained=pretrained, seed=seed, **kwargs)


def resolve_calibration(calib: Any, backbone: Backbone, n: int = CALIB_IMAGES, seed: int = 0) -> torch.Tensor | None:
    """Calibration images ``[n, 3, H, W]`` from a URI, a DataSource or a tensor (``None`` stays ``None``)."""
    if calib is None:
        return None
    if isinstance(calib, str):
        calib = load_source(calib)
    return calibration_images(calib, backbone, n, seed=seed)


def bench(backbone: Backbone | str, accel: str = "none", *, calib: DataSource | str | torch.Tensor | None = None,
          calib_images: int = CALIB_IMAGES, pretrained: bool = True, batch_size: int = 32, img_size: int | None = None,
          device: str | None = "cpu", dtype: str = "fp32", compile: bool = False, warmup: int = 3, repeats: int = 10,
          min_time: float = 0.1, latency_repeats: int = 30, seed: int = 0,
          out: str | Path | None = None) -> BenchSweep:
    """Benchmark accelerator variants of one backbone in one interleaved run.

    ``none`` is added when missing; speed-ups are paired per-repeat ratios against it.
    A variant that fails under these settings (e.g. ``int8`` under ``bf16`` autocast, or a
    failed ``torch.compile``) keeps its error message and the others are still measured.

    Args:
        backbone: a backbone or a name (``"timm:vit_small_patch16_224"``, ``"demo:fmnist-vit"``).
        accel: variants in ``--accel`` syntax, e.g. ``"none,tome:r=8,tome:r=13,evit:keep=0.7,int8"``.
        calib: calibration data for PTQ variants (``w8a8``...): a URI, DataSource or tensor ``[n, 3, H, W]``.
        calib_images: calibration images drawn from ``calib`` (seeded).
        pretrained: for names: ``False`` gives seeded random weights (no download).
        img_size: input size; for ``timm:`` names the model is built at this size.
        out: directory for the ``bench-<id>.json`` run record.
        batch_size, device, dtype, compile, warmup, repeats, min_time, latency_repeats, seed:
            see :func:`vitlab.perf.runner.bench_backbones`.

    Returns:
        :class:`BenchSweep`.

    Raises:
        UnknownNameError: unknown accelerator (with suggestions). BackboneError: unsupported architecture.
        ConfigError: a PTQ variant without ``calib``, bad settings.

    Example:
        >>> res = bench("demo:fmnist-vit", "tome:r=2,int8", batch_size=16, out="runs/", warmup=1, repeats=2,
        ...             min_time=0.01, latency_repeats=3)
        >>> sorted(res.speedup), res.speedup["none"]["value"], res.path.name.startswith("bench-")
        (['int8', 'none', 'tome:r=2'], 1.0, True)
    """
    t0 = time.perf_counter()
    variants = parse_variants(accel)  # before loading: bad specs fail fast
    if isinstance(backbone, str):
        backbone = load_bench_backbone(backbone, pretrained=pretrained, img_size=img_size, seed=seed)
    x_cal = resolve_calibration(calib, backbone, calib_images, seed) \
        if any(needs_calibration(a) for a in variants.values()) else None
    built = {label: apply_variant(backbone, acc, x_cal, label) for label, acc in variants.items()}
    baseline = next(iter(built))
    results = bench_backbones(built, batch_size=batch_size, img_size=img_size, device=device, dtype=dtype,
                              compile=compile, warmup=warmup, repeats=repeats, min_time=min_time,
                              latency_repeats=latency_repeats, seed=seed)
    dev = torch.device(next(iter(results.values())).device)
    sp = speedups(results, baseline)
    record = start_record(
        "bench",
        {"backbone": backbone.name, "accel": accel, "variants": list(built), "baseline": baseline,
         "device": str(dev), "dtype": dtype, "batch_size": batch_size,
         "img_size": list(next(iter(results.values())).img_size), "compile": compile, "warmup": warmup,
         "repeats": repeats, "min_time": min_time, "latency_repeats": latency_repeats,
         "calibration": None if x_cal is None else {"n": int(len(x_cal)), "digest": tensor_digest(x_cal)}},
        backbone=backbone, fingerprints={"variants": {k: b.accel for k, b in built.items()}}, seeds={"inputs": seed})
    record.metrics = bench_metrics(results, sp, baseline)
    record.details = {"results": {k: r.to_dict() for k, r in results.items()}, "machine": machine_info(dev),
                      "method": METHOD}
    record.timings = {"total_s": round(time.perf_counter() - t0, 3)}
    path = record.save(out) if out is not None else None
    return BenchSweep(results, record, path, baseline, sp)


METHOD = ("Inputs: seeded random tensors. Throughput: images/s of timed iterations at the batch size after warm-up "
          "(median, min, max over repeats); variants interleaved in a rotated order every repeat. Speed-up: median "
          "of per-repeat ratios to the baseline timed in the same round (min-max in brackets). Latency: batch-1 "
          "p50/p95. FLOPs: torch FlopCounterMode on one real batch-1 forward (matmuls, convolutions, attention; "
          "int8 linears counted like float ones). Memory: peak above the starting level during one forward "
          "(CPU: sampled process RSS, approximate).")


def bench_metrics(results: dict[str, BenchResult], sp: dict[str, dict[str, float]],
                  baseline: str) -> dict[str, dict[str, Any]]:
    """Record metrics: ``{label: {"images_per_s": {"value", "low", "high"}, "speedup": ..., ...}}``."""
    base = results.get(baseline)
    out: dict[str, dict[str, Any]] = {}
    for k, r in results.items():
        if not r.ok:
            continue
        point = lambda v, how="measured": Interval.point(v, how).to_entry()  # noqa: E731
        m: dict[str, Any] = {
            "images_per_s": Interval(r.throughput["median"], r.throughput["min"], r.throughput["max"],
                                     "median and range of timed repeats", None,
                                     len(r.throughput.get("samples") or ())).to_entry(),
            "latency_p50_ms": point(r.latency_ms["p50"]), "latency_p95_ms": point(r.latency_ms["p95"]),
            "flops": point(r.flops, "counted"), "params": point(r.params, "counted"),
            "peak_memory_mb": point(r.peak_memory_mb)}
        if k in sp:
            m["speedup"] = sp[k]
        if base is not None and base.ok and r.flops:
            m["flops_reduction"] = point(base.flops / r.flops, "counted")
        out[k] = m
    return out


__all__ = ["BenchSweep", "bench", "bench_metrics", "load_bench_backbone", "resolve_calibration"]
