"""``vitlab.pretrain``: continued self-supervised pretraining (DINO, DINOv2, MAE) and feature distillation on the
user's own images, with the proof (``vitlab eval``'s paired tests) of whether it helped.

``vitlab.pretrain(...)`` (:func:`vitlab.pretrain.run.pretrain`) and ``vitlab.distill(...)``
(:func:`vitlab.pretrain.distillation.distill`) are the entry points; the pieces: the recipe
(:mod:`~vitlab.pretrain.recipe`), the methods (:mod:`~vitlab.pretrain.methods`, :mod:`~vitlab.pretrain.mae`), the views
(:mod:`~vitlab.pretrain.views`), the loop (:mod:`~vitlab.pretrain.loop`), the monitor (:mod:`~vitlab.pretrain.monitor`),
the verdict (:mod:`~vitlab.pretrain.verdict`) and the artefact adapter (:mod:`~vitlab.pretrain.artefact`).

Example:
    >>> from vitlab.pretrain import PretrainRecipe
    >>> PretrainRecipe().resolved(random_init=False)["lr"]
    5e-05
"""

from __future__ import annotations

import sys
import types
from typing import Any

from vitlab.pretrain.common import PretrainResult
from vitlab.pretrain.recipe import PretrainRecipe

__all__ = ["pretrain", "distill", "PretrainRecipe", "PretrainResult"]


def __getattr__(name: str) -> Any:
    """``pretrain`` and ``distill`` load on first use (they import the training stack)."""
    if name == "pretrain":
        from vitlab.pretrain.run import pretrain

        return pretrain
    if name == "distill":
        from vitlab.pretrain.distillation import distill

        return distill
    raise AttributeError(f"module 'vitlab.pretrain' has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """``vitlab.pretrain`` names both this package and the API function ``vitlab.pretrain(...)``: once a submodule is
    imported, Python binds the attribute ``vitlab.pretrain`` to the package, so the package forwards calls to
    :func:`vitlab.pretrain.run.pretrain` (as :mod:`vitlab.tune` does)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from vitlab.pretrain.run import pretrain as _pretrain

        return _pretrain(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
