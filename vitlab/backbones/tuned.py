"""``tuned:<file>.vitlab`` (or just the path of a ``.vitlab`` file): a backbone saved as a vitlab artefact
(adapted by ``vitlab tune``, or made by another producer of the family).

The artefact format, its checks and the per-kind rebuild live in :mod:`vitlab.backbones.artefact`; this module
is the loader the backbone registry calls.

Example:
    >>> import vitlab
    >>> res = vitlab.tune("demo:fmnist-vit", "sample:digits?limit=300", methods="lora", out="runs", probe=False,
    ...                   epochs=1, max_steps=1, lr_grid=(1.0,), lp_init=False, n_resamples=20, progress=False)
    >>> bb = vitlab.load_backbone(str(res.artefacts["lora"]))  # runs/tune/<run>/lora.vitlab
    >>> bb.weights_id != vitlab.load_backbone("demo:fmnist-vit").weights_id
    True
"""

from __future__ import annotations

from typing import Any

from vitlab.backbones.base import Backbone


def load_tuned(target: str, *, pretrained: bool = True, seed: int = 0, merge: bool = True, **kwargs: Any) -> Backbone:
    """Load the adapted backbone saved at ``target`` (``pretrained`` and ``seed`` do not apply: the artefact
    names its base and how to rebuild it).

    Example:
        >>> import vitlab
        >>> res = vitlab.tune("demo:fmnist-vit", "sample:digits?limit=300", methods="vpt", out="runs", probe=False,
        ...                   epochs=1, max_steps=1, lr_grid=(1.0,), lp_init=False, n_resamples=20, progress=False)
        >>> bb = load_tuned(str(res.artefacts["vpt"]))
        >>> bb.spec.extra["tuned"]["method"]
        'vpt'
    """
    from vitlab.backbones.artefact import load_artefact
    from vitlab.errors import BackboneError

    if not pretrained:
        raise BackboneError(f"tuned:{target}: random:/--no-pretrained does not apply to a tuned artefact (it holds "
                            "trained weights); load it as is.")
    if kwargs:
        raise BackboneError(f"tuned:{target}: loader options {sorted(kwargs)} do not apply to a tuned artefact "
                            "(it records its base backbone's own options).")
    return load_artefact(target, **({} if merge else {"merge": False}))  # merge: a tune artefact's option
