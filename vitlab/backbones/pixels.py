"""``pixels``: a pseudo-backbone of flattened, resized pixels, the floor of every leaderboard.

The whole image is one "patch" token of ``3 * S * S`` values (no class token), so
``mean`` pooling returns the flattened pixels after the usual normalisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vitlab.backbones.base import Backbone, BackboneSpec
from vitlab.backbones.preprocessing import Preprocessing


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).unsqueeze(1)


class PixelsBackbone(Backbone):
    """Flattened pixels behind the :class:`Backbone` contract (one layer, one token)."""

    def _forward_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        return [self.model(x)]


def load_pixels(size: str = "", *, pretrained: bool = True, seed: int = 0, **kwargs: Any) -> PixelsBackbone:
    """Load ``pixels`` (28x28) or ``pixels:<S>`` (S x S), greyscale-normalised to [-1, 1].

    Example:
        >>> bb = load_pixels("16")
        >>> bb.spec.embed_dim
        768
    """
    s = int(size or kwargs.pop("img_size", 28))
    prep = Preprocessing(input_size=(s, s), resize="stretch", interpolation="bilinear",
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    spec = BackboneSpec(name=f"pixels:{s}", embed_dim=3 * s * s, depth=1, patch_size=(s, s), num_prefix_tokens=0,
                        num_register_tokens=0, has_cls_token=False, preprocessing=prep, pretrained=False)
    return PixelsBackbone(_Flatten(), spec)
