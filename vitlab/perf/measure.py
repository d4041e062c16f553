"""Measurement primitives: FLOPs on a real forward pass, parameter count, peak memory, timers.

Pure helpers with no knowledge of accelerators or variants; :mod:`vitlab.perf.runner`
combines them into a benchmark.

Example:
    >>> m = torch.nn.Linear(8, 4)
    >>> count_parameters(m)
    36
    >>> count_flops(m, torch.randn(2, 8))        # 2 * batch * in * out
    128
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vitlab.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``bf16``/``fp16`` (weights stay fp32, as the embedding store runs), else a no-op.

    Raises:
        ConfigError: unknown dtype name.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timers measure it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device, n: int = 1) -> float:
    """Seconds for ``n`` back-to-back calls of ``fn`` (device synchronised before and after)."""
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    synchronize(device)
    return time.perf_counter() - t0


def count_parameters(model: nn.Module) -> int:
    """Number of weights, including those that quantised modules hold outside ``nn.Parameter``.

    ``torch.ao`` dynamic-quantised ``Linear`` keeps packed weights (``weight()`` is a method),
    and simulated-PTQ layers keep theirs as buffers; both are counted, so an int8 or W8A8 copy
    reports the same count as its FP32 source.

    Example:
        >>> count_parameters(nn.Sequential(nn.Linear(4, 2), nn.LayerNorm(2)))
        14
    """
    n = 0
    for m in model.modules():
        own = list(m.parameters(recurse=False))
        if own:
            n += sum(p.numel() for p in own)
            continue
        for attr in ("weight", "bias"):
            t = getattr(m, attr, None)
            if callable(t) and not isinstance(t, (nn.Module, torch.Tensor)):
                try:
                    t = t()
                except Exception:  # noqa: BLE001 - not a quantised accessor after all
                    t = None
            if isinstance(t, torch.Tensor):
                n += t.numel()
    return int(n)


def _linear_flops(x_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of a (quantised) linear layer: ``2 * rows * in_features * out_features``."""
    return 2 * math.prod(x_shape) * int(out_shape[-1])


def _int_mm_flops(a_shape: Any, b_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * math.prod(a_shape) * int(b_shape[-1])


def sdpa_flops(q_shape: Any, k_shape: Any, v_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of scaled dot-product attention: ``Q K^T`` plus ``A V`` (softmax and scaling not counted).

    Shapes are ``[..., L, E]`` for the query, ``[..., S, E]`` for the key and ``[..., S, Ev]``
    for the value; leading dimensions (batch, heads) multiply.

    Example:
        >>> sdpa_flops((2, 3, 17, 8), (2, 3, 17, 8), (2, 3, 17, 8))   # 2 * (2*3) * 17 * 17 * (8 + 8)
        55488
    """
    rows = math.prod(q_shape[:-1])
    return 2 * rows * int(k_shape[-2]) * (int(q_shape[-1]) + int(v_shape[-1]))


def _custom_flop_mapping() -> dict[Any, Callable[..., int]]:
    """Formulas for ops that ``FlopCounterMode`` does not know.

    Quantised linears and int8 matmuls cost the same multiply-adds as their float versions.
    Fused attention: depending on the torch version and device, the CPU path reaches the counter
    as ``aten.scaled_dot_product_attention`` itself (torch 2.14) or as
    ``aten._scaled_dot_product_flash_attention_for_cpu``, neither of which torch counts; the same
    attention written as two matmuls (as simulated quantisation runs it) is counted through ``bmm``.
    Mapping both makes the count independent of which kernel ran.
    """
    mapping: dict[Any, Callable[..., int]] = {}
    for ns, op, fn in (("quantized", "linear_dynamic", _linear_flops),
                       ("quantized", "linear_dynamic_fp16", _linear_flops), ("aten", "_int_mm", _int_mm_flops),
                       ("aten", "scaled_dot_product_attention", sdpa_flops),
                       ("aten", "_scaled_dot_product_flash_attention_for_cpu", sdpa_flops)):
        with contextlib.suppress(AttributeError, RuntimeError):
            mapping[getattr(getattr(torch.ops, ns), op)] = fn
    return mapping


def count_flops(fn: Callable[..., Any] | nn.Module, *args: Any) -> int:
    """FLOPs of one real call ``fn(*args)``, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    Counted on the ops that actually run, so token merging or pruning lowers the count.
    Matmuls, convolutions and attention (fused or not, on every torch version) are counted
    (a multiply-add = 2 FLOPs); element-wise ops, norms and softmax are not. Dynamic-int8
    linears are counted like their float equivalents.

    Simulated quantisation (``w8a8``, ``w6a6``, ``w4a4``) counts the FLOPs of the float model it
    simulates: its matmuls are the same multiply-adds, and its fake-quant rounding is
    element-wise, so its count equals the unquantised model's. Real speed-ups of integer kernels
    are measured as time, not as FLOPs.

    Args:
        fn: a module or callable, e.g. ``lambda x: bb.forward_tokens(x, -1)``.
        *args: its inputs, e.g. images ``[B, 3, H, W]``.

    Returns:
        Total FLOPs of the call (for all B images).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=_custom_flop_mapping()) as fc:
        fn(*args)
    return int(fc.get_total_flops())


class PeakMemory:
    """Peak memory of a code block above its starting level, in MiB.

    On CUDA: ``torch.cuda.max_memory_allocated`` (exact, tensors only). On CPU: the process RSS
    sampled every ``interval`` seconds by a background thread (psutil), after returning freed heap
    pages to the OS (glibc ``malloc_trim``), so it is approximate: it includes allocator behaviour
    and misses spikes shorter than the interval.

    Example:
        >>> with PeakMemory(torch.device("cpu")) as pm:
        ...     _ = torch.ones(1024, 1024)
        >>> pm.kind, pm.mb >= 0
        ('cpu_rss_delta', True)
    """

    def __init__(self, device: torch.device, interval: float = 0.001) -> None:
        self.device, self.interval = device, interval
        self.mb: float = float("nan")
        self.kind = "cuda_max_allocated_delta" if device.type == "cuda" else "cpu_rss_delta"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        _release_free_heap()
        self._proc = psutil.Process()
        self._base = self._peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
            return
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self._stop.set()
        self._thread.join()
        self.mb = max(0, self._peak - self._base) / 2**20


def _release_free_heap() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``), so an RSS delta sees the block's own peak.

    Without it, memory freed by an earlier forward stays resident and is silently reused, and a
    second backbone measured in the same process shows a peak near zero. No-op off glibc.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 - raises AttributeError off glibc
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where a benchmark ran: platform, CPU count, torch threads, load average, GPU name."""
    info: dict[str, Any] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                            "torch": torch.__version__, "device": str(device)}
    with contextlib.suppress(OSError, AttributeError):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


__all__ = ["DTYPES", "autocast_context", "synchronize", "time_call", "count_parameters", "count_flops", "sdpa_flops",
           "PeakMemory", "machine_info"]
