"""Token merging (ToMe; Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023).

In every block, between attention and MLP, ``r`` tokens are merged into their most
similar partner (cosine similarity of the keys averaged over heads), by
bipartite soft matching; merged tokens are size-weighted averages and, with
proportional attention, attend with ``softmax(q k^T / sqrt(d) + log size)``.
All prefix tokens (CLS, registers, distillation) are protected.

Schedules (``r`` tokens merged per block)::

    tome:r=8                          8 in every block
    tome:r=[16,16,8,8,0]              per block; missing blocks get 0
    tome:r=13,schedule=decrease       linear from 2r down to 0 (ToMe's (r, -1) schedule)
    tome:r=8,prop_attn=false          plain attention (keeps the fused kernel without a bias)
    tome:r=16,clamp=true              merge as many as possible where fewer than r can be (ToMe's behaviour)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from vitlab.accel.base import Accelerator, accel_names
from vitlab.accel.runner import ReducedBackbone, State
from vitlab.backbones.base import Backbone
from vitlab.errors import ConfigError

SCHEDULES = {"constant": 0.0, "decrease": -1.0, "increase": 1.0}
MergeFn = Callable[..., torch.Tensor]


def max_merge(num_tokens: int, protected: int) -> int:
    """How many tokens one bipartite step can merge: the unprotected tokens of set A (even positions).

    Example:
        >>> max_merge(197, 1), max_merge(17, 5)
        (98, 6)
    """
    if num_tokens - protected < 2:
        return 0
    return (num_tokens + 1) // 2 - (protected + 1) // 2


def _identity(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    return x


def bipartite_soft_matching(metric: torch.Tensor, r: int, protected: int = 0) -> tuple[MergeFn, MergeFn]:
    """ToMe's bipartite soft matching: plan the merge of ``r`` tokens.

    Tokens alternate into sets A (even positions) and B (odd positions). Each A
    token proposes its most similar B token (cosine of ``metric``); the ``r``
    most similar pairs are merged. The first ``protected`` tokens are never
    merged and stay first, in order. Same partition, scores and token order as
    ToMe's ``bipartite_soft_matching`` for ``protected`` = 1 (``class_token``) and
    2 (``class_token`` + ``distill_token``); for 0 the unmerged tokens are kept
    in their original order.

    Args:
        metric: ``[B, T, C]`` similarity features (ToMe: keys averaged over heads).
        r: tokens to remove, ``0 <= r <= max_merge(T, protected)``.
        protected: leading tokens that are never merged (CLS + registers).

    Returns:
        ``(merge, unmerge)``: ``merge(x [B, T, C], mode="mean"|"sum"|"amax") -> [B, T - r, C]`` and
        ``unmerge(y [B, T - r, C]) -> [B, T, C]`` (each token gets the value of the token it went into).

    Raises:
        ConfigError: ``r`` larger than the number of mergeable tokens.

    Example:
        >>> m = torch.tensor([[[1.0, 0], [0, 1], [0, 1], [1, 0.5]]])  # A = tokens 0, 2; B = tokens 1, 3
        >>> merge, unmerge = bipartite_soft_matching(m, 1)             # token 2 merges into its twin, token 1
        >>> y = merge(torch.arange(4.0).view(1, 4, 1)); y.flatten().tolist()
        [0.0, 1.5, 3.0]
        >>> unmerge(y).flatten().tolist()
        [0.0, 1.5, 1.5, 3.0]
    """
    B, T, _ = metric.shape
    if r <= 0:
        return _identity, _identity
    limit = max_merge(T, protected)
    if r > limit:
        raise ConfigError(f"cannot merge r={r} of {T} tokens with {protected} protected: at most {limit} can be "
                          "merged in one step. Lower r, use schedule=decrease, or pass clamp=true.")
    pa, pb = (protected + 1) // 2, protected // 2  # protected tokens in A and in B
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[..., ::2, :], metric[..., 1::2, :]
        scores = a @ b.transpose(-1, -2)
        scores[..., :pa, :] = -math.inf
        scores[..., :, :pb] = -math.inf
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx = edge_idx[..., r:, :].sort(dim=1).values  # unmerged A tokens, original order
        src_idx = edge_idx[..., :r, :]
        dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
    n_unm = unm_idx.shape[1]
    # [unm, dst] order → protected tokens first, interleaved as they were (a0, b0, a1, b1, ...)
    perm = None
    if pb:
        n_b = T // 2
        head = [i // 2 if i % 2 == 0 else n_unm + i // 2 for i in range(protected)]
        order = head + list(range(pa, n_unm)) + [n_unm + j for j in range(pb, n_b)]
        perm = torch.tensor(order, device=metric.device)
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(len(order), device=metric.device)

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)
        out = torch.cat([unm, dst], dim=1)
        return out if perm is None else out[:, perm]

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        if perm is not None:
            x = x[:, inv]
        unm, dst = x[..., :n_unm, :], x[..., n_unm:, :]
        n, _, c = unm.shape
        src = dst.gather(dim=-2, index=dst_idx.expand(n, r, c))
        out = torch.zeros(n, T, c, device=x.device, dtype=x.dtype)
        out[..., 1::2, :] = dst
        out.scatter_(dim=-2, index=(2 * unm_idx).expand(n, n_unm, c), src=unm)
        out.scatter_(dim=-2, index=(2 * src_idx).expand(n, r, c), src=src)
        return out

    return merge, unmerge


def merge_wavg(merge: MergeFn, x: torch.Tensor, size: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted merge: ``x' = merge(x * size, "sum") / merge(size, "sum")``.

    Args:
        merge: from :func:`bipartite_soft_matching`.
        x: ``[B, T, C]`` tokens.
        size: ``[B, T, 1]`` tokens each current token stands for (ones when None).

    Returns:
        ``(x' [B, T - r, C], size' [B, T - r, 1])``.

    Example:
        >>> merge, _ = bipartite_soft_matching(torch.tensor([[[1.0, 0], [1.0, 0]]]), 1)
        >>> merge_wavg(merge, torch.tensor([[[2.0], [4.0]]]), torch.tensor([[[1.0], [3.0]]]))
        (tensor([[[3.5000]]]), tensor([[[4.]]]))
    """
    if size is None:
        size = torch.ones_like(x[..., :1])
    x = merge(x * size, mode="sum")
    size = merge(size, mode="sum")
    return x / size, size


