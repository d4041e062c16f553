"""``hf:<hub id or local dir>`` backbones through transformers.

Supported model types: ViT, DINOv2 (with and without registers), CLIP, SigLIP
(full models or vision towers) and ViT-MAE (run unmasked, patch order kept).

A full CLIP or SigLIP checkpoint (``model_type`` ``clip`` / ``siglip``) is loaded whole:
``bb.model`` is its vision tower (CLIP's ``visual_projection`` attached to it, so
``weights_id`` covers the joint-space ``embed`` pooling), and the rest (text tower,
text projection, logit scale/bias) is ``bb.text_model``, with its own
``text_weights_id``; the tokenizer is loaded from the same id on first use.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitlab.backbones._seed import seeded
from vitlab.backbones.base import Backbone, BackboneSpec
from vitlab.backbones.open_clip import TextTowerMixin
from vitlab.backbones.preprocessing import CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from vitlab.errors import BackboneError

# full image–text model types → (transformers class, tokenizer padding used in training)
FULL_MODELS = {"clip": ("CLIPModel", True), "siglip": ("SiglipModel", "max_length")}

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


class HFBackbone(TextTowerMixin, Backbone):
    """A transformers vision model behind the :class:`Backbone` contract (with the text tower of a
    full CLIP / SigLIP checkpoint, when loaded from one).

    Text is tokenised as the model was trained: CLIP pads to the longest prompt (its causal mask and
    attention mask make padding irrelevant), SigLIP pads to ``max_length`` (its text tower pools the
    last position, so the padding is part of the input); both truncate to the text context length.
    """

    text_padding: bool | str = True
    text_max_length: int = 77

    def _forward_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        extra: dict[str, Any] = {}
        if self.spec.extra.get("model_type") == "vit_mae":
            # identity "noise" keeps patch order; mask_ratio is 0 so every patch is kept
            n = self.spec.grid_size[0] * self.spec.grid_size[1]
            extra["noise"] = torch.arange(n, device=x.device, dtype=torch.float32).expand(x.shape[0], n)
        hidden = self.model(pixel_values=x, output_hidden_states=True, **extra).hidden_states
        norm = _final_norm(self.model)
        return [norm(hidden[i + 1]) for i in layers]

    def _embed_last(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.model
        if isinstance(_final_norm(m), nn.Identity):  # tokens without the final norm (older transformers)
            tokens = _post_norm(m)(tokens)
        if self.spec.extra.get("model_type") == "siglip":
            return m.head(tokens)  # attention-pool head = get_image_features
        return m.visual_projection(tokens[:, 0])  # CLS → projection = get_image_features

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer()(texts, padding=self.text_padding, truncation=True, max_length=self.text_max_length,
                               return_tensors="pt")
        inputs = {k: enc[k].to(self.text_device) for k in ("input_ids", "attention_mask") if k in enc}
        out = self.text_model.get_text_features(**inputs)
        return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5 returns an output object


def _final_norm(model: nn.Module) -> nn.Module:
    for attr in ("layernorm", "post_layernorm"):
        if isinstance(getattr(model, attr, None), nn.Module):
            return getattr(model, attr)
    return nn.Identity()


def _post_norm(model: nn.Module) -> nn.Module:
    for m in (model, getattr(model, "vision_model", None)):
        if isinstance(getattr(m, "post_layernorm", None), nn.Module):
            return m.post_layernorm
    return nn.Identity()


def _tokenizer_factory(src: str) -> Any:
    def build() -> Any:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(src)
        except (OSError, ValueError, ImportError) as e:
            raise BackboneError(f"hf:{src}: cannot load its text tokenizer ({type(e).__name__}: {e}). Check the "
                                "network or the HF cache (HF_HUB_OFFLINE=1); SigLIP needs `pip install sentencepiece`.") from e
        # transformers 5 builds an empty-vocabulary tokenizer when the files are missing: every word is unknown
        probe = tok("a photo of a cat", add_special_tokens=False)["input_ids"]
        if tok.unk_token_id is not None and probe and all(i == tok.unk_token_id for i in probe):
            raise BackboneError(f"hf:{src}: cannot load its text tokenizer (it maps every word to the unknown token: "
                                "tokenizer files missing). Save the tokenizer with the model (tokenizer.json, or "
                                "vocab.json + merges.txt, or spiece.model).")
        return tok
    return build


def _split_full_model(full: nn.Module, model_type: str) -> tuple[nn.Module, nn.Module, str | None]:
    """(vision tower with its image head, the rest as the text tower, why there is no image–text head)."""
    vision = full.vision_model
    problem = None
    if model_type == "clip":
        vision.add_module("visual_projection", full.visual_projection)
        full.visual_projection = None
    elif getattr(vision, "head", None) is None and getattr(getattr(vision, "vision_model", None), "head", None) is None:
        problem = "its vision tower has no attention-pool head (vision_use_head=False), so no image–text embedding"
    full.vision_model = None  # the image tower lives in bb.model
    return vision, full, problem


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
        >>> bb = load_hf("facebook/dinov2-small")  # downloads the weights  # doctest: +SKIP
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
    full = model_type in FULL_MODELS
    if full:  # the whole image–text model: vision tower + text tower
        cls = getattr(transformers, FULL_MODELS[model_type][0])
    try:
        if pretrained:
            model = seeded(lambda: cls.from_pretrained(src, **({} if full else {"config": vconfig}), **kwargs), seed)
        else:
            model = seeded(lambda: cls(config if full else vconfig, **kwargs), seed)
    except (OSError, ValueError, RuntimeError) as e:
        raise BackboneError(f"hf:{src}: cannot load weights ({type(e).__name__}: {e}). Check the network or "
                            "pass --no-pretrained for seeded random weights.") from e
    except pickle.UnpicklingError:  # weights_only loading refused a pickle that would run code: never retried
        from vitlab.backbones.file import unsafe_pickle

        bins = sorted(Path(src).glob("*.bin")) if os.path.isdir(src) else []
        raise unsafe_pickle(f"hf:{src}", bins[0] if bins else "its weights file (pytorch_model.bin)") from None
    text_model, problem = None, None
    if full:
        model, text_model, problem = _split_full_model(model, model_type)
        if problem:
            problem = f"hf:{src}: {problem}; zero-shot needs a full CLIP/SigLIP model with one."
    n_reg = int(getattr(vconfig, "num_register_tokens", 0) or 0)
    ps = vconfig.patch_size
    spec = BackboneSpec(
        name=f"hf:{src}", embed_dim=int(vconfig.hidden_size), depth=int(vconfig.num_hidden_layers),
        patch_size=tuple(ps) if isinstance(ps, (list, tuple)) else (int(ps), int(ps)),
        num_prefix_tokens=n_prefix + n_reg, num_register_tokens=n_reg, has_cls_token=has_cls,
        preprocessing=_preprocessing(src, config, model_type), pretrained=pretrained,
        num_heads=int(vconfig.num_attention_heads), extra={"model_type": model_type})
    bb = HFBackbone(model, spec)
    if full:
        bb.text_padding = FULL_MODELS[model_type][1]
        bb.text_max_length = int(config.text_config.max_position_embeddings)
    bb._init_text(text_model, _tokenizer_factory(src) if text_model is not None else None, problem)
    return bb
