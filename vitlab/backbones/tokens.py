"""What the store needs to know about a backbone beyond its forward pass: a copy with another
decoder (its own cache identity), whether it has patch tokens, and how its tokens are laid out.

Example:
    >>> from vitlab.backbones import load_backbone
    >>> token_meta(load_backbone("demo:fmnist-vit"))["grid"]
    [7, 7]
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from vitlab.backbones.base import Backbone
from vitlab.errors import ConfigError

__all__ = ["with_decoder", "check_patch_tokens", "token_meta"]


def with_decoder(backbone: Backbone, decoder: str) -> Backbone:
    """A copy of ``backbone`` (the same model object, never changed) whose preprocessing uses ``decoder``.

    The copy's fingerprint names the decoder, so its embeddings get their own cache key.

    Raises:
        ConfigError: the decoder does not apply to this preprocessing (e.g. ``resize="clean"``).

    Example:
        >>> from vitlab.backbones import load_backbone
        >>> bb = load_backbone("demo:fmnist-vit")
        >>> fast = with_decoder(bb, "tensor")
        >>> fast.spec.preprocessing.decoder, bb.spec.preprocessing.decoder, fast.fingerprint() != bb.fingerprint()
        ('tensor', 'pil', True)
    """
    prep = backbone.spec.preprocessing.replace(decoder=decoder)
    new = copy.copy(backbone)
    new.__dict__["spec"] = dataclasses.replace(backbone.spec, preprocessing=prep)
    return new


def check_patch_tokens(backbone: Backbone) -> None:
    """Raise a one-line ConfigError unless ``backbone`` has a patch grid (the tokens view needs one).

    A backbone whose one "patch" is the whole image (``pixels``) has no patch tokens.

    Example:
        >>> from vitlab.backbones import load_backbone
        >>> check_patch_tokens(load_backbone("pixels:16"))
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: pixels:16 has no patch tokens (its one token is the whole 16x16 image), so view='tokens' does not apply to it; use view='pooled', or a ViT backbone.
    """
    grid, size = backbone.spec.grid_size, tuple(backbone.spec.preprocessing.input_size)
    if grid == (1, 1) and tuple(backbone.spec.patch_size) == size:
        raise ConfigError(f"{backbone.name} has no patch tokens (its one token is the whole {size[0]}x{size[1]} "
                          "image), so view='tokens' does not apply to it; use view='pooled', or a ViT backbone.")


def token_meta(backbone: Backbone) -> dict[str, Any]:
    """What a tokens entry records about its tokens: patch grid, prefix and register tokens, input size.

    Example:
        >>> from vitlab.backbones import load_backbone
        >>> token_meta(load_backbone("demo:fmnist-vit"))["num_prefix_tokens"]
        1
    """
    s = backbone.spec
    return {"grid": list(s.grid_size), "num_prefix_tokens": s.num_prefix_tokens,
            "num_register_tokens": s.num_register_tokens, "has_cls_token": s.has_cls_token,
            "input_size": list(s.preprocessing.input_size), "patch_size": list(s.patch_size)}
