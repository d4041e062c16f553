"""Saliency maps on the patch grid: raw CLS / register attention, rollout, gradient-weighted rollout, Grad-CAM.

Every map comes back on the grid of the actual input (:class:`~vitlab.backbones.blocks.TokenLayout`),
so registers, non-square inputs and patch 14/16/32 need no hand-written ``reshape_transform``.
The pure functions (:func:`rollout`, :func:`grad_rollout`, :func:`gradcam_from`) take tensors and
are tested against their papers' formulas; :func:`compute_maps` runs a backbone once and returns
the maps asked for.

Grad-CAM and the gradient rollout are a few lines of torch here, on the eager pass that also gives
the attention maps (so one forward and one backward serve every map, and registers / non-square
grids need no ``reshape_transform``), instead of a dependency on ``pytorch-grad-cam`` or ``captum``.
The formulas follow Selvaraju et al. 2017 (Grad-CAM: channel weights = mean of the gradient over the
patches, ReLU of the weighted sum of the activations) and Chefer et al. 2021 ("Generic
attention-model explainability", ``R ← R + E_h[(∇A ⊙ A)^+] R``).

Grad-CAM's activations are pytorch-grad-cam's ViT recipe (its ``vit_example.py`` /
tutorial): the **output of** ``blocks[layer].norm1`` (default: the last block), i.e. the
normalised tokens the block's attention reads, and the gradient of the explained score with
respect to them. (The last block's own *outputs* would not do: with a CLS head their patch
positions never reach the score, so their gradient is zero.) ``tests/unit/test_gradcam_parity.py``
checks the maps against ``pytorch_grad_cam.GradCAM`` with ``target_layers=[blocks[-1].norm1]``.

Example:
    >>> import vitlab
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> m = compute_maps(bb, torch.randn(2, 3, 28, 28), ["attention", "rollout"])
    >>> m["attention"].shape, m["rollout"].shape  # [B, L, H, h, w], [B, h, w]
    (torch.Size([2, 6, 3, 7, 7]), torch.Size([2, 7, 7]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from vitlab.backbones.base import Backbone
from vitlab.backbones.blocks import TokenLayout
from vitlab.errors import BackboneError, ConfigError
from vitlab.inspect.capture import AttentionCapture, capture_attention, require_ops

__all__ = ["MAPS", "GRAD_MAPS", "check_maps", "cls_attention", "register_attention", "rollout", "grad_rollout",
           "gradcam_from", "received_attention", "compute_maps"]

MAPS = ("attention", "rollout", "grad-rollout", "gradcam", "pca")
GRAD_MAPS = ("grad-rollout", "gradcam")


def check_maps(maps: str | Sequence[str], backbone: Backbone | None = None, *, has_head: bool = True) -> list[str]:
    """Parse and validate a map list before any work; one clear line per problem.

    Example:
        >>> check_maps("attention,rollout")
        ['attention', 'rollout']
    """
    names = [m.strip() for m in (maps.split(",") if isinstance(maps, str) else maps) if m.strip()]
    if not names:
        raise ConfigError(f"no maps requested; choose from {', '.join(MAPS)}, e.g. --maps attention,pca.")
    for m in names:
        if m not in MAPS:
            from vitlab.errors import UnknownNameError

            raise UnknownNameError("map", m, MAPS, "Pass --maps as a comma-separated list, e.g. attention,rollout,pca.")
    if backbone is not None and any(m != "pca" for m in names):
        ops, why = backbone.block_ops()
        if ops is None:
            bad = next(m for m in names if m != "pca")
            raise BackboneError(f"{backbone.spec.name} cannot give the {bad!r} map: {why} Only 'pca' (patch "
                                "features) works for it.")
    if not has_head:
        for m in names:
            if m in GRAD_MAPS:
                raise ConfigError(f"the {m!r} map needs a probe head to explain, and there is none: give labelled "
                                  "data (class folders, sample:fashion-mnist) or pass head=... in Python.")
    return names


def cls_attention(cap: AttentionCapture) -> torch.Tensor:
    """Attention of the class token to each patch: ``[B, L, H, h, w]`` (layers in ``cap.layers`` order).

    Raises:
        BackboneError: the backbone has no class token (use rollout, which then uses the mean query).
    """
    lay = cap.layout
    if not lay.has_cls:
        raise BackboneError("this backbone has no class token, so it has no CLS attention map; use the 'rollout' "
                            "or 'pca' maps.")
    a = cap.stacked()[:, :, :, 0, lay.patch_slice]  # [L, B, H, N]
    return lay.to_grid(a.permute(1, 0, 2, 3))


def register_attention(cap: AttentionCapture) -> torch.Tensor | None:
    """Attention of each register token to the patches: ``[B, L, R, H, h, w]``, or ``None`` without registers."""
    lay = cap.layout
    if lay.num_registers == 0:
        return None
    a = cap.stacked()[:, :, :, lay.register_slice, lay.patch_slice]  # [L, B, H, R, N]
    return lay.to_grid(a.permute(1, 0, 3, 2, 4))


def received_attention(attn: torch.Tensor) -> torch.Tensor:
    """Mean attention each token receives (over heads and queries): ``[B, H, T, T]`` → ``[B, T]``.

    Example:
        >>> received_attention(torch.eye(3).expand(1, 2, 3, 3)).tolist()
        [[0.3333333432674408, 0.3333333432674408, 0.3333333432674408]]
    """
    return attn.mean(dim=(1, 2))


def _query_row(R: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """The CLS row of ``R [B, T, T]`` over the patches (mean row without CLS) → ``[B, h, w]``."""
    rows = R[:, 0] if layout.has_cls else R.mean(dim=1)
    return layout.to_grid(rows[:, layout.patch_slice])


def rollout(attn: torch.Tensor, layout: TokenLayout | None = None, *, residual: float = 0.5,
            head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020).

    ``Â_l = residual · I + (1 - residual) · fuse_h(A_l)``, rows renormalised; ``R = Â_L ⋯ Â_1``.

    Args:
        attn: ``[L, B, H, T, T]`` attention of consecutive layers (first layer first).
        layout: when given, return the CLS row over the patches ``[B, h, w]``; else ``R [B, T, T]``.
        residual: weight of the identity (the residual connection), in [0, 1].
        head_fusion: ``mean``, ``max`` or ``min`` over heads.

    Example:
        >>> A = torch.eye(3).expand(2, 1, 1, 3, 3)   # identity attention, 2 layers
        >>> rollout(A)[0].tolist() == torch.eye(3).tolist()
        True
    """
    if not 0.0 <= residual <= 1.0:
        raise ConfigError(f"residual={residual} must be in [0, 1] (0.5 in Abnar & Zuidema).")
    fuse = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}
    if head_fusion not in fuse:
        raise ConfigError(f"head_fusion={head_fusion!r}; choose mean, max or min.")
    T = attn.shape[-1]
    eye = torch.eye(T, dtype=torch.float64, device=attn.device)
    R = eye.expand(attn.shape[1], T, T)
    for a in attn.double():
        A = residual * eye + (1 - residual) * fuse[head_fusion](a)
        A = A / A.sum(-1, keepdim=True)
        R = A @ R
    return R if layout is None else _query_row(R, layout)


