"""Adaptation next to the frozen probes: ``linear``, ``full``, ``lora`` / ``dora``, ``vpt``, ``bitfit``.

Every method trains with one recipe (:mod:`vitlab.tuning.recipe`) and one loop (:mod:`vitlab.tuning.runner`)
on the same train/test split as ``vitlab eval`` for the same data and seed, is scored by the
classification scorer (bootstrap CIs, paired tests against ``linear`` and between methods), and
returns a new backbone saved as a self-describing ``.vitlab`` artefact (:mod:`vitlab.tuning.artefact`)
that ``load_backbone`` reads back.

Example:
    >>> import vitlab
    >>> res = vitlab.tune("demo:fmnist-vit", "sample:digits?limit=300", methods="linear,lora", seeds=2, probe=False,
    ...                   epochs=1, max_steps=1, lr_grid=(1.0,), lp_init=False, n_resamples=20, progress=False)
    >>> top1 = res.record.metrics["lora"]["top1"]
    >>> top1["method"], top1["low"] <= top1["value"] <= top1["high"]
    ('t-interval over seeds', True)
"""

from __future__ import annotations

from typing import Any

from vitlab.tuning.methods import METHODS, Method, parse_methods
from vitlab.tuning.recipe import TuneRecipe

__all__ = ["tune", "TuneResult", "TuneRecipe", "METHODS", "Method", "parse_methods"]


def __getattr__(name: str) -> Any:
    if name in ("tune", "TuneResult"):
        from vitlab.tuning import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module 'vitlab.tuning' has no attribute {name!r}")

