"""Percentile bootstrap confidence intervals, plain or clustered (whole groups resampled).

A resample on which the metric is undefined (it returns NaN or raises
``ValueError``, e.g. AUROC with one class present) is skipped; the number of
skipped resamples is stored in the result and a ``RuntimeWarning`` is issued.
Metrics that are means of per-sample values (``metric_fn.per_sample``, see
:data:`vitlab.metrics.classification.METRIC_FUNCTIONS`) are evaluated for all
resamples at once with array operations; other metrics are called once per
resample. Both paths draw the same resamples for the same seed.

Example:
    >>> import numpy as np
    >>> from vitlab.metrics.classification import top1
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 500); p = np.eye(2)[np.where(rng.random(500) < .8, y, 1 - y)]
    >>> ci = bootstrap_ci(top1, y, p, n_resamples=200)
    >>> ci.low < ci.value < ci.high
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning

from vitlab.errors import ConfigError, DataError
from vitlab.stats.interval import Interval, percentile_interval

__all__ = ["bootstrap_ci", "bootstrap_replicates", "Resampler"]

MetricFn = Callable[[np.ndarray, np.ndarray], float]
_BLOCK_ELEMS = 1 << 22  # ~4M drawn indices per block bounds memory


class Resampler:
    """Draws bootstrap resamples of ``n`` samples, or of whole groups when ``groups [n]`` is given.

    Example:
        >>> r = Resampler(4, None, seed=0)
        >>> [d.shape for d in r.draws(3)]
        [(3, 4)]
    """

    def __init__(self, n: int, groups: np.ndarray | None, seed: int) -> None:
        self.n = n
        self.rng = np.random.default_rng(seed)
        if groups is None:
            self.n_units = n
            self.members: list[np.ndarray] | None = None
        else:
            groups = np.asarray(groups)
            if groups.shape != (n,):
                raise DataError(
                    f"groups has shape {groups.shape}, expected ({n},): one group id per sample."
                )
            _, inv = np.unique(groups, return_inverse=True)
            order = np.argsort(inv, kind="stable")
            self.sizes = np.bincount(inv)
            self.members = np.split(order, np.cumsum(self.sizes)[:-1])
            self.inv = inv
            self.n_units = len(self.members)
            if self.n_units < 2:
                raise DataError(
                    "groups contains a single group; a cluster bootstrap needs >= 2 groups. "
                    "Pass groups=None or finer group ids."
                )

    @property
    def method(self) -> str:
        return "percentile" if self.members is None else "cluster-percentile"

    def draws(self, n_resamples: int) -> Iterator[np.ndarray]:
        """Yield ``[b, n_units]`` blocks of unit indices (samples or groups) drawn with replacement."""
        per = max(1, _BLOCK_ELEMS // self.n_units)
        done = 0
        while done < n_resamples:
            b = min(per, n_resamples - done)
            yield self.rng.integers(0, self.n_units, size=(b, self.n_units))
            done += b

    def indices(self, draw: np.ndarray) -> np.ndarray:
        """Sample indices of one resample given its ``[n_units]`` draw."""
        if self.members is None:
            return draw
        return np.concatenate([self.members[g] for g in draw])

    def means(self, values: np.ndarray, draws: np.ndarray) -> np.ndarray:
        """Vectorised mean of per-sample ``values [n]`` over each resample of ``draws [b, n_units]``."""
        if self.members is None:
            return values[draws].mean(axis=1)
        b, G = draws.shape
        counts = np.bincount((draws + G * np.arange(b)[:, None]).ravel(), minlength=b * G)
        counts = counts.reshape(b, G).astype(np.float64)
        sums = np.bincount(self.inv, weights=values, minlength=G)
        return (counts @ sums) / (counts @ self.sizes)


def _safe(metric_fn: MetricFn, y: np.ndarray, s: np.ndarray) -> float:
    # sklearn's per-call UndefinedMetricWarning is silenced here: undefined resamples are
    # counted and reported once by the caller instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        try:
            return float(metric_fn(y, s))
        except ValueError:
            return float("nan")


def bootstrap_replicates(
    metric_fn: MetricFn,
    y_true: np.ndarray,
    scores: Sequence[np.ndarray],
    resampler: Resampler,
    n_resamples: int,
) -> np.ndarray:
    """Metric of each score array on each resample: ``[n_resamples, len(scores)]``, NaN if undefined.

    All score arrays are evaluated on the same resamples (for paired comparisons).

    Example:
        >>> from vitlab.metrics.classification import top1
        >>> y = np.array([0, 1, 1]); s = np.eye(2)[[0, 1, 0]]
        >>> bootstrap_replicates(top1, y, [s], Resampler(3, None, 0), 5).shape
        (5, 1)
    """
    per_sample = getattr(metric_fn, "per_sample", None)
    out = []
    if per_sample is not None:
        values = [np.asarray(per_sample(y_true, s), dtype=np.float64) for s in scores]
        for d in resampler.draws(n_resamples):
            out.append(np.stack([resampler.means(v, d) for v in values], axis=1))
    else:
        for d in resampler.draws(n_resamples):
            block = np.empty((d.shape[0], len(scores)))
            for r, draw in enumerate(d):
                idx = resampler.indices(draw)
                block[r] = [_safe(metric_fn, y_true[idx], s[idx]) for s in scores]
            out.append(block)
    return np.concatenate(out, axis=0)


def check_inputs(
    y_true: np.ndarray, scores: Sequence[np.ndarray], n_resamples: int, level: float = 0.95
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Validate shapes and settings shared by the bootstrap functions."""
    if n_resamples < 1:
        raise ConfigError(f"n_resamples={n_resamples} must be >= 1; use >= 1000 for reported CIs.")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level={level} must be in (0, 1), e.g. 0.95 for a 95% interval.")
    y_true = np.asarray(y_true)
    scores = [np.asarray(s) for s in scores]
    if y_true.ndim != 1 or y_true.size == 0:
        raise DataError(f"y_true must be a non-empty 1-D array, got shape {y_true.shape}.")
    for s in scores:
        if s.shape[:1] != y_true.shape:
            raise DataError(
                f"scores have {s.shape[0] if s.ndim else 0} rows but y_true has {y_true.size}. "
                "Pass one score row per sample, in the same order."
            )
    return y_true, scores


