"""Retrieval: recall@k, precision@k, nDCG@k, mAP and MAP@R as means of per-query values
(:mod:`vitlab.metrics.retrieval`), each with a seeded percentile-bootstrap CI over queries (whole
groups when queries have groups); paired: bootstrap of the per-query difference of the headline
metric (recall@1) and McNemar on per-query recall@1 hits.

Example:
    >>> import numpy as np
    >>> from vitlab.protocols.base import Result
    >>> pq = {"recall@1": np.array([1.0, 0.0, 1.0, 1.0])}
    >>> m, _ = RetrievalScorer().score(Result("retrieval", list("abcd"), {"per_query": pq}), n_resamples=50, seed=0)
    >>> m["recall@1"]["value"]
    0.75
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitlab.protocols.base import Result
from vitlab.scorers.base import Scorer, check_paired, register_scorer
from vitlab.stats.bootstrap import bootstrap_ci
from vitlab.stats.paired import mcnemar, paired_bootstrap

__all__ = ["RetrievalScorer", "mean_metric"]


def mean_metric(y: np.ndarray, values: np.ndarray) -> float:
    """Mean of per-unit values (``y`` is unused: the bootstrap's label slot)."""
    return float(np.mean(values))


mean_metric.per_sample = lambda y, values: np.asarray(values, dtype=np.float64)  # type: ignore[attr-defined]


@register_scorer
class RetrievalScorer(Scorer):
    """Scorer of task ``retrieval`` (outputs ``per_query: {metric: [m]}``)."""

    task = "retrieval"
    headline = "recall@1"
    p_keys = ("p_bootstrap",)
    significance_rule = "Holm-adjusted paired bootstrap (per-query differences) p < alpha"

    def score(self, res: Result, *, n_resamples: int, seed: int, **_: Any
              ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        per_query = res.outputs["per_query"]
        out = {}
        for name, values in per_query.items():
            v = np.asarray(values, dtype=np.float64)
            out[name] = bootstrap_ci(mean_metric, np.zeros(v.size), v, n_resamples=n_resamples,
                                     seed=seed, groups=res.groups).to_entry()
        return out, {"n_queries": len(res.units)}

    def paired(self, a: Result, b: Result, *, n_resamples: int, seed: int) -> dict[str, Any]:
        check_paired(a, b)
        name = self.headline_for(set(a.outputs["per_query"]) & set(b.outputs["per_query"]))
        va = np.asarray(a.outputs["per_query"][name], dtype=np.float64)
        vb = np.asarray(b.outputs["per_query"][name], dtype=np.float64)
        boot = paired_bootstrap(mean_metric, np.zeros(va.size), va, vb, n_resamples=n_resamples, seed=seed,
                                groups=a.groups)
        out = {"metric": name, "diff": boot.diff, "low": boot.low, "high": boot.high, "p_bootstrap": boot.p_value}
        if name.startswith("recall@"):
            mc = mcnemar(va > 0.5, vb > 0.5)
            out.update({"mcnemar_stat": mc.statistic, "p_mcnemar": mc.p_value})
        return out
