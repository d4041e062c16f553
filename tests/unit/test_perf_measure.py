"""Measurement primitives, variant parsing and the Pareto front (pure pieces, no timing asserted)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vitlab.accel import apply_accel
from vitlab.errors import ConfigError, UnknownNameError
from vitlab.perf.measure import PeakMemory, autocast_context, count_flops, count_parameters
from vitlab.perf.pareto import pareto_front
from vitlab.report.perf_figures import pareto_figure
from vitlab.perf.runner import BenchResult, speedups
from vitlab.perf.variants import (ExitSpec, calibration_rows, parse_exit, parse_variant, parse_variants,
                                  split_variants)


def test_flops_of_a_linear_layer_and_a_conv():
    assert count_flops(nn.Linear(8, 4), torch.randn(3, 8)) == 2 * 3 * 8 * 4
    conv = nn.Conv2d(3, 5, kernel_size=2, stride=2)
    assert count_flops(conv, torch.randn(1, 3, 4, 4)) == 2 * 5 * 4 * (3 * 2 * 2)


def test_fused_attention_counts_like_the_same_attention_written_as_matmuls():
    """Documented meaning: attention FLOPs do not depend on which kernel ran (fused SDPA or two matmuls)."""
    q, k, v = (torch.randn(2, 3, 17, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))

    def explicit(q, k, v):
        return ((q * 8 ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v

    fused = nn.functional.scaled_dot_product_attention
    assert torch.allclose(fused(q, k, v), explicit(q, k, v), atol=1e-5)
    expected = 2 * (2 * 3) * 17 * 17 * 8 * 2
    assert count_flops(explicit, q, k, v) == expected
    assert count_flops(fused, q, k, v) == expected


def test_simulated_quantisation_counts_the_flops_of_the_float_model(tiny_backbone):
    calib = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    none = count_flops(lambda t: tiny_backbone.forward_tokens(t, -1), x)
    for spec in ("w8a8", "w4a4"):
        bb = apply_accel(tiny_backbone, spec, calib=calib)
        assert count_flops(lambda t, bb=bb: bb.forward_tokens(t, -1), x) == none, spec


def test_token_reduction_lowers_flops_and_int8_counts_like_fp32(tiny_backbone):
    x = torch.randn(1, 3, 32, 32)
    flops = {}
    for spec in ("none", "tome:r=2", "int8"):
        bb = apply_accel(tiny_backbone, spec)
        flops[spec] = count_flops(lambda t, bb=bb: bb.forward_tokens(t, -1), x)
    assert flops["tome:r=2"] < flops["none"]
    assert flops["int8"] == flops["none"]  # dynamic-int8 linears counted like their float versions


def test_parameter_count_includes_quantised_weights(tiny_backbone):
    n = count_parameters(tiny_backbone.model)
    assert n == sum(p.numel() for p in tiny_backbone.model.parameters())
    assert count_parameters(apply_accel(tiny_backbone, "int8").model) == n
    calib = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert count_parameters(apply_accel(tiny_backbone, "w8a8", calib=calib).model) == n


def test_peak_memory_sees_a_large_allocation():
    with PeakMemory(torch.device("cpu")) as pm:
        x = torch.ones(16, 1024, 1024)  # 64 MiB, touched and still alive at the final sample
    assert pm.kind == "cpu_rss_delta" and pm.mb > 32
    del x


def test_autocast_context_validates_dtype():
    lin, x = nn.Linear(4, 4), torch.randn(2, 4)
    with autocast_context(torch.device("cpu"), "fp32"):
        assert lin(x).dtype == torch.float32
    with autocast_context(torch.device("cpu"), "bf16"):
        assert lin(x).dtype == torch.bfloat16
    assert lin.weight.dtype == torch.float32  # weights stay fp32
    with pytest.raises(ConfigError, match="unknown dtype 'int4'; choose one of fp32, bf16, fp16"):
        autocast_context(torch.device("cpu"), "int4")


def test_speedups_are_paired_per_repeat_ratios():
    def mk(samples, error=None):
        return BenchResult("m", "x", None, "cpu", "fp32", 1, (8, 8), throughput={"samples": samples}, error=error)

    sp = speedups({"none": mk([10.0, 20.0, 40.0]), "fast": mk([20.0, 30.0, 100.0]), "bad": mk([], "boom")}, "none")
    assert {k: sp["none"][k] for k in ("value", "low", "high")} == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert {k: sp["fast"][k] for k in ("value", "low", "high")} == {"value": 2.0, "low": 1.5, "high": 2.5}
    assert sp["fast"]["method"] == "median and range of paired per-repeat ratios"
    assert "bad" not in sp
    assert speedups({"fast": mk([1.0])}, "none") == {}


def test_split_and_parse_variants():
    assert split_variants("none, tome:r=13,schedule=decrease ,int8,tome:r=8+int8") == \
        ["none", "tome:r=13,schedule=decrease", "int8", "tome:r=8+int8"]
    v = parse_variants("tome:r=2,evit:keep=0.7")
    assert list(v) == ["none", "tome:r=2", "evit:keep=0.7"] and v["tome:r=2"].r == 2
    assert list(parse_variants("tome:r=2,none")) == ["none", "tome:r=2"]
    with pytest.raises(ConfigError, match="listed twice"):
        split_variants("none,int8,int8")
    with pytest.raises(ConfigError, match="empty item"):
        split_variants("none,,int8")


def test_unknown_accelerator_suggests_names_including_early_exit():
    with pytest.raises(UnknownNameError, match=r"unknown accelerator 'tomee'\. Did you mean: tome"):
        parse_variant("tomee:r=2")
    with pytest.raises(UnknownNameError, match="Did you mean: exit"):
        parse_variant("exi", allow_exit=True)
    with pytest.raises(ConfigError, match="use `vitlab tradeoff` for it"):
        parse_variant("early_exit")


def test_exit_specs():
    assert parse_exit("early_exit") == ExitSpec()
    assert parse_exit("exit:threshold=0.8,C=0.5") == ExitSpec(0.8, 0.5)
    with pytest.raises(ConfigError, match="threshold must be a number in \\[0, 1\\]"):
        parse_exit("exit:threshold=2")
    with pytest.raises(ConfigError, match="has no parameter 'r'; its parameters are: threshold, C"):
        parse_exit("exit:r=2")
    with pytest.raises(ConfigError, match="cannot be chained"):
        parse_variant("tome:r=2+exit", allow_exit=True)


def test_calibration_rows_come_from_the_train_split():
    split = np.array(["test"] * 10 + ["train"] * 50 + ["val"] * 5)
    rows = calibration_rows(split, 32, seed=1)
    assert len(rows) == 32 and len(set(rows)) == 32 and (split[rows] != "test").all()
    assert (calibration_rows(split, 32, seed=1) == rows).all()
    with pytest.raises(ConfigError, match="no training rows"):
        calibration_rows(np.array(["test", "test"]), 4)


def test_pareto_front():
    speed = [100, 150, 120, 90, 150, np.nan]
    acc = [0.90, 0.85, 0.80, 0.95, 0.84, 0.99]
    assert pareto_front(speed, acc).tolist() == [True, True, False, True, False, False]
    assert pareto_front([1, 1], [0.5, 0.5]).tolist() == [True, True]  # ties do not dominate each other
    fig = pareto_figure([{"label": "a", "speed": 1.0, "accuracy": 0.5, "front": True, "low": 0.4, "high": 0.6},
                         {"label": "b", "speed": 2.0, "accuracy": 0.4, "front": True}],
                        curve={"label": "exit", "speed": [1.0, 1.5], "accuracy": [0.5, 0.45]})
    assert len(fig.axes) == 1
