"""Tests of vitlab.metrics.classification against sklearn.metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from vitlab.errors import DataError
from vitlab.metrics.classification import (
    METRIC_FUNCTIONS,
    auroc,
    classification_metrics,
    top1,
    top5,
)


def _pred(n=400, n_cls=8, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_cls, n)
    logits = rng.normal(size=(n, n_cls)) + 2.0 * np.eye(n_cls)[y]
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


def test_multiclass_against_sklearn():
    y, p = _pred()
    m = classification_metrics(y, p)
    pred = p.argmax(1)
    assert m["top1"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["top5"] == pytest.approx(skm.top_k_accuracy_score(y, p, k=5))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    np.testing.assert_allclose(m["per_class_recall"], skm.recall_score(y, pred, average=None))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()


def test_binary_ordinal_and_no_top5():
    y, p = _pred(n_cls=2, seed=1)
    m = classification_metrics(y, p)
    assert "top5" not in m
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y, p[:, 1]))
    y4, p4 = _pred(n_cls=4, seed=2)
    m4 = classification_metrics(y4, p4, ordinal=True)
    assert m4["cohen_kappa"] == pytest.approx(
        skm.cohen_kappa_score(y4, p4.argmax(1), weights="quadratic"))
    assert m4["cohen_kappa"] != pytest.approx(skm.cohen_kappa_score(y4, p4.argmax(1)))


def test_undefined_cases_are_nan():
    y, p = _pred(n_cls=3)
    y = np.where(y == 2, 0, y)  # class 2 absent from y_true
    m = classification_metrics(y, p)
    assert np.isnan(m["auroc"])
    assert np.isnan(m["per_class_recall"][2]) and len(m["per_class_recall"]) == 3
    assert len(m["confusion_matrix"]) == 3
    assert np.isnan(top5(y, p))


def test_per_sample_attributes_average_to_metric():
    y, p = _pred(n_cls=10, seed=3)
    p = np.round(p, 1)  # create ties
    for name in ("top1", "top5"):
        fn = METRIC_FUNCTIONS[name]
        assert fn.per_sample(y, p).mean() == pytest.approx(fn(y, p))


def test_metric_functions_scalar():
    y, p = _pred(seed=4)
    for name, fn in METRIC_FUNCTIONS.items():
        assert isinstance(fn(y, p), float), name
    assert auroc(y, p) == pytest.approx(classification_metrics(y, p)["auroc"])


def test_errors():
    y, p = _pred()
    with pytest.raises(DataError, match=r"y_true must be integer labels in 0..7"):
        top1(y + 10, p)
    with pytest.raises(DataError, match="expected y_true \\[n\\] and proba \\[n, C\\]"):
        classification_metrics(y[:5], p)
    with pytest.raises(DataError, match="np.stack\\(\\[1 - s, s\\]"):
        top1(y, p[:, :1])


@pytest.mark.parametrize("seed", range(5))
def test_fast_metrics_equal_sklearn_on_random_and_degenerate_data(seed):
    rng = np.random.default_rng(seed)
    n_cls = int(rng.integers(2, 8))
    y = rng.integers(0, n_cls, 60)
    y[:n_cls] = np.arange(n_cls)
    p = rng.random((60, n_cls)).round(1)  # ties
    if seed == 0:
        p[:, 0] += 5  # everything predicted as class 0
    pred = p.argmax(1)
    m = classification_metrics(y, p)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0.0))
    ref_auc = skm.roc_auc_score(y, p[:, 1]) if n_cls == 2 else np.mean(
        [skm.roc_auc_score(y == c, p[:, c]) for c in range(n_cls)])
    assert m["auroc"] == pytest.approx(ref_auc)
    assert m["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    q = classification_metrics(y, p, ordinal=True)["cohen_kappa"]
    assert q == pytest.approx(skm.cohen_kappa_score(y, pred, weights="quadratic", labels=np.arange(n_cls)))
