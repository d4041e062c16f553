"""Dense probes: semantic segmentation from frozen patch tokens (pure array code).

Scored at mask resolution:

- :class:`LinearSegProbe`: a 1 x 1 linear classifier on each patch token (DINOv2's "linear"
  segmentation evaluation, Oquab et al. 2023: a linear layer on the patch tokens, logits
  upsampled bilinearly to the label resolution, cross-entropy per pixel). :meth:`~LinearSegProbe.fit_pixels`
  fits that loss as logistic regression on the bilinearly upsampled features of sampled pixels
  (equal to upsampling the logits, :mod:`vitlab.protocols.dense_pixels`); :meth:`~LinearSegProbe.fit`
  fits (patch token, majority patch label) pairs instead. Both use
  :class:`vitlab.protocols.linear.LinearProbe`, with C chosen on held-out *images* (samples of one
  image never straddle train and validation). For DINOv2's "+ms" (multi-layer) variant the caller
  concatenates the tokens of several layers along the channel axis (``[n, N, C_1 + ... + C_4]``).
- training-free kNN label transfer (Hummingbird): :mod:`vitlab.protocols.dense_knn`.

Shapes: tokens are ``[n, N, C]`` with ``N = h * w`` patches in row-major order (token ``r * w +
c`` is grid row ``r``, column ``c``, as ViTs emit them); masks are ``[H, W]`` label maps at
the images' own resolution; patch ``(r, c)`` covers mask rows ``floor(r H / h) ..`` and
columns ``floor(c W / w) ..``, i.e. the grid is assumed to span the whole image (the image
was resized to the model input without cropping, as a square image with ``crop_pct=1`` or a
``stretch`` resize is). Predictions are upsampled from the grid to ``(H, W)`` and scored
there (``vitlab.metrics.segmentation``).

Example:
    >>> rng = np.random.default_rng(0)
    >>> masks = np.zeros((6, 8, 8), np.int64); masks[:, :, 4:] = 1          # left half 0, right half 1
    >>> y = patch_labels(masks, (2, 2), 2)                                    # [6, 4]
    >>> tokens = np.eye(2)[y] + 0.01 * rng.normal(size=(6, 4, 2))            # features encode the label
    >>> pred = LinearSegProbe(2, Cs=[1.0]).fit_pixels(tokens[:4], masks[:4], (2, 2)).predict(tokens[4:], (2, 2), (8, 8))
    >>> pred.shape, bool((pred == masks[4:]).all())
    ((2, 8, 8), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vitlab.errors import ConfigError, DataError

__all__ = ["patch_labels", "upsample_logits", "scores_to_label_maps", "LinearSegProbe", "SEG_CS"]

#: C grid of :class:`LinearSegProbe`: one value per decade (patch sets are large; each fit is costly).
SEG_CS = np.logspace(-4, 3, 8)


def _grid(grid: Sequence[int], n_tokens: int | None = None, what: str = "tokens") -> tuple[int, int]:
    try:
        h, w = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise ConfigError(f"grid must be (h, w) patch rows and columns, e.g. (7, 7); got {grid!r}.") from None
    if h < 1 or w < 1:
        raise ConfigError(f"grid must be positive (h, w), got {grid!r}.")
    if n_tokens is not None and h * w != n_tokens:
        raise DataError(f"{what} have {n_tokens} patches but grid {h}x{w} has {h * w}. Pass the backbone's patch "
                        "grid (and patch tokens only: drop CLS/register tokens).")
    return h, w


def _tokens(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or 0 in x.shape:
        raise DataError(f"{what} must be patch tokens [n, N, C]; got shape {x.shape}. Use the store's patch-token "
                        "view, not pooled embeddings.")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise DataError(f"{what} must be finite numbers (got dtype {x.dtype} or NaN/inf). Re-extract them.")
    return x


def patch_labels(masks: np.ndarray | Sequence[np.ndarray], grid: Sequence[int], n_classes: int,
                 ignore_index: int | None = 255) -> np.ndarray:
    """The label of every patch: the majority label of its pixels.

    Each mask is cut into the ``h x w`` grid (patch ``(r, c)`` holds the pixels with
    ``floor(y h / H) == r`` and ``floor(x w / W) == c``, so sizes need not divide evenly).
    Pixels equal to ``ignore_index`` do not vote; a patch with no labelled pixel gets
    ``ignore_index``; a tie goes to the smaller class index.

    Args:
        masks: ``[n, H, W]`` integer label maps, or a sequence of ``[H_i, W_i]`` maps of any sizes.
        grid: ``(h, w)`` patch rows and columns of the backbone.
        n_classes: classes ``0..n_classes-1``.
        ignore_index: label of unlabelled pixels (``None``: every pixel is labelled).

    Returns:
        ``[n, h * w]`` int64, row-major over the grid (the order of the patch tokens).

    Raises:
        DataError: a mask value outside ``0..n_classes-1`` that is not ``ignore_index``, or a
            mask smaller than the grid.

    Example:
        >>> m = np.array([[0, 0, 1, 1],
        ...               [0, 2, 1, 255],
        ...               [255, 255, 2, 2],
        ...               [255, 255, 2, 1]])
        >>> patch_labels(m[None], (2, 2), 3).tolist()       # tie 0/2 -> 0; all-ignore patch -> 255
        [[0, 1, 255, 2]]
    """
    h, w = _grid(grid)
    if n_classes < 1:
        raise ConfigError(f"n_classes must be >= 1, got {n_classes}.")
    out = np.empty((len(masks), h * w), np.int64)
    fill = -1 if ignore_index is None else int(ignore_index)
    for i, m in enumerate(masks):
        m = np.asarray(m)
        if m.ndim != 2 or m.shape[0] < h or m.shape[1] < w:
            raise DataError(f"mask {i} has shape {m.shape}; expected an [H, W] label map with H >= {h} and W >= {w} "
                            "(at least one pixel per patch).")
        H, W = m.shape
        pid = ((np.arange(H) * h // H)[:, None] * w + (np.arange(W) * w // W)[None, :]).ravel()
        lab = m.astype(np.int64).ravel()
        keep = np.ones(lab.shape, bool) if ignore_index is None else lab != ignore_index
        lab, pid = lab[keep], pid[keep]
        bad = lab[(lab < 0) | (lab >= n_classes)]
        if bad.size:
            raise DataError(f"mask {i} holds label {int(bad[0])}, outside 0..{n_classes - 1}"
                            + (f" and not the ignore index {ignore_index}" if ignore_index is not None else "")
                            + ". Fix the mask, pass the right n_classes, or set ignore_index.")
        counts = np.bincount(pid * n_classes + lab, minlength=h * w * n_classes).reshape(h * w, n_classes)
        out[i] = np.where(counts.sum(1) > 0, counts.argmax(1), fill)
    return out


def upsample_logits(logits: np.ndarray | torch.Tensor, grid: Sequence[int], out_size: Sequence[int]
                    ) -> np.ndarray | torch.Tensor:
    """Per-patch scores ``[n, h*w, C]`` → ``[n, C, H, W]`` by bilinear interpolation.

    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``, as DINOv2's
    linear segmentation head upsamples its patch logits to the label size. A numpy input gives
    a float32 numpy array, a tensor gives a tensor on its device.

    Example:
        >>> up = upsample_logits(np.array([[[0.0], [1.0]]]), (1, 2), (2, 4))
        >>> up.shape, up[0, 0, 0].tolist()
        ((1, 1, 2, 4), [0.0, 0.25, 0.75, 1.0])
    """
    is_np = not isinstance(logits, torch.Tensor)
    t = torch.as_tensor(np.asarray(logits, dtype=np.float32)) if is_np else logits
    if t.ndim != 3:
        raise DataError(f"logits must be [n, h*w, C]; got shape {tuple(t.shape)}.")
    h, w = _grid(grid, t.shape[1], "logits")
    H, W = (int(v) for v in out_size)
    x = t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)
    if not x.is_floating_point():
        x = x.float()
    up = torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
    return up.numpy() if is_np else up


def scores_to_label_maps(scores: np.ndarray, grid: Sequence[int], out_size: Sequence[int] | Sequence[Sequence[int]],
                         *, classes: np.ndarray | None = None, image_block: int = 32
                         ) -> np.ndarray | list[np.ndarray]:
    """Upsample per-patch class scores ``[n, h*w, K]`` to each image's size and take the argmax.

    Args:
        scores: ``[n, h*w, K]`` logits or probabilities.
        grid: ``(h, w)``.
        out_size: ``(H, W)`` for every image, or one ``(H_i, W_i)`` per image.
        classes: ``[K]`` class index of each score column (default ``0..K-1``).
        image_block: images upsampled at once (memory: ``image_block * K * H * W`` floats).

    Returns:
        ``[n, H, W]`` int64 with one ``out_size``; a list of ``[H_i, W_i]`` maps with per-image sizes.

    Example:
        >>> s = np.array([[[2.0, 0.0], [0.0, 2.0]]])            # patch 0 says class 0, patch 1 class 1
        >>> scores_to_label_maps(s, (1, 2), (1, 4), classes=np.array([3, 7])).tolist()
        [[[3, 3, 7, 7]]]
    """
    scores = np.asarray(scores)
    n = scores.shape[0]
    cls = np.arange(scores.shape[2]) if classes is None else np.asarray(classes, dtype=np.int64)
    per_image = len(out_size) > 0 and not np.isscalar(out_size[0])
    if per_image:
        if len(out_size) != n:
            raise DataError(f"{len(out_size)} output sizes for {n} images; pass one (H, W) per image or a single one.")
        return [cls[upsample_logits(scores[i:i + 1], grid, s)[0].argmax(0)] for i, s in enumerate(out_size)]
    H, W = (int(v) for v in out_size)
    out = np.empty((n, H, W), np.int64)
    for i0 in range(0, n, max(1, int(image_block))):
        i1 = min(n, i0 + max(1, int(image_block)))
        out[i0:i1] = cls[upsample_logits(scores[i0:i1], grid, (H, W)).argmax(1)]
    return out


def _flatten_train(tokens: Any, labels: Any, n_classes: int, ignore_index: int | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labelled train patches: ``X [P, C]``, ``y [P]`` and their image index ``[P]``."""
    x = _tokens(tokens, "train tokens")
    y = np.asarray(labels)
    if y.shape != x.shape[:2]:
        raise DataError(f"train patch labels have shape {y.shape} but the tokens are {x.shape[:2]} (images x "
                        "patches). Compute them with patch_labels(masks, grid, ...).")
    y = y.astype(np.int64).ravel()
    img = np.repeat(np.arange(x.shape[0]), x.shape[1])
    keep = np.ones(y.shape, bool) if ignore_index is None else y != ignore_index
    bad = y[keep & ((y < 0) | (y >= n_classes))]
    if bad.size:
        raise DataError(f"train patch labels hold {int(bad[0])}, outside 0..{n_classes - 1} and not the ignore "
                        f"index {ignore_index}. Pass the right n_classes / ignore_index.")
    if not keep.any():
        raise DataError("every train patch is ignore_index: no labelled patch to learn from. Check the masks.")
    return x.reshape(-1, x.shape[2])[keep], y[keep], img[keep]


