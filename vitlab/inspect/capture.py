"""Attention capture: run a backbone block by block on the eager attention path and keep what it computes.

timm and transformers use the fused ``F.scaled_dot_product_attention`` kernel, which never
materialises the attention matrix, so forward hooks on ``attn`` capture nothing (vit-explain #23).
Here each block is run through the backbone's block adapter (:meth:`Backbone.block_ops`, shared
with :mod:`vitlab.accel`) with an explicit ``softmax(q k^T / sqrt(d))``; the resulting final tokens
are checked against the model's own (fused) forward, and a mismatch or an empty capture raises.
The user's model is only read: nothing is patched, no module is swapped.

Example:
    >>> import vitlab
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> cap = capture_attention(bb, torch.randn(2, 3, 28, 28))
    >>> cap.attn[0].shape, cap.layout.grid  # [B, H, T, T]
    (torch.Size([2, 3, 50, 50]), (7, 7))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vitlab.backbones.base import Backbone
from vitlab.backbones.blocks import TokenLayout
from vitlab.errors import BackboneError, ConfigError

__all__ = ["AttentionCapture", "capture_attention", "eager_check", "require_ops", "CHECK_ATOL"]

CHECK_ATOL = 1e-3  # max |eager - fused| on the final tokens (fp32); relative to the tokens' scale


@dataclass
class AttentionCapture:
    """What one eager forward pass saw.

    Attributes:
        attn: layer → attention probabilities ``[B, H, T, T]`` (rows sum to 1), T = P + N.
        hidden: layer → block output (residual stream, no final norm) ``[B, T, C]``.
        tokens: the last captured layer's tokens with the final norm ``[B, T, C]`` (as
            :meth:`Backbone.forward_tokens` gives them).
        layout: the token layout of this input (prefix tokens, grid).
        max_abs_diff: ``max |eager - fused|`` of the final tokens (``None`` when not checked).
        embedded: the tokens after the patch/position embedding ``[B, T, C]`` (block 0's input).
        normed: layer → the block's ``norm1`` output ``[B, T, C]`` (the tokens its attention reads),
            kept (with ``.retain_grad()``) only for the layers named in ``keep_norm1``.
    """

    attn: dict[int, torch.Tensor]
    hidden: dict[int, torch.Tensor]
    tokens: torch.Tensor
    layout: TokenLayout
    max_abs_diff: float | None = None
    embedded: torch.Tensor | None = None
    normed: dict[int, torch.Tensor] = field(default_factory=dict)

    def block_input(self, layer: int) -> torch.Tensor:
        """The tokens entering block ``layer`` ``[B, T, C]``: the embedding for 0, else block ``layer - 1``'s output."""
        return self.embedded if layer == 0 else self.hidden[layer - 1]

    @property
    def layers(self) -> list[int]:
        return sorted(self.attn)

    def stacked(self) -> torch.Tensor:
        """All captured attention as ``[L, B, H, T, T]`` (layers in order)."""
        return torch.stack([self.attn[i] for i in self.layers])


def require_ops(backbone: Backbone, what: str = "attention maps") -> Any:
    """The backbone's block adapter, or one clear :class:`BackboneError` naming what cannot be done.

    Example:
        >>> import vitlab
        >>> require_ops(vitlab.load_backbone("pixels:16"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        vitlab.errors.BackboneError: pixels:16 cannot give attention maps: it is a PixelsBackbone; ...
    """
    ops, why = backbone.block_ops()
    if ops is None:
        raise BackboneError(f"{backbone.spec.name} cannot give {what}: {why} Use --maps pca (patch features) or "
                            "a ViT backbone such as demo:fmnist-vit or timm:vit_small_patch14_reg4_dinov2.")
    return ops


def capture_attention(backbone: Backbone, x: torch.Tensor, layers: Sequence[int] | None = None, *,
                      grad: bool = False, check: bool = True, keep_norm1: Sequence[int] = ()) -> AttentionCapture:
    """Run ``x [B, 3, H, W]`` eagerly and keep each block's attention ``[B, H, T, T]`` and output ``[B, T, C]``.

    Args:
        backbone: a ViT backbone (its :meth:`~Backbone.block_ops` must give an adapter).
        x: preprocessed images ``[B, 3, H, W]`` (H, W at least one patch; non-square is fine).
        layers: layers to keep (negative from the end); ``None`` keeps all. The pass stops after the
            deepest one.
        grad: keep the autograd graph (``x`` is made to require grad and every kept attention and
            hidden tensor has ``.retain_grad()``), for gradient-weighted rollout and Grad-CAM.
        check: compare the final tokens with the fused forward (:meth:`Backbone.forward_tokens`)
            and raise :class:`BackboneError` when they differ by more than :data:`CHECK_ATOL`.
        keep_norm1: layers (negative from the end) whose ``norm1`` output is kept in
            :attr:`AttentionCapture.normed` (Grad-CAM's target, as pytorch-grad-cam's ``blocks[i].norm1``);
            each must be at most the deepest of ``layers``.

    Returns:
        :class:`AttentionCapture`.

    Raises:
        BackboneError: no block adapter, nothing captured, or the eager path disagrees with the model.
    """
    ops = require_ops(backbone)
    backbone.check_input(x)
    layout = backbone.token_layout(tuple(x.shape[-2:]))
    keep = backbone.resolve_layers(list(range(backbone.spec.depth)) if layers is None else list(layers))
    keep_n = set(backbone.resolve_layers(list(keep_norm1))) if keep_norm1 else set()
    if keep_n and max(keep_n) > keep[-1]:
        raise ConfigError(f"keep_norm1={list(keep_norm1)} goes past the deepest captured layer {keep[-1]}.")
    model = backbone.model
    x = x.to(backbone.device)
    if grad:
        x = x.detach().clone().requires_grad_(True)
    attn: dict[int, torch.Tensor] = {}
    hidden: dict[int, torch.Tensor] = {}
    normed: dict[int, torch.Tensor] = {}
    with torch.set_grad_enabled(grad):
        t = embedded = ops.embed(model, x)
        if grad:
            embedded.retain_grad()
        for i, blk in enumerate(ops.blocks(model)[: keep[-1] + 1]):
            h = ops.norm1(blk)(t)
            if i in keep_n:
                if grad:
                    h.retain_grad()
                normed[i] = h
            q, k, v = ops.qkv(blk, h)
            a = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1), dim=-1)  # [B, H, T, T]
            t = t + ops.attn_residual(blk, ops.attn_out(blk, a @ v, h))
            t = t + ops.mlp_residual(blk, ops.mlp(blk, ops.norm2(blk)(t)))
            if i in keep:
                if grad:
                    a.retain_grad()
                    t.retain_grad()
                attn[i], hidden[i] = a, t
        tokens = ops.final_norm(model)(t)
    if not attn:
        raise BackboneError(f"{backbone.spec.name}: no attention was captured (layers {list(keep)}); the block "
                            "adapter found no attention blocks to run. Report this model type.")
    if tokens.shape[1] != layout.num_tokens:
        raise BackboneError(f"{backbone.spec.name}: the eager pass gave {tokens.shape[1]} tokens but the layout "
                            f"expects {layout.num_tokens} ({layout.num_prefix} prefix + {layout.grid[0]}x"
                            f"{layout.grid[1]} patches); this model's token layout is not supported.")
    cap = AttentionCapture(attn, hidden, tokens, layout, embedded=embedded, normed=normed)
    if check:
        cap.max_abs_diff = eager_check(backbone, x.detach(), tokens.detach(), keep[-1])
    return cap


def eager_check(backbone: Backbone, x: torch.Tensor, eager_tokens: torch.Tensor, layer: int) -> float:
    """``max |eager - fused|`` of ``layer``'s tokens; raises :class:`BackboneError` above :data:`CHECK_ATOL`.

    Example:
        >>> import vitlab
        >>> bb, x = vitlab.load_backbone("demo:fmnist-vit"), torch.randn(2, 3, 28, 28)
        >>> cap = capture_attention(bb, x, check=False)
        >>> eager_check(bb, x, cap.tokens, bb.spec.depth - 1) < 1e-5  # eager and fused tokens agree
        True
    """
    with torch.no_grad():
        fused = backbone.forward_tokens(x, [layer]).tokens[layer].to(eager_tokens.dtype)
    scale = max(float(fused.abs().max()), 1.0)
    diff = float((fused - eager_tokens).abs().max())
    if not diff <= CHECK_ATOL * scale:
        raise BackboneError(f"{backbone.spec.name}: the eager attention path disagrees with the model's own forward "
                            f"at layer {layer} (max |diff| {diff:.3g}, allowed {CHECK_ATOL * scale:.3g}); its blocks "
                            "do something the block adapter does not know, so its attention maps would be wrong.")
    return diff
