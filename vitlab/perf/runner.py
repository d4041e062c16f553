"""Benchmark runner: throughput, batch-1 latency, peak memory, parameters and FLOPs of backbones.

Several backbones (e.g. the accelerated variants of one model) are timed in ONE interleaved
loop: every repeat times each variant once, in a rotated order, so slow drifts of a shared
machine hit all variants alike, and speed-ups are per-repeat paired ratios against the
baseline measured in the same run.

Example:
    >>> import vitlab
    >>> bb = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=64)  # random weights
    >>> r = benchmark(bb, batch_size=8, warmup=1, repeats=3, min_time=0.01, latency_repeats=5)
    >>> len(r.throughput["samples"]), r.throughput["median"] > 0, r.latency_ms["p95"] >= r.latency_ms["p50"]
    (3, True, True)
"""

from __future__ import annotations

import copy
import gc
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from vitlab.backbones import resolve_device
from vitlab.backbones.base import Backbone
from vitlab.errors import BackboneError, ConfigError, VitlabError
from vitlab.stats.interval import Interval
from vitlab.perf.measure import (DTYPES, PeakMemory, autocast_context, count_flops, count_parameters, synchronize,
                                 time_call)


@dataclass
class BenchResult:
    """Measured figures of one backbone (one variant).

    Attributes:
        name: backbone name; label: the variant label (e.g. ``"tome:r=8"``); accel: its ``accel`` dict.
        device, dtype, batch_size, img_size ``(H, W)``, compiled: the conditions.
        throughput: images/s over timed iterations at ``batch_size``: ``median``, ``min``, ``max`` and
            ``samples`` (one per repeat, in repeat order).
        latency_ms: batch-1 latency: ``p50``, ``p95``, ``min``, ``max``.
        peak_memory_mb: peak memory above the starting level during one ``batch_size`` forward;
            memory_kind says how it was measured (``cpu_rss_delta`` or ``cuda_max_allocated_delta``).
        params: weights (quantised ones included); flops: FLOPs per image of one real forward.
        iters_per_repeat: forwards per timed iteration (from ``min_time``).
        error: why the variant could not be measured (then the figures are empty).
    """

    name: str
    label: str
    accel: dict[str, Any] | None
    device: str
    dtype: str
    batch_size: int
    img_size: tuple[int, int]
    compiled: bool = False
    throughput: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float = float("nan")
    memory_kind: str = ""
    params: int = 0
    flops: int = 0
    iters_per_repeat: int = 1
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["img_size"] = list(self.img_size)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchResult:
        known = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in known}
        kw["img_size"] = tuple(kw.get("img_size", (0, 0)))
        return cls(**kw)


@dataclass
class _Prepared:
    """A backbone ready to time: its forward closures and inputs."""

    result: BenchResult
    run_batch: Callable[[], Any] | None = None
    run_single: Callable[[], Any] | None = None


def _on_device(backbone: Backbone, device: torch.device) -> Backbone:
    """``backbone`` itself when already on ``device``, else a moved deep copy (the user's model stays put)."""
    if backbone.device == device:
        return backbone
    return copy.deepcopy(backbone).to(device)


