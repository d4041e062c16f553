"""Patient-grouped cross-validation of MIL heads (vitlab.mil.cv): leak-free folds, OOF pooling,
patient-clustered intervals and the K-fold ensemble."""

from __future__ import annotations

import numpy as np
import pytest

from vitlab.errors import ConfigError, DataError
from vitlab.mil.cv import (
    CVResult,
    check_folds,
    cross_validate,
    inner_validation,
    patient_folds,
)
from vitlab.mil.ensemble import ensemble_gain, ensemble_proba, evaluate_test
from vitlab.metrics.classification import METRIC_FUNCTIONS
from vitlab.scorers import scorer_for
from vitlab.stats.bootstrap import bootstrap_ci


def _cohort(seed: int, n_patients: int, p1: float, max_bags: int = 3, mixed: bool = False):
    """Patients with 1..max_bags bags; a patient's bags share its label unless ``mixed``."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_bags + 1, n_patients)
    patients = np.repeat([f"P{i:03d}" for i in range(n_patients)], sizes)
    y_pat = (rng.random(n_patients) < p1).astype(int)
    y_pat[:2] = [0, 1]  # both classes, each with >= 2 patients
    y_pat[2:4] = [0, 1]
    labels = np.repeat(y_pat, sizes)
    if mixed:
        flip = rng.random(labels.size) < 0.2
        labels = np.where(flip, 1 - labels, labels)
    return labels, patients


def _no_patient_in_two_folds(fold, patients):
    for p in np.unique(patients):
        assert np.unique(fold[patients == p]).size == 1, p


@pytest.mark.parametrize("p1", [0.5, 0.2, 0.08])
@pytest.mark.parametrize("mixed", [False, True])
def test_no_patient_in_two_folds_over_seeds_and_imbalance(p1, mixed):
    for seed in range(25):
        labels, patients = _cohort(seed, 60, p1, mixed=mixed)
        for k in (3, 5):
            fold = patient_folds(labels, patients, k=k, seed=seed)
            assert fold.shape == labels.shape and set(fold.tolist()) == set(range(k))
            _no_patient_in_two_folds(fold, patients)
            check_folds(fold, patients, labels=labels)  # the folds pass the manifest check too


def test_patient_folds_seeded_and_shuffled():
    labels, patients = _cohort(0, 50, 0.4)
    a, b = patient_folds(labels, patients, 5, seed=1), patient_folds(labels, patients, 5, seed=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, patient_folds(labels, patients, 5, seed=2))


@pytest.mark.parametrize("n0,n1", [(50, 50), (30, 10), (90, 7), (13, 17), (40, 5)])
@pytest.mark.parametrize("k", [3, 5])
def test_folds_stratified_one_bag_per_patient(n0, n1, k):
    for seed in range(10):
        y = np.random.default_rng(seed).permutation(np.r_[np.zeros(n0, int), np.ones(n1, int)])
        for patients in (None, np.array([f"p{i}" for i in range(y.size)])):
            fold = patient_folds(y, patients, k, seed)
            for c, nc in ((0, n0), (1, n1)):
                per_fold = np.bincount(fold[y == c], minlength=k)
                assert np.abs(per_fold - nc / k).max() <= 1.0, (c, per_fold)


def test_folds_stratified_with_multi_bag_patients():
    # whole patients move, so exact +-1 is not always feasible; +- the largest patient is
    for seed in range(10):
        labels, patients = _cohort(seed, 80, 0.3, max_bags=3)
        fold = patient_folds(labels, patients, 4, seed)
        for c in (0, 1):
            per_fold = np.bincount(fold[labels == c], minlength=4)
            assert np.abs(per_fold - (labels == c).sum() / 4).max() <= 3.0, per_fold


def test_patient_folds_refuses_too_few_patients_and_bad_k():
    y = np.array([0, 1, 0, 1, 0, 1]); pat = np.array(list("aabbcc"))
    with pytest.raises(DataError, match=r"5 folds need at least 5 patients; got 3"):
        patient_folds(y, pat, k=5)
    with pytest.raises(DataError, match=r"4 folds need at least 4 bags; got 3"):
        patient_folds(y[:3], None, k=4)
    with pytest.raises(ConfigError, match=r"k=1 folds"):
        patient_folds(y, pat, k=1)


def test_patient_folds_refuses_class_of_one_patient():
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1]); pat = np.array(list("abcdefgg"))
    with pytest.raises(DataError, match=r"training part of fold \d has no bag of class 1"):
        patient_folds(y, pat, k=2, seed=0)


# ----------------------------------------------------------------- check_folds messages


def test_check_folds_names_the_leaking_patient_and_both_folds():
    fold = np.array([0, 1, 2, 2, 0, 1])
    patients = ["A", "B", "C", "B", "D", "E"]
    ids = ["s1", "s2", "s3", "s4", "s5", "s6"]
    with pytest.raises(DataError, match=r"^patient 'B' leaks across folds: bag 's2' is in fold 1 and bag 's4' in fold 2\."):
        check_folds(fold, patients, ids)
    # without bag ids the bags are named by position
    with pytest.raises(DataError, match=r"patient 'B' leaks across folds: bag '1' is in fold 1 and bag '3' in fold 2"):
        check_folds(fold, patients)


def test_check_folds_first_leak_in_bag_order():
    fold = np.array([0, 1, 1, 0, 1])
    with pytest.raises(DataError, match=r"patient 'x'.*fold 1 and .* fold 0"):
        check_folds(fold, ["y", "x", "z", "x", "y"])


def test_check_folds_empty_fold():
    with pytest.raises(DataError, match=r"^fold 1 has no bags \(folds 0\.\.2\)"):
        check_folds(np.array([0, 2, 0, 2]), ["a", "b", "c", "d"])
    with pytest.raises(DataError, match=r"fold 3 has no bags \(folds 0\.\.3\)"):
        check_folds(np.array([0, 1, 2, 0]), None, k=4)


def test_check_folds_training_part_lacks_a_class():
    fold = np.array([0, 0, 1, 1, 2, 2])
    labels = np.array([0, 1, 0, 1, 0, 2])
    with pytest.raises(DataError, match=r"the training part of fold 2 has no bag of class 2"):
        check_folds(fold, None, labels=labels)
    with pytest.raises(DataError, match=r"fold 2 has no bag of class 'tumour'"):
        check_folds(fold, None, labels=labels, class_names=["normal", "benign", "tumour"])


def test_check_folds_other_refusals():
    with pytest.raises(DataError, match=r"bag 's2' has fold -1; fold ids must be 0\.\.K-1"):
        check_folds(np.array([0, -1]), None, ["s1", "s2"])
    with pytest.raises(DataError, match=r"1 fold\(s\)"):
        check_folds(np.array([0, 0]), None)
    with pytest.raises(DataError, match=r"fold ids must be integers"):
        check_folds(np.array(["a", "b"]), None)
    with pytest.raises(DataError, match=r"bag '2' has fold 2 but there are 2 folds"):
        check_folds(np.array([0, 1, 2]), None, k=2)
    with pytest.raises(DataError, match=r"patients has shape \(2,\), expected \(3,\)"):
        check_folds(np.array([0, 1, 1]), ["a", "b"])
    check_folds(np.array([0.0, 1.0]), ["a", "b"])  # integral floats (from a CSV) are accepted


# ----------------------------------------------------------------- inner validation


def test_inner_validation_patient_disjoint_and_partition():
    labels, patients = _cohort(3, 60, 0.4)
    fold = patient_folds(labels, patients, 5, seed=3)
    for f in range(5):
        train = np.flatnonzero(fold != f)
        fit, val = inner_validation(train, labels, patients, 0.2, seed=f)
        assert np.array_equal(np.sort(np.r_[fit, val]), train)
        assert not set(patients[fit]) & set(patients[val])
        assert set(labels[fit]) == set(labels[val]) == {0, 1}
        assert 0.05 < val.size / train.size < 0.4


def test_inner_validation_too_few_patients_is_a_data_error():
    labels = np.array([0, 0, 1, 1]); patients = np.array(["a", "a", "b", "b"])
    with pytest.raises(DataError):
        inner_validation(np.arange(4), labels, patients, 0.2, seed=0)


# ----------------------------------------------------------------- cross_validate


def _fake_model(labels, C, calls):
    def fit_predict(train_idx, val_idx, test_idx, fold):
        calls.append((train_idx.copy(), val_idx.copy(), test_idx.copy(), fold))
        rng = np.random.default_rng(fold)
        p = rng.random((len(test_idx), C)) + 2.0 * np.eye(C)[labels[test_idx]]
        return p / p.sum(1, keepdims=True)
    return fit_predict


@pytest.mark.parametrize("val_fraction", [0.0, 0.25])
def test_oof_covers_every_bag_once_and_equals_fold_predictions(val_fraction):
    labels, patients = _cohort(7, 50, 0.4)
    labels = np.where(np.arange(labels.size) % 7 == 0, 2, labels)  # a third class
    fold = patient_folds(labels, patients, 5, seed=0)
    calls: list = []
    cv = cross_validate(labels.size, labels, patients, fold, _fake_model(labels, 3, calls),
                        val_fraction=val_fraction, seed=1)
    assert cv.n_folds == 5 and [c[3] for c in calls] == list(range(5))
    tested = np.concatenate(cv.fold_test)
    assert np.array_equal(np.sort(tested), np.arange(labels.size))  # every bag exactly once
    for (train, val, test, f), te, p in zip(calls, cv.fold_test, cv.fold_proba):
        assert np.array_equal(test, te) and np.all(fold[test] == f)
        assert not set(train) & set(test) and not set(val) & set(test) and not set(train) & set(val)
        assert np.array_equal(np.sort(np.r_[train, val]), np.flatnonzero(fold != f))
        assert not set(patients[test]) & set(patients[np.r_[train, val]])  # the model never saw them
        if val_fraction:
            assert val.size and not set(patients[train]) & set(patients[val])
        else:
            assert val.size == 0
        assert np.array_equal(cv.proba[test], p)
    assert cv.proba.shape == (labels.size, 3) and np.array_equal(cv.folds, fold)


def test_cross_validate_refuses_leaking_folds_and_bad_outputs():
    y = np.array([0, 1] * 6); pat = np.repeat(np.arange(6), 2)
    fold = np.repeat([0, 1, 2], 4)
    leak = fold.copy(); leak[1] = 1
    with pytest.raises(DataError, match=r"patient '0' leaks across folds: bag 'b0' is in fold 0 and bag 'b1' in fold 1"):
        cross_validate(12, y, pat, leak, lambda *a: None, bag_ids=[f"b{i}" for i in range(12)])
    with pytest.raises(DataError, match=r"fold 0 returned shape \(3, 2\); expected \[4, C\]"):
        cross_validate(12, y, pat, fold, lambda tr, va, te, f: np.ones((3, 2)), val_fraction=0)
    with pytest.raises(DataError, match=r"returned 1 columns"):
        cross_validate(12, y, pat, fold, lambda tr, va, te, f: np.ones((len(te), 1)), val_fraction=0)
    with pytest.raises(DataError, match=r"non-finite"):
        cross_validate(12, y, pat, fold, lambda tr, va, te, f: np.full((len(te), 2), np.nan), val_fraction=0)
    with pytest.raises(DataError, match=r"fold 1 returned 3 columns, earlier folds 2"):
        cross_validate(12, y, pat, fold, lambda tr, va, te, f: np.ones((len(te), 2 + (f > 0))), val_fraction=0)


# ----------------------------------------------------------------- scoring


def _scored_cv(seed=0, n_patients=40):
    labels, patients = _cohort(seed, n_patients, 0.4)
    fold = patient_folds(labels, patients, 4, seed=seed)
    calls: list = []
    cv = cross_validate(labels.size, labels, patients, fold, _fake_model(labels, 2, calls), seed=seed)
    return cv, [f"slide{i}" for i in range(labels.size)], patients


def test_to_result_scores_with_patient_cluster_bootstrap():
    cv, ids, patients = _scored_cv()
    res = cv.to_result(ids, patients)
    assert res.task == "classification" and res.units == ids
    assert np.array_equal(res.groups, patients) and res.details["cv"]["n_folds"] == 4
    metrics, extra = scorer_for("classification").score(res, n_resamples=300, seed=0)
    for name in ("auroc", "balanced_accuracy", "macro_f1", "top1"):
        e = metrics[name]
        assert e["method"] == "cluster-percentile"
        assert e["low"] <= e["value"] <= e["high"]
        assert e["value"] == pytest.approx(METRIC_FUNCTIONS[name](cv.labels, cv.proba))
    assert np.asarray(extra["confusion_matrix"]).sum() == len(ids)
    plain, _ = scorer_for("classification").score(cv.to_result(ids, None), n_resamples=100, seed=0)
    assert plain["auroc"]["method"] == "percentile"


def test_to_result_multiclass_auroc_is_one_vs_rest_macro():
    labels, patients = _cohort(5, 60, 0.4)
    labels = np.where(np.arange(labels.size) % 5 == 0, 2, labels)
    fold = patient_folds(labels, patients, 3, seed=0)
    cv = cross_validate(labels.size, labels, patients, fold, _fake_model(labels, 3, []), val_fraction=0)
    m, _ = scorer_for("classification").score(cv.to_result(range(labels.size), patients), n_resamples=100, seed=0)
    from sklearn.metrics import roc_auc_score
    assert m["auroc"]["value"] == pytest.approx(roc_auc_score(labels, cv.proba, multi_class="ovr", average="macro"))
    assert m["auroc"]["method"] == "cluster-percentile"


def test_paired_tests_between_two_heads_on_the_same_folds():
    labels, patients = _cohort(11, 50, 0.5)
    fold = patient_folds(labels, patients, 5, seed=0)
    good = cross_validate(labels.size, labels, patients, fold, _fake_model(labels, 2, []), val_fraction=0)
    noise = lambda tr, va, te, f: np.random.default_rng(f).dirichlet([1, 1], len(te))  # noqa: E731
    bad = cross_validate(labels.size, labels, patients, fold, noise, val_fraction=0)
    ids = [f"s{i}" for i in range(labels.size)]
    out = scorer_for("classification").paired(good.to_result(ids, patients), bad.to_result(ids, patients),
                                              n_resamples=300, seed=0)
    assert out["diff"] > 0 and out["p_bootstrap"] < 0.05
    assert {"p_mcnemar", "p_delong", "delong_z"} <= set(out)


def test_per_fold_values_mean_and_t_interval():
    cv, _, _ = _scored_cv(seed=2)
    pf = cv.per_fold(["auroc", "top1"])
    for name in ("auroc", "top1"):
        vals = [METRIC_FUNCTIONS[name](cv.labels[te], p) for te, p in zip(cv.fold_test, cv.fold_proba)]
        e = pf[name]
        assert e["folds"] == pytest.approx(vals) and e["n_folds"] == 4
        assert e["value"] == pytest.approx(np.mean(vals))
        from scipy import stats
        half = stats.t.ppf(0.975, 3) * np.std(vals, ddof=1) / 2
        assert (e["low"], e["high"]) == pytest.approx((np.mean(vals) - half, np.mean(vals) + half))
        assert "not independent" in e["method"]
    with pytest.raises(ConfigError, match="unknown metric"):
        cv.per_fold(["accuracy"])


def test_per_fold_skips_undefined_folds():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1]); fold = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    cv = CVResult(y, np.eye(2)[y], fold, [np.arange(4), np.array([4, 5]), np.array([6, 7])],
                  [np.eye(2)[y[:4]], np.eye(2)[y[4:6]], np.eye(2)[y[6:]]])
    cv.fold_proba[2] = np.eye(2)[[0, 0]]
    y2 = y.copy(); y2[6:] = 0
    cv.labels = y2  # fold 2 has one class only: AUROC undefined there
    e = cv.per_fold(["auroc"])["auroc"]
    assert np.isnan(e["folds"][2]) and e["n_folds"] == 2 and e["value"] == 1.0


def test_patient_bootstrap_is_wider_when_bags_of_a_patient_are_correlated():
    """Simulation: bags of a patient share a random effect; the bag bootstrap treats them as
    independent and is too narrow, the patient bootstrap is not."""
    ratios = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        n_pat, bags = 40, 6
        y_pat = np.r_[np.zeros(n_pat // 2, int), np.ones(n_pat // 2, int)]
        effect = rng.normal(0, 1.5, n_pat)  # shared by all bags of a patient
        y = np.repeat(y_pat, bags)
        patients = np.repeat(np.arange(n_pat), bags)
        score = 1.0 * y + np.repeat(effect, bags) + rng.normal(0, 0.3, y.size)
        proba = np.stack([-score, score], axis=1)
        auroc = METRIC_FUNCTIONS["auroc"]
        clustered = bootstrap_ci(auroc, y, proba, n_resamples=400, seed=seed, groups=patients)
        plain = bootstrap_ci(auroc, y, proba, n_resamples=400, seed=seed)
        assert clustered.method == "cluster-percentile" and plain.method == "percentile"
        assert clustered.low <= clustered.value <= clustered.high
        ratios.append((clustered.high - clustered.low) / (plain.high - plain.low))
    assert min(ratios) > 1.3, ratios  # about sqrt(bags) wider
    assert np.median(ratios) > 1.6, ratios


# ----------------------------------------------------------------- ensemble on a held-out test set


def test_ensemble_is_the_mean_of_fold_probabilities():
    rng = np.random.default_rng(0)
    probas = [rng.dirichlet([1, 1, 1], 20) for _ in range(5)]
    ens = ensemble_proba(probas)
    assert np.allclose(ens, np.mean(probas, axis=0)) and np.allclose(ens.sum(1), 1)
    assert np.array_equal(ensemble_proba(probas[:1]), probas[0])
    with pytest.raises(DataError, match=r"fold model 1 gave shape \(19, 3\)"):
        ensemble_proba([probas[0], probas[1][:19]])
    with pytest.raises(DataError, match="at least one"):
        ensemble_proba([])


def test_evaluate_test_scores_the_ensemble_with_patient_groups():
    rng = np.random.default_rng(1)
    y = np.repeat(np.r_[np.zeros(15, int), np.ones(15, int)], 2)
    patients = np.repeat([f"T{i}" for i in range(30)], 2)
    probas = []
    for _ in range(5):
        s = y + rng.normal(0, 0.8, y.size)
        p1 = 1 / (1 + np.exp(-(s - 0.5) * 3))
        probas.append(np.stack([1 - p1, p1], axis=1))
    ids = [f"t{i}" for i in range(y.size)]
    ev = evaluate_test(probas, y, ids, patients, n_resamples=200, seed=0)
    assert np.allclose(ev.proba, np.mean(probas, axis=0))
    assert ev.result.units == ids and np.array_equal(ev.result.groups, patients)
    for name in ("auroc", "balanced_accuracy", "macro_f1"):
        e = ev.metrics[name]
        assert e["method"] == "cluster-percentile" and e["low"] <= e["value"] <= e["high"]
    assert ev.metrics["auroc"]["value"] == pytest.approx(METRIC_FUNCTIONS["auroc"](y, ev.proba))
    # the ensemble is at least as good as the average single fold model here
    single = np.mean([METRIC_FUNCTIONS["auroc"](y, p) for p in probas])
    assert ev.metrics["auroc"]["value"] >= single - 1e-12
    with pytest.raises(DataError, match="bag_ids has 3 entries"):
        evaluate_test(probas, y, ids[:3], patients)
    assert set(ev.gain) == {"auroc", "balanced_accuracy", "macro_f1"}
    assert ev.single["auroc"] == pytest.approx([METRIC_FUNCTIONS["auroc"](y, p) for p in probas])
    g = ev.gain["auroc"]
    assert g["value"] == pytest.approx(ev.metrics["auroc"]["value"] - single)
    assert g["low"] <= g["value"] <= g["high"] and g["method"] == "paired cluster-percentile"


def test_ensemble_gain_interval_is_the_paired_patient_bootstrap_of_the_gain():
    """Recompute the gain's replicates by hand on the same patient draws."""
    from vitlab.stats.bootstrap import Resampler

    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(24) % 2, 2)
    patients = np.repeat(np.arange(24), 2)
    probas = []
    for _ in range(3):
        p1 = 1 / (1 + np.exp(-(y + rng.normal(0, 1, y.size) - 0.5) * 2))
        probas.append(np.stack([1 - p1, p1], 1))
    single, gain = ensemble_gain(probas, y, patients, metrics=["auroc"], n_resamples=300, seed=5)
    fn = METRIC_FUNCTIONS["auroc"]
    ens = np.mean(probas, axis=0)
    res = Resampler(y.size, patients, 5)
    d = []
    for block in res.draws(300):
        for draw in block:
            idx = res.indices(draw)
            d.append(fn(y[idx], ens[idx]) - np.mean([fn(y[idx], p[idx]) for p in probas]))
    lo, hi = np.quantile(d, [0.025, 0.975])
    assert gain["auroc"]["low"] == pytest.approx(min(lo, gain["auroc"]["value"]))
    assert gain["auroc"]["high"] == pytest.approx(max(hi, gain["auroc"]["value"]))
    # one class only: AUROC undefined, left out rather than reported as NaN
    single, gain = ensemble_gain(probas, np.zeros(y.size, int), patients, metrics=["auroc", "top1"], n_resamples=20)
    assert "auroc" not in gain and "top1" in gain


