"""Early exit wired to measured timings: per-layer heads on cached embeddings, MEASURED cumulative layer times.

1. the embeddings of every block come from the store in one forward pass
   (``layers=list(range(depth))``, cached like any other embedding set);
2. one logistic head per layer is fitted on the train split (:func:`vitlab.accel.early_exit.fit_exit_heads`);
3. :func:`layer_times` times the real forward pass up to block ``l`` (``forward_tokens(x, l)`` stops
   early) for every ``l``, interleaved over repeats: the cumulative wall time of each exit point;
4. :func:`vitlab.accel.early_exit.threshold_sweep` turns test-set probabilities and those times into
   accuracy and measured speed-up per threshold.

Example:
    >>> import vitlab
    >>> t = layer_times(vitlab.load_backbone("demo:fmnist-vit"), batch_size=16, repeats=3)
    >>> t.shape, bool((np.diff(t) >= 0).all())
    ((6,), True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitlab.accel.early_exit import exit_decisions, exit_probabilities, fit_exit_heads, threshold_sweep
from vitlab.backbones.base import Backbone
from vitlab.data import DataSource
from vitlab.metrics.classification import METRIC_FUNCTIONS
from vitlab.perf.measure import autocast_context, count_flops, time_call
from vitlab.perf.variants import ExitSpec
from vitlab.stats.paired import mcnemar, paired_bootstrap
from vitlab.store import EmbeddingStore

DEFAULT_THRESHOLDS = tuple(round(float(t), 2) for t in np.linspace(0.0, 1.0, 21))


def layer_times(backbone: Backbone, *, batch_size: int = 32, img_size: tuple[int, int] | None = None,
                dtype: str = "fp32", warmup: int = 2, repeats: int = 7, seed: int = 0) -> np.ndarray:
    """Measured cumulative wall time (s per image) to compute the tokens of block ``l``, for every ``l``.

    Each exit point ``l`` is a real forward pass up to block ``l`` (final norm included), at
    ``batch_size`` on the backbone's device; the exit points are interleaved in a rotated order
    every repeat and the median is kept. Timer noise can make a deeper exit look cheaper;
    the result is made non-decreasing with a running maximum.

    Args:
        backbone: the backbone (not modified).
        batch_size: images per timed forward (time is divided by it).
        img_size: input ``(H, W)`` (default the preprocessing size).

    Returns:
        ``[depth]`` non-decreasing seconds per image.
    """
    dev, depth = backbone.device, backbone.spec.depth
    size = tuple(img_size or backbone.spec.preprocessing.input_size)
    x = torch.randn(batch_size, 3, *size, generator=torch.Generator().manual_seed(seed)).to(dev)

    def call(layer: int):
        def run() -> Any:
            with torch.inference_mode(), autocast_context(dev, dtype):
                return backbone.forward_tokens(x, layer)
        return run

    calls = [call(layer) for layer in range(depth)]
    for fn in calls:
        for _ in range(max(1, warmup)):
            fn()
    times: list[list[float]] = [[] for _ in range(depth)]
    for r in range(repeats):
        order = list(range(depth))
        for layer in order[r % depth:] + order[: r % depth]:
            times[layer].append(time_call(calls[layer], dev) / batch_size)
    return np.maximum.accumulate(np.array([np.median(t) for t in times]))


def layer_flops(backbone: Backbone, img_size: tuple[int, int] | None = None) -> np.ndarray:
    """``[depth]`` FLOPs per image of the forward pass up to each block (counted on real passes)."""
    size = tuple(img_size or backbone.spec.preprocessing.input_size)
    x = torch.zeros(1, 3, *size, device=backbone.device)
    return np.array([count_flops(lambda t, layer=layer: backbone.forward_tokens(t, layer), x)
                     for layer in range(backbone.spec.depth)], dtype=np.int64)


@dataclass
class ExitResult:
    """Early exit on a backbone: the threshold sweep with measured speed-ups, and its operating point.

    Attributes:
        label: the variant label; spec: its :class:`ExitSpec`.
        cum_time_s: ``[L]`` measured seconds per image to reach exit ``l``; cum_flops: ``[L]`` FLOPs.
        sweep: per threshold: ``threshold``, ``accuracy``, ``expected_time``, ``speedup`` (measured),
            ``flops_reduction``, ``mean_exit_layer``, ``exit_fraction [T, L]`` (lists).
        point: the sweep row at ``spec.threshold``.
        last_layer_accuracy: accuracy of the last layer's head (= never exiting early).
        delta: paired bootstrap of top-1 (exit rule − last-layer head) on the same test images.
        proba: ``[n_test, K]`` probabilities at each image's exit layer; y_test ``[n_test]``.
    """

    label: str
    spec: ExitSpec
    cum_time_s: list[float]
    cum_flops: list[int]
    sweep: dict[str, list[Any]]
    point: dict[str, float]
    last_layer_accuracy: float
    delta: dict[str, float]
    proba: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))
    y_test: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    embeddings_digest: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "threshold": self.spec.threshold, "C": self.spec.C,
                "cum_time_s": self.cum_time_s, "cum_flops": self.cum_flops, "sweep": self.sweep,
                "point": self.point, "last_layer_accuracy": self.last_layer_accuracy, "delta": self.delta,
                "embeddings_digest": self.embeddings_digest}


def run_early_exit(backbone: Backbone, source: DataSource, splits: np.ndarray, spec: ExitSpec, *, label: str = "exit",
                   pool: str = "cls", seed: int = 0, n_resamples: int = 1000, cache_dir: str | Path | None = None,
                   batch_size: int = 32, dtype: str = "fp32", warmup: int = 2, repeats: int = 7,
                   embed_kwargs: dict[str, Any] | None = None) -> ExitResult:
    """Fit per-layer exit heads on the train split, score the test split, and sweep thresholds on measured times.

    Args:
        backbone: the unaccelerated backbone (its blocks are timed; it is not modified).
        source, splits: labelled data and ``[n_source]`` split names (``test`` rows are scored).
        spec: threshold of the operating point and the heads' C.
        pool: pooling of each layer's embedding (``cls``, ``mean``, ``cls+mean``).
        n_resamples: bootstrap resamples of the paired accuracy change.
        batch_size, dtype, warmup, repeats: timing settings of :func:`layer_times`.
        embed_kwargs: passed to :meth:`EmbeddingStore.get_or_compute` (``num_workers``, ``progress``...).

    Returns:
        :class:`ExitResult`.
    """
    depth = backbone.spec.depth
    emb = EmbeddingStore(cache_dir).get_or_compute(backbone, source, layers=list(range(depth)), pool=pool,
                                                   **(embed_kwargs or {}))
    split = np.asarray(splits)[np.asarray(emb.index)]
    tr, te = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
    X = np.stack([np.asarray(emb.get(layer, pool), dtype=np.float32) for layer in range(depth)], axis=1)
    y = np.asarray(emb.labels)
    heads = fit_exit_heads(X[tr], y[tr], C=spec.C, num_classes=len(emb.classes))
    P = exit_probabilities(heads, X[te])
    y_te = y[te]
    cum_t = layer_times(backbone, batch_size=batch_size, dtype=dtype, warmup=warmup, repeats=repeats, seed=seed)
    cum_f = layer_flops(backbone)
    ths = sorted(set(DEFAULT_THRESHOLDS) | {float(spec.threshold)})
    sw = threshold_sweep(P, y_te, cum_t, thresholds=ths)
    exp_flops = np.array([cum_f[exit_decisions(P, t)[0]].mean() for t in ths])
    sweep = {k: np.asarray(v).tolist() for k, v in sw.items()}
    sweep["flops_reduction"] = (cum_f[-1] / exp_flops).tolist()
    i = ths.index(float(spec.threshold))
    point = {k: sweep[k][i] for k in ("threshold", "accuracy", "speedup", "flops_reduction", "mean_exit_layer",
                                      "expected_time")}
    layer, _ = exit_decisions(P, float(spec.threshold))
    p_exit = P[np.arange(len(P)), layer]
    groups = None if emb.groups is None else np.asarray(emb.groups)[te]
    boot = paired_bootstrap(METRIC_FUNCTIONS["top1"], y_te, p_exit, P[:, -1], n_resamples=n_resamples, seed=seed,
                            groups=groups)
    mc = mcnemar(p_exit.argmax(1) == y_te, P[:, -1].argmax(1) == y_te)
    delta = {"diff": boot.diff, "low": boot.low, "high": boot.high, "p_bootstrap": boot.p_value,
             "p_mcnemar": mc.p_value, "versus": "last-layer exit head"}
    return ExitResult(label, spec, cum_t.tolist(), cum_f.tolist(), sweep, point,
                      float(np.mean(P[:, -1].argmax(1) == y_te)), delta, p_exit, y_te, emb.digest)


__all__ = ["layer_times", "layer_flops", "ExitResult", "run_early_exit", "DEFAULT_THRESHOLDS"]
