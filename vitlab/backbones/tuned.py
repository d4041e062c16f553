"""``tuned:<file>.vitlab`` (or just the path of a ``.vitlab`` file): a backbone saved as a vitlab artefact
(adapted by ``vitlab tune``, or made by another producer of the family).

The artefact format, its checks and the per-kind rebuild live in :mod:`vitlab.backbones.artefact`; this module
is the loader the backbone registry calls.

Example:
    >>> bb = vitlab.load_backbone("runs/tune/ab12/lora.vitlab")  # doctest: +SKIP
    >>> bb.weights_id != vitlab.load_backbone("demo:fmnist-vit").weights_id  # doctest: +SKIP
    True
"""

from __future__ import annotations

from typing import Any

from vitlab.backbones.base import Backbone


def load_tuned(target: str, *, pretrained: bool = True, seed: int = 0, merge: bool = True, **kwargs: Any) -> Backbone:
    """Load the adapted backbone saved at ``target`` (``pretrained`` and ``seed`` do not apply: the artefact
    names its base and how to rebuild it).

    Example:
        >>> bb = load_tuned("runs/tune/ab12/vpt.vitlab")  # doctest: +SKIP
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
