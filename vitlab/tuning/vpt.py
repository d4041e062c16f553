"""Visual prompt tuning (Jia et al. 2022, "Visual Prompt Tuning"), shallow and deep, register-aware.

Written here because no maintained library provides it (``peft`` has prompt tuning for language
models only). Learnable prompt tokens ``[k, C]`` are inserted right **after** the prefix tokens
(CLS, registers, distillation token) and before the patch tokens, so they never displace the class
or register tokens; position embeddings are not added to them (as in the paper). ``shallow``: one
set of prompts enters before the first block and flows through the network; ``deep``: each block
``i`` gets its own prompts, replacing the previous block's prompt outputs. The prompts are removed
from every output, so a prompted model keeps the :class:`~vitlab.backbones.base.Backbone` token
layout ``[B, P + N, C]``. With ``k = 0`` the model is exactly the frozen one.

Initialisation: uniform in ``±sqrt(6 / (3 * patch_area + C))`` (the paper's Xavier-style init).

Example:
    >>> import vitlab, copy, torch
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> pv = PromptedViT(copy.deepcopy(bb.model), num_prompts=4, deep=True)
    >>> tuple(pv.prompts.shape)
    (6, 4, 96)
    >>> [tuple(t.shape) for t in pv.forward_layers(torch.zeros(2, 3, 28, 28), (5,))]
    [(2, 50, 96)]
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vitlab.backbones.timm import TimmBackbone
from vitlab.errors import BackboneError

__all__ = ["PromptedViT", "VPTBackbone", "check_vpt_support"]


def check_vpt_support(model: nn.Module, name: str) -> None:
    """Raise a one-line :class:`BackboneError` unless ``model`` is a timm ``VisionTransformer`` (what VPT needs).

    Example:
        >>> check_vpt_support(nn.Linear(2, 2), "pixels:28")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        vitlab.errors.BackboneError: method 'vpt' inserts prompt tokens into a timm ViT; pixels:28 is a Linear...
    """
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise BackboneError(f"method 'vpt' inserts prompt tokens into a timm ViT; {name} is a {type(model).__name__}. "
                            "Use a timm: or demo: ViT backbone, or another method (lora, bitfit, full, linear).")


class PromptedViT(nn.Module):
    """A timm ``VisionTransformer`` with visual prompts (see the module docstring).

    Args:
        vit: the model (used as is: pass a copy, never a user's model).
        num_prompts: prompt tokens per layer ``k`` (0: no prompts, the frozen model).
        deep: a prompt set per block (VPT-deep) instead of one at the input (VPT-shallow).
        generator: seeds the prompt initialisation.

    Attributes:
        prompts: ``[L, k, C]`` with ``L`` = depth (deep) or 1 (shallow).
    """

    def __init__(self, vit: nn.Module, num_prompts: int, deep: bool, generator: torch.Generator | None = None
                 ) -> None:
        super().__init__()
        check_vpt_support(vit, type(vit).__name__)
        self.vit = vit
        self.num_prompts, self.deep = int(num_prompts), bool(deep)
        dim = int(vit.embed_dim)
        ph, pw = vit.patch_embed.patch_size
        bound = math.sqrt(6.0 / (3 * ph * pw + dim))
        n_sets = len(vit.blocks) if deep else 1
        ref = next(vit.parameters())
        init = torch.rand(n_sets, self.num_prompts, dim, generator=generator) * 2 * bound - bound
        self.prompts = nn.Parameter(init.to(device=ref.device, dtype=ref.dtype))

    def forward_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Tokens ``[B, P + N, C]`` of each block in ``layers`` (final norm applied, prompts removed).

        Args:
            x: preprocessed images ``[B, 3, H, W]``.
            layers: sorted absolute block indices.
        """
        v, k = self.vit, self.num_prompts
        p = int(v.num_prefix_tokens)
        x = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))
        b = x.shape[0]
        wanted, out = set(layers), []
        for i, blk in enumerate(v.blocks[:max(layers) + 1]):
            if k and (i == 0 or self.deep):
                prompt = self.prompts[i if self.deep else 0].to(x.dtype).expand(b, -1, -1)
                rest = x[:, p:] if i == 0 else x[:, p + k:]  # deep: this block's prompts replace the last ones
                x = torch.cat([x[:, :p], prompt, rest], dim=1)
            x = blk(x)
            if i in wanted:
                y = v.norm(x)
                out.append(torch.cat([y[:, :p], y[:, p + k:]], dim=1) if k else y)
        return out


class VPTBackbone(TimmBackbone):
    """A :class:`PromptedViT` behind the Backbone contract (same spec and token layout as the base).

    Example:
        >>> import copy, vitlab
        >>> bb = VPTBackbone(PromptedViT(copy.deepcopy(vitlab.load_backbone("demo:fmnist-vit").model), 0, False),
        ...                  vitlab.load_backbone("demo:fmnist-vit").spec)
        >>> bb.forward_tokens(torch.zeros(1, 3, 28, 28), [-1]).tokens[5].shape  # prompts are dropped from the output
        torch.Size([1, 50, 96])
    """

    def _forward_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        return self.model.forward_layers(x, layers)
