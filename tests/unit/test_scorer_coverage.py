"""Coverage of the retrieval and segmentation scorers' 95% intervals, by simulation with a known truth.

Retrieval: per-query hits are Bernoulli(p) with known p (recall@1 = hit rate), and per-query AP values
come from a known Beta distribution. Segmentation: each image's per-class TP/FP/FN pixel counts are drawn
from known Poisson laws, so the pooled IoU estimator targets E[TP] / (E[TP] + E[FP] + E[FN]) per class.
Coverage must lie within 3 binomial standard errors of 0.95 (seeded, so the figures are reproducible).
"""

from __future__ import annotations

import numpy as np

from vitlab.protocols.base import Result
from vitlab.scorers import scorer_for

REPS, B = 200, 300


def _band(reps: int) -> tuple[float, float]:
    se = (0.95 * 0.05 / reps) ** 0.5
    return 0.95 - 3 * se, min(1.0, 0.95 + 3 * se)


def test_retrieval_intervals_cover_the_true_rates():
    rng = np.random.default_rng(0)
    p, a, b = 0.7, 2.0, 3.0  # recall@1 hit rate; AP ~ Beta(2, 3), mean 0.4
    cover = {"recall@1": 0, "map": 0}
    for r in range(REPS):
        m = 150
        pq = {"recall@1": (rng.random(m) < p).astype(float), "map": rng.beta(a, b, m)}
        res = Result("retrieval", [str(i) for i in range(m)], {"per_query": pq})
        metrics, _ = scorer_for("retrieval").score(res, n_resamples=B, seed=r)
        cover["recall@1"] += metrics["recall@1"]["low"] <= p <= metrics["recall@1"]["high"]
        cover["map"] += metrics["map"]["low"] <= a / (a + b) <= metrics["map"]["high"]
    lo, hi = _band(REPS)
    for name, c in cover.items():
        assert lo <= c / REPS <= hi, f"{name}: coverage {c / REPS:.3f}"


def test_segmentation_intervals_cover_the_true_iou():
    rng = np.random.default_rng(1)
    mean_cm = np.array([[40.0, 6.0], [9.0, 12.0]])  # E[confusion] per image: rows true, columns predicted
    tp = np.diag(mean_cm)
    truth = float(np.mean(tp / (mean_cm.sum(0) + mean_cm.sum(1) - tp)))  # mIoU of the expected counts
    cover = 0
    for r in range(REPS):
        cms = rng.poisson(mean_cm, size=(80, 2, 2))
        res = Result("segmentation", [str(i) for i in range(80)], {"confusion": cms})
        metrics, _ = scorer_for("segmentation").score(res, n_resamples=B, seed=r)
        cover += metrics["miou"]["low"] <= truth <= metrics["miou"]["high"]
    lo, hi = _band(REPS)
    assert lo <= cover / REPS <= hi, f"mIoU coverage {cover / REPS:.3f}"
