"""Multi-crop views of a batch, drawn per image from that image's own seed: DINO's augmentations on tensors.

Every random choice for image ``i`` at epoch ``e`` comes from ``numpy.random.default_rng([seed, e, i, tag])``, so
a view depends on nothing but (seed, epoch, image): the same run gives the same views whether it runs in one
process or is split over ``--nproc`` processes, and a resumed run gives the views it would have given anyway
(bit-identical resume needs no data-loader state). The parameters follow lightly's ``DINOTransform`` / DINO's
``DataAugmentationDINO``: random resized crop (scale ``(0.32, 1)`` for the two global views and ``(0.05, 0.32)``
for the local ones: DINOv2), horizontal flip 0.5, colour jitter 0.8 (brightness 0.4, contrast 0.4, saturation
0.2; hue is left out), grayscale 0.2, Gaussian blur 1.0 / 0.1 / 0.5 (global 1 / global 2 / local, sigma 0.1..2
at 224 px, scaled to the crop size), solarisation 0.2 on the second global view.

Written here rather than calling lightly's PIL ``DINOTransform`` per image, because (measured on this 2-core
machine under load) that costs 39 ms per 28-px image for 6 views, more than the ViT's step, and draws from the
process-global RNGs (per-process streams under DDP, state to carry across a resume). Here a batch is cropped
with one ``torchvision.ops.roi_align`` call per view and the photometric operations are batched tensor ops.

Example:
    >>> imgs = torch.randint(0, 256, (4, 3, 28, 28), dtype=torch.uint8)
    >>> specs = dino_specs((28, 28), (12, 12), n_local=2)
    >>> views = make_views(imgs, np.arange(4), specs, seed=0, epoch=0)
    >>> [tuple(v.shape) for v in views]
    [(4, 3, 28, 28), (4, 3, 28, 28), (4, 3, 12, 12), (4, 3, 12, 12)]
    >>> bool(torch.equal(make_views(imgs, np.arange(4), specs, seed=0, epoch=0)[2], views[2]))
    True
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ViewSpec", "dino_specs", "distill_spec", "make_views", "sample_rng", "crop_box", "block_masks",
           "keep_indices", "normalize"]

# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ViewSpec:
    """One kind of view: output ``size (H, W)``, crop ``scale`` range and the probabilities of each augmentation."""

    size: tuple[int, int]
    scale: tuple[float, float]
    hflip: float = 0.5
    jitter: float = 0.8
    jitter_strength: float = 0.5
    gray: float = 0.2
    blur: float = 0.0
    solarize: float = 0.0
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


def dino_specs(global_size: tuple[int, int], local_size: tuple[int, int], n_local: int, *,
               global_scale: tuple[float, float] = (0.32, 1.0), local_scale: tuple[float, float] = (0.05, 0.32),
               hflip: float = 0.5, jitter: float = 0.8, gray: float = 0.2) -> list[ViewSpec]:
    """The DINO views: two global (blur 1.0, then blur 0.1 + solarise 0.2) and ``n_local`` local (blur 0.5).

    Example:
        >>> [s.size for s in dino_specs((28, 28), (12, 12), 1)]
        [(28, 28), (28, 28), (12, 12)]
    """
    common = {"hflip": hflip, "jitter": jitter, "gray": gray}
    return ([ViewSpec(tuple(global_size), tuple(global_scale), blur=1.0, **common),
             ViewSpec(tuple(global_size), tuple(global_scale), blur=0.1, solarize=0.2, **common)]
            + [ViewSpec(tuple(local_size), tuple(local_scale), blur=0.5, **common)] * int(n_local))


def distill_spec(size: tuple[int, int], scale: tuple[float, float] = (0.5, 1.0), hflip: float = 0.5) -> ViewSpec:
    """One view for feature distillation: a random resized crop and a flip, no colour change (the teacher sees the
    same view, so photometric noise would only add cost).

    Example:
        >>> distill_spec((28, 28)).jitter
        0.0
    """
    return ViewSpec(tuple(size), tuple(scale), hflip=hflip, jitter=0.0, gray=0.0)


def sample_rng(seed: int, epoch: int, index: int, tag: int = 0) -> np.random.Generator:
    """The generator of every random choice for image ``index`` at ``epoch`` (``tag`` separates uses).

    Example:
        >>> float(sample_rng(0, 1, 5).random()) == float(sample_rng(0, 1, 5).random())
        True
    """
    return np.random.default_rng([int(seed), int(epoch), int(index), int(tag)])


def crop_box(rng: np.random.Generator, height: int, width: int, scale: tuple[float, float],
             ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a random resized crop: torchvision's ``RandomResizedCrop.get_params`` drawn from
    ``rng`` (10 tries, then a central crop of the allowed aspect ratio).

    Example:
        >>> t, l, h, w = crop_box(np.random.default_rng(0), 28, 28, (0.3, 1.0), (0.75, 1.33))
        >>> 0 <= t <= 28 - h and 0 <= l <= 28 - w
        True
    """
    area = height * width
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _draw(rng: np.random.Generator, spec: ViewSpec, height: int, width: int) -> list[float]:
    """All random choices of one view of one image, in a fixed order: box, flip, jitter factors, gray, sigma,
    solarise."""
    top, left, h, w = crop_box(rng, height, width, spec.scale, spec.ratio)
    flip = float(rng.random() < spec.hflip)
    s = spec.jitter_strength
    jit = rng.random() < spec.jitter
    b, c, sat = (rng.uniform(1 - 0.8 * s, 1 + 0.8 * s), rng.uniform(1 - 0.8 * s, 1 + 0.8 * s),
                 rng.uniform(1 - 0.4 * s, 1 + 0.4 * s))
    if not jit:
        b = c = sat = 1.0
    gray = float(rng.random() < spec.gray)
    sigma = rng.uniform(0.1, 2.0) * spec.size[0] / 224.0 if rng.random() < spec.blur else 0.0
    sol = float(rng.random() < spec.solarize)
    return [left, top, left + w, top + h, flip, b, c, sat, gray, sigma, sol]


