"""Episodes (few-shot): the protocol already summarised its episodes (mean and t-interval per
classifier and shot); the headline is SimpleShot at the largest shot. No paired test: episodes
are not shared units across backbones' test items.

Example:
    >>> EpisodesScorer().headline_for({"simpleshot_1shot", "simpleshot_16shot", "linear_16shot"})
    'simpleshot_16shot'
"""

from __future__ import annotations

from typing import Any

from vitlab.protocols.base import Result
from vitlab.scorers.base import Scorer, register_scorer

__all__ = ["EpisodesScorer"]


@register_scorer
class EpisodesScorer(Scorer):
    """Scorer of task ``episodes``: passes the protocol's episode summaries through."""

    task = "episodes"
    headline = ""
    p_keys = ()

    def score(self, res: Result, *, n_resamples: int, seed: int, **_: Any
              ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        return dict(res.episodes), {}

    def headline_for(self, metric_names: set[str]) -> str:
        def key(k: str) -> tuple[bool, int]:
            shot = k.rsplit("_", 1)[-1].removesuffix("shot")
            return k.startswith("simpleshot"), int(shot) if shot.isdigit() else 0
        return max(metric_names, key=key)
