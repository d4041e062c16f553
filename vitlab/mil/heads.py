"""Multiple-instance learning heads: one bag ``[n, d]`` of instance embeddings -> logits ``[C]``.

(Over 400 lines by design: the registry of heads and the five small head modules, each a few dozen lines,
read best side by side.)

Every head is an ``nn.Module`` whose ``forward(h, y=None)`` takes **one** bag (no batch axis,
any ``n >= 1``) and returns a :class:`MILOutput`: ``logits [C]``, per-instance ``attention [n]``
summing to 1 (``None`` for the pooling baselines) and, for CLAM-SB when a label is given in
training mode, the auxiliary instance-clustering ``aux_loss`` with its weight ``aux_weight``.

==========  ==============================================================================
name        what
==========  ==============================================================================
mean        mean of the instances, then a linear layer
max         element-wise max over the instances, then a linear layer
abmil       gated attention (Ilse et al. 2018) on a d -> 128 projection (ReLU, dropout)
transmil    TransMIL (Shao et al. 2021): class token, 2 self-attention layers, PPEG in between
clam_sb     CLAM-SB (Lu et al. 2021): gated attention + instance clustering on top/bottom-k
==========  ==============================================================================

Example:
    >>> import torch
    >>> head = build_head("abmil", in_dim=32, n_classes=3)
    >>> out = head(torch.randn(7, 32))
    >>> tuple(out.logits.shape), tuple(out.attention.shape), round(out.attention.sum().item(), 4)
    ((3,), (7,), 1.0)
    >>> HEADS.names()
    ['abmil', 'clam_sb', 'max', 'mean', 'transmil']
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitlab._registry import Registry
from vitlab.errors import ConfigError, DataError

__all__ = ["MILOutput", "MeanPoolHead", "MaxPoolHead", "ABMIL", "TransMIL", "CLAMSB", "HEADS", "build_head"]


@dataclass
class MILOutput:
    """What a head returns for one bag.

    Attributes:
        logits: ``[C]`` class logits.
        attention: ``[n]`` non-negative per-instance weights summing to 1, or ``None``.
        aux_loss: scalar auxiliary loss (CLAM's instance clustering), or ``None``.
        aux_weight: weight of ``aux_loss`` in the total loss
            ``(1 - aux_weight) * bag_loss + aux_weight * aux_loss``.
    """

    logits: torch.Tensor
    attention: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    aux_weight: float = 0.0


def _check_bag(h: torch.Tensor, in_dim: int) -> None:
    if h.ndim != 2:
        raise DataError(f"a bag must be a 2-D [n, d] array, got shape {tuple(h.shape)}; pass one bag at a time.")
    if h.shape[0] == 0:
        raise DataError("a bag has 0 instances; drop empty bags before training or prediction.")
    if h.shape[1] != in_dim:
        raise DataError(f"a bag has {h.shape[1]} features per instance but the head expects {in_dim}; "
                        "use the same backbone for every bag.")


def _positive(name: str, **values: Any) -> None:
    for key, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name}: {key} must be a positive integer, got {v!r}.")


def _dropout(name: str, p: float) -> None:
    if not 0.0 <= float(p) < 1.0:
        raise ConfigError(f"{name}: dropout must be in [0, 1), got {p!r}.")


class MeanPoolHead(nn.Module):
    """Mean pooling baseline: ``logits = W mean_i(h_i) + b``.

    Args:
        in_dim: instance feature size ``d``.
        n_classes: number of classes ``C``.
        dropout: dropout on the pooled vector.

    Example:
        >>> import torch
        >>> out = MeanPoolHead(4, 2)(torch.ones(5, 4))
        >>> tuple(out.logits.shape), out.attention
        ((2,), None)
    """

    def __init__(self, in_dim: int, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        _positive("mean", in_dim=in_dim, n_classes=n_classes)
        _dropout("mean", dropout)
        self.in_dim = in_dim
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, n_classes)

    def forward(self, h: torch.Tensor, y: int | None = None) -> MILOutput:
        """``h [n, d]`` -> :class:`MILOutput` with ``logits [C]`` (``y`` is ignored)."""
        _check_bag(h, self.in_dim)
        return MILOutput(self.fc(self.drop(h.mean(0))))


class MaxPoolHead(MeanPoolHead):
    """Max pooling baseline: ``logits = W max_i(h_i) + b`` (element-wise max over instances).

    Example:
        >>> import torch
        >>> tuple(MaxPoolHead(4, 3)(torch.randn(1, 4)).logits.shape)
        (3,)
    """

    def forward(self, h: torch.Tensor, y: int | None = None) -> MILOutput:
        """``h [n, d]`` -> :class:`MILOutput` with ``logits [C]`` (``y`` is ignored)."""
        _check_bag(h, self.in_dim)
        return MILOutput(self.fc(self.drop(h.amax(0))))


class GatedAttention(nn.Module):
    """Gated attention scores (Ilse et al. 2018, eq. 9): ``s_i = w^T (tanh(V h_i) * sigmoid(U h_i))``.

    Returns the *unnormalised* scores ``[n]``; the softmax over instances is the caller's.
    """

    def __init__(self, dim: int, attn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.V = nn.Linear(dim, attn_dim)
        self.U = nn.Linear(dim, attn_dim)
        self.drop = nn.Dropout(dropout)
        self.w = nn.Linear(attn_dim, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h [n, dim]`` -> scores ``[n]``."""
        return self.w(self.drop(torch.tanh(self.V(h)) * torch.sigmoid(self.U(h)))).squeeze(-1)


class ABMIL(nn.Module):
    """Attention-based deep MIL with gated attention (Ilse, Tomczak & Welling, ICML 2018).

    ``z_i = dropout(ReLU(W_p h_i))`` (``d -> hidden``), ``a = softmax_i(w^T (tanh(V z_i) *
    sigmoid(U z_i)))``, bag ``= sum_i a_i z_i``, ``logits = W_c bag + b``.

    Args:
        in_dim: instance feature size ``d``.
        n_classes: number of classes ``C``.
        hidden: projection size (128 as in the paper's MIL pooling layer; 256 for wide features).
        attn_dim: size of the gated-attention layer (``V`` and ``U``).
        dropout: dropout after the projection (0.25 as CLAM).

    Example:
        >>> import torch
        >>> out = ABMIL(16, 2)(torch.randn(300, 16))
        >>> tuple(out.logits.shape), tuple(out.attention.shape)
        ((2,), (300,))
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 128, attn_dim: int = 128,
                 dropout: float = 0.25) -> None:
        super().__init__()
        _positive("abmil", in_dim=in_dim, n_classes=n_classes, hidden=hidden, attn_dim=attn_dim)
        _dropout("abmil", dropout)
        self.in_dim = in_dim
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attn = GatedAttention(hidden, attn_dim)
        self.fc = nn.Linear(hidden, n_classes)

    def forward(self, h: torch.Tensor, y: int | None = None) -> MILOutput:
        """``h [n, d]`` -> :class:`MILOutput` with ``logits [C]`` and ``attention [n]`` (``y`` is ignored)."""
        _check_bag(h, self.in_dim)
        z = self.proj(h)
        a = torch.softmax(self.attn(z), dim=0)
        return MILOutput(self.fc(a @ z), a)


class _TransLayer(nn.Module):
    """TransMIL's layer: ``x + MSA(LayerNorm(x))`` (pre-norm, no feed-forward block, as the paper)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        # need_weights=False lets torch use fused scaled-dot-product attention (no [N, N] matrix on GPU)
        return x + self.attn(y, y, y, need_weights=False)[0]

    def cls_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention of the class token (position 0) over all tokens, averaged over heads: ``[N]``.

        Computed from the layer's own query/key projections for the class-token row only, so it
        costs ``O(N)`` memory rather than the ``O(heads * N^2)`` of ``need_weights=True``.
        """
        m = self.attn
        y = self.norm(x)[0]  # [N, dim]
        dim, heads = m.embed_dim, m.num_heads
        w, b = m.in_proj_weight, m.in_proj_bias
        q = F.linear(y[:1], w[:dim], None if b is None else b[:dim])  # [1, dim]
        k = F.linear(y, w[dim:2 * dim], None if b is None else b[dim:2 * dim])  # [N, dim]
        dh = dim // heads
        q = q.view(heads, 1, dh)
        k = k.view(-1, heads, dh).transpose(0, 1)  # [heads, N, dh]
        scores = (q @ k.transpose(1, 2)).squeeze(1) / math.sqrt(dh)  # [heads, N]
        return torch.softmax(scores, dim=-1).mean(0)


class PPEG(nn.Module):
    """Pyramid position encoding generator (Shao et al. 2021): ``x + dw7(x) + dw5(x) + dw3(x)`` on the token grid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.c7 = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.c5 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.c3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        """``x [1, 1 + side*side, dim]`` (class token first) -> same shape."""
        cls, tok = x[:, :1], x[:, 1:]
        g = tok.transpose(1, 2).reshape(1, -1, side, side)
        g = g + self.c7(g) + self.c5(g) + self.c3(g)
        return torch.cat([cls, g.flatten(2).transpose(1, 2)], dim=1)


class TransMIL(nn.Module):
    """TransMIL (Shao et al., NeurIPS 2021), compact: exact self-attention instead of Nyström.

    ``ReLU(Linear(d -> dim))`` per instance; the ``n`` tokens are padded to the next square
    ``side^2`` by repeating the first tokens (as the paper's code does), a class token is
    prepended, then: layer 1, PPEG (depthwise 7/5/3 convolutions on the ``side x side`` grid),
    layer 2, LayerNorm, and the class token is read out by a linear layer. Each layer is
    ``x + MSA(LayerNorm(x))`` with ``torch.nn.MultiheadAttention``.

    Attention is **exact** (the paper uses Nyström approximation). Memory: on GPU torch's fused
    scaled-dot-product kernels (used since the layers ask for no attention weights) keep memory
    linear in ``n``, so bags up to ~20k instances are expected to fit (not measured here); on CPU
    the ``heads x N x N`` score matrix is materialised: measured +2.2 GB peak RSS for one 8,000-
    instance bag at inference (dim 512, 8 heads), i.e. ~12.8 GB at 20k, more when training. Use
    ``max_instances`` in :func:`vitlab.mil.train.fit_head` to bound training cost on large bags.

    ``attention`` is the class token's attention in the last layer, averaged over heads, with the
    padded copies folded back onto the tokens they repeat and the class token's self-attention
    dropped, renormalised to sum to 1 over the ``n`` real instances.

    Args:
        in_dim: instance feature size ``d``.
        n_classes: number of classes ``C``.
        dim: token size (512 in the paper).
        heads: attention heads (8 in the paper).
        dropout: attention dropout (0.1 in the paper's Nyström layer).

    Example:
        >>> import torch
        >>> out = TransMIL(32, 2, dim=64, heads=4)(torch.randn(10, 32))  # padded to 16 = 4 x 4
        >>> tuple(out.logits.shape), tuple(out.attention.shape), round(out.attention.sum().item(), 4)
        ((2,), (10,), 1.0)
    """

    def __init__(self, in_dim: int, n_classes: int, dim: int = 512, heads: int = 8, dropout: float = 0.1) -> None:
        super().__init__()
        _positive("transmil", in_dim=in_dim, n_classes=n_classes, dim=dim, heads=heads)
        _dropout("transmil", dropout)
        if dim % heads:
            raise ConfigError(f"transmil: dim ({dim}) must be divisible by heads ({heads}).")
        self.in_dim = in_dim
        self.proj = nn.Sequential(nn.Linear(in_dim, dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.layer1 = _TransLayer(dim, heads, dropout)
        self.ppeg = PPEG(dim)
        self.layer2 = _TransLayer(dim, heads, dropout)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, h: torch.Tensor, y: int | None = None) -> MILOutput:
        """``h [n, d]`` -> :class:`MILOutput` with ``logits [C]`` and ``attention [n]`` (``y`` is ignored)."""
        _check_bag(h, self.in_dim)
        n = h.shape[0]
        side = math.ceil(math.sqrt(n))
        src = torch.arange(side * side, device=h.device) % n  # token i of the grid repeats instance src[i]
        x = self.proj(h)[src].unsqueeze(0)  # [1, side^2, dim]
        x = torch.cat([self.cls_token.to(x.dtype), x], dim=1)
        x = self.layer1(x)
        x = self.ppeg(x, side)
        a_grid = self.layer2.cls_attention(x)[1:]  # [side^2], before layer 2 updates x
        x = self.layer2(x)
        logits = self.fc(self.norm(x[0, 0]))
        a = torch.zeros(n, dtype=a_grid.dtype, device=a_grid.device).index_add(0, src, a_grid)
        return MILOutput(logits, a / a.sum())


def _smooth_top1_svm(logits: torch.Tensor, target: torch.Tensor, alpha: float = 1.0, tau: float = 1.0) -> torch.Tensor:
    """Smooth top-1 SVM loss (Berrada et al. 2018), CLAM's instance loss: mean over rows.

    ``tau * logsumexp_j((alpha * [j != y] + s_j - s_y) / tau)``.
    """
    margin = alpha * (1.0 - F.one_hot(target, logits.shape[1]).to(logits.dtype))
    s_y = logits.gather(1, target[:, None])
    return (tau * torch.logsumexp((margin + logits - s_y) / tau, dim=1)).mean()


class CLAMSB(nn.Module):
    """CLAM single branch (Lu et al., Nat. Biomed. Eng. 2021): gated attention + instance clustering.

    ``z_i = dropout(ReLU(W_p h_i))`` (``d -> hidden``), gated attention (``hidden -> attn_dim``),
    bag ``= sum_i a_i z_i``, ``logits = W_c bag``. With a label ``y`` in training mode the
    forward also returns the instance-clustering loss: the ``k`` most attended instances are
    pseudo-labelled positive and the ``k`` least attended negative for class ``y``'s instance
    classifier (``Linear(hidden, 2)``); with ``subtyping=True`` the ``k`` most attended are also
    negatives for every other class's classifier. ``k = min(k_sample, n // 2)`` (skipped when 0).
    The trainer minimises ``(1 - aux_weight) * CE + aux_weight * aux_loss``; ``aux_weight = 0.3``
    is CLAM's default ``bag_weight = 0.7``.

    Args:
        in_dim: instance feature size ``d``.
        n_classes: number of classes ``C``.
        hidden: projection size (512 in CLAM "small" on 1024-d features; 256 here by default).
        attn_dim: gated-attention size (CLAM: hidden / 2).
        dropout: dropout after the projection and in the attention (CLAM: 0.25).
        k_sample: top/bottom-k instances per bag (CLAM: 8).
        inst_loss: ``"svm"`` (smooth top-1 SVM, as CLAM's published runs) or ``"ce"``.
        aux_weight: weight of the instance loss (``1 - bag_weight``; CLAM: 0.3).
        subtyping: also push top-k instances to negative for the other classes' classifiers.

    Example:
        >>> import torch
        >>> head = CLAMSB(32, 2).train()
        >>> out = head(torch.randn(40, 32), y=1)
        >>> tuple(out.logits.shape), out.aux_loss.ndim, out.aux_weight
        ((2,), 0, 0.3)
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 256, attn_dim: int = 128, dropout: float = 0.25,
                 k_sample: int = 8, inst_loss: str = "svm", aux_weight: float = 0.3, subtyping: bool = False) -> None:
        super().__init__()
        _positive("clam_sb", in_dim=in_dim, n_classes=n_classes, hidden=hidden, attn_dim=attn_dim, k_sample=k_sample)
        _dropout("clam_sb", dropout)
        if inst_loss not in ("svm", "ce"):
            raise ConfigError(f"clam_sb: inst_loss must be 'svm' or 'ce', got {inst_loss!r}.")
        if not 0.0 <= float(aux_weight) <= 1.0:
            raise ConfigError(f"clam_sb: aux_weight must be in [0, 1], got {aux_weight!r}.")
        self.in_dim, self.n_classes = in_dim, n_classes
        self.k_sample, self.inst_loss, self.subtyping = k_sample, inst_loss, subtyping
        self.aux_weight = float(aux_weight)
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attn = GatedAttention(hidden, attn_dim, dropout)
        self.fc = nn.Linear(hidden, n_classes)
        self.instance_classifiers = nn.ModuleList(nn.Linear(hidden, 2) for _ in range(n_classes))

    def _inst_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _smooth_top1_svm(logits, target) if self.inst_loss == "svm" else F.cross_entropy(logits, target)

    def forward(self, h: torch.Tensor, y: int | torch.Tensor | None = None) -> MILOutput:
        """``h [n, d]`` (and the bag label ``y`` when training) -> :class:`MILOutput`."""
        _check_bag(h, self.in_dim)
        z = self.proj(h)
        a = torch.softmax(self.attn(z), dim=0)
        out = MILOutput(self.fc(a @ z), a, aux_weight=self.aux_weight)
        k = min(self.k_sample, h.shape[0] // 2)
        if y is None or not self.training or k == 0:
            return out
        y = int(y)
        top, bottom = torch.topk(a, k).indices, torch.topk(-a, k).indices
        pos = torch.ones(k, dtype=torch.long, device=h.device)
        losses = [self._inst_loss(self.instance_classifiers[y](z[torch.cat([top, bottom])]),
                                  torch.cat([pos, torch.zeros_like(pos)]))]
        if self.subtyping:
            losses += [self._inst_loss(self.instance_classifiers[c](z[top]), torch.zeros_like(pos))
                       for c in range(self.n_classes) if c != y]
        out.aux_loss = torch.stack(losses).mean()
        return out


HEADS = Registry("MIL head", hint="Heads: mean, max, abmil, transmil, clam_sb.")
HEADS.register("mean", MeanPoolHead, help="mean pooling + linear")
HEADS.register("max", MaxPoolHead, help="max pooling + linear")
HEADS.register("abmil", ABMIL, help="gated-attention MIL (Ilse et al. 2018)")
HEADS.register("transmil", TransMIL, help="TransMIL with exact attention and PPEG (Shao et al. 2021)")
HEADS.register("clam_sb", CLAMSB, help="CLAM single branch with instance clustering (Lu et al. 2021)")


def build_head(name: str, in_dim: int, n_classes: int, **cfg: Any) -> nn.Module:
    """Build the head ``name`` for ``in_dim``-d instances and ``n_classes`` classes.

    Args:
        name: one of :data:`HEADS` (``mean``, ``max``, ``abmil``, ``transmil``, ``clam_sb``).
        in_dim: instance feature size ``d``.
        n_classes: number of classes ``C`` (>= 2).
        **cfg: the head's own keyword arguments (``hidden=256``, ``dropout=0.1``...).

    Raises:
        UnknownNameError: for an unknown name (with close matches).
        ConfigError: for an unknown or invalid keyword.

    Example:
        >>> build_head("mean", 8, 2).fc.out_features
        2
        >>> build_head("abmil", 8, 2, hiden=64)
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: MIL head 'abmil': unknown parameter 'hiden'; known: attn_dim, dropout, hidden.
    """
    cls = HEADS.get(name)
    if not isinstance(n_classes, int) or n_classes < 2:
        raise ConfigError(f"MIL head {name!r}: n_classes must be an integer >= 2, got {n_classes!r}.")
    known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "in_dim", "n_classes")]
    bad = sorted(set(cfg) - set(known))
    if bad:
        raise ConfigError(f"MIL head {name!r}: unknown parameter {bad[0]!r}; known: {', '.join(sorted(known))}.")
    return cls(in_dim, n_classes, **cfg)
