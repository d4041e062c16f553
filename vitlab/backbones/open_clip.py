"""``open_clip:<arch>/<tag>`` backbones: the visual tower of an OpenCLIP model."""

from __future__ import annotations

from typing import Any

import torch

from vitlab.backbones._seed import seeded
from vitlab.backbones.base import Backbone, BackboneSpec
from vitlab.backbones.preprocessing import Preprocessing
from vitlab.backbones.timm import TimmBackbone, spec_from_timm
from vitlab.errors import BackboneError, UnknownNameError

_RESIZE = {"shortest": "shorter", "squash": "stretch"}


class OpenCLIPBackbone(Backbone):
    """An OpenCLIP ``VisionTransformer`` tower; tokens are ``ln_post``-normalised, before ``proj``."""

    def _forward_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        out = self.model.forward_intermediates(
            x, indices=list(layers), stop_early=True, normalize_intermediates=True,
            intermediates_only=True, output_fmt="NLC", output_extra_tokens=True)
        return [torch.cat([p, s], dim=1) for s, p in zip(out["image_intermediates"], out["image_intermediates_prefix"])]


def _preprocessing(visual: Any, arch: str) -> Preprocessing:
    cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", getattr(visual, "image_size", 224))
    size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
    mode = cfg.get("resize_mode", "shortest")
    if mode not in _RESIZE:
        raise BackboneError(f"open_clip:{arch} uses resize_mode={mode!r}, which vitlab does not reproduce yet "
                            "(supported: shortest, squash).")
    kw = {k: tuple(cfg[k]) for k in ("mean", "std") if k in cfg}
    return Preprocessing(input_size=size, resize=_RESIZE[mode], interpolation=cfg.get("interpolation", "bicubic"), **kw)


def load_open_clip(target: str, *, pretrained: bool = True, seed: int = 0, **kwargs: Any) -> Backbone:
    """Load ``open_clip:<arch>/<tag>`` (e.g. ``ViT-B-16/openai``); ``tag`` may be omitted with ``pretrained=False``.

    Example:
        >>> bb = load_open_clip("ViT-B-32", pretrained=False)  # doctest: +SKIP
        >>> bb.spec.grid_size  # doctest: +SKIP
        (7, 7)
    """
    try:
        import open_clip
    except ImportError as e:
        raise BackboneError("open_clip: backbones need open_clip_torch: pip install 'vitlab[open_clip]'.") from e
    arch, _, tag = target.partition("/")
    if arch not in open_clip.list_models():
        raise UnknownNameError("open_clip architecture", arch, open_clip.list_models(),
                               "See open_clip.list_pretrained() for arch/tag pairs.")
    if pretrained and not tag:
        tags = [t for a, t in open_clip.list_pretrained() if a == arch]
        raise BackboneError(f"open_clip:{arch} needs a pretrained tag, e.g. open_clip:{arch}/{tags[0] if tags else 'TAG'}"
                            f" (known: {', '.join(tags) or 'none'}), or pass --no-pretrained.")
    try:
        model = seeded(lambda: open_clip.create_model(arch, pretrained=tag if pretrained else None, **kwargs), seed)
    except (OSError, RuntimeError, ValueError) as e:
        raise BackboneError(f"open_clip:{target}: cannot load ({type(e).__name__}: {e}). Check the tag and the "
                            "network, or pass --no-pretrained.") from e
    visual = model.visual
    name = f"open_clip:{arch}/{tag}" if tag else f"open_clip:{arch}"
    prep = _preprocessing(visual, arch)
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:  # timm-based tower (e.g. SigLIP): reuse the timm adapter on its trunk
        return TimmBackbone(trunk, spec_from_timm(trunk, name, pretrained, prep))
    if not hasattr(visual, "forward_intermediates") or not hasattr(visual, "transformer"):
        raise BackboneError(f"open_clip:{arch} has a {type(visual).__name__} image tower, not a ViT; "
                            "vitlab needs patch tokens.")
    if getattr(visual, "attn_pool", None) is not None:
        raise BackboneError(f"open_clip:{arch} pools with attention (CoCa-style); not supported yet.")
    ps = visual.patch_size if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2
    spec = BackboneSpec(
        name=name, embed_dim=int(visual.transformer.width), depth=len(visual.transformer.resblocks),
        patch_size=tuple(int(p) for p in ps), num_prefix_tokens=1, num_register_tokens=0, has_cls_token=True,
        preprocessing=prep, pretrained=pretrained,
        num_heads=getattr(visual.transformer.resblocks[0].attn, "num_heads", None))
    return OpenCLIPBackbone(visual, spec)
