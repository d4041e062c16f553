"""Encoders for generative evaluation: a name → a :class:`Backbone` + pooling + preprocessing.

An :class:`Encoder` is a backbone with the layer, pooling and preprocessing that a
generative-evaluation protocol prescribes. Every choice is recorded (:meth:`Encoder.describe`)
and the preprocessing is part of the embedding-cache key, so ``dinov2-l`` as an encoder
(dgm-eval's 224x224 stretch) is a different cache entry from the ``dinov2-l`` backbone.

| name | backbone | features | preprocessing |
|---|---|---|---|
| ``dinov2-s/b/l/g`` (default ``dinov2-l``) | timm DINOv2 at ``img_size=224`` | CLS after the final norm | dgm-eval: PIL bicubic resize to 224x224 stretched (no crop), ImageNet mean/std |
| ``inception`` | ``inception:fid`` (FID Inception-V3) | 2048-d pool3 (``mean``); IS from its classifier | FID: 299x299 bilinear, ``[-1, 1]`` |
| ``clip-l14`` | ``open_clip:ViT-L-14/openai`` | CLS after ``ln_post``, before the projection (as dgm-eval) | OpenCLIP's: bicubic shorter side 224, centre crop, CLIP mean/std |
| any vitlab backbone name | as loaded | ``cls`` if it has a class token, else ``mean`` | its own |

``resize="clean"`` swaps the resize for clean-fid's (PIL bicubic on float32 channels, see
:class:`~vitlab.backbones.preprocessing.CleanResize`), straight to the encoder's input size.

Example:
    >>> enc = load_encoder("dinov2-s", pretrained=False, depth=2)   # offline, seeded random weights
    >>> enc.pool, enc.backbone.spec.preprocessing.resize, enc.backbone.spec.preprocessing.input_size
    ('cls', 'stretch', (224, 224))
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vitlab.backbones import Backbone, load_backbone
from vitlab.backbones.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from vitlab.errors import ConfigError

#: dgm-eval's DINOv2 transform: ``Resize((224, 224), BICUBIC)`` (no crop), ``ToTensor``, ImageNet mean/std.
DGM_EVAL_DINOV2 = Preprocessing(input_size=(224, 224), resize="stretch", interpolation="bicubic",
                                mean=IMAGENET_MEAN, std=IMAGENET_STD)
DINOV2 = ("dinov2-s", "dinov2-b", "dinov2-l", "dinov2-g")
DEFAULT_ENCODER = "dinov2-l"
RESIZES = ("default", "clean")
ENCODERS: dict[str, str] = {
    **{n: f"DINOv2 ViT-{n[-1].upper()}/14, CLS, dgm-eval preprocessing (224x224 stretch)" for n in DINOV2},
    "inception": "FID Inception-V3 (TF 2015-12-05 weights), 2048-d pool3, 299x299; enables 'is'",
    "clip-l14": "OpenCLIP ViT-L-14/openai, CLS before projection, 224 centre crop",
}


@dataclass
class Encoder:
    """A backbone plus the layer, pooling and resize mode used to embed images for generative metrics.

    Attributes:
        name: encoder name as given (``"dinov2-l"``, ``"inception"``, ``"demo:fmnist-vit"``).
        backbone: the :class:`Backbone`; its ``spec.preprocessing`` is the one applied.
        pool: ``cls`` or ``mean`` (features ``[n, C]``).
        layer: block index, negative from the end.
        resize: ``"default"`` or ``"clean"``.
    """

    name: str
    backbone: Backbone
    pool: str
    layer: int = -1
    resize: str = "default"

    @property
    def supports_is(self) -> bool:
        """Whether the backbone has the Inception classifier needed for the Inception Score."""
        return callable(getattr(self.backbone, "class_probs", None))

    def class_probs(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, K]`` from pooled features ``[n, C]`` (Inception only)."""
        if not self.supports_is:
            raise ConfigError(f"the Inception Score needs the FID Inception's classifier; encoder {self.name!r} "
                              "has none. Use --backbone inception, or drop 'is' from --metrics.")
        return self.backbone.class_probs(features)

    def describe(self) -> dict[str, Any]:
        """JSON-ready identity: what a reference-statistics file must match to be comparable."""
        spec = self.backbone.spec
        return {"encoder": self.name, "backbone": spec.name, "weights_id": self.backbone.weights_id,
                "pretrained": spec.pretrained, "pool": self.pool, "layer": self.layer, "resize": self.resize,
                "preprocessing": spec.preprocessing.to_dict()}


