"""The one interval type: bootstrap and half-sample intervals, and their record entries."""

from __future__ import annotations

import numpy as np

from vitlab.metrics.gen_intervals import halfsample_fd, halfsample_vendi
from vitlab.metrics.classification import top1
from vitlab.stats.bootstrap import bootstrap_ci
from vitlab.stats.interval import Interval


def test_bootstrap_and_half_sample_give_the_same_type_and_the_record_layouts():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.eye(2)[np.where(rng.random(200) < 0.8, y, 1 - y)]
    boot = bootstrap_ci(top1, y, p, n_resamples=50, alpha=0.1)
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