def _short_error(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def _prepare(label: str, backbone: Backbone, *, batch_size: int, img_size: tuple[int, int], device: torch.device,
             dtype: str, compile: bool, warmup: int, min_time: float, layers: int, seed: int) -> _Prepared:
    res = BenchResult(backbone.name, label, backbone.accel, str(device), dtype, batch_size, img_size, compile)
    bb = _on_device(backbone, device)
    gen = torch.Generator().manual_seed(seed)
    xb = torch.randn(batch_size, 3, *img_size, generator=gen).to(device)
    x1 = xb[:1].clone()
    res.params = count_parameters(bb.model)

    def forward(x: torch.Tensor) -> Any:
        return bb.forward_tokens(x, layers).tokens

    try:
        res.flops = count_flops(forward, x1)  # eager, fp32: FLOPs do not depend on dtype or compilation
    except VitlabError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. a model built for another input size
        (h, w) = bb.spec.preprocessing.input_size
        if (h, w) == tuple(img_size):
            raise BackboneError(f"{label}: the forward pass failed ({_short_error(e)}).") from e
        raise ConfigError(f"{label}: forward at {img_size[0]}x{img_size[1]} failed ({_short_error(e)}). "
                          f"{bb.name} was built for {h}x{w}; use that --img-size, or load the backbone at the new size "
                          "(timm: load_backbone(name, img_size=N); `vitlab bench --img-size` does this for timm:).")
    fn = forward
    if compile:
        try:
            fn = torch.compile(forward)
        except Exception as e:  # noqa: BLE001
            raise BackboneError(f"{label}: torch.compile failed ({_short_error(e)}). Run without --compile.") from e

    def run(x: torch.Tensor) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode(), autocast_context(device, dtype):
                return fn(x)
        return call

    run_batch, run_single = run(xb), run(x1)
    try:
        for _ in range(max(1, warmup)):
            run_batch()
        run_single()  # warm the batch-1 path (and its compiled graph) too
        one = time_call(run_batch, device)
    except Exception as e:  # noqa: BLE001 - compile / dtype / kernel failures become a clear message
        what = "torch.compile" if compile else f"{dtype} inference"
        hint = ("Run without --compile (on CPU, torch.compile needs a working C++ compiler)." if compile
                else "Try --precision fp32 for this variant." if dtype != "fp32" else "")
        raise BackboneError(f"{label}: {what} failed ({_short_error(e)}). {hint}".strip()) from e
    res.iters_per_repeat = max(1, math.ceil(min_time / one)) if min_time > 0 and one > 0 else 1
    with PeakMemory(device) as pm:
        run_batch()
    res.peak_memory_mb, res.memory_kind = round(pm.mb, 2), pm.kind
    return _Prepared(res, run_batch, run_single)


def bench_backbones(backbones: Mapping[str, Backbone], *, batch_size: int = 32,
                    img_size: int | tuple[int, int] | None = None, device: str | torch.device | None = None,
                    dtype: str = "fp32", compile: bool = False, warmup: int = 3, repeats: int = 10,
                    min_time: float = 0.1, latency_repeats: int = 30, layers: int = -1, seed: int = 0,
                    on_error: str = "record") -> dict[str, BenchResult]:
    """Benchmark several backbones in one interleaved loop.

    Args:
        backbones: label → backbone (e.g. ``{"none": bb, "tome:r=8": fast}``); none is modified.
        batch_size: images per timed forward (throughput).
        img_size: input ``H`` (or ``(H, W)``); default the first backbone's preprocessing size.
        device: ``cpu``, ``cuda``... (default: each backbone's own); a backbone elsewhere is copied there.
        dtype: ``fp32``, or ``bf16`` / ``fp16`` autocast.
        compile: time ``torch.compile`` of the forward pass.
        warmup: untimed forwards per backbone before timing.
        repeats: timed iterations per backbone (throughput = median, with min and max).
        min_time: each timed iteration runs enough forwards to last at least this many seconds.
        latency_repeats: batch-1 forwards per backbone for the latency percentiles.
        layers: which block's tokens are returned (``-1``: the full network).
        on_error: ``record`` a failing backbone's error in its result and go on, or ``raise`` it.

    Returns:
        label → :class:`BenchResult`, in the given order.

    Raises:
        ConfigError: bad settings; BackboneError: every backbone failed (or one, with ``on_error="raise"``).
    """
    if not backbones:
        raise ConfigError("nothing to benchmark: pass at least one backbone.")
    if batch_size < 1 or repeats < 1 or warmup < 0 or latency_repeats < 1 or min_time < 0:
        raise ConfigError(f"batch_size, repeats and latency_repeats must be >= 1 and warmup, min_time >= 0; got "
                          f"{batch_size}, {repeats}, {latency_repeats}, {warmup}, {min_time}.")
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    if on_error not in ("record", "raise"):
        raise ConfigError(f"on_error must be 'record' or 'raise', got {on_error!r}.")
    first = next(iter(backbones.values()))
    dev = resolve_device(device) if device is not None else first.device
    size = first.spec.preprocessing.input_size if img_size is None else \
        (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"img_size must be a positive int or (H, W), got {img_size!r}.")
    prepared: dict[str, _Prepared] = {}
    for label, bb in backbones.items():
        try:
            prepared[label] = _prepare(label, bb, batch_size=batch_size, img_size=size, device=dev, dtype=dtype,
                                       compile=compile, warmup=warmup, min_time=min_time, layers=layers, seed=seed)
        except VitlabError as e:
            if on_error == "raise":
                raise
            prepared[label] = _Prepared(BenchResult(bb.name, label, bb.accel, str(dev), dtype, batch_size, size,
                                                    compile, error=str(e)))
        gc.collect()
    live = [k for k, p in prepared.items() if p.run_batch is not None]
    if not live:
        raise BackboneError("every variant failed: " + " | ".join(p.result.error or "" for p in prepared.values()))
    thr: dict[str, list[float]] = {k: [] for k in live}
    for r in range(repeats):  # interleaved, rotated order
        for k in live[r % len(live):] + live[: r % len(live)]:
            p = prepared[k]
            n = p.result.iters_per_repeat
            thr[k].append(n * batch_size / max(time_call(p.run_batch, dev, n), 1e-12))
    lat: dict[str, list[float]] = {k: [] for k in live}
    for r in range(latency_repeats):
        for k in live[r % len(live):] + live[: r % len(live)]:
            lat[k].append(1000 * time_call(prepared[k].run_single, dev))
    for k in live:
        res, t, la = prepared[k].result, np.asarray(thr[k]), np.asarray(lat[k])
        res.throughput = {"median": float(np.median(t)), "min": float(t.min()), "max": float(t.max()),
                          "samples": [round(float(v), 4) for v in t]}
        p50, p95 = np.percentile(la, [50, 95])
        res.latency_ms = {"p50": float(p50), "p95": float(p95), "min": float(la.min()), "max": float(la.max())}
    synchronize(dev)
    return {k: p.result for k, p in prepared.items()}


def benchmark(backbone: Backbone, *, batch_size: int = 32, img_size: int | tuple[int, int] | None = None,
              device: str | torch.device | None = None, dtype: str = "fp32", compile: bool = False, warmup: int = 3,
              repeats: int = 10, min_time: float = 0.1, latency_repeats: int = 30, seed: int = 0) -> BenchResult:
    """Benchmark one backbone (accelerated or not): throughput, latency, memory, params, FLOPs.

    Args:
        backbone: any :class:`~vitlab.backbones.base.Backbone`, e.g. ``apply_accel(bb, "tome:r=8")``.
        batch_size: images per timed forward; inputs are seeded random ``[B, 3, H, W]`` tensors.
        img_size: input size (default: the backbone's preprocessing size).
        device: where to run (default: where the backbone is); the user's backbone is never moved.
        dtype: ``fp32``, ``bf16`` or ``fp16`` (autocast).
        compile: ``torch.compile`` the forward pass (a failure raises a clear BackboneError).
        warmup, repeats, min_time, latency_repeats: see :func:`bench_backbones`.

    Returns:
        :class:`BenchResult`.

    Raises:
        BackboneError: the forward pass fails under these settings (compile, dtype, input size).

    Example:
        >>> import vitlab
        >>> r = benchmark(vitlab.load_backbone("demo:fmnist-vit"), batch_size=16, warmup=1, repeats=3, min_time=0.01,
        ...               latency_repeats=5)
        >>> r.flops, r.params
        (72566784, 680832)
    """
    label = "none" if backbone.accel is None else str(backbone.accel.get("name"))
    return bench_backbones({label: backbone}, batch_size=batch_size, img_size=img_size, device=device, dtype=dtype,
                           compile=compile, warmup=warmup, repeats=repeats, min_time=min_time,
                           latency_repeats=latency_repeats, seed=seed, on_error="raise")[label]


def speedups(results: Mapping[str, BenchResult], baseline: str) -> dict[str, dict[str, float]]:
    """Throughput speed-up of each result over ``baseline`` from per-repeat paired ratios.

    Repeat ``r`` of every variant was timed in the same round of the interleaved loop, so
    ``samples_v[r] / samples_base[r]`` cancels machine drift; ``value`` is the median ratio,
    ``low``/``high`` the smallest and largest.

    Example:
        >>> mk = lambda s: BenchResult("m", "x", None, "cpu", "fp32", 1, (8, 8), throughput={"samples": s})
        >>> speedups({"none": mk([10, 20]), "fast": mk([20, 30])}, "none")["fast"]
        {'value': 1.75, 'low': 1.5, 'high': 2.0, 'n_resamples': 2, 'n_skipped': 0, 'method': 'median and range of paired per-repeat ratios'}
    """
    base = results.get(baseline)
    if base is None or not base.ok:
        return {}
    b = np.asarray(base.throughput["samples"], dtype=float)
    out = {}
    for k, r in results.items():
        if r.ok:
            ratio = np.asarray(r.throughput["samples"], dtype=float) / b
            out[k] = Interval(float(np.median(ratio)), float(ratio.min()), float(ratio.max()),
                              "median and range of paired per-repeat ratios", None, int(ratio.size)).to_entry()
    return out


__all__ = ["BenchResult", "bench_backbones", "benchmark", "speedups"]
