"""The scorer contract: every scorer of :data:`vitlab.scorers.SCORERS` passes the same checks on a tiny synthetic
:class:`~vitlab.protocols.base.Result` of its task.

Checks: at least one metric; every entry is a valid record entry (``value``, ``low``, ``high``; the interval
contains its estimate; :meth:`RunRecord.validate` accepts it) and survives a JSON round trip; the same seed gives
the same numbers; the headline is among the metrics; a result paired with itself differs by exactly 0.

A task needs a builder in ``RESULTS``: a registered scorer without one fails
:func:`test_every_scorer_has_a_result_builder`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from vitlab.protocols.base import Result
from vitlab.record import RunRecord
from vitlab.scorers import SCORERS
from vitlab.stats.interval import t_interval

M, C = 40, 3


def _units() -> list[str]:
    return [f"u{i:03d}" for i in range(M)]


def _classification(rng) -> Result:
    y = np.arange(M) % C
    logits = np.eye(C)[y] * 1.5 + rng.normal(size=(M, C))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return Result("classification", _units(), {"y": y, "proba": proba})


def _retrieval(rng) -> Result:
    hit = (rng.random(M) < 0.6).astype(float)
    return Result("retrieval", _units(), {"per_query": {"recall@1": hit, "mAP": np.clip(hit * 0.5 + rng.random(M) * 0.5, 0, 1)}})


def _segmentation(rng) -> Result:
    conf = np.zeros((M, C, C), np.int64)
    for i in range(M):
        conf[i] = np.diag(rng.integers(20, 40, C)) + rng.integers(0, 5, (C, C))
    return Result("segmentation", _units(), {"confusion": conf, "classes": ["a", "b", "c"]})


def _episodes(rng) -> Result:
    acc = 0.6 + 0.05 * rng.normal(size=12)
    return Result("episodes", _units(), episodes={"1shot_acc": t_interval(acc).to_entry()})


RESULTS = {"classification": _classification, "retrieval": _retrieval, "segmentation": _segmentation,
           "episodes": _episodes}


def test_every_scorer_has_a_result_builder():
    missing = sorted(set(SCORERS) - set(RESULTS))
    assert not missing, f"scorer(s) for {missing} have no Result builder in tests/contracts/test_scorer_contract.py"


@pytest.fixture(params=sorted(SCORERS))
def task(request) -> str:
    return request.param


def _score(task: str, seed: int = 0):
    res = RESULTS[task](np.random.default_rng(0))
    return res, SCORERS[task].score(res, n_resamples=200, seed=seed)


def test_entries_are_valid_and_intervals_hold_their_estimate(task):
    _, (metrics, details) = _score(task)
    assert metrics, f"the {task} scorer reported nothing"
    for name, m in metrics.items():
        assert {"value", "low", "high"} <= set(m), name
        assert np.isfinite(m["value"]) and m["low"] <= m["value"] <= m["high"], (name, m)
    RunRecord("eval", {}, {"p": metrics}).validate()
    assert json.loads(json.dumps(metrics)) == metrics
    json.dumps(details)
    assert SCORERS[task].headline_for(set(metrics)) in metrics


def test_seeded_and_reproducible(task):
    assert _score(task, seed=3)[1] == _score(task, seed=3)[1]


def test_a_result_paired_with_itself_differs_by_zero(task):
    res, _ = _score(task)
    t = SCORERS[task].paired(res, res, n_resamples=200, seed=0)
    if not SCORERS[task].p_keys:
        assert t is None
        return
    assert t["diff"] == 0 and t["low"] <= 0 <= t["high"]
    for k in SCORERS[task].p_keys:
        assert 0 < t[k] <= 1
