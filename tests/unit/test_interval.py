"""The one interval type: bootstrap and half-sample intervals, and their record entries."""

from __future__ import annotations

import numpy as np
import pytest

from vitlab.metrics.gen_intervals import halfsample_fd, halfsample_vendi
from vitlab.metrics.classification import top1
from vitlab.stats.bootstrap import bootstrap_ci
from vitlab.stats.interval import Interval


def test_bootstrap_and_half_sample_give_the_same_type_and_the_record_layouts():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.eye(2)[np.where(rng.random(200) < 0.8, y, 1 - y)]
    boot = bootstrap_ci(top1, y, p, n_resamples=50, level=0.9)
    assert isinstance(boot, Interval) and boot.se is None and boot.level == 0.9
    entry = boot.to_entry()
    assert list(entry) == ["value", "low", "high", "n_resamples", "n_skipped", "method"]
    assert entry["method"] == "percentile" and entry["n_skipped"] == 0

    real, fake = rng.standard_normal((100, 3)), rng.standard_normal((100, 3)) + 1.0
    fd = halfsample_fd(real, fake, n_resamples=5)
    assert isinstance(fd, Interval) and isinstance(fd.debiased, Interval) and fd.samples.shape == (5,)
    assert list(fd.to_entry(bias=fd.bias)) == ["value", "low", "high", "se", "level", "n_resamples", "method",
                                               "bias"]
    assert fd.debiased.to_entry()["value"] == fd.value - fd.bias
    v = halfsample_vendi(fake, n_resamples=4)
    assert v.bias is None and v.debiased is None and v.to_entry()["se"] == v.se


def test_t_interval_matches_scipy_and_handles_one_value():
    from scipy import stats

    from vitlab.stats.interval import t_interval

    v = [0.81, 0.86, 0.84, 0.9, float("nan")]
    ci = t_interval(v)
    ok = np.array(v[:4])
    lo, hi = stats.t.interval(0.95, 3, loc=ok.mean(), scale=stats.sem(ok))
    assert (ci.value, ci.low, ci.high) == (pytest.approx(ok.mean()), pytest.approx(lo), pytest.approx(hi))
    assert ci.n_resamples == 4 and ci.n_skipped == 1 and ci.se == pytest.approx(stats.sem(ok))
    assert t_interval([0.9, 1.0, 1.0], bounds=(0.0, 1.0)).high == 1.0
    one = t_interval([0.5])
    assert one.low is None and one.high is None and one.to_entry()["value"] == 0.5


def test_t_interval_covers_a_known_mean_at_its_level():
    """Coverage by simulation: 2,000 samples of 5 normal values with mean 0.3; nominal 0.95."""
    from vitlab.stats.interval import t_interval

    rng = np.random.default_rng(0)
    hits = [(ci.low <= 0.3 <= ci.high) for ci in (t_interval(rng.normal(0.3, 0.1, 5)) for _ in range(2000))]
    assert 0.935 <= np.mean(hits) <= 0.965


def test_percentile_interval_contains_its_estimate_and_point_entries():
    from vitlab.stats.interval import Interval, percentile_bounds, percentile_interval

    s = np.random.default_rng(1).normal(size=500)
    assert percentile_bounds(s, 0.95) == tuple(np.quantile(s, [0.025, 0.975]))  # the numpy rule, same bits
    ci = percentile_interval(5.0, s, level=0.95, method="percentile", n_resamples=500)
    assert ci.low <= ci.value == 5.0 == ci.high
    e = Interval.point(3.0, "measured").to_entry()
    assert e == {"value": 3.0, "low": None, "high": None, "method": "measured"}


def test_run_records_check_their_metric_entries_and_write_strict_json():
    import json

    from vitlab.record import RecordError, RunRecord

    ok = RunRecord("eval", {}, {"knn": {"top1": bootstrap_ci(top1, np.arange(40) % 2, np.eye(2)[np.arange(40) % 2],
                                                             n_resamples=20).to_entry(),
                                        "auroc": {"value": float("nan"), "low": None, "high": None}}})
    doc = json.loads(ok.to_json())  # strict: NaN written as null, and json.loads(strict) accepts it
    assert doc["metrics"]["knn"]["auroc"]["value"] is None and "NaN" not in ok.to_json()
    for bad, msg in [({"value": 0.5}, "lacks low, high"), ({"value": 0.5, "low": 0.6, "high": 0.9}, "low 0.6 > value"),
                     ({"value": 0.5, "low": 0.1, "high": 0.4}, "high 0.4 < value"),
                     ({"value": "0.5", "low": None, "high": None}, "not a number")]:
        with pytest.raises(RecordError, match=msg):
            RunRecord("eval", {}, {"knn": {"top1": bad}}).to_json()
