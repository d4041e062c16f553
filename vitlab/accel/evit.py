"""Attentive-token pruning (EViT; Liang et al., "Not All Patches are What You Need", ICLR 2022).

At chosen blocks, between attention and MLP, keep the ``ceil(keep * n)`` patch
tokens the CLS token attends to most (attention averaged over heads) and fuse
the rest into one token weighted by that attention. Prefix tokens (CLS and
registers) are always kept. The CLS attention row is recomputed cheaply from
``q_cls · K`` so the block itself keeps fused attention.

For the returned full-grid tokens, pruned positions are filled with the fused
token they went into (so ``mean`` pooling weights the fused token by the number
of patches it absorbed).

Syntax::

    evit:keep=0.7                     blocks 4, 7, 10 of 12 (0-based 3, 6, 9), scaled to other depths
    evit:keep=0.5,layers=[2,5]        explicit 0-based blocks
    evit:keep=0.7,fuse=sum            EViT's unnormalised attention-weighted sum (default wavg: weights sum to 1)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from vitlab.accel.base import Accelerator, accel_names
from vitlab.accel.runner import ReducedBackbone, State
from vitlab.backbones.base import Backbone
from vitlab.errors import ConfigError

FUSE = ("wavg", "sum")


def default_layers(depth: int) -> tuple[int, ...]:
    """EViT's blocks 3, 6, 9 (0-based) of a 12-block ViT, scaled to ``depth``.

    Example:
        >>> default_layers(12), default_layers(6), default_layers(4)
        ((3, 6, 9), (2, 3, 5), (1, 2, 3))
    """
    return tuple(sorted({min(depth - 1, max(1, math.floor(l * depth / 12 + 0.5))) for l in (3, 6, 9)}))


def keep_count(n: int, keep: float) -> int:
    """``ceil(keep * n)`` patch tokens kept, robust to float error (``keep_count(10, 0.7) == 7``).

    Example:
        >>> keep_count(196, 0.7), keep_count(10, 0.7), keep_count(5, 1.0)
        (138, 7, 5)
    """
    return min(n, max(1, math.ceil(keep * n - 1e-9)))


def cls_attention(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """CLS attention row averaged over heads, from ``q_cls · K`` only.

    Args:
        q: ``[B, H, T, D]`` queries (token 0 is CLS).
        k: ``[B, H, T, D]`` keys.

    Returns:
        ``[B, T]``: ``mean_h softmax(q_cls k^T / sqrt(D))``; each row sums to 1.

    Example:
        >>> a = cls_attention(torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4))
        >>> a.shape, torch.allclose(a.sum(-1), torch.ones(2))
        (torch.Size([2, 5]), True)
    """
    scores = (q[:, :, :1] * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return scores.float().softmax(dim=-1).mean(dim=1)[:, 0].to(q.dtype)


def evit_prune(x: torch.Tensor, attn: torch.Tensor, keep: float, num_prefix: int, size: torch.Tensor,
               fuse: str = "wavg") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the most-attended patch tokens, fuse the rest into one token.

    Args:
        x: ``[B, T, C]`` tokens, prefix first.
        attn: ``[B, T]`` CLS attention (see :func:`cls_attention`).
        keep: fraction of patch tokens kept, in (0, 1].
        num_prefix: P prefix tokens, always kept.
        size: ``[B, T]`` original tokens per current token.
        fuse: ``wavg`` (attention weights normalised to sum to 1) or ``sum`` (EViT's raw weighted sum).

    Returns:
        ``(x' [B, P + k + 1, C], size' [B, P + k + 1], cur_to_new [B, T])``; unchanged when nothing is pruned.
        Kept tokens stay in their original order; the fused token is last.

    Example:
        >>> x = torch.arange(5.0).view(1, 5, 1); a = torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]])
        >>> y, s, m = evit_prune(x, a, 0.5, 1, torch.ones(1, 5))
        >>> [round(v, 4) for v in y.flatten().tolist()], s.tolist(), m.tolist()
        ([0.0, 1.0, 2.0, 3.4], [[1.0, 1.0, 1.0, 2.0]], [[0, 1, 2, 3, 3]])
    """
    B, T, C = x.shape
    n = T - num_prefix
    k = keep_count(n, keep)
    if k >= n:
        return x, size, torch.arange(T, device=x.device).expand(B, T)
    order = attn[:, num_prefix:].argsort(dim=1, descending=True)
    top, rest = order[:, :k].sort(dim=1).values, order[:, k:]
    patches, psize = x[:, num_prefix:], size[:, num_prefix:]
    kept = patches.gather(1, top.unsqueeze(-1).expand(-1, -1, C))
    w = attn[:, num_prefix:].gather(1, rest).to(x.dtype)
    if fuse == "wavg":
        w = w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    fused = (patches.gather(1, rest.unsqueeze(-1).expand(-1, -1, C)) * w.unsqueeze(-1)).sum(1, keepdim=True)
    x_new = torch.cat([x[:, :num_prefix], kept, fused], dim=1)
    size_new = torch.cat([size[:, :num_prefix], psize.gather(1, top), psize.gather(1, rest).sum(1, keepdim=True)],
                         dim=1)
    cur_to_new = torch.full((B, T), num_prefix + k, device=x.device, dtype=torch.long)
    cur_to_new[:, :num_prefix] = torch.arange(num_prefix, device=x.device)
    cur_to_new.scatter_(1, top + num_prefix, torch.arange(num_prefix, num_prefix + k, device=x.device).expand(B, k))
    return x_new, size_new, cur_to_new


