"""``hf:<hub id or local dir>`` backbones through transformers.

Supported model types: ViT, DINOv2 (with and without registers), CLIP vision,
SigLIP vision and ViT-MAE (run unmasked, patch order kept).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from vitlab.backbones._seed import seeded
from vitlab.backbones.base import Backbone, BackboneSpec
from vitlab.backbones.preprocessing import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from vitlab.errors import BackboneError

# model_type → (vision model class name, number of prefix tokens before registers, has CLS)
SUPPORTED = {
    "vit": ("ViTModel", 1, True),
    "dinov2": ("Dinov2Model", 1, True),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", 1, True),
    "clip": ("CLIPVisionModel", 1, True),
    "clip_vision_model": ("CLIPVisionModel", 1, True),
    "siglip": ("SiglipVisionModel", 0, False),
    "siglip_vision_model": ("SiglipVisionModel", 0, False),
    "vit_mae": ("ViTMAEModel", 1, True),
}
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class HFBackbone(Backbone):
    """A transformers vision model behind the :class:`Backbone` contract."""

    def _forward_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        extra: dict[str, Any] = {}
        if self.spec.extra.get("model_type") == "vit_mae":
            # identity "noise" keeps patch order; mask_ratio is 0 so every patch is kept
            n = self.spec.grid_size[0] * self.spec.grid_size[1]
            extra["noise"] = torch.arange(n, device=x.device, dtype=torch.float32).expand(x.shape[0], n)
        hidden = self.model(pixel_values=x, output_hidden_states=True, **extra).hidden_states
        norm = _final_norm(self.model)
        return [norm(hidden[i + 1]) for i in layers]


def _final_norm(model: nn.Module) -> nn.Module:
    for attr in ("layernorm", "post_layernorm"):
        if isinstance(getattr(model, attr, None), nn.Module):
            return getattr(model, attr)
    return nn.Identity()


def _vision_config(config: Any) -> Any:
    return getattr(config, "vision_config", config)


def _preprocessing(src: str, config: Any, model_type: str) -> Preprocessing:
    """Map the checkpoint's image processor to :class:`Preprocessing` (defaults when it has none)."""
    size = int(_vision_config(config).image_size)
    clip_like = model_type.startswith(("clip", "siglip"))
    mean, std = (CLIP_MEAN, CLIP_STD) if model_type.startswith("clip") else (IMAGENET_MEAN, IMAGENET_STD)
    if model_type.startswith("siglip"):
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    try:
        from transformers import AutoImageProcessor

        proc = AutoImageProcessor.from_pretrained(src)
    except (OSError, ValueError, KeyError):
        return Preprocessing(input_size=(size, size), resize="stretch" if model_type.startswith("siglip") else "shorter",
                             mean=mean, std=std, interpolation="bicubic" if clip_like or "dino" in model_type else "bilinear")
    sz = dict(getattr(proc, "size", None) or {})
    crop = dict(getattr(proc, "crop_size", None) or {}) if getattr(proc, "do_center_crop", False) else {}
    resample = getattr(proc, "resample", 3)
    interp = _PIL_RESAMPLE.get(int(getattr(resample, "value", resample) if resample is not None else 3), "bicubic")
    mean = tuple(getattr(proc, "image_mean", None) or mean)
    std = tuple(getattr(proc, "image_std", None) or std)
    if "shortest_edge" in sz:
        edge = int(sz["shortest_edge"])
        out = (int(crop.get("height", edge)), int(crop.get("width", edge))) if crop else (edge, edge)
        return Preprocessing(input_size=out, resize="shorter", crop_pct=min(1.0, min(out) / edge),
                             interpolation=interp, mean=mean, std=std)
    out = (int(sz.get("height", size)), int(sz.get("width", size)))
    if crop:
        c = (int(crop["height"]), int(crop["width"]))
        return Preprocessing(input_size=c, resize="shorter", crop_pct=min(1.0, min(c) / min(out)),
                             interpolation=interp, mean=mean, std=std)
    return Preprocessing(input_size=out, resize="stretch", interpolation=interp, mean=mean, std=std)


def load_hf(src: str, *, pretrained: bool = True, seed: int = 0, **kwargs: Any) -> HFBackbone:
    """Load ``hf:<src>`` (a Hub id such as ``facebook/dinov2-small`` or a local directory).

    With ``pretrained=False`` only the config is read and the weights are seeded
    random; that is how tests run offline on local config directories.

    Example:
        >>> bb = load_hf("facebook/dinov2-small")  # doctest: +SKIP
        >>> bb.spec.num_prefix_tokens  # doctest: +SKIP
        1
    """
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(src)
    except (OSError, ValueError) as e:
        where = "local directory" if os.path.isdir(src) else "Hugging Face Hub id"
        raise BackboneError(
            f"hf:{src}: cannot read its config.json as a {where} ({e}). Check the id or path, and the network "
            "(or the HF cache with HF_HUB_OFFLINE=1).") from e
    model_type = config.model_type
    if model_type not in SUPPORTED:
        raise BackboneError(f"hf:{src} is a {model_type!r} model; vitlab's hf: source supports "
                            f"{', '.join(sorted(SUPPORTED))}. Try timm: or open_clip: for other models.")
    cls_name, n_prefix, has_cls = SUPPORTED[model_type]
    cls = getattr(transformers, cls_name)
    vconfig = _vision_config(config)
    if model_type == "vit_mae":
        vconfig.mask_ratio = 0.0
    if model_type == "vit":
        kwargs.setdefault("add_pooling_layer", False)
    try:
        if pretrained:
            model = seeded(lambda: cls.from_pretrained(src, config=vconfig, **kwargs), seed)
        else:
            model = seeded(lambda: cls(vconfig, **kwargs), seed)
    except (OSError, ValueError, RuntimeError) as e:
        raise BackboneError(f"hf:{src}: cannot load weights ({type(e).__name__}: {e}). Check the network or "
                            "pass --no-pretrained for seeded random weights.") from e
    n_reg = int(getattr(vconfig, "num_register_tokens", 0) or 0)
    ps = vconfig.patch_size
    spec = BackboneSpec(
        name=f"hf:{src}", embed_dim=int(vconfig.hidden_size), depth=int(vconfig.num_hidden_layers),
        patch_size=tuple(ps) if isinstance(ps, (list, tuple)) else (int(ps), int(ps)),
        num_prefix_tokens=n_prefix + n_reg, num_register_tokens=n_reg, has_cls_token=has_cls,
        preprocessing=_preprocessing(src, config, model_type), pretrained=pretrained,
        num_heads=int(vconfig.num_attention_heads), extra={"model_type": model_type})
    return HFBackbone(model, spec)
