"""Pure bookkeeping for reduced token sets: sizes, the full-grid index map, unmerging, pooling.

After merging or pruning, layer ``l`` holds ``T_l <= P + N`` tokens. Two tensors
describe how they relate to the original ``P + N`` positions:

* ``size [B, T_l]``: how many original tokens each current token stands for
  (sums to ``P + N``; prefix tokens always have size 1).
* ``index [B, P + N]``: for every original position, the current token that now
  represents it. Prefix tokens map to ``0..P-1``.

Unmerging gathers the current tokens back onto the full grid, so each original
position gets the token it was merged (or fused) into; the plain mean of the
unmerged patch tokens is then exactly the size-weighted mean of the merged ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vitlab.backbones.base import check_pool


def unmerge_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Scatter reduced tokens back to the full grid.

    Args:
        tokens: ``[B, T, C]`` reduced tokens.
        index: ``[B, P + N]`` long, current token index of every original position.

    Returns:
        ``[B, P + N, C]``.

    Example:
        >>> t = torch.tensor([[[1.0], [2.0]]])          # 2 tokens left
        >>> unmerge_tokens(t, torch.tensor([[0, 1, 1]])).squeeze(-1)
        tensor([[1., 2., 2.]])
    """
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def compose_index(index: torch.Tensor, cur_to_new: torch.Tensor) -> torch.Tensor:
    """Update the full-grid map after one reduction step.

    Args:
        index: ``[B, P + N]`` original position → current token.
        cur_to_new: ``[B, T]`` current token → token after the step.

    Returns:
        ``[B, P + N]`` original position → token after the step.

    Example:
        >>> compose_index(torch.tensor([[0, 1, 2, 2]]), torch.tensor([[0, 1, 1]]))
        tensor([[0, 1, 1, 1]])
    """
    return cur_to_new.gather(1, index)


def size_weighted_pool(tokens: torch.Tensor, size: torch.Tensor, mode: str, num_prefix_tokens: int,
                       has_cls_token: bool) -> torch.Tensor:
    """Pool reduced tokens ``[B, T, C]`` as if they were unmerged: ``mean`` weights each patch token by its size.

    Equals :func:`vitlab.backbones.base.pool_tokens` applied to ``unmerge_tokens(tokens, index)``.

    Example:
        >>> t = torch.tensor([[[9.0], [1.0], [4.0]]]); s = torch.tensor([[1.0, 3.0, 1.0]])
        >>> size_weighted_pool(t, s, "mean", 1, True)   # (3*1 + 1*4) / 4
        tensor([[1.7500]])
    """
    check_pool(mode, has_cls_token)
    if mode == "cls":
        return tokens[:, 0]
    w = size[:, num_prefix_tokens:].unsqueeze(-1).to(tokens.dtype)
    mean = (tokens[:, num_prefix_tokens:] * w).sum(1) / w.sum(1)
    return mean if mode == "mean" else torch.cat([tokens[:, 0], mean], dim=1)


@dataclass
class ReducedTokens:
    """Tokens of several layers after merging/pruning, before unmerging.

    Attributes:
        tokens: layer → ``[B, T_l, C]`` (final norm applied; prefix tokens first).
        size: layer → ``[B, T_l]`` original tokens per current token.
        index: layer → ``[B, P + N]`` long, original position → current token.
        counts: number of tokens after each block that ran (``counts[l] == T_l``).
        num_prefix_tokens: P.
        grid: patch grid ``(h, w)``.
        has_cls_token: whether token 0 is CLS.
    """

    tokens: dict[int, torch.Tensor]
    size: dict[int, torch.Tensor]
    index: dict[int, torch.Tensor]
    counts: list[int]
    num_prefix_tokens: int
    grid: tuple[int, int]
    has_cls_token: bool

    def unmerged(self, layer: int) -> torch.Tensor:
        """``[B, P + N, C]`` tokens of ``layer`` on the full grid (see :func:`unmerge_tokens`)."""
        return unmerge_tokens(self.tokens[layer], self.index[layer])

    def pooled(self, layer: int, mode: str) -> torch.Tensor:
        """Size-weighted pooling of the reduced tokens (equal to pooling the unmerged tokens)."""
        return size_weighted_pool(self.tokens[layer], self.size[layer], mode, self.num_prefix_tokens,
                                  self.has_cls_token)
