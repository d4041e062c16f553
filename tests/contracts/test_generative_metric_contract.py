"""The generative-metric contract: every metric of :data:`vitlab.generative.metrics.NEEDS` (the one table of
metrics and what they need) passes the same checks, so a metric added to the table is tested without anyone
editing this file.

Checks, on small seeded Gaussian features: the metric runs from what it declares it needs; every entry is a
valid record entry (value, low, high; an interval contains its estimate); shuffling the rows of every set
changes nothing (row order carries no information); the arithmetic is float64 (float32 and float64 inputs
give the same value to float32 precision, and the value does not drift with the input dtype).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from vitlab.generative.metrics import NEEDS, GenEvalConfig, MetricInputs, compute_metrics
from vitlab.record import RunRecord

N, D = 120, 6
CFG = GenEvalConfig(reduced_n=80, kd_subsets=10, kd_subset_size=50, fd_inf_points=5, ct_cells=2, ct_pca_dim=4,
                    fls_steps=10, n_resamples=4, min_samples=10)
RUNNABLE = sorted(m for m, needs in NEEDS.items() if "inception" not in needs)  # IS needs Inception logits


def _inputs(seed: int = 0, dtype=np.float64, order: dict[str, np.ndarray] | None = None) -> MetricInputs:
    rng = np.random.default_rng(seed)
    sets = {"real": rng.normal(size=(N, D)), "fake": rng.normal(size=(N, D)) + 0.5,
            "train": rng.normal(size=(N, D)), "test": rng.normal(size=(N, D))}
    if order:
        sets = {k: v[order[k]] for k, v in sets.items()}
    sets = {k: v.astype(dtype) for k, v in sets.items()}
    ids = [f"g{i:04d}" for i in range(N)]
    if order:
        ids = [ids[i] for i in order["fake"]]
    mu, cov = sets["real"].mean(0), np.cov(sets["real"], rowvar=False)
    return MetricInputs(fake=sets["fake"], fake_ids=ids, real=sets["real"], real_stats=(mu, cov),
                        train=sets["train"], test=sets["test"])


def _run(name: str, inp: MetricInputs) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics, _, _, _ = compute_metrics([name], inp, CFG, seed=0)
    return metrics


@pytest.fixture(params=RUNNABLE)
def metric(request) -> str:
    return request.param


def test_entries_are_valid_record_entries_and_intervals_hold_their_estimate(metric):
    m = _run(metric, _inputs())
    assert m, f"{metric} reported nothing"
    RunRecord("gen-eval", {}, m).validate()  # value / low / high present, low <= value <= high
    for key, e in m.items():
        assert e["value"] is None or np.isfinite(e["value"]), key


def test_row_order_carries_no_information(metric):
    a = _run(metric, _inputs())
    rng = np.random.default_rng(1)
    order = {k: rng.permutation(N) for k in ("real", "fake", "train", "test")}
    b = _run(metric, _inputs(order=order))
    for key in a:
        np.testing.assert_allclose(b[key]["value"], a[key]["value"], rtol=1e-6, atol=1e-9, err_msg=key)


def test_float64_arithmetic_whatever_the_input_dtype(metric):
    a = _run(metric, _inputs(dtype=np.float64))
    b = _run(metric, _inputs(dtype=np.float32))
    for key in a:
        np.testing.assert_allclose(b[key]["value"], a[key]["value"], rtol=1e-4, atol=1e-6, err_msg=key)
