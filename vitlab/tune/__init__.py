"""Adaptation next to the frozen probes: ``linear``, ``full``, ``lora`` / ``dora``, ``vpt``, ``bitfit``.

Every method trains with one recipe (:mod:`vitlab.tune.recipe`) and one loop (:mod:`vitlab.tune.runner`)
on the same train/test split as ``vitlab eval`` for the same data and seed, is scored by the
classification scorer (bootstrap CIs, paired tests against ``linear`` and between methods), and
returns a new backbone saved as a self-describing ``.vitlab`` artefact (:mod:`vitlab.tune.artefact`)
that ``load_backbone`` reads back.

Example:
    >>> res = vitlab.tune("demo:fmnist-vit", "sample:digits", methods="linear,lora", seeds=2)  # doctest: +SKIP
    >>> res.record.metrics["lora"]["top1"]  # doctest: +SKIP
    {'value': 0.93, 'low': 0.91, 'high': 0.95, 'method': 't-interval over seeds', ...}
"""

from __future__ import annotations

import sys
import types
from typing import Any

from vitlab.tune.methods import METHODS, Method, parse_methods
from vitlab.tune.recipe import TuneRecipe

__all__ = ["tune", "TuneResult", "TuneRecipe", "METHODS", "Method", "parse_methods"]


def __getattr__(name: str) -> Any:
    if name in ("tune", "TuneResult"):
        from vitlab.tune import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module 'vitlab.tune' has no attribute {name!r}")


class _CallablePackage(types.ModuleType):
    """``vitlab.tune`` names both this package and the API function ``vitlab.tune(...)``: once any submodule
    is imported, Python binds the attribute ``vitlab.tune`` to the package, so the package forwards calls
    to :func:`vitlab.tune.evaluate.tune` and both spellings keep working."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from vitlab.tune.evaluate import tune as _tune

        return _tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
