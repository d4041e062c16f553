"""The trainable forward pass of a backbone copy: tokens at any input size, with iBOT masks or MAE's kept patches.

Training runs on a private copy of the user's backbone (:func:`vitlab.tuning.methods.clone_backbone`) wrapped in a
:class:`TokenNet`. For timm ViTs (``timm:``, ``file:``, ``demo:``, the timm towers of the DINOv2 / MAE aliases)
the pass is timm's own pieces run in order (patch embedding, then :meth:`VisionTransformer._pos_embed` with its
position embedding resampled to the input's grid, prefix tokens: CLS and registers, blocks, final norm), so
local crops smaller than the model's size work and a learned mask token can replace masked patches before the
position embedding (iBOT, DINOv2) or masked patches can be dropped (MAE). Written here rather than with lightly's
``MaskedVisionTransformerTIMM``, which re-initialises the weights and the position embedding unless told not to
and assumes square grids; this keeps the user's pretrained weights as they are. Other backbones run through
:meth:`Backbone.forward_tokens` at their own input size (no masking: ``dino`` works, ``dinov2`` and ``mae``
are refused before training).

Example:
    >>> import vitlab
    >>> from vitlab.tuning.methods import clone_backbone
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> net = TokenNet(clone_backbone(bb))
    >>> net.can_mask, net.any_size, net(torch.zeros(2, 3, 12, 12)).shape
    (True, True, torch.Size([2, 10, 96]))
"""

from __future__ import annotations

import torch
from torch import nn

from vitlab.backbones.base import Backbone, pool_tokens
from vitlab.errors import BackboneError

__all__ = ["TokenNet", "check_trainable"]


def _is_timm_vit(model: nn.Module) -> bool:
    from vitlab.backbones.timm import is_timm_vit

    return is_timm_vit(model) and all(hasattr(model, a) for a in ("_pos_embed", "patch_drop", "norm_pre", "norm")) \
        and hasattr(model.patch_embed, "proj")


def check_trainable(bb: Backbone) -> None:
    """Refuse, in one line, a backbone with no weights to train or no patch tokens (before any work).

    Example:
        >>> import vitlab
        >>> check_trainable(vitlab.load_backbone("pixels:8"))
        Traceback (most recent call last):
        ...
        vitlab.errors.BackboneError: pixels:8 has no weights to train and no patch tokens; pretraining and distillation need a ViT backbone (e.g. demo:fmnist-vit, timm:..., hf:...).
    """
    if not any(True for _ in bb.model.parameters()) or bb.spec.grid_size[0] * bb.spec.grid_size[1] <= 1:
        raise BackboneError(f"{bb.name} has no weights to train and no patch tokens; pretraining and distillation "
                            "need a ViT backbone (e.g. demo:fmnist-vit, timm:..., hf:...).")


class TokenNet(nn.Module):
    """A backbone copy as a trainable module: ``forward(x, mask=None, mask_token=None, keep=None) -> [B, P + N, C]``.

    Args:
        bb: a private copy of the backbone (its model is trained in place and registered as ``body``).

    Attributes:
        num_prefix: P, CLS + register tokens (register-aware pooling skips them).
        has_cls: token 0 is a class token.
        can_mask: iBOT masks and MAE's dropped patches are supported (timm ViTs).
        any_size: inputs of other sizes than the model's (multiples of the patch) are supported.
    """

    def __init__(self, bb: Backbone) -> None:
        super().__init__()
        self.bb = bb
        self.body = bb.model
        self.num_prefix = int(bb.spec.num_prefix_tokens)
        self.has_cls = bool(bb.spec.has_cls_token)
        self.dim = int(bb.spec.embed_dim)
        self.patch_size = tuple(bb.spec.patch_size)
        self.input_size = tuple(bb.spec.preprocessing.input_size)
        self.timm = _is_timm_vit(self.body)
        self.can_mask = self.timm
        self.any_size = self.timm

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens ``[B, P + N, C]`` of images ``x [B, 3, H, W]`` (final norm applied).

        Args:
            mask: ``[B, h, w]`` bool, patches replaced by ``mask_token [C]`` before the position embedding.
            keep: ``[B, K]`` indices of the patches to keep (MAE); the others are dropped after the position
                embedding, so the output is ``[B, P + K, C]``.
        """
        if not self.timm:
            if mask is not None or keep is not None:
                raise BackboneError(f"{self.bb.name} cannot mask patches (only timm ViTs can here).")
            out = self.bb.forward_tokens(x, -1)
            return out.tokens[self.bb.spec.depth - 1]
        m = self.body
        t = m.patch_embed.proj(x).permute(0, 2, 3, 1)  # [B, h, w, C]
        t = m.patch_embed.norm(t)
        if mask is not None:
            t = torch.where(mask.to(t.device)[..., None], mask_token.to(t.dtype).view(1, 1, 1, -1), t)
        dynamic = m.dynamic_img_size
        try:
            m.dynamic_img_size = True  # timm's own _pos_embed, resampled to this grid (a no-op at the model's size)
            t = m._pos_embed(t)
        finally:
            m.dynamic_img_size = dynamic
        if keep is not None:
            P = self.num_prefix
            idx = keep.to(t.device)[..., None].expand(-1, -1, t.shape[-1])
            t = torch.cat([t[:, :P], torch.gather(t[:, P:], 1, idx)], dim=1)
        t = m.norm_pre(m.patch_drop(t))
        for blk in m.blocks:
            t = blk(t)
        return m.norm(t)

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        """The embedding ``vitlab eval`` uses by default (``pool="auto"``): CLS with a class token, else the mean of
        the patch tokens (registers excluded) ``[B, C]``."""
        return pool_tokens(tokens, "cls" if self.has_cls else "mean", self.num_prefix, self.has_cls)

    def patches(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``[B, N, C]`` (CLS and registers removed)."""
        return tokens[:, self.num_prefix:]
