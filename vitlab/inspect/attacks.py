"""Attacks for ViTs: a PGD adversarial patch restricted to a mask, and a feature-space attack on the backbone.

Both are a few lines of projected gradient ascent (Madry et al. 2018) in pixel space ``[0, 1]``
with an L∞ budget ε. They are written here rather than taken from ``torchattacks`` or
``adversarial-robustness-toolbox`` because neither is a vitlab dependency (nor installed), and
both attacks need pieces those libraries do not expose for ViTs: a per-image pixel mask aligned
with the token grid, and an objective on the backbone's own features (the Downstream Transfer
Attack setting: examples made on the pre-trained backbone alone, scored on heads trained on it).

* :func:`pgd_patch`: maximise the cross-entropy of ``logits_fn`` on the true labels, changing only
  pixels where ``mask`` is 1; ``x_adv = clip(x + δ ⊙ mask, 0, 1)``, ``‖δ‖∞ ≤ ε``. δ starts at 0, so
  ε = 0 returns the input unchanged.
* :func:`feature_attack`: maximise ``1 - cos(f(x_adv), f(x))`` of a layer's pooled features. The
  objective has zero gradient at δ = 0, so δ starts uniform in ``[-ε, ε]`` (seeded).

Example:
    >>> x = torch.rand(2, 3, 8, 8); m = torch.zeros(2, 1, 8, 8); m[..., :4, :4] = 1
    >>> f = lambda z: z.flatten(1)[:, :3]
    >>> adv = pgd_patch(f, x, torch.tensor([0, 1]), m, eps=0.1, steps=3)
    >>> bool((adv - x)[..., 4:, :].abs().max() == 0), bool((adv - x).abs().max() <= 0.1 + 1e-6)
    (True, True)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from vitlab.errors import ConfigError

__all__ = ["check_eps", "check_patch_side", "patch_mask", "pgd_patch", "feature_attack"]


def check_eps(eps: float | list[float]) -> list[float]:
    """Validate ε values (pixel units, images in [0, 1]): each in [0, 1]; one clear line otherwise.

    Example:
        >>> check_eps([0, 8 / 255])
        [0.0, 0.03137254901960784]
    """
    vals = [eps] if isinstance(eps, (int, float)) else list(eps)
    out = []
    for e in vals:
        e = float(e)
        if not 0.0 <= e <= 1.0:
            raise ConfigError(f"epsilon {e:g} is out of range: it is an L-inf budget in pixel units for images in "
                              "[0, 1], so it must be in [0, 1] (e.g. 8/255 = 0.031).")
        out.append(e)
    if not out:
        raise ConfigError("no epsilon given; pass e.g. --eps 0,0.01,0.03.")
    return out


def check_patch_side(side: int, hw: tuple[int, int], patch: tuple[int, int], who: str = "") -> tuple[int, int]:
    """The ``(rows, cols)`` patch grid of an ``H × W`` input; :class:`ConfigError` unless a ``side × side``
    attack patch fits in it.

    Example:
        >>> check_patch_side(2, (28, 28), (4, 4))
        (7, 7)
    """
    (H, W), (ph, pw) = hw, patch
    gh, gw = H // ph, W // pw
    if isinstance(side, bool) or int(side) != side or side < 1 or side > min(gh, gw):
        raise ConfigError(f"--patch-side {side}: an attack patch of {side}x{side} grid cells does not fit the "
                          f"{gh}x{gw} patch grid{' of ' + who if who else ''}; use 1..{min(gh, gw)}.")
    return gh, gw


def patch_mask(shape: tuple[int, int, int, int], patch: tuple[int, int], side: int, *, seed: int = 0) -> torch.Tensor:
    """A mask ``[B, 1, H, W]`` of ``side × side`` grid patches at a seeded random grid position per image.

    Example:
        >>> patch_mask((1, 3, 8, 8), (4, 4), 1).sum().item()
        16.0
    """
    B, _, H, W = shape
    ph, pw = patch
    gh, gw = check_patch_side(side, (H, W), patch)
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(B, 1, H, W)
    for b in range(B):
        r = int(torch.randint(0, gh - side + 1, (1,), generator=g))
        c = int(torch.randint(0, gw - side + 1, (1,), generator=g))
        m[b, :, r * ph:(r + side) * ph, c * pw:(c + side) * pw] = 1.0
    return m


def pgd_patch(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
              mask: torch.Tensor, *, eps: float, steps: int = 10, alpha: float | None = None) -> torch.Tensor:
    """PGD inside ``mask``: raw images ``x [B, 3, H, W]`` in [0, 1], labels ``y [B]``, mask ``[B, 1, H, W]``.

    Args:
        logits_fn: raw images → logits ``[B, K]`` (backbone + head; normalisation inside).
        eps: L∞ budget (pixel units). alpha: step size (default ``2.5 ε / steps``).

    Returns:
        adversarial images ``[B, 3, H, W]``; pixels where ``mask == 0`` are exactly ``x``.
    """
    (eps,) = check_eps(eps)
    if steps < 1:
        raise ConfigError(f"steps={steps} must be >= 1.")
    x = x.detach()
    if eps == 0.0:
        return x.clone()
    alpha = 2.5 * eps / steps if alpha is None else alpha
    mask = mask.to(x.dtype)
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        loss = F.cross_entropy(logits_fn((x + delta * mask).clamp(0, 1)), y.long())
        (g,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += alpha * g.sign()
            delta.clamp_(-eps, eps)
    with torch.no_grad():
        adv = (x + delta * mask).clamp(0, 1)
        return torch.where(mask.bool().expand_as(x), adv, x)


def feature_attack(features_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, eps: float,
                   steps: int = 10, alpha: float | None = None, seed: int = 0,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Push the backbone's features away from the clean ones: maximise ``1 - cos(f(x_adv), f(x))``, ``‖δ‖∞ ≤ ε``.

    Args:
        features_fn: raw images ``[B, 3, H, W]`` → features ``[B, C]`` (the backbone alone, no head).
        mask: optional ``[B, 1, H, W]`` region the attack may change (default: the whole image).

    Returns:
        adversarial images ``[B, 3, H, W]`` in [0, 1].
    """
    (eps,) = check_eps(eps)
    x = x.detach()
    if eps == 0.0:
        return x.clone()
    alpha = 2.5 * eps / steps if alpha is None else alpha
    m = torch.ones_like(x[:, :1]) if mask is None else mask.to(x.dtype)
    with torch.no_grad():
        clean = features_fn(x).detach()
    g = torch.Generator().manual_seed(seed)
    delta = ((torch.rand(x.shape, generator=g) * 2 - 1) * eps).to(x.device).requires_grad_(True)
    for _ in range(steps):
        loss = (1 - F.cosine_similarity(features_fn((x + delta * m).clamp(0, 1)), clean, dim=-1)).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta += alpha * grad.sign()
            delta.clamp_(-eps, eps)
    with torch.no_grad():
        adv = (x + delta * m).clamp(0, 1)
        return torch.where(m.bool().expand_as(x), adv, x)
