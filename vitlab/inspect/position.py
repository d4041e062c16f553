"""Position artefacts in patch features, in the spirit of "Denoising Vision Transformers" (Yang et al. 2024).

The artefact is the part of a patch token that depends on its grid position rather than on the
image content. Content is moved across the grid with shifted crops (reflect-padded by ``max_shift``
patches, cropped at whole-patch offsets, seeded), so at every grid position the content varies
while a position term stays put. The estimate is the mean token at each position over all
images and crops, minus the mean over positions: ``G [h, w, C]``.

Its energy share is ``Σ_p ‖G_p‖² / (N · mean_token_variance)``, the share of the token variance
explained by position. A plain mean over finitely many crops is inflated by content noise, so
the squared norm is estimated without that bias from two independent halves of the crops,
``⟨G¹_p, G²_p⟩`` (its expectation is ``‖G_p‖²``); the plug-in value is reported too.

Example:
    >>> feats = torch.randn(8, 4, 5) + torch.arange(4.0).view(1, 4, 1) * 3  # [S, N, C], planted position term
    >>> r = position_component(feats, (2, 2))
    >>> r["energy_share"] > 0.5
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vitlab.backbones.base import Backbone
from vitlab.errors import ConfigError

__all__ = ["shifted_crops", "position_component", "position_artefact"]


def shifted_crops(raw: torch.Tensor, patch: tuple[int, int], n_shifts: int, *, max_shift: int = 2,
                  seed: int = 0) -> torch.Tensor:
    """``n_shifts`` crops of each raw image ``[B, 3, H, W]`` moved by whole patches: ``[n_shifts, B, 3, H, W]``.

    The first crop is the unshifted image; the others are at seeded offsets of ``0..2·max_shift`` patches
    in each direction from a reflect-padded copy.
    """
    if n_shifts < 2 or max_shift < 1:
        raise ConfigError(f"n_shifts={n_shifts} must be >= 2 and max_shift={max_shift} >= 1.")
    ph, pw = patch
    H, W = raw.shape[-2:]
    py, px = max_shift * ph, max_shift * pw
    if py >= H or px >= W:
        raise ConfigError(f"a shift of {max_shift} patches does not fit a {H}x{W} image; lower max_shift.")
    padded = F.pad(raw, (px, px, py, py), mode="reflect")
    g = torch.Generator().manual_seed(seed)
    out = [raw]
    for _ in range(n_shifts - 1):
        dy = int(torch.randint(0, 2 * max_shift + 1, (1,), generator=g)) * ph
        dx = int(torch.randint(0, 2 * max_shift + 1, (1,), generator=g)) * pw
        out.append(padded[..., dy:dy + H, dx:dx + W])
    return torch.stack(out)


def position_component(tokens: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> dict[str, Any]:
    """Position term of patch tokens ``[S, N, C]`` (S samples of the same grid): see the module docstring.

    Returns:
        ``{"energy_share", "energy_share_plugin", "norm_map" [h, w] (‖G_p‖, unbiased, clipped at 0),
        "component" [N, C]}``.
    """
    t = tokens.detach().double().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens, np.float64)
    S, N, C = t.shape
    if S < 4:
        raise ConfigError(f"the position estimate needs at least 4 samples per position, got {S}.")
    if N != grid[0] * grid[1]:
        raise ConfigError(f"{N} patch tokens do not fill a {grid[0]}x{grid[1]} grid.")
    centred = t - t.mean(axis=(0, 1), keepdims=True)
    total = float((centred ** 2).sum(-1).mean())  # mean squared deviation per token
    G = centred.mean(0) - centred.mean(axis=(0, 1))
    half = S // 2
    G1 = centred[:half].mean(0) - centred[:half].mean(axis=(0, 1))
    G2 = centred[half: 2 * half].mean(0) - centred[half: 2 * half].mean(axis=(0, 1))
    cross = (G1 * G2).sum(-1)  # [N], unbiased for ‖G_p‖²
    share = float(cross.mean() / total) if total > 0 else 0.0
    plugin = float((G ** 2).sum(-1).mean() / total) if total > 0 else 0.0
    return {"energy_share": share, "energy_share_plugin": plugin, "n_samples": S,
            "norm_map": np.sqrt(np.clip(cross, 0, None)).reshape(grid), "component": G}


def position_artefact(backbone: Backbone, raw: torch.Tensor, *, layer: int = -1, n_shifts: int = 4,
                      max_shift: int = 2, seed: int = 0, batch_size: int = 16) -> dict[str, Any]:
    """The position term of ``layer``'s patch tokens for raw images ``[B, 3, H, W]`` and their shifted crops.

    Returns :func:`position_component`'s dict (``norm_map`` as nested lists, without ``component``) plus
    ``layer`` and ``n_shifts``.

    Example:
        >>> import vitlab
        >>> from vitlab.inspect.images import load_raw
        >>> bb = vitlab.load_backbone("demo:fmnist-vit")
        >>> raw = load_raw(bb, vitlab.load_source("sample:fashion-mnist"), range(8))
        >>> 0 <= position_artefact(bb, raw, n_shifts=4)["energy_share"] <= 1
        True
    """
    from vitlab.inspect.images import normalize

    (li,) = backbone.resolve_layers(layer)
    # image-major order, so the two halves of position_component hold different images (independent content)
    crops = shifted_crops(raw, backbone.spec.patch_size, n_shifts, max_shift=max_shift, seed=seed)
    crops = crops.transpose(0, 1).flatten(0, 1)
    toks = []
    with torch.no_grad():
        for s in range(0, crops.shape[0], batch_size):
            x = normalize(backbone, crops[s: s + batch_size].to(backbone.device))
            toks.append(backbone.forward_tokens(x, [li]).patch_tokens(li).float().cpu())
    grid = backbone.token_layout(tuple(raw.shape[-2:])).grid
    r = position_component(torch.cat(toks), grid)
    r.pop("component")
    r["norm_map"] = np.round(r["norm_map"], 5).tolist()
    return {**r, "layer": li, "n_shifts": n_shifts, "max_shift": max_shift}