def bootstrap_ci(
    metric_fn: MetricFn,
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Interval:
    """Percentile bootstrap CI of ``metric_fn(y_true, y_score)``.

    Args:
        metric_fn: ``f(y_true [m], y_score [m, ...]) -> float``; NaN / ``ValueError`` = undefined.
        y_true: ``[n]`` labels.
        y_score: ``[n]`` or ``[n, C]`` scores / probabilities.
        n_resamples: Number of bootstrap resamples.
        level: confidence level, e.g. 0.95.
        seed: Seed of the resampling.
        groups: Optional ``[n]`` cluster ids; whole clusters are resampled with replacement.

    Returns:
        :class:`~vitlab.stats.interval.Interval` (``method`` ``"percentile"`` or
        ``"cluster-percentile"``, ``level``, ``n_skipped`` resamples where the metric
        was undefined; ``se`` is ``None``).

    Raises:
        ConfigError: ``n_resamples < 1`` or ``level`` outside (0, 1).
        DataError: mismatched shapes, undefined metric on the full data, or on every resample.

    Example:
        >>> from vitlab.metrics.classification import top1
        >>> y = np.array([0, 1] * 50); p = np.eye(2)[y]
        >>> bootstrap_ci(top1, y, p, n_resamples=50).high
        1.0
    """
    y_true, (y_score,) = check_inputs(y_true, [y_score], n_resamples, level)
    value = float(metric_fn(y_true, y_score))
    if np.isnan(value):
        raise DataError(
            f"{getattr(metric_fn, '__name__', 'metric')} is undefined (NaN) on the full data "
            f"({y_true.size} samples), so no interval can be formed. Check the labels, e.g. "
            "AUROC needs every class present."
        )
    res = Resampler(y_true.size, groups, seed)
    reps = bootstrap_replicates(metric_fn, y_true, [y_score], res, n_resamples)[:, 0]
    valid = reps[~np.isnan(reps)]
    n_skipped = int(reps.size - valid.size)
    if valid.size == 0:
        raise DataError(
            f"the metric was undefined on all {n_resamples} bootstrap resamples. Use more "
            "samples (or groups) per class, or a metric defined on small samples."
        )
    if n_skipped:
        warnings.warn(
            f"bootstrap: metric undefined on {n_skipped} of {n_resamples} resamples; they were "
            "skipped (recorded in Interval.n_skipped).",
            RuntimeWarning,
            stacklevel=2,
        )
    return percentile_interval(value, valid, level=level, method=res.method, n_resamples=n_resamples,
                               n_skipped=n_skipped)