def _luma(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` → ``[B, 1, H, W]`` grayscale."""
    return (x[:, 0:1] * _LUMA[0] + x[:, 1:2] * _LUMA[1] + x[:, 2:3] * _LUMA[2])


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur of ``x [B, 3, H, W]`` with ``sigma [B]`` (0 = unchanged), separable, reflect-padded."""
    if not bool((sigma > 0).any()):
        return x
    B, C, H, W = x.shape
    radius = max(1, min(int(math.ceil(3 * float(sigma.max()))), (min(H, W) - 1) // 2))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp_min(1e-6)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = torch.where((sigma > 0)[:, None], k / k.sum(1, keepdim=True), (t[None] == 0).to(x.dtype))  # [B, K]
    k = k.repeat_interleave(C, 0)  # [B*C, K]
    y = x.reshape(1, B * C, H, W)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=B * C)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=B * C)
    return y.reshape(B, C, H, W)


def _apply(x: torch.Tensor, p: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One view of the float images ``x [B, 3, H, W]`` in [0, 1] from the drawn parameters ``p [B, 11]``."""
    from torchvision.ops import roi_align

    boxes = torch.cat([torch.arange(len(x), dtype=x.dtype)[:, None], p[:, :4].to(x.dtype)], 1)
    # sampling_ratio 0: ceil(box / output) bilinear samples per output pixel (a box filter when shrinking, the
    # exact pixels for an unscaled crop)
    v = roi_align(x, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=0, aligned=True)
    flip = p[:, 4] > 0
    if bool(flip.any()):
        v = torch.where(flip[:, None, None, None], v.flip(-1), v)
    b, c, s = (p[:, i].to(x.dtype)[:, None, None, None] for i in (5, 6, 7))
    v = (v * b).clamp(0, 1)
    mean = _luma(v).mean(dim=(1, 2, 3), keepdim=True)
    v = ((v - mean) * c + mean).clamp(0, 1)
    g = _luma(v)
    v = ((v - g) * s + g).clamp(0, 1)
    v = torch.where((p[:, 8] > 0)[:, None, None, None], _luma(v).expand_as(v), v)
    v = _blur(v, p[:, 9])
    return torch.where((p[:, 10] > 0)[:, None, None, None] & (v >= 0.5), 1.0 - v, v)


def make_views(images: torch.Tensor, indices: np.ndarray, specs: list[ViewSpec], *, seed: int, epoch: int
               ) -> list[torch.Tensor]:
    """The views ``[B, 3, h, w]`` in [0, 1] (not yet normalised) of ``images [B, 3, H, W]`` (uint8), one list entry
    per spec; image ``b``'s choices come from :func:`sample_rng` ``(seed, epoch, indices[b])``.
    """
    x = images.float() / 255.0
    _, _, H, W = x.shape
    params = []
    for idx in indices:
        rng = sample_rng(seed, epoch, int(idx), 0)
        params.append([_draw(rng, s, H, W) for s in specs])
    p = torch.tensor(params, dtype=torch.float64)  # [B, V, 11]
    return [_apply(x, p[:, k], spec.size) for k, spec in enumerate(specs)]


def normalize(x: torch.Tensor, mean: Any, std: Any, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Resize ``x [B, 3, h, w]`` in [0, 1] to ``size`` (bilinear, antialiased) if given, then ``(x - mean) / std``.

    Example:
        >>> normalize(torch.full((1, 3, 4, 4), 0.5), [0.5] * 3, [0.25] * 3, (2, 2)).abs().max().item()
        0.0
    """
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    m = torch.as_tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def block_masks(indices: np.ndarray, grid: tuple[int, int], *, seed: int, epoch: int, view: int,
                probability: float = 0.5, ratio: tuple[float, float] = (0.1, 0.5)) -> torch.Tensor:
    """iBOT / DINOv2 masks ``[B, h, w]`` (bool) for one global view: each image is masked with ``probability``, a
    share of its patches drawn from ``ratio`` in block masks (lightly's ``random_block_mask_image``, DINOv2's
    masking), seeded per image.

    Example:
        >>> m = block_masks(np.arange(8), (7, 7), seed=0, epoch=0, view=0, probability=1.0)
        >>> m.shape, bool(m.any(dim=(1, 2)).all())
        (torch.Size([8, 7, 7]), True)
    """
    from lightly.models.utils import random_block_mask_image

    h, w = grid
    out = torch.zeros(len(indices), h, w, dtype=torch.bool)
    for b, idx in enumerate(indices):
        rng = sample_rng(seed, epoch, int(idx), 1 + view)
        if rng.random() >= probability:
            continue
        n_mask = int(h * w * rng.uniform(*ratio))
        state = random.getstate()
        try:
            random.seed(int(rng.integers(0, 2**62)))  # lightly draws from the global `random`: seed it, then restore
            out[b] = random_block_mask_image((h, w), max(1, n_mask), min_num_masks_per_block=min(4, max(1, n_mask)))
        finally:
            random.setstate(state)
    return out


def keep_indices(indices: np.ndarray, n_patches: int, n_keep: int, *, seed: int, epoch: int) -> torch.Tensor:
    """MAE's random masking: ``[B, n_keep]`` sorted indices of the visible patches, seeded per image.

    Example:
        >>> keep_indices(np.arange(2), 16, 4, seed=0, epoch=0).shape
        torch.Size([2, 4])
    """
    rows = [np.sort(sample_rng(seed, epoch, int(i), 9).permutation(n_patches)[:n_keep]) for i in indices]
    return torch.as_tensor(np.stack(rows), dtype=torch.long)
