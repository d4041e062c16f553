"""The adapted model as a backbone: the ``tune`` kind of ``.vitlab`` artefact (:mod:`vitlab.backbones.artefact`).

One file holds what the method trained (LoRA / DoRA adapters, VPT prompts, biases, or every weight
for ``full``) under ``body.<name>``, the classification head under ``head.*``, and in its metadata the
base backbone (name, loader arguments, ``weights_id``), the method and its config, the recipe, the seed,
the data (URI, fingerprint, classes) and the test score of that run, with the file's digest. Saving and
reading (digest check, base check) are the artefact family's (:func:`~vitlab.backbones.artefact.save_artefact`
with ``kind="tune"``, :func:`~vitlab.backbones.artefact.read_artefact`); :func:`rebuild_tuned` applies the
method to the rebuilt base, loads the trained tensors (exactly the declared ones) and, for LoRA, merges the
adapters into the weights.

The adapted backbone's ``weights_id`` is pinned to a hash of the base id and the trained tensors, so
it never equals the base's and the store never confuses their embeddings.

Example:
    >>> import vitlab
    >>> res = vitlab.tune("demo:fmnist-vit", "sample:digits?limit=300", methods="lora", out="runs", probe=False,
    ...                   epochs=1, max_steps=1, lr_grid=(1.0,), lp_init=False, n_resamples=20, progress=False)
    >>> bb = vitlab.load_backbone(str(res.artefacts["lora"]))  # runs/tune/<run>/lora.vitlab
    >>> bb.name, bb.spec.extra["tuned"]["method"]
    ('demo:fmnist-vit+lora', 'lora')
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch

from vitlab.backbones.artefact import (FORMAT, SUFFIX, Artefact, base_meta, load_artefact, load_base,
                                       read_artefact, read_meta, save_artefact)
from vitlab.backbones.base import Backbone
from vitlab.errors import BackboneError

__all__ = ["FORMAT", "SUFFIX", "KIND", "save_tuned", "save_artefact", "load_artefact", "read_meta", "read_artefact",
           "base_meta", "rebuild_tuned", "tuned_id", "tensor_digest"]

#: the artefact kind tune writes
KIND = "tune"


def save_tuned(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write a tune artefact: ``tensors`` (``body.*`` trained tensors, ``head.*``) and ``meta`` (with ``"base"``,
    ``"method"``...) to ``path`` (a ``.vitlab`` file), with its digest."""
    return save_artefact(path, tensors, meta, kind=KIND)


def tensor_digest(tensors: dict[str, torch.Tensor], method_spec: str) -> str:
    """blake2b of the trained tensors (names, dtypes, shapes, bytes) and the method spec: what the adapted
    weights are, whatever the artefact's metadata says.

    Example:
        >>> tensor_digest({"head.bias": torch.zeros(2)}, "linear") == tensor_digest({"head.bias": torch.zeros(2)}, "linear")
        True
    """
    h = hashlib.blake2b(method_spec.encode(), digest_size=16)
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tuned_id(base_id: str, digest: str) -> str:
    """The pinned ``weights_id`` of an adapted backbone: hash of the base id and :func:`tensor_digest`."""
    return hashlib.blake2b(f"tuned|{base_id}|{digest}".encode(), digest_size=16).hexdigest()


def rebuild_tuned(art: Artefact, *, merge: bool = True) -> Backbone:
    """The adapted backbone of a verified tune artefact (registered as the ``tune`` kind's rebuild).

    Args:
        art: from :func:`~vitlab.backbones.artefact.read_artefact`.
        merge: merge LoRA / DoRA adapters into the weights (``False`` keeps the peft layers: same outputs,
            slower; for checking the merge).

    Returns:
        A :class:`Backbone` named ``<base>+<method>`` whose ``spec.extra["tuned"]`` summarises the artefact and
        ``tuned_head`` holds the head tensors ``(weight [C, D], bias [C])``.

    Raises:
        ConfigError: the method's optional package is missing (names the extra). BackboneError: the base is
        missing or has other weights, or the tensors do not match what the method trains.
    """
    from vitlab.tuning.methods import check_dependencies, clone_backbone, parse_methods

    path, meta, tensors = art.path, art.meta, art.tensors
    method = parse_methods(meta["method"]["spec"])[0]
    check_dependencies([method])
    base = load_base(art)
    bb = method.apply(clone_backbone(base), torch.Generator().manual_seed(0))
    body = {k.removeprefix("body."): v for k, v in tensors.items() if k.startswith("body.")}
    params = {n: p for n, p in bb.model.named_parameters() if p.requires_grad}
    missing, extra = sorted(set(params) - set(body)), sorted(set(body) - set(params))
    if missing or extra:
        raise BackboneError(f"{path}: its tensors do not match method {method.spec()!r} on {base.name} (missing "
                            f"{missing[:3]}, unexpected {extra[:3]}). The artefact is damaged or from another vitlab.")
    with torch.no_grad():
        for n, t in body.items():
            if params[n].shape != t.shape:
                raise BackboneError(f"{path}: tensor {n} has shape {tuple(t.shape)}, the model expects "
                                    f"{tuple(params[n].shape)}. The artefact is damaged or from another base.")
            params[n].copy_(t)
    bb = method.finalize(bb, merge=merge)
    bb.model.eval().requires_grad_(False)
    summary = {"artefact": str(path.resolve()), "method": method.name, "method_spec": method.spec(),
               "base": base.name, "base_weights_id": base.weights_id, "data": meta.get("data", {}).get("uri"),
               "seed": meta.get("seed")}
    bb.spec = dataclasses.replace(base.spec, name=f"{base.name}+{method.label}",
                                  extra={**base.spec.extra, "tuned": summary})
    bb.weights_id = tuned_id(base.weights_id, tensor_digest(tensors, method.spec()))
    bb.__dict__["tuned_head"] = (tensors.get("head.weight"), tensors.get("head.bias"))
    bb.__dict__["tuned_meta"] = meta
    return bb
