"""The one confidence-interval type of vitlab, and its run-record entry.

Every interval vitlab reports is an :class:`Interval`: the percentile bootstraps of
:mod:`vitlab.stats.bootstrap` (classification, retrieval and segmentation scorers), the
half-sample intervals of :mod:`vitlab.metrics.bootstrap_gen` (FD, PRDC, Vendi) and KD's
subset interval (:attr:`vitlab.metrics.kd.KDResult.interval`). :meth:`Interval.to_entry` is the
only place that turns one into a record entry ``{"value", "low", "high", ..., "method"}``.

Two kinds, told apart by ``se``:

* percentile intervals (``se is None``): quantiles of resampled values; resamples on which the
  metric was undefined are skipped and counted. Entry:
  ``{value, low, high, n_resamples, n_skipped, method}``.
* normal intervals (``se`` given): ``value -/+ z se``. Entry:
  ``{value, low, high, se, level, n_resamples, method}``.

Example:
    >>> ci = Interval(0.5, 0.4, 0.6, "percentile", level=0.95, n_resamples=100)
    >>> ci.to_entry()
    {'value': 0.5, 'low': 0.4, 'high': 0.6, 'n_resamples': 100, 'n_skipped': 0, 'method': 'percentile'}
    >>> Interval(3.0, 2.0, 4.0, "half-sample", level=0.9, n_resamples=50, se=0.6).to_entry(note="x")
    {'value': 3.0, 'low': 2.0, 'high': 4.0, 'se': 0.6, 'level': 0.9, 'n_resamples': 50, 'method': 'half-sample', 'note': 'x'}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Interval"]


@dataclass(frozen=True)
class Interval:
    """A confidence interval ``[low, high]`` around ``value``.

    Attributes:
        value: the metric on the full data (the point estimate).
        low, high: the bounds.
        method: how the interval was formed (``"percentile"``, ``"cluster-percentile"``,
            ``"half-sample"``, ``"subset jackknife"``).
        level: confidence level, e.g. 0.95 (``1 - alpha``).
        n_resamples: resamples (or half-samples, subsets) behind the interval.
        n_skipped: resamples skipped because the metric was undefined on them (percentile only).
        se: standard error of ``value`` for normal intervals ``value -/+ z se``; ``None`` for
            percentile intervals.
        samples: the ``[n_resamples]`` resampled metric values, when kept.
        bias: estimated finite-sample bias of ``value`` (when the method estimates it, e.g. FD).
        debiased: the interval of ``value - bias`` (with ``bias``).
    """

    value: float
    low: float
    high: float
    method: str
    level: float
    n_resamples: int
    n_skipped: int = 0
    se: float | None = None
    samples: np.ndarray | None = None
    bias: float | None = None
    debiased: Interval | None = None

    def to_entry(self, **extra: Any) -> dict[str, Any]:
        """The run-record entry of this interval, followed by ``extra`` keys.

        Percentile intervals give ``{value, low, high, n_resamples, n_skipped, method}``, normal
        intervals ``{value, low, high, se, level, n_resamples, method}`` (see the module docstring).
        ``samples``, ``bias`` and ``debiased`` are not included; pass what the record needs as
        ``extra``.

        Example:
            >>> Interval(1.0, 0.5, 1.5, "percentile", 0.95, 10, n_skipped=2).to_entry()["n_skipped"]
            2
        """
        entry: dict[str, Any] = {"value": self.value, "low": self.low, "high": self.high}
        if self.se is not None:
            entry.update(se=self.se, level=self.level)
        entry["n_resamples"] = self.n_resamples
        if self.se is None:
            entry["n_skipped"] = self.n_skipped
        entry["method"] = self.method
        entry.update(extra)
        return entry
