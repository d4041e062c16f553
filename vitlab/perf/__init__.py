"""Make ViTs cheaper, and prove it: benchmarks and accuracy/speed trade-offs of accelerators.

=====================  ==============================================================================
:func:`benchmark`      one backbone (accelerated or not): images/s, batch-1 latency, memory, params, FLOPs
:func:`bench`          accelerator variants of one backbone, timed together → ``"bench"`` run record
:func:`tradeoff`       per variant: evaluate + benchmark, accuracy change with CIs vs ``none``, feature
                       cosine, Pareto front, early exit on measured layer times → ``"tradeoff"`` record
=====================  ==============================================================================

Their records are rendered by :mod:`vitlab.report` (tables and the Pareto plot: :mod:`vitlab.report.perf_figures`).

Example:
    >>> import vitlab.perf as perf
    >>> res = perf.bench("demo:fmnist-vit", "none,tome:r=2,int8", batch_size=8, warmup=1, repeats=2, min_time=0.01,
    ...                  latency_repeats=3)  # tiny timing settings
    >>> sorted(res.speedup), res.speedup["tome:r=2"]["value"] > 0
    (['int8', 'none', 'tome:r=2'], True)
"""

from __future__ import annotations

from vitlab.perf.exit import ExitResult, layer_flops, layer_times, run_early_exit
from vitlab.perf.measure import PeakMemory, count_flops, count_parameters
from vitlab.perf.pareto import pareto_front
from vitlab.perf.runner import BenchResult, bench_backbones, benchmark, speedups
from vitlab.perf.sweep import BenchSweep, bench
from vitlab.perf.tradeoff import TradeoffResult, tradeoff
from vitlab.perf.variants import ExitSpec, parse_variants, split_variants

__all__ = ["benchmark", "bench", "tradeoff", "BenchResult", "BenchSweep", "TradeoffResult", "ExitResult", "ExitSpec",
           "bench_backbones", "speedups", "layer_times", "layer_flops", "run_early_exit",
           "count_flops", "count_parameters", "PeakMemory", "pareto_front",
           "parse_variants", "split_variants"]
