"""The ``.vitlab`` artefact of a pretraining or distillation run, through ONE adapter over :mod:`vitlab.backbones.artefact`.

:func:`save_model` and :func:`load_model` are the only places this package touches the artefact format (today
``vitlab.tuning.artefact.save_tuned`` / ``vitlab.backbones.artefact.load_artefact``), so a change of that API is made here once. A run's
artefact is a tune artefact of method ``full``: every weight of the trained backbone under ``body.<name>`` (no
``head.*``), and in the metadata the base backbone to rebuild (its loader name, options and ``weights_id``, checked
on load: an artefact whose base changed is refused) plus a ``pretrain`` block (method, run, step, data). So it
loads with ``vitlab.load_backbone(path)`` (and ``--backbone path``) like any tuned backbone, with its own
``weights_id`` (a hash of the base id and the weights), never the base's; the user's model is only read.

Example:
    >>> import vitlab
    >>> res = vitlab.pretrain("demo:fmnist-vit", "sample:digits?limit=200", monitor="sample:digits?limit=200",
    ...                       max_steps=1, batch_size=16, monitor_every=0, n_resamples=20, verdict_protocols="knn",
    ...                       progress=False)  # one step: a smoke run
    >>> bb = vitlab.load_backbone(str(res.artefact))  # runs/pretrain/<run>/model.vitlab
    >>> bb.spec.extra["tuned"]["method"], bb.weights_id != vitlab.load_backbone("demo:fmnist-vit").weights_id
    ('full', True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitlab.backbones.base import Backbone

__all__ = ["save_model", "load_model", "base_meta"]


def base_meta(bb: Backbone, load_name: str, kwargs: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """How the artefact rebuilds its base: loader name (``random:<name>`` for a random-init start), options, id.

    Example:
        >>> import vitlab
        >>> sorted(base_meta(vitlab.load_backbone("demo:fmnist-vit"), "demo:fmnist-vit"))
        ['kwargs', 'load_name', 'name', 'pretrained', 'seed', 'weights_id']
    """
    from vitlab.backbones.artefact import base_meta as _base_meta

    return _base_meta(bb, load_name=load_name, seed=seed, kwargs=kwargs)


def save_model(path: str | Path, body: nn.Module, base: dict[str, Any], info: dict[str, Any]) -> Path:
    """Write the parameters of the trained backbone module ``body`` as a ``.vitlab`` artefact at ``path``.

    Args:
        base: :func:`base_meta` of the starting backbone.
        info: the ``pretrain`` block of the metadata (method or ``distill``, run id, step, data, ...).
    """
    from vitlab.tuning.artefact import save_tuned

    tensors = {f"body.{k}": v.detach().cpu() for k, v in body.named_parameters()}
    meta = {"base": base, "method": {"name": "full", "spec": "full", "label": "full"}, "pretrain": info,
            "seed": info.get("seed"), "data": info.get("data", {}), "run_id": info.get("run_id")}
    return save_tuned(path, tensors, meta)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Backbone:
    """The backbone saved at ``path`` (what ``vitlab.load_backbone(path)`` gives).

    Raises:
        BackboneError: not an artefact, or its base backbone now has other weights.
    """
    from vitlab.backbones.artefact import load_artefact

    return load_artefact(path, device=device)
