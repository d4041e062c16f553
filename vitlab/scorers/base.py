"""The :class:`Scorer` contract and the task → scorer registry.

Every interval a scorer reports is a seeded percentile bootstrap over the task's unit
(:mod:`vitlab.stats.bootstrap`; whole groups when the result has groups), recorded with
:meth:`vitlab.stats.interval.Interval.to_entry`, and every paired test resamples both results on
the same draws (:func:`vitlab.stats.paired.paired_bootstrap`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from vitlab.errors import ConfigError
from vitlab.protocols.base import Result

__all__ = ["Scorer", "SCORERS", "register_scorer", "scorer_for", "check_paired"]

SCORERS: dict[str, "Scorer"] = {}


def register_scorer(cls: type["Scorer"]) -> type["Scorer"]:
    """Class decorator: the scorer of ``cls.task``."""
    SCORERS[cls.task] = cls()
    return cls


def scorer_for(task: str) -> "Scorer":
    """The scorer of ``task``.

    Raises:
        ConfigError: no scorer for that task.
    """
    try:
        return SCORERS[task]
    except KeyError:
        raise ConfigError(f"no scorer for task {task!r}; known tasks: {', '.join(sorted(SCORERS))}.") from None


def check_paired(a: Result, b: Result) -> None:
    """Refuse to pair results scored on different units (a paired test needs the same test items).

    Raises:
        ConfigError: different tasks or different units.
    """
    if a.task != b.task:
        raise ConfigError(f"cannot pair a {a.task} result with a {b.task} result.")
    if a.units != b.units:
        raise ConfigError("the two runs were scored on different test items; a paired test needs identical "
                          "splits (did one backbone skip images the other embedded?).")


class Scorer(ABC):
    """Metrics, intervals and paired tests of one task.

    Attributes:
        task: the task name. headline: the leaderboard metric. p_keys: p-values of :meth:`paired`
        that are Holm-adjusted across pairs. significance_rule: in words, for the record.
    """

    task: ClassVar[str] = ""
    headline: ClassVar[str] = ""
    p_keys: ClassVar[tuple[str, ...]] = ("p_bootstrap",)
    significance_rule: ClassVar[str] = "Holm-adjusted paired bootstrap p < alpha"

    @abstractmethod
    def score(self, res: Result, *, n_resamples: int, seed: int, **options: Any
              ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """``(metrics, details)``: ``metrics[name] = {value, low, high, method, ...}``."""

    def paired(self, a: Result, b: Result, *, n_resamples: int, seed: int) -> dict[str, Any] | None:
        """Paired test of ``a`` against ``b`` on the same units (``None``: the task has none)."""
        return None

    def headline_for(self, metric_names: set[str]) -> str:
        """The leaderboard metric among ``metric_names`` (default :attr:`headline`)."""
        if self.headline in metric_names:
            return self.headline
        if not metric_names:
            raise ConfigError(f"no {self.task} metric to rank on.")
        return sorted(metric_names)[0]

    def significant(self, test: dict[str, Any], alpha: float) -> bool:
        """Whether a Holm-adjusted test says the two systems differ."""
        return all(test.get(f"{k}_holm", 1.0) < alpha for k in self.p_keys if k in test)


def mean_of(values: np.ndarray) -> float:
    return float(np.mean(values))
