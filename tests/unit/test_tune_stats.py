"""Tune statistics: eval's split, per-seed bootstrap CIs, t-interval across seeds, paired tests vs linear."""

import numpy as np
import pytest
from scipy import stats

import vitlab
from vitlab.errors import ConfigError, DataError
from vitlab.scorers import pair_results
from vitlab.protocols.base import Result
from vitlab.tuning.evaluate import against, seed_summary


def test_seed_summary_matches_scipy_t_interval():
    v = [0.81, 0.86, 0.84, 0.9]
    s = seed_summary(v)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert s["value"] == pytest.approx(np.mean(v)) and s["low"] == pytest.approx(lo) and s["high"] == pytest.approx(hi)
    assert s["low"] <= s["value"] <= s["high"] and s["per_seed"] == v
    one = seed_summary([0.5])
    assert one["low"] is None and one["n_seeds"] == 1


def _result(correct: np.ndarray, n_cls: int = 2) -> Result:
    y = np.arange(len(correct)) % n_cls
    pred = np.where(correct, y, (y + 1) % n_cls)
    proba = np.full((len(y), n_cls), 0.1 / (n_cls - 1))
    proba[np.arange(len(y)), pred] = 0.9
    return Result("classification", [f"i{k}" for k in range(len(y))], {"y": y, "proba": proba})


def test_paired_tests_flag_a_planted_difference_and_not_an_absent_one():
    rng = np.random.default_rng(0)
    n = 400
    base = rng.random(n) < 0.70
    better = base | (rng.random(n) < 0.6)                 # planted: ~+18 points on the same images
    same = base.copy()
    swap = rng.choice(np.flatnonzero(base), 40, replace=False), rng.choice(np.flatnonzero(~base), 40, replace=False)
    same[swap[0]], same[swap[1]] = False, True            # same accuracy, different errors: no real difference
    results = {"linear": _result(base), "planted": _result(better), "absent": _result(same)}
    pairs = [{"seed": 0, **p} for p in pair_results(results, n_resamples=500, seed=0)]
    vs = against(pairs, "linear")
    assert vs["planted"][0]["significant"] and vs["planted"][0]["diff"] > 0.1 and vs["planted"][0]["low"] > 0
    assert not vs["absent"][0]["significant"] and vs["absent"][0]["diff"] == pytest.approx(0.0)
    assert vs["absent"][0]["low"] <= 0 <= vs["absent"][0]["high"]


@pytest.fixture(scope="module")
def linear_run():
    return vitlab.tune("demo:fmnist-vit", "sample:digits?limit=150", methods="linear,bitfit", seeds=2, seed=2,
                       epochs=1, max_steps=2, n_resamples=50, progress=False)


def test_same_test_split_as_eval(linear_run, tmp_path):
    ev = vitlab.evaluate("demo:fmnist-vit", "sample:digits?limit=150", protocols="knn", seed=3, n_resamples=10,
                         cache_dir=tmp_path, progress=False)
    assert linear_run.results[3]["linear"].units == list(ev.test_ids)
    assert linear_run.results[2]["linear"].units != linear_run.results[3]["linear"].units


def test_record_has_cis_pairs_and_costs(linear_run):
    r = linear_run.record
    assert r.kind == "tune" and r.config["seeds"] == [2, 3] and r.config["methods"] == ["linear", "bitfit"]
    for m in ("linear", "bitfit"):
        top1 = r.metrics[m]["top1"]
        assert top1["n_seeds"] == 2 and top1["low"] <= top1["value"] <= top1["high"]
        for s in ("2", "3"):
            ci = r.details["per_seed"][s][m]["metrics"]["top1"]
            assert ci["low"] <= ci["value"] <= ci["high"]
        assert top1["per_seed"] == [r.details["per_seed"][s][m]["metrics"]["top1"]["value"] for s in ("2", "3")]
        c = r.details["cost"][m]
        assert c["trainable_params"] > 0 and c["train_s"] > 0 and c["images_per_s"] > 0 and c["peak_memory_mb"] >= 0
    assert r.details["cost"]["linear"]["trainable_backbone_params"] == 0
    assert r.details["cost"]["bitfit"]["trainable_backbone_params"] > 0
    assert [v["seed"] for v in r.details["vs_linear"]["bitfit"]] == [2, 3]


def test_bad_input_before_any_work():
    with pytest.raises(ConfigError, match="seeds must be a whole number >= 1"):
        vitlab.tune("demo:fmnist-vit", "sample:digits", methods="linear", seeds=0)
    with pytest.raises(ConfigError, match="epochs must be a whole number in 1..10000, got 0"):
        vitlab.tune("demo:fmnist-vit", "sample:digits", methods="linear", epochs=0)
    with pytest.raises(ConfigError, match="has no setting 'epoch'"):
        vitlab.tune("demo:fmnist-vit", "sample:digits", methods="linear", epoch=3)
    with pytest.raises(ConfigError, match="bf16 .* is for CUDA"):
        vitlab.tune("demo:fmnist-vit", "sample:digits", methods="linear", precision="bf16")
    with pytest.raises(DataError, match="validation part of train is too small"):
        vitlab.tune("demo:fmnist-vit", "sample:digits?limit=40", methods="linear")
    with pytest.raises(DataError, match="has no labels"):
        vitlab.tune("demo:fmnist-vit", "sample:fashion-mnist-mosaic", methods="linear")
