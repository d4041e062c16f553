"""Benchmark runner on a tiny random backbone: sane fields and records (never a wall-clock assertion)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vitlab.accel import apply_accel
from vitlab.backbones.base import hash_state_dict
from vitlab.errors import BackboneError, ConfigError
from vitlab.perf import runner
from vitlab.perf.measure import count_flops
from vitlab.perf import BenchResult, bench, bench_backbones, benchmark
from vitlab.report.perf_figures import bench_rows
from vitlab.record import RunRecord

FAST = dict(batch_size=4, warmup=1, repeats=3, min_time=0.0, latency_repeats=5)


def test_benchmark_fields_are_sane(tiny_backbone):
    before = hash_state_dict(tiny_backbone.model)
    r = benchmark(tiny_backbone, **FAST)
    assert r.ok and r.label == "none" and r.img_size == (32, 32) and r.batch_size == 4
    assert len(r.throughput["samples"]) == 3 and len(r.latency_ms) == 4
    assert r.params == sum(p.numel() for p in tiny_backbone.model.parameters())
    assert r.flops == count_flops(lambda x: tiny_backbone.forward_tokens(x, -1), torch.zeros(1, 3, 32, 32))
    assert r.memory_kind == "cpu_rss_delta" and r.peak_memory_mb >= 0
    assert hash_state_dict(tiny_backbone.model) == before and tiny_backbone.accel is None
    assert BenchResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_tome_lowers_flops_with_equal_params(tiny_backbone):
    res = bench_backbones({"none": tiny_backbone, "tome:r=2": apply_accel(tiny_backbone, "tome:r=2")}, **FAST)
    none, tome = res["none"], res["tome:r=2"]
    assert tome.flops < none.flops and tome.params == none.params


class FakeClock:
    """Stands in for ``time_call``: returns scripted, distinct durations and records who was timed."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.calls: list[tuple[object, int, float]] = []

    def __call__(self, fn, device, n=1):
        dt = float(self.rng.uniform(0.01, 0.1)) * n
        self.calls.append((fn, n, dt))
        return dt


def test_throughput_and_latency_are_computed_from_the_timed_calls(tiny_backbone, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(runner, "time_call", clock)
    r = benchmark(tiny_backbone, **FAST)
    lat_calls = clock.calls[-FAST["latency_repeats"]:]
    thr_calls = clock.calls[-FAST["latency_repeats"] - FAST["repeats"]:-FAST["latency_repeats"]]
    thr = np.array([n * FAST["batch_size"] / dt for _, n, dt in thr_calls])
    assert r.throughput["samples"] == [round(v, 4) for v in thr]
    assert r.throughput["median"] == pytest.approx(np.median(thr))
    assert (r.throughput["min"], r.throughput["max"]) == pytest.approx((thr.min(), thr.max()))
    lat = 1000 * np.array([dt for _, _, dt in lat_calls])
    assert (r.latency_ms["p50"], r.latency_ms["p95"]) == pytest.approx(tuple(np.percentile(lat, [50, 95])))
    assert (r.latency_ms["min"], r.latency_ms["max"]) == pytest.approx((lat.min(), lat.max()))
    assert len({fn for fn, _, _ in thr_calls}) == 1 and {fn for fn, _, _ in lat_calls}.isdisjoint(
        {fn for fn, _, _ in thr_calls})  # batch calls and batch-1 calls are different forwards


def test_variants_are_timed_interleaved_in_rotated_order(tiny_backbone, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(runner, "time_call", clock)
    variants = {"none": tiny_backbone, "tome:r=2": apply_accel(tiny_backbone, "tome:r=2")}
    res = bench_backbones(variants, **{**FAST, "repeats": 4, "latency_repeats": 2})
    thr_calls = clock.calls[-2 * 2 - 2 * 4:-2 * 2]
    a, b = thr_calls[0][0], thr_calls[1][0]
    assert a is not b and [c[0] for c in thr_calls] == [a, b, b, a, a, b, b, a]
    first = [thr_calls[i][1] * FAST["batch_size"] / thr_calls[i][2] for i in (0, 3, 4, 7)]
    assert res["none"].throughput["samples"] == [round(v, 4) for v in first]


def test_bench_sweep_record_round_trips(tiny_backbone, tmp_path):
    res = bench(tiny_backbone, "tome:r=2,evit:keep=0.5", out=tmp_path, **FAST)
    assert list(res.results) == ["none", "tome:r=2", "evit:keep=0.5"]  # none added, first
    rec = res.record
    assert rec.kind == "bench" and res.path is not None and res.path.exists()
    back = RunRecord.load(res.path)
    assert back.to_dict() == json.loads(rec.to_json())
    assert back.config["variants"] == ["none", "tome:r=2", "evit:keep=0.5"]
    assert back.metrics["none"]["speedup"]["value"] == 1.0
    assert back.metrics["tome:r=2"]["flops_reduction"]["value"] > 1
    assert back.fingerprints["variants"]["tome:r=2"]["name"] == "tome"
    rows = bench_rows(back)
    assert [r["variant"] for r in rows] == ["none", "tome:r=2", "evit:keep=0.5"]
    assert all(r["error"] is None and r["speedup_low"] <= r["speedup"] <= r["speedup_high"] for r in rows)


def test_a_failing_variant_is_recorded_and_the_others_measured(tiny_backbone):
    class Broken(type(tiny_backbone)):
        def _forward_layers(self, x, layers):
            raise RuntimeError("kernel exploded")

    broken = Broken(tiny_backbone.model, tiny_backbone.spec)
    res = bench_backbones({"none": tiny_backbone, "broken": broken}, **FAST)
    assert res["none"].ok and not res["broken"].ok
    assert res["broken"].error == "broken: the forward pass failed (RuntimeError: kernel exploded)."
    with pytest.raises(BackboneError, match="kernel exploded"):
        bench_backbones({"broken": broken}, on_error="raise", **FAST)
    with pytest.raises(BackboneError, match="every variant failed"):
        bench_backbones({"broken": broken}, **FAST)


def test_compile_failure_gives_a_clear_message(tiny_backbone, monkeypatch):
    def no_compile(fn, *a, **k):
        raise RuntimeError("no working C++ compiler")

    monkeypatch.setattr(torch, "compile", no_compile)
    with pytest.raises(BackboneError, match=r"torch.compile failed \(RuntimeError: no working C\+\+ compiler\)\. "
                                            r"Run without --compile"):
        benchmark(tiny_backbone, compile=True, **FAST)


def test_wrong_input_size_and_bad_settings(tiny_backbone):
    with pytest.raises(ConfigError, match="was built for 32x32; use that --img-size"):
        benchmark(tiny_backbone, img_size=48, **FAST)
    with pytest.raises(ConfigError, match="unknown dtype 'fp8'"):
        benchmark(tiny_backbone, dtype="fp8", **FAST)
    with pytest.raises(ConfigError, match="must be >= 1"):
        benchmark(tiny_backbone, **{**FAST, "repeats": 0})


def test_ptq_variant_needs_calibration(tiny_backbone):
    with pytest.raises(ConfigError, match="'w8a8' needs calibration images"):
        bench(tiny_backbone, "w8a8", **FAST)
    calib = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = bench(tiny_backbone, "w8a8", calib=calib, **FAST)
    assert res.record.config["calibration"]["n"] == 4 and res.results["w8a8"].ok
    assert math.isclose(res.results["w8a8"].flops, res.results["none"].flops)
