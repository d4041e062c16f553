"""Semantic-segmentation metrics from per-image confusion matrices.

Each image contributes a ``[C, C]`` confusion matrix (rows: true class, columns:
predicted; pixels whose label is ``ignore_index`` are left out). Dataset metrics
are computed from the **sum** of the images' matrices, as mmsegmentation and
DINOv2's linear segmentation evaluation do (mIoU over the pooled pixels, not a
mean of per-image IoUs); an image-level bootstrap resamples images and sums their
matrices again, so the interval reflects which images were drawn.

- ``iou_c = TP_c / (TP_c + FP_c + FN_c)``; ``miou`` is the mean over classes that occur
  (in the ground truth or the prediction) in the pooled pixels; a class absent from
  both has undefined IoU and is left out of the mean (mmsegmentation's ``nanmean``).
- ``dice_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``; ``mdice`` as for ``miou``.
- ``pixel_accuracy = sum_c TP_c / (number of labelled pixels)``.

Example:
    >>> t = np.array([[0, 0], [1, 1]]); p = np.array([[0, 1], [1, 1]])
    >>> cm = confusion(t, p, 2)
    >>> cm.tolist(), round(seg_metrics(cm)["miou"], 4)
    ([[1, 1], [0, 2]], 0.5833)
"""

from __future__ import annotations

import numpy as np

from vitlab.errors import DataError

__all__ = ["confusion", "per_image_confusion", "seg_metrics", "iou_per_class"]


def confusion(true: np.ndarray, pred: np.ndarray, n_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """``[C, C]`` int64 confusion matrix of one image (or any set of pixels).

    Args:
        true: integer label map ``[H, W]`` (any shape).
        pred: predicted label map of the same shape.
        n_classes: number of classes ``C``.
        ignore_index: label of pixels left out (``None``: none).

    Raises:
        DataError: shapes differ, or a label outside ``0..C-1`` that is not ``ignore_index``.
    """
    true, pred = np.asarray(true), np.asarray(pred)
    if true.shape != pred.shape:
        raise DataError(f"prediction shape {pred.shape} differs from the mask shape {true.shape}.")
    keep = np.ones(true.shape, bool) if ignore_index is None else true != ignore_index
    t, p = true[keep].astype(np.int64), pred[keep].astype(np.int64)
    bad = t[(t < 0) | (t >= n_classes)]
    if bad.size:
        raise DataError(f"mask holds label {int(bad[0])}, outside 0..{n_classes - 1}"
                        + (f" and not the ignore index {ignore_index}" if ignore_index is not None else "")
                        + ". Fix the mask values, list the class, or set ignore_index.")
    if p.size and (p.min() < 0 or p.max() >= n_classes):
        raise DataError(f"prediction holds a label outside 0..{n_classes - 1}.")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_image_confusion(true: list[np.ndarray] | np.ndarray, pred: list[np.ndarray] | np.ndarray, n_classes: int,
                        ignore_index: int | None = 255) -> np.ndarray:
    """``[n_images, C, C]`` confusion matrices, one per image.

    Example:
        >>> per_image_confusion(np.zeros((3, 2, 2), int), np.zeros((3, 2, 2), int), 2).sum(0).tolist()
        [[12, 0], [0, 0]]
    """
    if len(true) != len(pred):
        raise DataError(f"{len(true)} masks but {len(pred)} predictions.")
    return np.stack([confusion(t, p, n_classes, ignore_index) for t, p in zip(true, pred)])


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """``[C]`` IoU per class from a (summed) confusion matrix; NaN for a class absent from both.

    Example:
        >>> iou_per_class(np.array([[1, 1], [0, 2]])).round(4).tolist()
        [0.5, 0.6667]
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def seg_metrics(cm: np.ndarray) -> dict[str, float | list[float]]:
    """``miou``, ``mdice``, ``pixel_accuracy`` and per-class ``iou`` / ``dice`` from a ``[C, C]`` matrix.

    Example:
        >>> round(seg_metrics(np.array([[3, 1], [0, 4]]))["pixel_accuracy"], 3)
        0.875
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp_fn = cm.sum(0) + cm.sum(1) - 2 * tp
    iou = iou_per_class(cm)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(2 * tp + fp_fn > 0, 2 * tp / (2 * tp + fp_fn), np.nan)
    total = cm.sum()
    return {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "mdice": float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"),
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "iou": iou.tolist(), "dice": dice.tolist()}
