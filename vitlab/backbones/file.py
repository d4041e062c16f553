"""``file:<checkpoint>`` backbones: a local timm-architecture checkpoint.

The architecture comes from, in order: the ``arch=`` argument (or ``?arch=`` in
the name), a sidecar ``<checkpoint stem>.json`` written by vitlab
(``{"arch": ..., "model_kwargs": ..., "preprocessing": ...}``), or the
safetensors metadata key ``arch``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from vitlab._cache import entry_path
from vitlab._io import atomic_write_json, hash_file
from vitlab.backbones.base import BackboneSpec
from vitlab.backbones.preprocessing import Preprocessing
from vitlab.backbones.timm import TimmBackbone, create_timm_model, spec_from_timm
from vitlab.errors import BackboneError

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_NESTED_KEYS = ("state_dict", "model", "teacher", "model_ema", "module")
_PREFIXES = ("module.", "model.", "backbone.", "encoder.")


def read_sidecar(path: Path) -> dict[str, Any]:
    """The ``<stem>.json`` next to a checkpoint, or ``{}``."""
    side = path.with_suffix(".json")
    if not side.exists():
        return {}
    try:
        return json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise BackboneError(f"{side}: invalid JSON ({e}). Fix or delete the sidecar file.") from e


def unsafe_pickle(where: str, file: str | Path) -> BackboneError:
    """The one line for a pickle checkpoint that ``weights_only`` loading refuses (it would run code).

    Example:
        >>> str(unsafe_pickle("hf:m", "m/pytorch_model.bin")).split(" (")[0]
        'hf:m: m/pytorch_model.bin is not a safe tensor file'
    """
    return BackboneError(f"{where}: {file} is not a safe tensor file (a pickle that needs code to load, which vitlab "
                         "never runs). Convert it to safetensors where it was made (model.save_pretrained(dir, "
                         "safe_serialization=True), or safetensors.torch.save_file(state_dict, 'model.safetensors')) "
                         "and load that file.")


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load tensors (and safetensors metadata) from a checkpoint, unwrapping common nestings."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            return load_file(str(path)), meta
        except (SafetensorError, OSError) as e:
            raise BackboneError(f"{path}: not a readable safetensors file ({e}).") from e
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e):
            raise unsafe_pickle(f"file:{path}", path) from None
        raise BackboneError(f"{path}: cannot load as a torch checkpoint (not a valid pickle: {str(e)[:120]}).") \
            from None
    except Exception as e:  # torch raises many types for bad pickles
        raise BackboneError(f"{path}: cannot load as a torch checkpoint ({type(e).__name__}: {e}). "
                            "Only plain state dicts are loaded (weights_only=True).") from e
    for key in _NESTED_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}.")
    return obj, {}


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for p in _PREFIXES:
        if state and all(k.startswith(p) for k in state):
            state = {k[len(p):]: v for k, v in state.items()}
    return state


def _safetensors_arch(path: Path) -> str | None:
    if path.suffix != ".safetensors":
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("arch")
    except (SafetensorError, OSError) as e:
        raise BackboneError(f"{path}: not a readable safetensors file ({e}).") from e


def _spec_cache_path(ident: str) -> Path:
    """``<cache>/specs/<ident>.json``: the ``specs`` cache namespace (:mod:`vitlab._cache`)."""
    return entry_path("specs", f"{ident}.json")


def _cached_spec(ident: str) -> BackboneSpec | None:
    path = _spec_cache_path(ident)
    try:
        return BackboneSpec.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remember_spec(ident: str, spec: BackboneSpec) -> None:
    try:
        atomic_write_json(_spec_cache_path(ident), spec.to_dict())
    except OSError:  # a read-only or full cache only costs the shortcut, never correctness
        pass


def describe_spec(path: Path) -> dict[str, Any]:
    """What ``vitlab cache ls`` shows of a ``specs`` entry (raises for a file that is not a backbone spec)."""
    spec = BackboneSpec.from_dict(json.loads(Path(path).read_text()))
    return {"backbone": spec.name, "embed_dim": spec.embed_dim, "depth": spec.depth}


def _build(path: Path, arch: str, model_kwargs: dict[str, Any], seed: int, pretrained: bool) -> torch.nn.Module:
    """Create the timm model and load the checkpoint into it (strictly, with a clear error on mismatch)."""
    model = create_timm_model(arch, pretrained=False, seed=seed, **model_kwargs)
    if not pretrained:
        return model
    state, _ = read_state_dict(path)
    state = _strip_prefixes(state)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith("head")}  # classifier heads
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                 for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or bad_shape:
        raise BackboneError(
            f"file:{path} does not match timm arch {arch!r} {model_kwargs or ''}: "
            + "; ".join(f"{what} ({len(ks)}): {', '.join(ks[:5])}{' ...' if len(ks) > 5 else ''}"
                        for what, ks in (("missing keys", missing), ("unexpected keys", unexpected),
                                         ("shape mismatches", bad_shape)) if ks)
            + ". Check the architecture name and its kwargs (img_size, patch_size, embed_dim, depth).")
    model.load_state_dict(state, strict=True)
    return model


def load_file(target: str, *, pretrained: bool = True, seed: int = 0, arch: str | None = None,
              name: str | None = None, **kwargs: Any) -> TimmBackbone:
    """Load ``file:<path>[?arch=<timm arch>]``.

    With ``pretrained`` (the checkpoint's weights), the backbone is identified by the checkpoint's
    content hash with its architecture and kwargs: its ``weights_id`` is that identity, and once
    the model has been built one time its spec is remembered (``<cache>/specs/``), so later loads
    are :meth:`~vitlab.backbones.base.Backbone.deferred`: a cache hit neither imports timm nor
    builds the model. Sound because the same bytes, architecture and kwargs always load the same
    weights strictly; a model changed in place after loading gets a new id.

    Example:
        >>> import timm
        >>> from safetensors.torch import save_file
        >>> save_file(timm.create_model("vit_tiny_patch16_224").state_dict(), "ckpt.safetensors")  # random weights
        >>> bb = load_file("ckpt.safetensors", arch="vit_tiny_patch16_224")
        >>> bb.spec.embed_dim, bb.spec.grid_size
        (192, (14, 14))
    """
    path_s, _, query = target.partition("?")
    for part in filter(None, query.split("&")):
        k, _, v = part.partition("=")
        if k != "arch":
            raise BackboneError(f"file:{target}: unknown option {k!r}; only ?arch=<timm model> is supported.")
        arch = arch or v
    path = Path(path_s).expanduser()
    if not path.is_file():
        hint = " It is a directory: for a transformers checkpoint use hf:<dir>." if path.is_dir() else ""
        raise BackboneError(f"file:{path}: no such checkpoint file.{hint}")
    if path.suffix not in CHECKPOINT_SUFFIXES:
        raise BackboneError(f"file:{path}: unsupported checkpoint type {path.suffix!r}; "
                            f"expected one of {', '.join(CHECKPOINT_SUFFIXES)}.")
    side = read_sidecar(path)
    if pretrained:
        arch = arch or side.get("arch") or _safetensors_arch(path)
    else:
        arch = arch or side.get("arch") or read_state_dict(path)[1].get("arch")
    if not arch:
        raise BackboneError(
            f"file:{path}: the architecture is unknown. Pass it as file:{path}?arch=vit_small_patch16_224 "
            f"(any timm model name), or write a sidecar {path.with_suffix('.json').name} with {{\"arch\": ...}}.")
    model_kwargs = {**side.get("model_kwargs", {}), **kwargs}
    model_kwargs.pop("num_classes", None)
    prep = Preprocessing.from_dict(side["preprocessing"]) if "preprocessing" in side else None
    bb_name = name or f"file:{path.resolve()}"
    if not pretrained:
        model = _build(path, arch, model_kwargs, seed, pretrained=False)
        return TimmBackbone(model, spec_from_timm(model, bb_name, False, prep))
    ident = hashlib.blake2b(json.dumps({"file": hash_file(path), "arch": arch, "kwargs": model_kwargs,
                                        "name": bb_name, "preprocessing": side.get("preprocessing")},
                                       sort_keys=True, default=str).encode(), digest_size=16).hexdigest()
    spec = _cached_spec(ident)
    if spec is not None:
        return TimmBackbone.deferred(lambda: _build(path, arch, model_kwargs, seed, True), spec, ident)
    model = _build(path, arch, model_kwargs, seed, pretrained=True)
    spec = spec_from_timm(model, bb_name, True, prep)
    _remember_spec(ident, spec)
    bb = TimmBackbone(model, spec)
    bb.weights_id = ident
    return bb