class LinearSegProbe:
    """1 x 1 linear segmentation probe on frozen patch tokens (DINOv2's linear evaluation).

    Two ways to fit the same head (multinomial logistic regression with
    :class:`~vitlab.protocols.linear.LinearProbe`; ``C`` chosen on a validation split of
    *images*: the image index is the group, so an image's samples are all in train or all in
    validation, by mIoU (``val_metric``); then refitted on all samples):

    - :meth:`fit_pixels` (DINOv2's loss; what ``seg-linear`` uses): cross-entropy per pixel of the
      bilinearly upsampled logits, i.e. logistic regression on the upsampled features of up to
      ``max_train_pixels`` labelled pixels drawn uniformly (seeded); validation score: mIoU of the
      validation images' sampled pixels.
    - :meth:`fit`: one sample per patch, labelled with its pixels' majority
      (:func:`patch_labels`); validation score: mIoU of the validation patches. Cheaper, but its loss is not the
      one the upsampled prediction is scored on: patches that straddle a boundary teach their
      majority class everywhere (on ``sample:fashion-mnist-mosaic`` it scores 0.007-0.019 mIoU
      below :meth:`fit_pixels`, BENCHMARKS.md).

    Patches / pixels whose label is ``ignore_index`` are left out. ``standardize=True`` (default)
    standardises each channel with training statistics, the role of the BatchNorm in DINOv2's
    linear head (it matters most for concatenated multi-layer tokens). Classes with no training
    sample are never predicted.

    ``predict`` computes logits per patch, upsamples them bilinearly to the mask resolution
    (:func:`upsample_logits`) and takes the argmax per pixel.

    Args:
        n_classes: number of classes (mask values ``0..n_classes-1``).
        ignore_index: patch label left out of training.
        Cs: grid of inverse regularisation strengths (one value: no validation split).
        val_fraction: share of training images held out to choose C.
        val_metric: ``"miou"`` (default: the metric the probe is scored on) or ``"accuracy"`` (pixel / patch
            accuracy, dominated by the largest class, usually background: it picks a strongly regularised C
            that under-fits the other classes; issue 20 §3, BENCHMARKS.md).
        seed: seed of the validation split and of ``max_train_patches`` subsampling.
        standardize: standardise channels (see above).
        max_train_patches: :meth:`fit` on at most this many labelled patches, drawn uniformly
            (seeded); ``None``: all.
        max_train_pixels: :meth:`fit_pixels` on at most this many labelled pixels, drawn uniformly
            over all training pixels (seeded); ``None``: all.
        max_iter, tol, dtype, device, patience: passed to ``LinearProbe``.

    Attributes:
        probe_: the fitted ``LinearProbe`` (``C_``, ``val_scores_``, ``convergence_``).
        classes_: ``[K]`` classes present in the training samples (columns of ``probe_``).
        n_train_patches_: labelled patches used (:meth:`fit`); n_train_pixels_: pixels used (:meth:`fit_pixels`).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 3, (10, 4))                                  # 10 images, 2x2 grid
        >>> tokens = np.eye(3)[y] + 0.05 * rng.normal(size=(10, 4, 3))
        >>> probe = LinearSegProbe(3, Cs=[1.0]).fit(tokens, y)
        >>> pred = probe.predict(tokens, (2, 2), (4, 4))
        >>> pred.shape, bool((pred[:, ::2, ::2].reshape(10, 4) == y).all())
        ((10, 4, 4), True)
        >>> masks = np.kron(y.reshape(10, 2, 2), np.ones((2, 2), int))          # the pixels of those patches
        >>> px = LinearSegProbe(3, Cs=[1.0]).fit_pixels(tokens, masks, (2, 2))
        >>> px.n_train_pixels_, px.predict(tokens, (2, 2), (4, 4)).shape
        (160, (10, 4, 4))
    """

    def __init__(self, n_classes: int, *, ignore_index: int | None = 255, Cs: Sequence[float] | np.ndarray = SEG_CS,
                 val_fraction: float = 0.2, seed: int = 0, standardize: bool = True,
                 max_train_patches: int | None = None, max_train_pixels: int | None = None, max_iter: int = 1000,
                 tol: float = 1e-6, dtype: str = "float32", device: Any = "cpu", patience: int | None = 3,
                 val_metric: str = "miou") -> None:
        if int(n_classes) < 2:
            raise ConfigError(f"n_classes={n_classes}: a segmentation probe needs at least 2 classes.")
        for name, v in (("max_train_patches", max_train_patches), ("max_train_pixels", max_train_pixels)):
            if v is not None and int(v) < 1:
                raise ConfigError(f"{name}={v} must be >= 1 or None (all).")
        self.n_classes = int(n_classes)
        self.ignore_index = ignore_index
        self.Cs, self.val_fraction, self.seed = Cs, val_fraction, seed
        self.standardize, self.max_train_patches, self.max_train_pixels = standardize, max_train_patches, max_train_pixels
        self.max_iter, self.tol, self.dtype, self.device, self.patience = max_iter, tol, dtype, device, patience
        self.val_metric = val_metric

    def fit(self, tokens: np.ndarray, labels: np.ndarray) -> LinearSegProbe:
        """Fit on ``tokens [n, N, C]`` and patch labels ``[n, N]`` (from :func:`patch_labels`): one sample per patch."""
        X, y, groups = self.patch_samples(tokens, labels)
        self.n_train_patches_ = len(y)
        return self._fit_samples(X, y, groups, "patch")

    def patch_samples(self, tokens: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The samples :meth:`fit` trains on: ``X [P, C]`` patch tokens, ``y [P]`` their labels, ``[P]`` image index.

        Labelled patches only, at most ``max_train_patches`` of them (a seeded uniform draw). Raw
        features: the probe standardises them itself.
        """
        X, y, groups = _flatten_train(tokens, labels, self.n_classes, self.ignore_index)
        if self.max_train_patches is not None and len(y) > self.max_train_patches:
            pick = np.sort(np.random.default_rng(self.seed).choice(len(y), int(self.max_train_patches), replace=False))
            X, y, groups = X[pick], y[pick], groups[pick]
        return X, y, groups

    def fit_pixels(self, tokens: np.ndarray, masks: np.ndarray | Sequence[np.ndarray], grid: Sequence[int]
                   ) -> LinearSegProbe:
        """Fit with per-pixel cross-entropy on bilinearly upsampled logits (DINOv2's loss).

        Args:
            tokens: ``[n, h * w, C]`` training patch tokens.
            masks: ``[n, H, W]`` label maps, or one ``[H_i, W_i]`` map per image (the resolution the
                logits are upsampled to and scored at).
            grid: ``(h, w)``.
        """
        X, y, img = self.pixel_samples(tokens, masks, grid)
        self.n_train_pixels_ = len(y)
        return self._fit_samples(X, y, img, "pixel")

    def pixel_samples(self, tokens: np.ndarray, masks: np.ndarray | Sequence[np.ndarray], grid: Sequence[int]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The samples :meth:`fit_pixels` trains on: ``X [P, C]``, ``y [P]``, ``[P]`` image index.

        Up to ``max_train_pixels`` labelled pixels (a seeded uniform draw), each with its label and the
        bilinearly upsampled patch features at its position (float32; the probe standardises them).
        """
        from vitlab.protocols.dense_pixels import pixel_features, sample_pixels

        x = _tokens(tokens, "train tokens")
        h, w = _grid(grid, x.shape[1], "train tokens")
        if len(masks) != x.shape[0]:
            raise DataError(f"{len(masks)} training masks for {x.shape[0]} token rows; pass one mask per image.")
        for i, m in enumerate(masks):
            m = np.asarray(m)
            if m.ndim != 2 or m.shape[0] < h or m.shape[1] < w:
                raise DataError(f"mask {i} has shape {m.shape}; expected an [H, W] label map with H >= {h} and "
                                f"W >= {w} (at least one pixel per patch).")
        img, ys, xs, y = sample_pixels(masks, self.max_train_pixels, ignore_index=self.ignore_index, seed=self.seed)
        bad = y[(y < 0) | (y >= self.n_classes)]
        if bad.size:
            raise DataError(f"a training mask holds label {int(bad[0])}, outside 0..{self.n_classes - 1} and not the "
                            f"ignore index {self.ignore_index}. Pass the right n_classes / ignore_index.")
        return pixel_features(x, (h, w), img, ys, xs, [np.asarray(m).shape for m in masks]), y, img

    def _fit_samples(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray, what: str) -> LinearSegProbe:
        from vitlab.protocols.linear import LinearProbe

        self.classes_ = np.unique(y)
        if self.classes_.size < 2:
            raise DataError(f"every labelled train {what} is class {int(self.classes_[0])}; a probe needs {what}s of "
                            "at least 2 classes. Add images, or use a finer patch grid.")
        self.n_features_ = X.shape[1]
        yc = np.searchsorted(self.classes_, y)
        self.probe_ = LinearProbe(Cs=self.Cs, val_fraction=self.val_fraction, seed=self.seed, device=self.device,
                                  max_iter=self.max_iter, tol=self.tol, dtype=self.dtype,
                                  standardize=self.standardize, num_classes=self.classes_.size,
                                  patience=self.patience, val_metric=self.val_metric)
        self.probe_.fit(X, yc, groups=groups)
        return self

    def _compact_logits(self, tokens: Any) -> np.ndarray:
        if not hasattr(self, "probe_"):
            raise ConfigError("LinearSegProbe is not fitted yet. Call .fit(tokens, patch_labels) first.")
        x = _tokens(tokens, "tokens")
        if x.shape[2] != self.n_features_:
            raise DataError(f"tokens have C={x.shape[2]} channels but the probe was fitted on {self.n_features_}. "
                            "Use tokens of the same backbone and layers.")
        return self.probe_.decision_function(x.reshape(-1, x.shape[2])).reshape(x.shape[0], x.shape[1], -1)

    def decision_function(self, tokens: np.ndarray) -> np.ndarray:
        """Patch logits ``[m, N, n_classes]`` float64; classes never seen in training are ``-inf``."""
        z = self._compact_logits(tokens)
        out = np.full(z.shape[:2] + (self.n_classes,), -np.inf)
        out[..., self.classes_] = z
        return out

    def predict_patches(self, tokens: np.ndarray) -> np.ndarray:
        """Per-patch labels ``[m, N]`` int64 (no upsampling)."""
        return self.classes_[self._compact_logits(tokens).argmax(2)]

    def predict(self, tokens: np.ndarray, grid: Sequence[int], out_size: Sequence[int] | Sequence[Sequence[int]],
                *, image_block: int = 32) -> np.ndarray | list[np.ndarray]:
        """Label maps at mask resolution: logits per patch → bilinear upsampling → argmax.

        Args:
            tokens: ``[m, N, C]`` test patch tokens.
            grid: ``(h, w)`` with ``h * w == N``.
            out_size: ``(H, W)`` (the masks' size) or one ``(H_i, W_i)`` per image.
            image_block: images processed at once.

        Returns:
            ``[m, H, W]`` int64 (a list of ``[H_i, W_i]`` maps with per-image sizes).
        """
        x = _tokens(tokens, "tokens")
        _grid(grid, x.shape[1])
        per_image = len(out_size) > 0 and not np.isscalar(out_size[0])
        parts: list[Any] = []
        step = max(1, int(image_block))
        for i0 in range(0, x.shape[0], step):
            sizes = out_size[i0:i0 + step] if per_image else out_size
            maps = scores_to_label_maps(self._compact_logits(x[i0:i0 + step]), grid, sizes, classes=self.classes_,
                                        image_block=step)
            if per_image:
                parts.extend(maps)
            else:
                parts.append(maps)
        return parts if per_image else np.concatenate(parts)
