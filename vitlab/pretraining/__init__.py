"""``vitlab.pretrain``: continued self-supervised pretraining (DINO, DINOv2, MAE) and feature distillation on the
user's own images, with the proof (``vitlab eval``'s paired tests) of whether it helped.

``vitlab.pretrain(...)`` (:func:`vitlab.pretraining.run.pretrain`) and ``vitlab.distill(...)``
(:func:`vitlab.pretraining.distillation.distill`) are the entry points; the pieces: the recipe
(:mod:`~vitlab.pretraining.recipe`), the methods (:mod:`~vitlab.pretraining.methods`, :mod:`~vitlab.pretraining.mae`), the views
(:mod:`~vitlab.pretraining.views`), the loop (:mod:`~vitlab.pretraining.loop`), the monitor (:mod:`~vitlab.pretraining.monitor`),
the verdict (:mod:`~vitlab.pretraining.verdict`) and the artefact adapter (:mod:`~vitlab.pretraining.artefact`).

Example:
    >>> from vitlab.pretraining import PretrainRecipe
    >>> PretrainRecipe().resolved(random_init=False)["lr"]
    5e-05
"""

from __future__ import annotations

from typing import Any

from vitlab.pretraining.common import PretrainResult
from vitlab.pretraining.recipe import PretrainRecipe

__all__ = ["pretrain", "distill", "PretrainRecipe", "PretrainResult"]


def __getattr__(name: str) -> Any:
    """``pretrain`` and ``distill`` load on first use (they import the training stack)."""
    if name == "pretrain":
        from vitlab.pretraining.run import pretrain

        return pretrain
    if name == "distill":
        from vitlab.pretraining.distillation import distill

        return distill
    raise AttributeError(f"module 'vitlab.pretraining' has no attribute {name!r}")

