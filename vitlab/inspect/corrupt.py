"""Patch corruptions (Gu et al. 2022, "Are Vision Transformers Robust to Patch Perturbations?").

A corruption changes ``count`` patch-sized cells per image, chosen at random (seeded per image):

* ``patch-drop``: cells set to black (0);
* ``patch-mean``: cells set to the image's mean colour;
* ``patch-noise``: Gaussian noise ``N(0, sigma)`` added, clipped to [0, 1];
* ``patch-shuffle``: the chosen cells' contents permuted among themselves.

``aligned=True`` uses the model's patch grid; ``aligned=False`` shifts every cell by half a patch
in both directions (cells straddle four tokens), with the cells that fit inside the image.
Images are raw ``[B, 3, H, W]`` in [0, 1]; the input is never modified.

Example:
    >>> x = torch.rand(2, 3, 8, 8)
    >>> y = corrupt(x, "patch-drop", 1, (4, 4), seed=0)
    >>> int((y == 0).all(1).sum(dim=(1, 2)).min())
    16
"""

from __future__ import annotations

import torch

from vitlab.errors import ConfigError, UnknownNameError

__all__ = ["CORRUPTIONS", "check_corruptions", "cells", "corrupt"]

CORRUPTIONS = ("patch-drop", "patch-shuffle", "patch-noise", "patch-mean")


def check_corruptions(spec: str | list[str]) -> list[str]:
    """Parse ``"patch-drop,patch-noise"``; unknown names get suggestions.

    Example:
        >>> check_corruptions("patch-drop, patch-noise")
        ['patch-drop', 'patch-noise']
    """
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    for n in names:
        if n not in CORRUPTIONS:
            raise UnknownNameError("corruption", n, CORRUPTIONS, "Pass e.g. --corrupt patch-drop,patch-shuffle.")
    return names


def cells(hw: tuple[int, int], patch: tuple[int, int], aligned: bool = True) -> list[tuple[int, int]]:
    """Top-left pixel of every corruptible cell of an ``H × W`` image.

    Example:
        >>> len(cells((8, 8), (4, 4))), len(cells((8, 8), (4, 4), aligned=False))
        (4, 1)
    """
    (H, W), (ph, pw) = hw, patch
    oy, ox = (0, 0) if aligned else (ph // 2, pw // 2)
    return [(r, c) for r in range(oy, H - ph + 1, ph) for c in range(ox, W - pw + 1, pw)]


def corrupt(raw: torch.Tensor, kind: str, count: int, patch: tuple[int, int], *, aligned: bool = True,
            seed: int = 0, sigma: float = 0.5) -> torch.Tensor:
    """A corrupted copy of raw images ``[B, 3, H, W]`` with ``count`` cells changed per image."""
    check_corruptions([kind])
    if sigma < 0:
        raise ConfigError(f"sigma={sigma} must be >= 0.")
    B, _, H, W = raw.shape
    ph, pw = patch
    cs = cells((H, W), patch, aligned)
    if count < 0 or count > len(cs):
        raise ConfigError(f"{count} corrupted patches do not fit: the {'aligned' if aligned else 'misaligned'} grid "
                          f"of a {H}x{W} image has {len(cs)} cells of {ph}x{pw}.")
    out = raw.clone()
    if count == 0:
        return out
    g = torch.Generator().manual_seed(seed)
    for b in range(B):
        pick = [cs[int(i)] for i in torch.randperm(len(cs), generator=g)[:count]]
        if kind == "patch-shuffle":
            perm = torch.randperm(count, generator=g).tolist()
            src = [raw[b, :, r:r + ph, c:c + pw].clone() for r, c in pick]
            for (r, c), j in zip(pick, perm):
                out[b, :, r:r + ph, c:c + pw] = src[j]
            continue
        mean = raw[b].mean(dim=(1, 2), keepdim=True)
        for r, c in pick:
            cell = out[b, :, r:r + ph, c:c + pw]
            if kind == "patch-drop":
                cell.zero_()
            elif kind == "patch-mean":
                cell.copy_(mean.expand_as(cell))
            else:  # patch-noise
                cell.add_(torch.randn(cell.shape, generator=g) * sigma).clamp_(0, 1)
    return out
