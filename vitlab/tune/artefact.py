"""The adapted model as a backbone: a self-describing ``.vitlab`` artefact (safetensors + JSON metadata).

One file holds what the method trained (LoRA / DoRA adapters, VPT prompts, biases, or every weight
for ``full``) under ``body.<name>``, the classification head under ``head.*``, and in the
safetensors metadata (``"format": "vitlab-tuned/1"``, ``"meta"``: JSON) the base backbone (name,
loader arguments, ``weights_id``), the method and its config, the recipe, the seed, the data
(URI, fingerprint, classes) and the test score of that run. :func:`load_artefact` rebuilds the base,
checks that its weights are the ones the adapter was trained on, applies the method, loads the
trained tensors (exactly the declared ones) and, for LoRA, merges the adapters into the weights.

The adapted backbone's ``weights_id`` is pinned to a hash of the base id and the trained tensors, so
it never equals the base's and the store never confuses their embeddings.

Example:
    >>> bb = vitlab.load_backbone("runs/tune/ab12/lora.vitlab")  # doctest: +SKIP
    >>> bb.name, bb.spec.extra["tuned"]["method"]  # doctest: +SKIP
    ('demo:fmnist-vit+lora', 'lora')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from vitlab.backbones.base import Backbone
from vitlab.errors import BackboneError

__all__ = ["FORMAT", "SUFFIX", "save_artefact", "load_artefact", "load_tuned", "read_meta", "tuned_id", "tensor_digest"]

FORMAT = "vitlab-tuned/1"
SUFFIX = ".vitlab"


def save_artefact(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` (``body.*`` trained tensors, ``head.*``) and ``meta`` to ``path`` (a ``.vitlab`` file).

    Example:
        >>> p = save_artefact(tmp / "x.vitlab", {"head.bias": torch.zeros(2)}, {"method": {"name": "linear"}})  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != SUFFIX:
        raise BackboneError(f"{path}: a tuned artefact must end in {SUFFIX}, e.g. lora{SUFFIX}.")
    from vitlab._io import atomic_path

    with atomic_path(path, elsewhere="pass another --out") as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": FORMAT, "meta": json.dumps(meta, sort_keys=True, default=str)})
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a ``.vitlab`` artefact (no tensors loaded).

    Raises:
        BackboneError: not a file, not safetensors, or not a vitlab artefact (one line naming the file).
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"{path}: no such tuned artefact. `vitlab tune ... --out runs/` writes them as "
                            f"runs/tune/<run>/<method>{SUFFIX}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise BackboneError(f"{path}: not a readable {SUFFIX} artefact ({e}).") from e
    if md.get("format") != FORMAT:
        raise BackboneError(f"{path}: not a vitlab tuned artefact (format {md.get('format')!r}, expected {FORMAT!r}).")
    return json.loads(md["meta"])


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


def load_artefact(path: str | Path, *, device: str | torch.device = "cpu", merge: bool = True) -> Backbone:
    """Rebuild the adapted backbone saved in ``path``.

    Args:
        path: a ``.vitlab`` file written by :func:`vitlab.tune`.
        device: where to put it.
        merge: merge LoRA / DoRA adapters into the weights (``False`` keeps the peft layers: same outputs,
            slower; for checking the merge).

    Returns:
        A :class:`Backbone` named ``<base>+<method>`` whose ``spec.extra["tuned"]`` holds the artefact's
        metadata and ``tuned_head`` the head tensors ``(weight [C, D], bias [C])``.

    Raises:
        BackboneError: the file is not an artefact, the base backbone cannot be rebuilt or now has
        other weights, or the tensors do not match what the method trains.
    """
    from safetensors.torch import load_file

    from vitlab.backbones import load_backbone
    from vitlab.tune.methods import clone_backbone, parse_methods

    path = Path(path).expanduser()
    meta = read_meta(path)
    base_meta = meta["base"]
    base = load_backbone(base_meta["load_name"], pretrained=base_meta.get("pretrained", True),
                         seed=int(base_meta.get("seed", 0)), **(base_meta.get("kwargs") or {}))
    if base.weights_id != base_meta["weights_id"]:
        raise BackboneError(f"{path}: the base backbone {base_meta['load_name']} now has other weights (id "
                            f"{base.weights_id} vs {base_meta['weights_id']} when tuned); the adapter only fits the "
                            "weights it was trained on. Restore that checkpoint (or re-run vitlab tune).")
    method = parse_methods(meta["method"]["spec"])[0]
    bb = method.apply(clone_backbone(base), torch.Generator().manual_seed(0))
    tensors = load_file(str(path))
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
    return bb.to(device)


def load_tuned(target: str, *, pretrained: bool = True, seed: int = 0, merge: bool = True, **kwargs: Any) -> Backbone:
    """The backbone registry's ``tuned:`` loader: the adapted backbone saved at ``target`` (``pretrained`` and ``seed`` do not apply: the artefact
    names its base and how to rebuild it).

    Example:
        >>> bb = load_tuned("runs/tune/ab12/vpt.vitlab")  # doctest: +SKIP
    """
    if not pretrained:
        raise BackboneError(f"tuned:{target}: random:/--no-pretrained does not apply to a tuned artefact (it holds "
                            "trained weights); load it as is.")
    if kwargs:
        raise BackboneError(f"tuned:{target}: loader options {sorted(kwargs)} do not apply to a tuned artefact "
                            "(it records its base backbone's own options).")
    return load_artefact(target, merge=merge)
