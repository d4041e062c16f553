"""``timm:<model name>`` backbones, preprocessing from the model's pretrained config.

Any timm model in the VisionTransformer family (ViT, DeiT, DINOv2 with or
without registers, MAE, SigLIP, EVA) that implements ``forward_intermediates``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitlab.backbones._seed import seeded
from vitlab.backbones.base import Backbone, BackboneSpec
from vitlab.backbones.preprocessing import Preprocessing, from_timm_config
from vitlab.errors import BackboneError, UnknownNameError


class TimmBackbone(Backbone):
    """A timm ViT-family model behind the :class:`Backbone` contract."""

    def _forward_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        outs = self.model.forward_intermediates(
            x, indices=list(layers), norm=True, stop_early=True, output_fmt="NLC",
            intermediates_only=True, return_prefix_tokens=True)
        if self.spec.num_prefix_tokens == 0:
            return [o[0] if isinstance(o, tuple) else o for o in outs]
        return [torch.cat([prefix, spatial], dim=1) for spatial, prefix in outs]


def is_timm_vit(model: nn.Module) -> bool:
    """True for timm models with patch tokens and ``forward_intermediates``."""
    return all(hasattr(model, a) for a in ("patch_embed", "blocks", "num_prefix_tokens", "forward_intermediates"))


def spec_from_timm(model: nn.Module, name: str, pretrained: bool,
                   preprocessing: Preprocessing | None = None) -> BackboneSpec:
    """Read the shape facts of a timm ViT into a :class:`BackboneSpec`."""
    import timm.data

    if not is_timm_vit(model):
        raise BackboneError(
            f"{name} is a {type(model).__name__}, not a ViT-family model with patch tokens; vitlab "
            "supports ViT-style timm models (vit_*, deit_*, eva*, *dinov2*, *siglip*).")
    if preprocessing is None:
        preprocessing = from_timm_config(timm.data.resolve_model_data_config(model))
        img_size = tuple(getattr(model.patch_embed, "img_size", None) or preprocessing.input_size)
        if img_size != preprocessing.input_size:  # img_size overridden at construction
            preprocessing = preprocessing.replace(input_size=img_size)
    blocks = model.blocks
    attn = getattr(blocks[0], "attn", None)
    return BackboneSpec(
        name=name,
        embed_dim=int(model.embed_dim),
        depth=len(blocks),
        patch_size=tuple(model.patch_embed.patch_size),
        num_prefix_tokens=int(model.num_prefix_tokens),
        num_register_tokens=int(getattr(model, "num_reg_tokens", 0)),
        has_cls_token=getattr(model, "cls_token", None) is not None,
        preprocessing=preprocessing,
        pretrained=pretrained,
        num_heads=getattr(attn, "num_heads", None),
    )


def create_timm_model(arch: str, *, pretrained: bool, seed: int = 0, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with clear errors; random init is seeded."""
    import timm

    base = arch.split(".")[0]
    if not arch.startswith(("hf-hub:", "hf_hub:")) and not timm.is_model(base):
        raise UnknownNameError("timm model", arch, timm.list_models(f"*{base.split('_')[0]}*") or timm.list_models(),
                               "List models with `python -c \"import timm; print(timm.list_models('*vit*'))\"`.")
    try:
        return seeded(lambda: timm.create_model(arch, pretrained=pretrained, num_classes=0, **kwargs), seed)
    except (OSError, RuntimeError, ValueError) as e:
        if pretrained:
            raise BackboneError(
                f"could not load pretrained weights for timm:{arch} ({type(e).__name__}: {e}). Check the network "
                "and the Hugging Face cache, or pass --no-pretrained for seeded random weights.") from e
        raise BackboneError(f"could not build timm:{arch} with {kwargs or 'default arguments'}: {e}") from e


def load_timm(arch: str, *, pretrained: bool = True, seed: int = 0, **kwargs: Any) -> TimmBackbone:
    """Load ``timm:<arch>``; ``kwargs`` go to ``timm.create_model`` (e.g. ``img_size=224``, ``depth=2``).

    Example:
        >>> bb = load_timm("vit_tiny_patch16_224", pretrained=False, img_size=32)
        >>> bb.spec.grid_size
        (2, 2)
    """
    model = create_timm_model(arch, pretrained=pretrained, seed=seed, **kwargs)
    return TimmBackbone(model, spec_from_timm(model, f"timm:{arch}", pretrained))
