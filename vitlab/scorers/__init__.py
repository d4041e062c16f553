"""Scorers: one per task. A :class:`~vitlab.protocols.base.Result` declares its task; the task's
scorer computes its metrics with confidence intervals (resampling the right unit: image, query
or group), pairs two backbones' results on the same units, and names the headline metric.
:func:`pair_results` is the one pairing function every verb uses (paired tests, Holm within a family).

Example:
    >>> sorted(SCORERS)
    ['classification', 'episodes', 'retrieval', 'segmentation']
    >>> scorer_for("retrieval").headline
    'recall@1'
"""

from __future__ import annotations

from vitlab.scorers.base import Scorer, scorer_for, SCORERS
from vitlab.scorers import classification, episodes, retrieval, segmentation  # noqa: F401  (register)
from vitlab.scorers.pairing import ALPHA, against, pair_results

__all__ = ["Scorer", "SCORERS", "scorer_for", "pair_results", "against", "ALPHA"]
