"""LP-FT: start a trained head from the linear-probe solution (Kumar et al. 2022, "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution", ICLR).

Fine-tuning from a random head sends large, wrong gradients into the pretrained features until the head has
learned something; starting the head at the linear probe avoids that. The probe is exactly ``vitlab eval``'s
``linear`` protocol (L-BFGS logistic regression, C chosen coarse-to-fine on a stratified holdout, refit;
:meth:`vitlab.protocols.classification.Linear.fit_probe`), fitted on the features the head reads at step 0
(the method already applied: for LoRA / BitFit / full they are the base's, for VPT they include the freshly
initialised prompts) of the rows the method trains on: the training part while the learning rate and the
epoch are chosen (the validation part stays unseen), train + validation for the refit.

Example:
    >>> import vitlab, numpy as np, torch
    >>> from vitlab.tuning.methods import clone_backbone
    >>> from vitlab.tuning.recipe import TuneRecipe
    >>> from vitlab.tuning.runner import ImageBank, TuneNet
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> src = vitlab.load_source("sample:digits?limit=200")
    >>> net = TuneNet(clone_backbone(bb), 10, "cls", torch.Generator().manual_seed(0))
    >>> lp = linear_probe_head(net, ImageBank(src, bb.spec.preprocessing), src.labels, np.arange(150), None,
    ...                        seed=0, n_classes=10, device=torch.device("cpu"), recipe=TuneRecipe())
    >>> set_head(net, lp)
    >>> torch.equal(net.head.weight, torch.as_tensor(lp.weight)), lp.weight.shape
    (True, (10, 96))
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vitlab.tuning.recipe import TuneRecipe

__all__ = ["LPHead", "linear_probe_head", "set_head"]


@dataclass(frozen=True)
class LPHead:
    """A linear-probe head: ``weight [C, D]``, ``bias [C]`` (float32, as the head), the chosen ``C``, the rows it
    was fitted on (``n_rows``), its validation sweep over C, and ``key`` (a hash of the features, labels and
    seed it was fitted on: methods whose step-0 features are identical share one fit)."""

    weight: np.ndarray
    bias: np.ndarray
    C: float
    n_rows: int
    val_top1_by_C: dict[str, float]
    key: str

    def info(self) -> dict[str, Any]:
        """Record-ready summary (no arrays)."""
        return {"C": self.C, "n_rows": self.n_rows, "features_key": self.key[:16],
                "probe": "vitlab eval's linear protocol (L-BFGS, C coarse-to-fine on a holdout of these rows)"}


def linear_probe_head(net: Any, bank: Any, labels: np.ndarray, rows: np.ndarray, groups: np.ndarray | None, *,
                      seed: int, n_classes: int, device: torch.device, recipe: TuneRecipe,
                      cache: dict[str, LPHead] | None = None) -> LPHead:
    """Fit the linear probe on ``net``'s current (step-0) pooled features of source rows ``rows``.

    Args:
        net: a :class:`~vitlab.tuning.runner.TuneNet` before training.
        bank: its :class:`~vitlab.tuning.runner.ImageBank`. labels: every row's label. rows: the rows trained on.
        groups: every row's group, or ``None`` (the probe's holdout keeps groups apart).
        seed: the probe's holdout seed. n_classes: head outputs. device / recipe: where and how features run.
        cache: fits already made in this run, by features key (reused, not refitted).

    Raises:
        DataError: too few rows per class for the probe's holdout (one line, with the fix).
    """
    from vitlab.protocols.base import Split
    from vitlab.protocols.classification import Linear
    from vitlab.tuning.runner import _features

    feats = _features(net, bank, rows, device, recipe).float().cpu().numpy()
    y = np.asarray(labels)[rows].astype(np.int64)
    h = hashlib.blake2b(digest_size=16)
    for part in (feats, np.asarray(rows, dtype=np.int64), y, np.asarray([seed, n_classes], dtype=np.int64)):
        h.update(np.ascontiguousarray(part).tobytes())
    key = h.hexdigest()
    if cache is not None and key in cache:
        return cache[key]
    split = Split(feats, y, np.asarray(rows), groups=None if groups is None else np.asarray(groups)[rows])
    probe, details = Linear().fit_probe(split, seed=seed, n_classes=n_classes, device=str(device))
    out = LPHead(np.asarray(probe.coef_, dtype=np.float32), np.asarray(probe.intercept_, dtype=np.float32),
                 float(probe.C_), int(len(rows)), dict(details["val_top1_by_C"]), key)
    if cache is not None:
        cache[key] = out
    return out


@torch.no_grad()
def set_head(net: Any, lp: LPHead) -> None:
    """Copy the probe's weights into ``net.head`` (its dtype and device)."""
    w = net.head.weight
    net.head.weight.copy_(torch.as_tensor(lp.weight).to(device=w.device, dtype=w.dtype))
    net.head.bias.copy_(torch.as_tensor(lp.bias).to(device=w.device, dtype=w.dtype))
