"""Segmentation: mIoU, mean Dice and pixel accuracy from the images' summed confusion matrices
(:mod:`vitlab.metrics.segmentation`), each with a seeded percentile-bootstrap CI over images
(resampled images' matrices are summed again); per-class IoU in the details; paired: bootstrap of
the mIoU difference on the same image resamples.

Example:
    >>> import numpy as np
    >>> from vitlab.protocols.base import Result
    >>> cm = np.stack([np.array([[3, 1], [0, 4]])] * 6)
    >>> m, d = SegmentationScorer().score(Result("segmentation", list("abcdef"), {"confusion": cm}),
    ...                                   n_resamples=20, seed=0)
    >>> round(m["pixel_accuracy"]["value"], 3), len(d["per_class_iou"])
    (0.875, 2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitlab.metrics.segmentation import seg_metrics
from vitlab.protocols.base import Result
from vitlab.scorers.base import Scorer, check_paired, register_scorer
from vitlab.stats.bootstrap import bootstrap_ci
from vitlab.stats.paired import paired_bootstrap

__all__ = ["SegmentationScorer"]


def _metric(name: str):
    def fn(y: np.ndarray, confusion: np.ndarray) -> float:
        return float(seg_metrics(np.asarray(confusion).sum(0))[name])
    fn.__name__ = name
    return fn


@register_scorer
class SegmentationScorer(Scorer):
    """Scorer of task ``segmentation`` (outputs ``confusion [m, C, C]``, optional ``classes``)."""

    task = "segmentation"
    headline = "miou"
    p_keys = ("p_bootstrap",)
    significance_rule = "Holm-adjusted paired bootstrap (images) p < alpha"

    def score(self, res: Result, *, n_resamples: int, seed: int, **_: Any
              ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        cm = np.asarray(res.outputs["confusion"])
        y = np.zeros(cm.shape[0])
        out = {name: bootstrap_ci(_metric(name), y, cm, n_resamples=n_resamples, seed=seed,
                                  groups=res.groups).to_entry()
               for name in ("miou", "mdice", "pixel_accuracy")}
        full = seg_metrics(cm.sum(0))
        return out, {"per_class_iou": full["iou"], "per_class_dice": full["dice"],
                     "classes": res.outputs.get("classes"), "confusion_matrix": cm.sum(0).tolist()}

    def paired(self, a: Result, b: Result, *, n_resamples: int, seed: int) -> dict[str, Any]:
        check_paired(a, b)
        ca, cb = np.asarray(a.outputs["confusion"]), np.asarray(b.outputs["confusion"])
        boot = paired_bootstrap(_metric("miou"), np.zeros(ca.shape[0]), ca, cb, n_resamples=n_resamples,
                                seed=seed, groups=a.groups)
        return {"metric": "miou", "diff": boot.diff, "low": boot.low, "high": boot.high,
                "p_bootstrap": boot.p_value}
