"""Segmentation metrics against scikit-learn (jaccard, f1 = Dice, confusion matrix) on pooled pixels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, jaccard_score

from vitlab.errors import DataError
from vitlab.metrics.segmentation import confusion, iou_per_class, per_image_confusion, seg_metrics


def _maps(seed, n=5, c=4, ignore=255):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, (n, 8, 9))
    pred = np.where(rng.random(true.shape) < 0.6, true, rng.integers(0, c, true.shape))
    true[rng.random(true.shape) < 0.1] = ignore
    return true, pred


def test_pooled_metrics_match_scikit_learn():
    true, pred = _maps(0)
    cms = per_image_confusion(true, pred, 4, ignore_index=255)
    keep = true != 255
    t, p = true[keep], pred[keep]
    np.testing.assert_array_equal(cms.sum(0), confusion_matrix(t, p, labels=range(4)))
    m = seg_metrics(cms.sum(0))
    np.testing.assert_allclose(m["iou"], jaccard_score(t, p, average=None, labels=range(4)))
    np.testing.assert_allclose(m["miou"], jaccard_score(t, p, average="macro", labels=range(4)))
    np.testing.assert_allclose(m["dice"], f1_score(t, p, average=None, labels=range(4)))
    assert m["pixel_accuracy"] == pytest.approx(accuracy_score(t, p))


def test_absent_classes_are_left_out_of_the_mean():
    cm = confusion(np.array([0, 0, 1]), np.array([0, 1, 1]), 3, ignore_index=None)
    iou = iou_per_class(cm)
    assert np.isnan(iou[2]) and seg_metrics(cm)["miou"] == pytest.approx(np.mean([0.5, 0.5]))


def test_bad_masks_are_named():
    with pytest.raises(DataError, match="mask holds label 7, outside 0..3 and not the ignore index 255"):
        confusion(np.array([7]), np.array([0]), 4)
    with pytest.raises(DataError, match=r"prediction shape \(2,\) differs from the mask shape \(3,\)"):
        confusion(np.zeros(3, int), np.zeros(2, int), 4)