def clean_preprocessing(prep: Preprocessing) -> Preprocessing:
    """The same input size, mean and std with clean-fid's resize (PIL bicubic on float32, no crop).

    Example:
        >>> clean_preprocessing(DGM_EVAL_DINOV2).resize
        'clean'
    """
    return prep.replace(resize="clean", interpolation="bicubic", crop_pct=1.0, antialias=True)


def with_preprocessing(backbone: Backbone, prep: Preprocessing) -> Backbone:
    """``backbone`` with ``spec.preprocessing`` replaced; a shallow copy, so the caller's object is untouched.

    The weights are shared (not copied); the new preprocessing changes the cache key.
    """
    if backbone.spec.preprocessing == prep:
        return backbone
    out = copy.copy(backbone)
    out.spec = dataclasses.replace(backbone.spec, preprocessing=prep)
    return out


def load_encoder(name: str | Backbone | Encoder = DEFAULT_ENCODER, *, resize: str | None = None,
                 pretrained: bool = True, device: str | torch.device | None = None, seed: int = 0,
                 **backbone_kwargs: Any) -> Encoder:
    """Build an :class:`Encoder` by name (see the module table), or wrap a backbone.

    Args:
        name: ``dinov2-s/b/l/g``, ``inception``, ``clip-l14``, any vitlab backbone name
            (``"demo:fmnist-vit"``, ``"pixels:8"``, ``"random:demo:fmnist-vit"``), a
            :class:`Backbone` or an :class:`Encoder`.
        resize: ``"default"`` (the encoder's protocol) or ``"clean"`` (clean-fid); ``None`` = default.
        pretrained: ``False`` builds seeded random weights (offline).
        device: where the backbone runs (``cpu``, ``cuda``, ``auto``); default CPU.
        seed: seed of random initialisation.
        **backbone_kwargs: passed to :func:`vitlab.load_backbone` (e.g. ``depth=2`` for small tests).

    Returns:
        :class:`Encoder`.

    Raises:
        ConfigError: unknown resize mode.
        UnknownNameError: unknown backbone name (with suggestions).

    Example:
        >>> load_encoder("pixels:8").pool
        'mean'
    """
    resize = resize or "default"
    if resize not in RESIZES:
        raise ConfigError(f"unknown resize mode {resize!r}; choose one of {', '.join(RESIZES)} "
                          "(clean = clean-fid's PIL bicubic resize on float32 channels).")
    if isinstance(name, Encoder):
        enc = name
        if resize == "clean" and enc.resize != "clean":
            enc = dataclasses.replace(enc, backbone=with_preprocessing(
                enc.backbone, clean_preprocessing(enc.backbone.spec.preprocessing)), resize="clean")
        return enc
    dev = device or "cpu"
    if isinstance(name, Backbone):
        backbone, label = name, name.name
    else:
        label = name.strip()
        if label in DINOV2:
            backbone = load_backbone(label, pretrained=pretrained, device=dev, seed=seed,
                                     **{"img_size": 224, **backbone_kwargs})
            backbone = with_preprocessing(backbone, DGM_EVAL_DINOV2)
        elif label == "inception":
            backbone = load_backbone("inception:fid", pretrained=pretrained, device=dev, seed=seed, **backbone_kwargs)
        else:
            backbone = load_backbone(label, pretrained=pretrained, device=dev, seed=seed, **backbone_kwargs)
    pool = "cls" if backbone.spec.has_cls_token else "mean"
    if resize == "clean":
        backbone = with_preprocessing(backbone, clean_preprocessing(backbone.spec.preprocessing))
    return Encoder(name=label, backbone=backbone, pool=pool, layer=-1, resize=resize)


def list_encoders() -> dict[str, str]:
    """Named encoders and what they are (any vitlab backbone name works too)."""
    return dict(ENCODERS)
