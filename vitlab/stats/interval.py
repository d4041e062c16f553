"""The one confidence-interval type of vitlab, and its run-record entry.

Every interval vitlab reports is an :class:`Interval`, and :meth:`Interval.to_entry` is the only
place that turns one into a run-record entry ``{"value", "low", "high", ..., "method"}``
(:class:`vitlab.record.RunRecord` checks every entry on save). The builders live here too, one
each:

* :func:`percentile_interval` (``se is None``): quantiles (:func:`percentile_bounds`) of resampled
  values, widened to contain the estimate; resamples on which the metric was undefined are
  skipped and counted. Used by the bootstraps of :mod:`vitlab.stats.bootstrap` and
  :mod:`vitlab.stats.paired`. Entry: ``{value, low, high, n_resamples, n_skipped, method}``.
* normal intervals (``se`` given): ``value -/+ z se``: the half-sample intervals of
  :mod:`vitlab.stats.halfsample` (FD, PRDC, Vendi), KD's subset interval, and
  :func:`t_interval`, the Student-t interval of a mean over a few replicates (few-shot episodes,
  tuning seeds, cross-validation folds). Entry: ``{value, low, high, se, level, n_resamples,
  method}`` (``n_resamples``: the number of replicate values).
* :meth:`Interval.point`: a measured value with no interval (``low`` and ``high`` ``None``).
  Entry: ``{value, low, high, method}``.

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

from vitlab.errors import ConfigError

__all__ = ["Interval", "percentile_bounds", "percentile_interval", "t_interval", "check_level"]


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
    low: float | None
    high: float | None
    method: str
    level: float | None
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
        if self.is_point:
            entry["method"] = self.method
            entry.update(extra)
            return entry
        if self.se is not None:
            entry.update(se=self.se, level=self.level)
        entry["n_resamples"] = self.n_resamples
        if self.se is None:
            entry["n_skipped"] = self.n_skipped
        entry["method"] = self.method
        entry.update(extra)
        return entry

    @property
    def is_point(self) -> bool:
        """A measured value without an interval (:meth:`point`)."""
        return self.low is None and self.high is None and self.se is None and self.n_resamples == 0

    @classmethod
    def point(cls, value: float, method: str = "measured") -> Interval:
        """A value reported without an interval (a timing, a count, a ratio of two timings).

        Example:
            >>> Interval.point(2.5, "median of 7 repeats").to_entry()
            {'value': 2.5, 'low': None, 'high': None, 'method': 'median of 7 repeats'}
        """
        return cls(float(value), None, None, method, None, 0)


def percentile_bounds(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of ``samples`` (numpy's default, linear
    interpolation): the one percentile rule of every bootstrap interval.

    Example:
        >>> percentile_bounds(np.arange(101.0), 0.9)
        (5.0, 95.0)
    """
    tail = round((1.0 - level) / 2, 12)  # 0.025 exactly for level 0.95 (1 - 0.95 is not 0.05 in floating point)
    low, high = np.quantile(np.asarray(samples, dtype=np.float64), [tail, 1 - tail])
    return float(low), float(high)


def percentile_interval(value: float, samples: np.ndarray, *, level: float, method: str, n_resamples: int,
                        n_skipped: int = 0) -> Interval:
    """The percentile interval of ``value`` from its resampled values ``samples [B]`` (NaN-free).

    The bounds are :func:`percentile_bounds`, widened where needed so that the interval contains
    its own estimate (a skewed metric near the end of its range can put ``value`` just outside the
    quantiles; reporting an interval that excludes its estimate would be incoherent).

    Example:
        >>> ci = percentile_interval(0.5, np.array([0.2, 0.4, 0.6, 0.8]), level=0.5, method="percentile",
        ...                          n_resamples=4)
        >>> round(ci.low, 6), round(ci.high, 6)
        (0.35, 0.65)
        >>> percentile_interval(1.0, np.array([0.2, 0.4]), level=0.95, method="percentile", n_resamples=2).high
        1.0
    """
    low, high = percentile_bounds(samples, level)
    value = float(value)
    return Interval(value, min(low, value), max(high, value), method, level, int(n_resamples), int(n_skipped))


def t_interval(values: Any, *, level: float = 0.95, method: str = "t-interval",
               bounds: tuple[float, float] = (-np.inf, np.inf)) -> Interval:
    """Student-t interval of the mean of a few replicate values: ``mean -/+ t(n-1) sd / sqrt(n)``.

    NaN values are left out (counted in ``n_skipped``). With fewer than two values the bounds are
    ``None`` (no interval). ``bounds`` clips the interval to the metric's range (accuracies:
    ``(0, 1)``). ``se`` is ``sd / sqrt(n)``; ``n_resamples`` the number of values used.

    Example:
        >>> ci = t_interval([0.8, 0.9, 1.0])
        >>> round(ci.value, 3), round(ci.low, 3), round(ci.high, 3), ci.n_resamples
        (0.9, 0.652, 1.148, 3)
        >>> t_interval([0.8, 0.9, 1.0], bounds=(0.0, 1.0)).high
        1.0
        >>> t_interval([0.5]).low is None
        True
    """
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    ok = v[~np.isnan(v)]
    mean = float(ok.mean()) if ok.size else float("nan")
    if ok.size < 2:
        return Interval(mean, None, None, method, level, int(ok.size), int(v.size - ok.size), se=float("nan"))
    sd = float(ok.std(ddof=1))
    se = sd / np.sqrt(ok.size)
    half = float(stats.t.ppf(0.5 + level / 2, ok.size - 1)) * sd / np.sqrt(ok.size)  # this order: same bits as ever
    return Interval(mean, float(max(mean - half, bounds[0])), float(min(mean + half, bounds[1])), method, level,
                    int(ok.size), int(v.size - ok.size), se=float(se))


def check_level(level: Any) -> float:
    """Check a confidence level in ``(0, 1)``.

    Example:
        >>> check_level(0.95)
        0.95
    """
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise ConfigError(f"level must be a number in (0, 1), e.g. 0.95, but got {level!r}.") from None
    if not 0.0 < lv < 1.0:
        raise ConfigError(f"level must be in (0, 1), e.g. 0.95, but got {level!r}.")
    return lv