def test_ensemble_gain_interval_covers_the_true_gain():
    """Coverage by simulation: three noisy fold models of a known population; the true top-1 gain of their
    mean-probability ensemble over the average single model is estimated on 400,000 fresh bags."""

    def draw(rng, n):
        y = rng.integers(0, 2, n)
        common = rng.normal(0, 1.0, n)  # what all fold models share
        probas = []
        for _ in range(3):
            s = (2 * y - 1) * 0.8 + common + rng.normal(0, 1.2, n)
            p1 = 1 / (1 + np.exp(-s))
            probas.append(np.stack([1 - p1, p1], 1))
        return y, probas

    fn = METRIC_FUNCTIONS["top1"]
    y, probas = draw(np.random.default_rng(123), 400_000)
    truth = fn(y, np.mean(probas, axis=0)) - np.mean([fn(y, p) for p in probas])
    assert truth > 0.005  # the ensemble does help in this population
    rng = np.random.default_rng(7)
    hits, reps = 0, 200
    for r in range(reps):
        y, probas = draw(rng, 150)
        _, gain = ensemble_gain(probas, y, None, metrics=["top1"], n_resamples=300, seed=r)
        g = gain["top1"]
        assert g["low"] <= g["value"] <= g["high"]
        hits += g["low"] <= truth <= g["high"]
    assert 0.88 <= hits / reps <= 0.99, hits / reps