def grad_rollout(attn: torch.Tensor, grads: torch.Tensor, layout: TokenLayout | None = None) -> torch.Tensor:
    """Gradient-weighted rollout (Chefer, Gur & Wolf 2021): ``R ← R + E_h[(∇A ⊙ A)^+] R`` from ``R = I``.

    Args:
        attn, grads: ``[L, B, H, T, T]`` attention and the gradient of the explained score w.r.t. it.
        layout: when given, the CLS row over the patches ``[B, h, w]``; else ``R [B, T, T]``.

    Example:
        >>> A = torch.full((1, 1, 1, 2, 2), 0.5); G = torch.ones_like(A)
        >>> grad_rollout(A, G)[0].tolist()
        [[1.5, 0.5], [0.5, 1.5]]
    """
    T = attn.shape[-1]
    R = torch.eye(T, dtype=torch.float64, device=attn.device).expand(attn.shape[1], T, T)
    for a, g in zip(attn.double(), grads.double()):
        cam = (g * a).clamp(min=0).mean(1)
        R = R + cam @ R
    return R if layout is None else _query_row(R, layout)


def gradcam_from(acts: torch.Tensor, grads: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Grad-CAM on patch tokens: ``ReLU(Σ_c w_c A_c)`` with ``w_c`` the mean gradient over patches.

    Args:
        acts, grads: ``[B, T, C]`` tokens of the explained layer (in :func:`compute_maps`: the output
            of ``blocks[layer].norm1``) and the score's gradient w.r.t. them.

    Returns:
        ``[B, h, w]``.
    """
    a, g = acts[:, layout.patch_slice].double(), grads[:, layout.patch_slice].double()
    w = g.mean(dim=1, keepdim=True)  # [B, 1, C]
    return layout.to_grid((a * w).sum(-1).clamp(min=0))


def _explained_score(backbone: Backbone, cap: AttentionCapture, head: Callable[[torch.Tensor], torch.Tensor],
                     pool: str, target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    from vitlab.backbones.base import pool_tokens

    lay = cap.layout
    f = pool_tokens(cap.tokens, pool, lay.num_prefix, lay.has_cls)
    logits = head(f)
    if logits.ndim != 2:
        raise ConfigError(f"the head must return logits [B, K], got shape {tuple(logits.shape)}.")
    tgt = logits.argmax(1) if target is None else target.to(logits.device).long()
    return logits.gather(1, tgt[:, None]).sum(), tgt


def compute_maps(backbone: Backbone, x: torch.Tensor, maps: Sequence[str], *,
                 head: Callable[[torch.Tensor], torch.Tensor] | None = None, pool: str = "cls",
                 target: torch.Tensor | None = None, layer: int = -1) -> dict[str, torch.Tensor]:
    """The attention-based maps of ``x [B, 3, H, W]`` (normalised images) in one eager pass.

    Args:
        maps: any of ``attention`` (``[B, L, H, h, w]``; plus ``registers`` ``[B, L, R, H, h, w]`` when
            the model has registers), ``rollout``, ``grad-rollout``, ``gradcam`` (each ``[B, h, w]``).
            ``pca`` is fitted across images: see :mod:`vitlab.inspect.pca`.
        head: ``f [B, C'] -> logits [B, K]`` on pooled final tokens (needed by the gradient maps).
        pool: pooling fed to the head.
        target: ``[B]`` classes to explain (default: the head's prediction).
        layer: the block whose ``norm1`` output Grad-CAM explains (default: the last block,
            pytorch-grad-cam's ``target_layers=[model.blocks[-1].norm1]``).

    Returns:
        map name → tensor (float64 for rollout / Grad-CAM maps); ``"target"`` holds the explained classes.
    """
    names = check_maps(maps, backbone, has_head=head is not None)
    require_ops(backbone)
    want_grad = any(m in GRAD_MAPS for m in names)
    (li,) = backbone.resolve_layers(layer)
    cap = capture_attention(backbone, x, None, grad=want_grad, keep_norm1=[li] if "gradcam" in names else [])
    out: dict[str, torch.Tensor] = {}
    if "attention" in names:
        if cap.layout.has_cls:
            out["attention"] = cls_attention(cap).detach()
        else:  # no class token: the attention each patch receives, averaged over queries
            recv = cap.stacked().detach().mean(dim=-2)[..., cap.layout.patch_slice]  # [L, B, H, N]
            out["attention"] = cap.layout.to_grid(recv.permute(1, 0, 2, 3))
        reg = register_attention(cap)
        if reg is not None:
            out["registers"] = reg.detach()
    if "rollout" in names:
        out["rollout"] = rollout(cap.stacked().detach(), cap.layout)
    if want_grad:
        assert head is not None
        score, tgt = _explained_score(backbone, cap, head, pool, target)
        score.backward()
        if "grad-rollout" in names:
            grads = torch.stack([cap.attn[i].grad for i in cap.layers])
            out["grad-rollout"] = grad_rollout(cap.stacked().detach(), grads, cap.layout)
        if "gradcam" in names:
            acts = cap.normed[li]  # the output of blocks[li].norm1, as pytorch-grad-cam's ViT recipe
            grads = acts.grad if acts.grad is not None else torch.zeros_like(acts)  # no path to the score
            out["gradcam"] = gradcam_from(acts.detach(), grads, cap.layout)
        out["target"] = tgt.detach()
    return out