@dataclass(frozen=True)
class EViT(Accelerator):
    """Attentive-token pruning accelerator.

    Args:
        keep: fraction of patch tokens kept at each pruning block, in (0, 1].
        layers: 0-based pruning blocks; default EViT's (3, 6, 9) of 12, scaled to the depth.
        fuse: ``wavg`` (default, normalised weights) or ``sum`` (EViT's unnormalised weighted sum).

    Example:
        >>> EViT(keep=0.7).to_dict()
        {'name': 'evit', 'keep': 0.7, 'layers': None, 'fuse': 'wavg'}
    """

    name: ClassVar[str] = "evit"
    keep: float = 0.7
    layers: tuple[int, ...] | None = None
    fuse: str = "wavg"

    def __post_init__(self) -> None:
        if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float)) or not 0 < self.keep <= 1:
            raise ConfigError(f"evit: keep={self.keep!r} must be in (0, 1], e.g. keep=0.7 (1.0 prunes nothing).")
        object.__setattr__(self, "keep", float(self.keep))
        if self.layers is not None:
            layers = self.layers if isinstance(self.layers, (list, tuple)) else [self.layers]
            if not layers or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in layers):
                raise ConfigError(f"evit: layers={self.layers!r} must be a non-empty list of 0-based block "
                                  "indices, e.g. layers=[3,6,9].")
            object.__setattr__(self, "layers", tuple(sorted(set(layers))))
        if self.fuse not in FUSE:
            raise ConfigError(f"evit: unknown fuse {self.fuse!r}; choose one of {', '.join(FUSE)}.")

    def prune_layers(self, depth: int) -> tuple[int, ...]:
        """The 0-based pruning blocks for a ``depth``-block backbone."""
        layers = self.layers if self.layers is not None else default_layers(depth)
        if layers[-1] >= depth:
            raise ConfigError(f"evit: layers={list(layers)} but the backbone has {depth} blocks (0..{depth - 1}).")
        return layers

    # -- Reducer protocol --------------------------------------------------------------------
    def plan(self, num_tokens: int, num_prefix: int, depth: int) -> list[float | None]:
        """Per-block keep fraction (None where nothing is pruned)."""
        layers = set(self.prune_layers(depth))
        out: list[float | None] = []
        t = num_tokens
        for i in range(depth):
            n = t - num_prefix
            if i in layers and keep_count(n, self.keep) < n:
                out.append(self.keep)
                t = num_prefix + keep_count(n, self.keep) + 1
            else:
                out.append(None)
        return out

    def attn_bias(self, state: State, dtype: torch.dtype) -> torch.Tensor | None:
        return None

    def reduce(self, step: float, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, state: State,
               num_prefix: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return evit_prune(x, cls_attention(q, k), step, num_prefix, state.size, self.fuse)

    # -- Accelerator ---------------------------------------------------------------------------
    def supports(self, backbone: Backbone) -> str | None:
        ops, reason = backbone.block_ops()
        if reason:
            return reason
        if not backbone.spec.has_cls_token:
            return "it has no class token, and EViT ranks patches by CLS attention; use tome instead."
        done = accel_names(backbone.accel)
        if isinstance(backbone, ReducedBackbone) and (backbone.reducer is not None or backbone.kernel is not None):
            return f"it is already accelerated by {'+'.join(done)}; apply token pruning first."
        if any(n in ("int8", "ptq") for n in done):
            return f"it is already quantised ({'+'.join(done)}); apply token pruning before quantisation."
        return None

    def check(self, backbone: Backbone) -> None:
        self.prune_layers(backbone.spec.depth)
        super().check(backbone)

    def _build(self, backbone: Backbone, calib: Any) -> tuple[Backbone, dict[str, Any]]:
        ops, _ = backbone.block_ops()
        new = ReducedBackbone(copy.deepcopy(backbone.model), backbone.spec, ops=ops, reducer=self)
        new.__dict__["weights_id"] = backbone.weights_id
        return new, {"layers": list(self.prune_layers(backbone.spec.depth))}


__all__ = ["EViT", "evit_prune", "cls_attention", "default_layers", "keep_count"]
