"""Per-pixel training samples for a 1 x 1 linear segmentation head (pure array code).

DINOv2's linear segmentation head (Oquab et al. 2023) computes logits per patch, upsamples them
bilinearly to the label resolution and is trained with cross-entropy **per pixel**. With a
linear head the upsampling commutes with the head: bilinear weights of a pixel sum to 1, so

    bilinear(W x + b)[p] = W (sum_j a_pj x_j) + b = W bilinear(x)[p] + b,

i.e. per-pixel cross-entropy on upsampled logits is multinomial logistic regression on the
bilinearly upsampled *features* of the pixels, with the pixels' own labels (and standardising
the features, an affine map, commutes too). :func:`sample_pixels` draws labelled pixels
uniformly (a seeded Monte-Carlo subsample of that loss) and :func:`pixel_features` computes
their upsampled features from the patch tokens with the same taps as
``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` (checked against it in
the tests), without materialising an ``[n, C, H, W]`` feature map.

Example:
    >>> tok = np.arange(4.0).reshape(1, 4, 1)                    # a 2 x 2 grid, one channel: 0 1 / 2 3
    >>> pixel_features(tok, (2, 2), np.array([0, 0]), np.array([0, 1]), np.array([0, 1]), [(4, 4)])[:, 0].tolist()
    [0.0, 0.75]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vitlab.errors import DataError

__all__ = ["bilinear_taps", "sample_pixels", "pixel_features"]


def bilinear_taps(out: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source taps of bilinear upsampling from ``n`` to ``out`` positions (``align_corners=False``).

    Returns ``(i0, i1, w1)``: output position ``k`` is ``(1 - w1[k]) * src[i0[k]] + w1[k] * src[i1[k]]``
    (PyTorch's rule: source coordinate ``(k + 0.5) n / out - 0.5``, clamped at 0; the last tap repeats at
    the border).

    Example:
        >>> i0, i1, w1 = bilinear_taps(4, 2)
        >>> i0.tolist(), i1.tolist(), w1.tolist()
        ([0, 0, 0, 1], [1, 1, 1, 1], [0.0, 0.25, 0.75, 0.0])
    """
    src = np.maximum((np.arange(out) + 0.5) * (n / out) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, np.where(i1 > i0, src - i0, 0.0)


def sample_pixels(masks: Sequence[np.ndarray], max_pixels: int | None, *, ignore_index: int | None = 255,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Labelled pixels drawn uniformly without replacement over all images (seeded): ``(image, y, x, label)``.

    Every pixel whose label is not ``ignore_index`` is a candidate; ``max_pixels=None`` (or at least
    as many as there are) keeps them all. Returned sorted by image, then row-major position.

    Example:
        >>> m = [np.array([[0, 1], [255, 1]]), np.array([[2, 2], [2, 2]])]
        >>> img, ys, xs, lab = sample_pixels(m, None)
        >>> img.tolist(), lab.tolist()
        ([0, 0, 0, 1, 1, 1, 1], [0, 1, 1, 2, 2, 2, 2])
    """
    flat = [np.asarray(m).ravel() for m in masks]
    keep = [np.flatnonzero(f != ignore_index) if ignore_index is not None else np.arange(f.size) for f in flat]
    counts = np.array([k.size for k in keep], dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise DataError("every training pixel is ignore_index: no labelled pixel to learn from. Check the masks.")
    if max_pixels is None or max_pixels >= total:
        pick = np.arange(total)
    else:
        pick = np.sort(np.random.default_rng(seed).choice(total, int(max_pixels), replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    img = np.searchsorted(starts, pick, side="right") - 1
    pos = np.empty(pick.size, np.int64)
    lab = np.empty(pick.size, np.int64)
    for i in np.unique(img):
        sel = img == i
        p = keep[i][pick[sel] - starts[i]]
        pos[sel], lab[sel] = p, flat[i][p]
    widths = np.array([np.asarray(m).shape[1] for m in masks], dtype=np.int64)[img]
    return img, pos // widths, pos % widths, lab


def pixel_features(tokens: np.ndarray, grid: Sequence[int], img: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                   sizes: Sequence[Sequence[int]]) -> np.ndarray:
    """Bilinearly upsampled patch features ``[P, C]`` (float32) at pixels ``(img, ys, xs)``.

    Args:
        tokens: ``[n, h * w, C]`` patch tokens (row-major grid).
        grid: ``(h, w)``.
        img, ys, xs: ``[P]`` image index and pixel row / column of each sample.
        sizes: ``(H_i, W_i)`` of every image's mask (the resolution the logits are upsampled to).

    Memory is ``O(P * C)``: four gathered tokens per sample, never an ``[n, C, H, W]`` map.
    """
    h, w = (int(v) for v in grid)
    tok = np.asarray(tokens)
    out = np.zeros((len(img), tok.shape[2]), np.float32)
    size_arr = np.asarray([tuple(s) for s in sizes], dtype=np.int64)
    for H, W in np.unique(size_arr[img], axis=0):
        sel = np.flatnonzero((size_arr[img, 0] == H) & (size_arr[img, 1] == W))
        r0, r1, wr = bilinear_taps(int(H), h)
        c0, c1, wc = bilinear_taps(int(W), w)
        y, x, i = ys[sel], xs[sel], img[sel]
        a, b = wr[y][:, None], wc[x][:, None]
        out[sel] = ((1 - a) * (1 - b) * tok[i, r0[y] * w + c0[x]] + (1 - a) * b * tok[i, r0[y] * w + c1[x]]
                    + a * (1 - b) * tok[i, r1[y] * w + c0[x]] + a * b * tok[i, r1[y] * w + c1[x]])
    return out
