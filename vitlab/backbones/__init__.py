"""Backbones: any model source → one :class:`Backbone` contract.

Example:
    >>> from vitlab.backbones import load_backbone
    >>> bb = load_backbone("demo:fmnist-vit")
    >>> bb.spec.embed_dim
    96
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from vitlab._registry import Registry
from vitlab.backbones.aliases import ALIASES
from vitlab.backbones.base import POOLS, Backbone, BackboneSpec, TokenOutput, pool_tokens
from vitlab.backbones.preprocessing import Preprocessing
from vitlab.errors import ConfigError, UnknownNameError

SOURCES = Registry("backbone source", hint="Write the name as <source>:<model>, e.g. timm:vit_small_patch16_224.")
SOURCES.register("timm", "vitlab.backbones.timm:load_timm", help="timm:<model name>  (any timm ViT-family model)")
SOURCES.register("hf", "vitlab.backbones.hf:load_hf", help="hf:<hub id or local dir>  (ViT, DINOv2[+reg], CLIP, SigLIP, MAE)")
SOURCES.register("open_clip", "vitlab.backbones.open_clip:load_open_clip", help="open_clip:<arch>/<tag>  (visual tower)")
SOURCES.register("file", "vitlab.backbones.file:load_file", help="file:<checkpoint>[?arch=<timm model>]")
SOURCES.register("demo", "vitlab.backbones.demo:load_demo", help="demo:fmnist-vit  (small ViT shipped with vitlab)")
SOURCES.register("pixels", "vitlab.backbones.pixels:load_pixels", help="pixels[:<size>]  (flattened pixels baseline)")
SOURCES.register("inception", "vitlab.backbones.inception:load_inception", help="inception:fid  (FID Inception-V3, pool3 features)")
SOURCES.register("random", None, help="random:<name>  (seeded random-init copy of any backbone, e.g. random:demo:fmnist-vit)")
SOURCES.register("tuned", "vitlab.backbones.tuned:load_tuned",
                 help="tuned:<file>.vitlab or just <file>.vitlab  (a backbone adapted by vitlab tune)")
# Sources whose weights are local files: `pretrained=False` does not apply (use random:<name>).
LOCAL_WEIGHTS = ("file", "demo", "pixels", "tuned")


def resolve_name(name: str) -> str:
    """Expand an alias and check the ``source:`` prefix.

    Example:
        >>> resolve_name("dinov2-s")
        'timm:vit_small_patch14_dinov2.lvd142m'
    """
    name = name.strip()
    if name in ALIASES:
        return ALIASES[name]
    if name.endswith(".vitlab") and name.partition(":")[0] not in SOURCES:  # a path to a tuned artefact
        return f"tuned:{name}"
    if name == "pixels":
        return "pixels:28"
    prefix, sep, rest = name.partition(":")
    if not sep or not rest:
        raise UnknownNameError("backbone", name, list(ALIASES) + [f"{s}:" for s in SOURCES.names()],
                               "Use an alias (vitlab ls) or <source>:<model> with source one of "
                               f"{', '.join(SOURCES.names())}, e.g. timm:{name}.")
    SOURCES.entry(prefix)  # raises with suggestions
    return name


def load_backbone(name: str, *, pretrained: bool = True, device: str | torch.device = "cpu",
                  seed: int = 0, **kwargs: Any) -> Backbone:
    """Load a backbone by prefixed name or alias.

    Args:
        name: ``"timm:vit_small_patch14_dinov2.lvd142m"``, ``"hf:facebook/dinov2-small"``,
            ``"open_clip:ViT-B-16/openai"``, ``"file:ckpt.safetensors?arch=vit_small_patch16_224"``,
            ``"demo:fmnist-vit"``, or an alias such as ``"dinov2-s"``.
        pretrained: load pretrained weights; ``False`` gives seeded random weights for hub sources
            (``timm:``, ``hf:``, ``open_clip:``) so nothing is downloaded. Local checkpoints
            (``file:``, ``demo:``) always load their weights; ``random:<name>`` gives a seeded
            random-init copy of any backbone.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        seed: seed for random initialisation.
        **kwargs: passed to the source's constructor (e.g. ``img_size=`` for timm).

    Example:
        >>> bb = load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32)
        >>> bb.spec.num_prefix_tokens
        1
    """
    full = resolve_name(name)
    random_init = full.startswith("random:")
    if random_init:
        full = resolve_name(full[len("random:"):])
    prefix, _, rest = full.partition(":")
    dev = resolve_device(device)
    use_pretrained = not random_init and (pretrained or prefix in LOCAL_WEIGHTS)
    backbone = SOURCES.get(prefix)(rest, pretrained=use_pretrained, seed=seed, **kwargs)
    if not use_pretrained and prefix not in ("pixels",):  # say so in every table and record
        backbone.spec = dataclasses.replace(backbone.spec, name=f"random:{backbone.spec.name}")
    backbone.weights_id  # hash on CPU, before any move
    return backbone.to(dev)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Validate a device string; ``None``/``"auto"`` picks CUDA when available."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"invalid device {device!r}; use cpu, cuda, cuda:N or mps.") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but no CUDA GPU is available here; use --device cpu.")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r} requested but MPS is not available; use --device cpu.")
    return dev


def list_backbones() -> dict[str, str]:
    """Aliases and their full names (``vitlab ls``)."""
    return dict(ALIASES)


__all__ = ["Backbone", "BackboneSpec", "TokenOutput", "Preprocessing", "POOLS", "pool_tokens",
           "load_backbone", "resolve_name", "resolve_device", "list_backbones", "SOURCES", "ALIASES"]
