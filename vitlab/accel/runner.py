"""Run a ViT block by block with hooks for token reduction and custom attention kernels.

Token merging, pruning and simulated quantisation need to act *inside* a block
(between attention and MLP, or on ``q``/``k``/``v``). Instead of swapping classes
on the user's modules, :class:`ReducedBackbone` runs its own deep copy piece by
piece through the backbone's block adapter (:meth:`Backbone.block_ops`: :class:`TimmOps`,
:class:`HFOps`, which live in :mod:`vitlab.backbones.blocks` and are shared with
:mod:`vitlab.inspect`) that reads the block's own submodules, so every detail of the block is honoured:
LayerScale (timm ``ls1``/``ls2``, HF ``layer_scale1``/``2``), q/k-norm, gated or
normed attention outputs, drop-path and dropout modules, and fused
``F.scaled_dot_product_attention``.

Supported: timm ``VisionTransformer``-style models built from
``timm.models.vision_transformer.Block`` + ``Attention`` (ViT, DeiT, DINOv2 ±
registers, SigLIP, MAE encoders...) and transformers ``ViTModel``,
``Dinov2Model``, ``Dinov2WithRegistersModel``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from vitlab.accel.tokens import ReducedTokens, compose_index, unmerge_tokens
from vitlab.backbones.base import Backbone, BackboneSpec
from vitlab.backbones.blocks import HF_TYPES, HFOps, TimmOps  # noqa: F401  (the adapter lives in backbones/)

Kernel = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def vit_ops(backbone: Backbone) -> tuple[TimmOps | HFOps | None, str | None]:
    """The block adapter of ``backbone`` (:meth:`Backbone.block_ops`), or ``(None, reason)`` when it is not supported.

    Example:
        >>> import vitlab
        >>> ops, why = vit_ops(vitlab.load_backbone("demo:fmnist-vit"))
        >>> ops.kind, why
        ('timm', None)
    """
    return backbone.block_ops()


@dataclass
class State:
    """Per-forward reduction state: ``size [B, T]`` and ``index [B, P + N]`` (see :mod:`vitlab.accel.tokens`)."""

    size: torch.Tensor
    index: torch.Tensor
    reduced: bool = False


class Reducer(Protocol):
    """What a token-reduction method provides to :class:`ReducedBackbone`."""

    def plan(self, num_tokens: int, num_prefix: int, depth: int) -> list[Any]:
        """One step per block (falsy = no reduction); raises ConfigError when impossible."""

    def attn_bias(self, state: State, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive attention bias ``[B, 1, 1, T]`` (e.g. proportional attention), or None."""

    def reduce(self, step: Any, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, state: State,
               num_prefix: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reduce ``x [B, T, C]``; return ``(x [B, T', C], size [B, T'], cur_to_new [B, T])``."""


def sdpa_kernel(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
    """Fused attention ``softmax(q k^T / sqrt(d) + bias) v``; ``[B, H, T, D]``."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def run_block(ops: TimmOps | HFOps, blk: nn.Module, i: int, x: torch.Tensor, state: State,
              step: Any = None, reducer: Reducer | None = None, kernel: Kernel | None = None,
              num_prefix: int = 0) -> tuple[torch.Tensor, State]:
    """One pre-norm block with an optional reduction between attention and MLP (as ToMe/EViT do)."""
    h = ops.norm1(blk)(x)
    q, k, v = ops.qkv(blk, h)
    bias = reducer.attn_bias(state, q.dtype) if reducer is not None and state.reduced else None
    o = (kernel or sdpa_kernel)(i, q, k, v, bias)
    x = x + ops.attn_residual(blk, ops.attn_out(blk, o, h))
    if reducer is not None and step:
        x, size, cur_to_new = reducer.reduce(step, x, q, k, state, num_prefix)
        state = State(size, compose_index(state.index, cur_to_new), True)
    x = x + ops.mlp_residual(blk, ops.mlp(blk, ops.norm2(blk)(x)))
    return x, state


class ReducedBackbone(Backbone):
    """A backbone run block by block: optional token reduction and attention kernel.

    Returned tokens are unmerged to the full grid (``[B, P + N, C]``) so every
    consumer of :class:`~vitlab.backbones.base.TokenOutput` works unchanged;
    :meth:`forward_reduced` gives the reduced tokens with their sizes. Build one with an
    accelerator (``apply_accel(bb, "tome:r=8")``), not directly.

    Example:
        >>> import vitlab, vitlab.accel
        >>> bb = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=64)  # random weights
        >>> fast = vitlab.accel.apply_accel(bb, "tome:r=1")
        >>> fast.forward_reduced(torch.randn(1, 3, 64, 64), -1).counts  # 17 tokens, one fewer per block
        [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5]
    """

    def __init__(self, model: nn.Module, spec: BackboneSpec, *, ops: TimmOps | HFOps,
                 reducer: Reducer | None = None, kernel: Kernel | None = None,
                 accel: dict[str, Any] | None = None) -> None:
        super().__init__(model, spec, accel=accel)
        self.ops, self.reducer, self.kernel = ops, reducer, kernel

    def block_ops(self) -> tuple[TimmOps | HFOps, None]:
        """The adapter this backbone was built with."""
        return self.ops, None

    def to(self, device: str | torch.device) -> ReducedBackbone:
        super().to(device)
        if isinstance(self.kernel, nn.Module):
            self.kernel.to(device)
        return self

    def forward_reduced(self, x: torch.Tensor, layers: int | Sequence[int] = -1) -> ReducedTokens:
        """One forward pass; the reduced tokens of ``layers`` with sizes and full-grid index maps.

        Args:
            x: preprocessed images ``[B, 3, H, W]``.
            layers: block indices, negative from the end.
        """
        self.check_input(x)
        idx = self.resolve_layers(layers)
        ops, P = self.ops, self.spec.num_prefix_tokens
        t = ops.embed(self.model, x)
        B, T, _ = t.shape
        blocks = ops.blocks(self.model)
        plan = self.reducer.plan(T, P, len(blocks)) if self.reducer is not None else [None] * len(blocks)
        state = State(torch.ones(B, T, device=t.device, dtype=torch.float32),  # fp32: exact sizes under autocast
                      torch.arange(T, device=t.device).expand(B, T))
        norm = ops.final_norm(self.model)
        out_t, out_s, out_i, counts = {}, {}, {}, []
        for i, blk in enumerate(blocks[: idx[-1] + 1]):
            t, state = run_block(ops, blk, i, t, state, plan[i], self.reducer, self.kernel, P)
            counts.append(t.shape[1])
            if i in idx:
                out_t[i], out_s[i], out_i[i] = norm(t), state.size, state.index
        return ReducedTokens(out_t, out_s, out_i, counts, P, self.token_layout(tuple(x.shape[-2:])).grid,
                             self.spec.has_cls_token)

    def _forward_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        r = self.forward_reduced(x, layers)
        return [unmerge_tokens(r.tokens[i], r.index[i]) for i in layers]
