"""The per-block adapter and the token layout, shared by ``accel/`` and ``inspect/``.

Token reduction, quantisation kernels and attention capture all need to act *inside* a ViT
block (on ``q``/``k``/``v``, between attention and MLP). Instead of swapping classes on the
user's modules, callers run the block piece by piece through a small per-family adapter
(:class:`TimmOps`, :class:`HFOps`) that reads the block's own submodules, so every detail is
honoured: LayerScale (timm ``ls1``/``ls2``, HF ``layer_scale1``/``2``), q/k-norm, gated or
normed attention outputs, drop-path and dropout modules.

A backbone says which adapter fits it through the contract: :meth:`Backbone.block_ops`
(this module's :func:`ops_for` by default, decided from the model's structure, never from
the caller's ``isinstance`` checks). :func:`token_layout` says where CLS, registers,
distillation token and the patch grid sit in ``[B, P + N, C]`` for the actual input size
(non-square inputs included).

Supported: timm ``VisionTransformer``-style models built from
``timm.models.vision_transformer.Block`` + ``Attention`` (ViT, DeiT, DINOv2 ± registers,
SigLIP, MAE encoders; also ``file:``/``demo:``/open_clip timm towers), open_clip's own
``VisionTransformer`` (CLIP ViT-B/32...) and transformers ``ViTModel``, ``Dinov2Model``,
``Dinov2WithRegistersModel``.

Example:
    >>> import vitlab
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> ops, why = bb.block_ops()
    >>> ops.kind, token_layout(bb.spec, (28, 56)).grid
    ('timm', (7, 14))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import torch
from torch import nn

from vitlab.errors import ConfigError

if TYPE_CHECKING:
    from vitlab.backbones.base import Backbone, BackboneSpec

HF_TYPES = ("vit", "dinov2", "dinov2_with_registers")

__all__ = ["TimmOps", "HFOps", "OpenCLIPOps", "BlockOps", "HF_TYPES", "ops_for", "TokenLayout", "token_layout"]


class TimmOps:
    """Pieces of a timm ViT: ``patch_embed → _pos_embed → patch_drop → norm_pre → blocks → norm``."""

    kind = "timm"

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` → tokens ``[B, P + N, C]`` (position embedding added)."""
        return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))

    def blocks(self, model: nn.Module) -> Sequence[nn.Module]:
        return model.blocks

    def final_norm(self, model: nn.Module) -> nn.Module:
        return model.norm

    def norm1(self, blk: nn.Module) -> nn.Module:
        return blk.norm1

    def norm2(self, blk: nn.Module) -> nn.Module:
        return blk.norm2

    def num_heads(self, blk: nn.Module) -> int:
        return int(blk.attn.num_heads)

    def qkv(self, blk: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``h [B, T, C]`` → ``q, k, v`` each ``[B, H, T, D]`` (q/k-norm applied)."""
        a = blk.attn
        B, T, _ = h.shape
        q, k, v = a.qkv(h).reshape(B, T, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return a.q_norm(q), a.k_norm(k), v

    def attn_out(self, blk: nn.Module, o: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Attention output ``o [B, H, T, D]`` → projected ``[B, T, C]``."""
        a = blk.attn
        B, _, T, _ = o.shape
        o = a.norm(o.transpose(1, 2).reshape(B, T, a.attn_dim))
        if getattr(a, "gate", None) is not None:
            o = o * a.gate(h).sigmoid()
        return a.proj_drop(a.proj(o))

    def attn_residual(self, blk: nn.Module, a: torch.Tensor) -> torch.Tensor:
        return blk.drop_path1(blk.ls1(a))

    def mlp(self, blk: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return blk.mlp(h)

    def mlp_residual(self, blk: nn.Module, m: torch.Tensor) -> torch.Tensor:
        return blk.drop_path2(blk.ls2(m))


class HFOps:
    """Pieces of a transformers ViT / DINOv2 (± registers) layer stack."""

    kind = "hf"

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` → tokens ``[B, P + N, C]``."""
        x = x.to(model.embeddings.patch_embeddings.projection.weight.dtype)
        return model.embeddings(x)

    def blocks(self, model: nn.Module) -> Sequence[nn.Module]:
        return model.layers if hasattr(model, "layers") else model.encoder.layer

    def final_norm(self, model: nn.Module) -> nn.Module:
        return model.layernorm

    def norm1(self, blk: nn.Module) -> nn.Module:
        return blk.layernorm_before if hasattr(blk, "layernorm_before") else blk.norm1

    def norm2(self, blk: nn.Module) -> nn.Module:
        return blk.layernorm_after if hasattr(blk, "layernorm_after") else blk.norm2

    def num_heads(self, blk: nn.Module) -> int:
        a = blk.attention
        return int(a.q_proj.out_features // a.head_dim)

    def qkv(self, blk: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``h [B, T, C]`` → ``q, k, v`` each ``[B, H, T, D]``."""
        a = blk.attention
        B, T, _ = h.shape
        shape = (B, T, -1, a.head_dim)
        return tuple(p(h).view(shape).transpose(1, 2) for p in (a.q_proj, a.k_proj, a.v_proj))  # type: ignore[return-value]

    def attn_out(self, blk: nn.Module, o: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = o.shape
        return blk.attention.o_proj(o.transpose(1, 2).reshape(B, T, -1))

    def attn_residual(self, blk: nn.Module, a: torch.Tensor) -> torch.Tensor:
        if hasattr(blk, "layer_scale1"):  # DINOv2
            return blk.drop_path(blk.layer_scale1(a))
        return blk.dropout(a)

    def mlp(self, blk: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return blk.mlp(h)

    def mlp_residual(self, blk: nn.Module, m: torch.Tensor) -> torch.Tensor:
        if hasattr(blk, "layer_scale2"):
            return blk.drop_path(blk.layer_scale2(m))
        return blk.dropout(m)


class OpenCLIPOps:
    """Pieces of an open_clip ``VisionTransformer`` (batch-first ``ResidualAttentionBlock`` stack)."""

    kind = "open_clip"

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` → ``ln_pre(patches + CLS + position)`` ``[B, 1 + N, C]``."""
        return model._embeds(x)

    def blocks(self, model: nn.Module) -> Sequence[nn.Module]:
        return model.transformer.resblocks

    def final_norm(self, model: nn.Module) -> nn.Module:
        return model.ln_post

    def norm1(self, blk: nn.Module) -> nn.Module:
        return blk.ln_1

    def norm2(self, blk: nn.Module) -> nn.Module:
        return blk.ln_2

    def num_heads(self, blk: nn.Module) -> int:
        return int(blk.attn.num_heads)

    def qkv(self, blk: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``h [B, T, C]`` → ``q, k, v`` each ``[B, H, T, D]`` (``nn.MultiheadAttention``'s packed projection)."""
        a = blk.attn
        B, T, C = h.shape
        qkv = nn.functional.linear(h, a.in_proj_weight, a.in_proj_bias)
        q, k, v = qkv.reshape(B, T, 3, a.num_heads, C // a.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def attn_out(self, blk: nn.Module, o: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = o.shape
        return blk.attn.out_proj(o.transpose(1, 2).reshape(B, T, -1))

    def attn_residual(self, blk: nn.Module, a: torch.Tensor) -> torch.Tensor:
        return blk.ls_1(a)

    def mlp(self, blk: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return blk.mlp(h)

    def mlp_residual(self, blk: nn.Module, m: torch.Tensor) -> torch.Tensor:
        return blk.ls_2(m)


BlockOps = Union[TimmOps, HFOps, OpenCLIPOps]


def _open_clip_problem(model: nn.Module) -> str | None:
    from open_clip.transformer import ResidualAttentionBlock

    if not getattr(model.transformer, "batch_first", True):
        return "its open_clip transformer is not batch-first; load it through a newer open_clip."
    for b in model.transformer.resblocks:
        a = getattr(b, "attn", None)
        if type(b) is not ResidualAttentionBlock or not isinstance(a, nn.MultiheadAttention) or \
                not a._qkv_same_embed_dim or getattr(b, "ln_1_kv", None) is not None:
            return (f"its blocks are {type(b).__name__}; only open_clip's standard ResidualAttentionBlock with "
                    "self-attention (nn.MultiheadAttention) is supported.")
    if getattr(model, "attn_pool", None) is not None:
        return "it pools with an attention-pool head, whose attention the adapter does not read."
    return None


def ops_for(backbone: Backbone) -> tuple[BlockOps | None, str | None]:
    """The adapter that fits ``backbone``'s model, or ``(None, reason)``; decided from the model's structure.

    This is the default of :meth:`Backbone.block_ops`; call that, not this.

    Example:
        >>> import vitlab
        >>> ops, why = ops_for(vitlab.load_backbone("pixels:16"))
        >>> ops is None, why.startswith("it is a PixelsBackbone")
        (True, True)
    """
    model = backbone.model
    mt = backbone.spec.extra.get("model_type") if isinstance(backbone.spec.extra, dict) else None
    if mt is not None:  # a transformers model
        if mt not in HF_TYPES:
            return None, (f"hf model type {mt!r} is not supported; supported are {', '.join(HF_TYPES)} "
                          "(hf: ViT, DINOv2 ± registers). Load the weights through timm: where possible.")
        return HFOps(), None
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):  # timm VisionTransformer-style
        from timm.models.vision_transformer import Attention, Block

        for attr in ("patch_embed", "_pos_embed", "patch_drop", "norm_pre", "blocks", "norm"):
            if not hasattr(model, attr):
                return None, f"its timm model {type(model).__name__} has no {attr!r}; supported are " \
                             "VisionTransformer-style timm models (vit_*, deit_*, *dinov2*, *siglip*)."
        bad = sorted({f"{type(b).__name__}/{type(getattr(b, 'attn', None)).__name__}" for b in model.blocks
                      if type(b) is not Block or type(getattr(b, "attn", None)) is not Attention})
        if bad:
            return None, (f"its blocks are {', '.join(bad)}; only timm's standard vision_transformer.Block with "
                          "Attention is supported (vit_*, deit_*, *dinov2*, *siglip*), not EVA/rope or "
                          "parallel blocks.")
        return TimmOps(), None
    if hasattr(model, "transformer") and hasattr(model.transformer, "resblocks") and hasattr(model, "_embeds"):
        why = _open_clip_problem(model)  # open_clip's own VisionTransformer
        return (None, why) if why else (OpenCLIPOps(), None)
    return None, (f"it is a {type(backbone).__name__}; supported are timm ViT-family backbones (timm:, file:, demo:), "
                  f"open_clip ViTs and hf:{'/'.join(HF_TYPES)} models.")


@dataclass(frozen=True)
class TokenLayout:
    """Where each kind of token sits in ``[B, P + N, C]`` for one input size.

    Attributes:
        num_prefix: P, tokens before the patch tokens (CLS + registers + distillation).
        has_cls: whether token 0 is a class token.
        num_registers: register tokens among the prefix tokens.
        num_distill: distillation tokens (DeiT) among the prefix tokens.
        patch_size: ``(ph, pw)`` pixels.
        grid: patch grid ``(h, w)`` of this input (``H // ph, W // pw``).

    Example:
        >>> lay = TokenLayout(5, True, 4, 0, (14, 14), (2, 3))
        >>> lay.num_patches, lay.register_slice, lay.patch_slice
        (6, slice(1, 5, None), slice(5, 11, None))
    """

    num_prefix: int
    has_cls: bool
    num_registers: int
    num_distill: int
    patch_size: tuple[int, int]
    grid: tuple[int, int]

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix + self.num_patches

    @property
    def register_slice(self) -> slice:
        """Registers come last among the prefix tokens (timm and transformers both)."""
        return slice(self.num_prefix - self.num_registers, self.num_prefix)

    @property
    def patch_slice(self) -> slice:
        return slice(self.num_prefix, self.num_prefix + self.num_patches)

    def to_grid(self, values: torch.Tensor) -> torch.Tensor:
        """Per-patch values ``[..., N]`` → ``[..., h, w]``."""
        if values.shape[-1] != self.num_patches:
            raise ConfigError(f"expected {self.num_patches} patch values ({self.grid[0]}x{self.grid[1]} grid), got "
                              f"{values.shape[-1]}.")
        return values.reshape(*values.shape[:-1], *self.grid)

    def to_dict(self) -> dict[str, object]:
        return {"num_prefix": self.num_prefix, "has_cls": self.has_cls, "num_registers": self.num_registers,
                "num_distill": self.num_distill, "patch_size": list(self.patch_size), "grid": list(self.grid)}


def token_layout(spec: BackboneSpec, input_hw: tuple[int, int] | None = None) -> TokenLayout:
    """The token layout of a backbone with ``spec`` for inputs of ``input_hw = (H, W)`` pixels.

    ``None`` uses the preprocessing's input size. Raises :class:`ConfigError` for an input smaller than one patch.

    Example:
        >>> from vitlab.backbones.base import BackboneSpec
        >>> from vitlab.backbones.preprocessing import Preprocessing
        >>> s = BackboneSpec("x", 8, 2, (16, 16), 5, 4, True, Preprocessing(input_size=(32, 32)), False)
        >>> token_layout(s, (48, 80)).grid
        (3, 5)
    """
    h, w = tuple(input_hw) if input_hw is not None else tuple(spec.preprocessing.input_size)
    ph, pw = spec.patch_size
    if h < ph or w < pw:
        raise ConfigError(f"input {h}x{w} is smaller than one {ph}x{pw} patch of {spec.name}; resize the images "
                          f"to at least {ph}x{pw} (e.g. the backbone's {spec.preprocessing.input_size[0]}x"
                          f"{spec.preprocessing.input_size[1]}).")
    P, R, cls = spec.num_prefix_tokens, spec.num_register_tokens, spec.has_cls_token
    return TokenLayout(P, cls, R, max(P - R - int(cls), 0), (ph, pw), (h // ph, w // pw))