def merge_map(unmerge: MergeFn, num_tokens: int, new_tokens: int, batch: int,
              device: torch.device | None = None) -> torch.Tensor:
    """``[B, T]`` long: the index each current token has after the merge (for the full-grid map).

    Example:
        >>> _, un = bipartite_soft_matching(torch.tensor([[[1.0, 0], [1.0, 0], [0, 1.0]]]), 1)
        >>> merge_map(un, 3, 2, 1).tolist()
        [[1, 1, 0]]
    """
    ar = torch.arange(new_tokens, device=device, dtype=torch.float32).view(1, -1, 1).expand(batch, -1, -1)
    return unmerge(ar)[..., 0].round().long()


def r_schedule(r: int | list[int] | tuple[int, ...], depth: int, schedule: str = "constant") -> list[int]:
    """Tokens merged per block, ToMe's ``parse_r`` conventions.

    Example:
        >>> r_schedule(8, 4), r_schedule([4, 2], 4), r_schedule(3, 4, "decrease")
        ([8, 8, 8, 8], [4, 2, 0, 0], [6, 4, 2, 0])
    """
    if isinstance(r, (list, tuple)):
        if len(r) > depth:
            raise ConfigError(f"r has {len(r)} entries but the backbone has {depth} blocks; give at most {depth}.")
        return [int(v) for v in r] + [0] * (depth - len(r))
    inflect = SCHEDULES[schedule]
    lo = int(r * (1.0 - inflect))
    hi = 2 * r - lo
    step = (hi - lo) / (depth - 1) if depth > 1 else 0.0
    return [int(lo + step * i) for i in range(depth)]


@dataclass(frozen=True)
class ToMe(Accelerator):
    """Token merging accelerator.

    Args:
        r: tokens merged per block (int), or one value per block (list).
        schedule: ``constant``, ``decrease`` (2r → 0) or ``increase`` (0 → 2r); int ``r`` only.
        prop_attn: proportional attention (``+ log size`` in the softmax).
        clamp: where fewer than r tokens can be merged, merge what is possible instead of raising.

    Example:
        >>> ToMe(r=8).to_dict()
        {'name': 'tome', 'r': 8, 'schedule': 'constant', 'prop_attn': True, 'clamp': False}
    """

    name: ClassVar[str] = "tome"
    r: int | tuple[int, ...] = 8
    schedule: str = "constant"
    prop_attn: bool = True
    clamp: bool = False

    def __post_init__(self) -> None:
        r = self.r
        if isinstance(r, list):
            object.__setattr__(self, "r", r := tuple(r))
        vals = r if isinstance(r, tuple) else (r,)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in vals):
            raise ConfigError(f"tome: r={self.r!r} must be a non-negative integer or a list of them, e.g. r=8 "
                              "or r=[8,8,4].")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"tome: unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.")
        if isinstance(r, tuple) and self.schedule != "constant":
            raise ConfigError("tome: schedule applies to an integer r; a list r=[...] is already a schedule.")
        for flag in ("prop_attn", "clamp"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"tome: {flag} must be true or false, got {getattr(self, flag)!r}.")

    # -- Reducer protocol --------------------------------------------------------------------
    def plan(self, num_tokens: int, num_prefix: int, depth: int) -> list[int]:
        """Per-block r, checked against the tokens left at each block (clamped when ``clamp``)."""
        out, t = [], num_tokens
        for i, r in enumerate(r_schedule(self.r, depth, self.schedule)):
            limit = max_merge(t, num_prefix)
            if r > limit:
                if not self.clamp:
                    raise ConfigError(
                        f"tome: r={r} at block {i} but only {limit} of the {t} tokens left there can be merged "
                        f"({num_prefix} prefix tokens protected). Lower r, use schedule=decrease, or pass "
                        "clamp=true to merge as many as possible (ToMe's own behaviour).")
                r = limit
            out.append(r)
            t -= r
        return out

    def attn_bias(self, state: State, dtype: torch.dtype) -> torch.Tensor | None:
        return state.size.log()[:, None, None, :].to(dtype) if self.prop_attn else None

    def reduce(self, step: int, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, state: State,
               num_prefix: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        merge, unmerge = bipartite_soft_matching(k.mean(1), step, num_prefix)
        x, size = merge_wavg(merge, x, state.size.unsqueeze(-1))
        return x, size[..., 0], merge_map(unmerge, T, T - step, B, x.device)

    # -- Accelerator ---------------------------------------------------------------------------
    def supports(self, backbone: Backbone) -> str | None:
        ops, reason = backbone.block_ops()
        if reason:
            return reason
        done = accel_names(backbone.accel)
        if isinstance(backbone, ReducedBackbone) and (backbone.reducer is not None or backbone.kernel is not None):
            return f"it is already accelerated by {'+'.join(done)}; apply token merging first."
        if any(n in ("int8", "ptq") for n in done):
            return f"it is already quantised ({'+'.join(done)}); apply token merging before quantisation."
        gh, gw = backbone.spec.grid_size
        try:
            self.plan(backbone.spec.num_prefix_tokens + gh * gw, backbone.spec.num_prefix_tokens, backbone.spec.depth)
        except ConfigError as e:
            return f"{e} (at its {gh}x{gw} patch grid)"
        return None

    def check(self, backbone: Backbone) -> None:
        ops, reason = backbone.block_ops()
        if reason is None:  # schedule problems are configuration errors, not architecture ones
            gh, gw = backbone.spec.grid_size
            P = backbone.spec.num_prefix_tokens
            self.plan(P + gh * gw, P, backbone.spec.depth)
        super().check(backbone)

    def _build(self, backbone: Backbone, calib: Any) -> tuple[Backbone, dict[str, Any]]:
        import copy

        ops, _ = backbone.block_ops()
        new = ReducedBackbone(copy.deepcopy(backbone.model), backbone.spec, ops=ops, reducer=self)
        new.__dict__["weights_id"] = backbone.weights_id
        return new, {}


__all__ = ["ToMe", "bipartite_soft_matching", "merge_wavg", "merge_map", "max_merge", "r_schedule"]
