"""Dense probes: semantic segmentation from frozen patch tokens (pure array code).

Two probes, both scored at mask resolution:

- :class:`LinearSegProbe`: a 1 x 1 linear classifier on each patch token (DINOv2's "linear"
  segmentation evaluation, Oquab et al. 2023: a linear layer on the patch tokens, logits
  upsampled bilinearly to the label resolution). It is fitted as logistic regression on
  (patch token, patch label) pairs with :class:`vitlab.protocols.linear.LinearProbe`; C is
  chosen on held-out *images* (patches of one image never straddle train and validation).
  For DINOv2's "+ms" (multi-layer) variant the caller concatenates the tokens of several
  layers along the channel axis (``[n, N, C_1 + ... + C_4]``).
- :func:`knn_label_transfer`: training-free retrieval (Hummingbird, Balažević et al. 2023,
  "Towards In-context Scene Understanding", NeurIPS): a memory bank of training patch
  features; each test patch takes its ``k`` nearest bank patches (cosine), weighs their
  labels by ``softmax(similarity / temperature)`` and votes. Defaults ``k=30``,
  ``temperature=0.02`` as in the paper's open reproduction (open-hummingbird-eval).

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
    >>> pred = knn_label_transfer(tokens[:4], y[:4], tokens[4:], 2, grid=(2, 2), out_size=(8, 8), k=3)
    >>> pred.shape, bool((pred == masks[4:]).all())
    ((2, 8, 8), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vitlab.errors import ConfigError, DataError
from vitlab.neighbors import DEFAULT_BLOCK, search

__all__ = ["patch_labels", "upsample_logits", "scores_to_label_maps", "LinearSegProbe", "knn_patch_scores",
           "knn_label_transfer", "SEG_CS", "HUMMINGBIRD_K", "HUMMINGBIRD_TEMPERATURE"]

#: C grid of :class:`LinearSegProbe`: one value per decade (patch sets are large; each fit is costly).
SEG_CS = np.logspace(-4, 3, 8)
#: Neighbours per test patch (Balažević et al. 2023; open-hummingbird-eval's ``num_neighbour=30``).
HUMMINGBIRD_K = 30
#: Softmax temperature on cosine similarities (open-hummingbird-eval's cross-attention ``beta=0.02``).
HUMMINGBIRD_TEMPERATURE = 0.02
#: Query patches per chunk of :func:`knn_label_transfer` (bounds the ``[patches, k]`` neighbour buffers).
_QUERY_PATCHES = 4096


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

    ``fit`` trains multinomial logistic regression on every labelled training patch
    (patches whose label is ``ignore_index`` are left out) with
    :class:`~vitlab.protocols.linear.LinearProbe`: ``C`` is chosen on a validation split of
    *images* (the patches' image index is the group, so an image's patches are all in train
    or all in validation; the validation score is patch accuracy), then refitted on all
    patches. ``standardize=True`` (default) standardises each channel with training
    statistics, the role of the BatchNorm in DINOv2's linear head (it matters most for
    concatenated multi-layer tokens). Classes with no training patch are never predicted.

    ``predict`` computes logits per patch, upsamples them bilinearly to the mask resolution
    (:func:`upsample_logits`) and takes the argmax per pixel.

    Args:
        n_classes: number of classes (mask values ``0..n_classes-1``).
        ignore_index: patch label left out of training.
        Cs: grid of inverse regularisation strengths (one value: no validation split).
        val_fraction: share of training images held out to choose C.
        seed: seed of the validation split and of ``max_train_patches`` subsampling.
        standardize: standardise channels (see above).
        max_train_patches: fit on at most this many labelled patches, drawn uniformly (seeded);
            ``None``: all.
        max_iter, tol, dtype, device, patience: passed to ``LinearProbe``.

    Attributes:
        probe_: the fitted ``LinearProbe`` (``C_``, ``val_scores_``, ``convergence_``).
        classes_: ``[K]`` classes present in the training patches (columns of ``probe_``).
        n_train_patches_: labelled patches used.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 3, (10, 4))                                  # 10 images, 2x2 grid
        >>> tokens = np.eye(3)[y] + 0.05 * rng.normal(size=(10, 4, 3))
        >>> probe = LinearSegProbe(3, Cs=[1.0]).fit(tokens, y)
        >>> pred = probe.predict(tokens, (2, 2), (4, 4))
        >>> pred.shape, bool((pred[:, ::2, ::2].reshape(10, 4) == y).all())
        ((10, 4, 4), True)
    """

    def __init__(self, n_classes: int, *, ignore_index: int | None = 255, Cs: Sequence[float] | np.ndarray = SEG_CS,
                 val_fraction: float = 0.2, seed: int = 0, standardize: bool = True,
                 max_train_patches: int | None = None, max_iter: int = 1000, tol: float = 1e-6,
                 dtype: str = "float32", device: Any = "cpu", patience: int | None = 3) -> None:
        if int(n_classes) < 2:
            raise ConfigError(f"n_classes={n_classes}: a segmentation probe needs at least 2 classes.")
        if max_train_patches is not None and int(max_train_patches) < 1:
            raise ConfigError(f"max_train_patches={max_train_patches} must be >= 1 or None (all patches).")
        self.n_classes = int(n_classes)
        self.ignore_index = ignore_index
        self.Cs, self.val_fraction, self.seed = Cs, val_fraction, seed
        self.standardize, self.max_train_patches = standardize, max_train_patches
        self.max_iter, self.tol, self.dtype, self.device, self.patience = max_iter, tol, dtype, device, patience

    def fit(self, tokens: np.ndarray, labels: np.ndarray) -> LinearSegProbe:
        """Fit on ``tokens [n, N, C]`` and patch labels ``[n, N]`` (from :func:`patch_labels`)."""
        from vitlab.protocols.linear import LinearProbe

        X, y, groups = _flatten_train(tokens, labels, self.n_classes, self.ignore_index)
        if self.max_train_patches is not None and len(y) > self.max_train_patches:
            pick = np.sort(np.random.default_rng(self.seed).choice(len(y), int(self.max_train_patches), replace=False))
            X, y, groups = X[pick], y[pick], groups[pick]
        self.classes_ = np.unique(y)
        if self.classes_.size < 2:
            raise DataError(f"every labelled train patch is class {int(self.classes_[0])}; a probe needs patches of "
                            "at least 2 classes. Add images, or use a finer patch grid.")
        self.n_train_patches_ = len(y)
        self.n_features_ = X.shape[1]
        yc = np.searchsorted(self.classes_, y)
        self.probe_ = LinearProbe(Cs=self.Cs, val_fraction=self.val_fraction, seed=self.seed, device=self.device,
                                  max_iter=self.max_iter, tol=self.tol, dtype=self.dtype,
                                  standardize=self.standardize, num_classes=self.classes_.size,
                                  patience=self.patience)
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


def knn_patch_scores(train_tokens: np.ndarray, train_patch_labels: np.ndarray, test_tokens: np.ndarray,
                     n_classes: int, *, k: int = HUMMINGBIRD_K, temperature: float = HUMMINGBIRD_TEMPERATURE,
                     ignore_index: int | None = 255, block: int = DEFAULT_BLOCK, device: Any = None,
                     dtype: str = "float32") -> np.ndarray:
    """Hummingbird label transfer per patch: class scores ``[m, N, n_classes]`` (rows sum to 1).

    The memory bank is every labelled training patch (label ``!= ignore_index``). For each
    test patch, :func:`vitlab.neighbors.search` finds the ``k`` most cosine-similar bank
    patches (blocked, exact, ties to the lower bank index); their one-hot labels are averaged
    with weights ``softmax(similarity / temperature)`` over the ``k``. (open-hummingbird-eval
    stores each patch's class *fractions*; here each bank patch carries its majority label
    from :func:`patch_labels`.)

    Example:
        >>> bank = np.array([[[1.0, 0.0], [0.0, 1.0]]]); lab = np.array([[0, 1]])
        >>> knn_patch_scores(bank, lab, np.array([[[0.9, 0.1]]]), 2, k=1).round(3).tolist()
        [[[1.0, 0.0]]]
    """
    X, y = _bank(train_tokens, train_patch_labels, n_classes, k, temperature, ignore_index)
    return _vote(X, y, _tokens(test_tokens, "test tokens"), int(n_classes), int(k), float(temperature), block,
                 device, dtype)


def _bank(train_tokens: Any, train_patch_labels: Any, n_classes: int, k: Any, temperature: Any,
          ignore_index: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Check the kNN options; the memory bank ``X [P, C]`` and labels ``y [P]`` of labelled train patches."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}.")
    if not float(temperature) > 0:
        raise ConfigError(f"temperature={temperature} must be > 0, e.g. {HUMMINGBIRD_TEMPERATURE}.")
    X, y, _ = _flatten_train(train_tokens, train_patch_labels, int(n_classes), ignore_index)
    return X, y


def _vote(X: np.ndarray, y: np.ndarray, q: np.ndarray, C: int, k: int, temperature: float, block: int,
          device: Any, dtype: str) -> np.ndarray:
    """Softmax-weighted label vote of the ``k`` nearest bank patches: ``[m, N, C]`` float32."""
    if q.shape[2] != X.shape[1]:
        raise DataError(f"test tokens have C={q.shape[2]} channels but the train tokens {X.shape[1]}. Use tokens of "
                        "the same backbone and layers.")
    m, N = q.shape[:2]
    kk = min(k, len(y))
    res = search(q.reshape(m * N, -1), X, kk, metric="cosine", block=block, device=device, dtype=dtype)
    s = res.scores.astype(np.float64) / temperature
    wts = np.exp(s - s.max(1, keepdims=True))
    wts /= wts.sum(1, keepdims=True)
    rows = np.repeat(np.arange(m * N), kk)
    out = np.bincount(rows * C + y[res.indices.ravel()], weights=wts.ravel(), minlength=m * N * C)
    return out.reshape(m, N, C).astype(np.float32)


def knn_label_transfer(train_tokens: np.ndarray, train_patch_labels: np.ndarray, test_tokens: np.ndarray,
                       n_classes: int, *, grid: Sequence[int], out_size: Sequence[int] | Sequence[Sequence[int]],
                       k: int = HUMMINGBIRD_K, temperature: float = HUMMINGBIRD_TEMPERATURE,
                       ignore_index: int | None = 255, image_block: int | None = None, block: int = DEFAULT_BLOCK,
                       device: Any = None, dtype: str = "float32") -> np.ndarray | list[np.ndarray]:
    """Training-free segmentation (Hummingbird, Balažević et al. 2023): label maps at mask resolution.

    Per test patch: :func:`knn_patch_scores` (``k`` nearest bank patches by cosine,
    ``softmax(sim / temperature)``-weighted label vote); the ``[h*w, n_classes]`` scores of
    each image are upsampled bilinearly to ``out_size`` and the argmax taken per pixel.
    Test images are processed ``image_block`` at a time (default: about 4,096 query patches
    per chunk), and :func:`~vitlab.neighbors.search` tiles the bank in ``block`` rows, so
    memory is ``O(chunk * k + block^2)``, never test patches x bank patches.

    Args:
        train_tokens: ``[n, N, C]`` training patch tokens.
        train_patch_labels: ``[n, N]`` from :func:`patch_labels` (``ignore_index`` patches are left out).
        test_tokens: ``[m, N', C]`` test patch tokens (``N' = h * w``).
        n_classes: number of classes.
        grid: ``(h, w)`` of the test tokens.
        out_size: ``(H, W)`` (the masks' size) or one ``(H_i, W_i)`` per test image.
        k: neighbours per test patch (default 30, as in the paper).
        temperature: softmax temperature on cosine similarity (default 0.02).
        ignore_index: train patch label left out of the memory bank.
        image_block: test images per chunk.
        block, device, dtype: passed to :func:`vitlab.neighbors.search`.

    Returns:
        ``[m, H, W]`` int64 (a list of ``[H_i, W_i]`` maps with per-image sizes).
    """
    X, y = _bank(train_tokens, train_patch_labels, n_classes, k, temperature, ignore_index)
    q = _tokens(test_tokens, "test tokens")
    _grid(grid, q.shape[1], "test tokens")
    step = max(1, _QUERY_PATCHES // q.shape[1]) if image_block is None else int(image_block)
    if step < 1:
        raise ConfigError(f"image_block={image_block} must be >= 1.")
    per_image = len(out_size) > 0 and not np.isscalar(out_size[0])
    parts: list[Any] = []
    for i0 in range(0, q.shape[0], step):
        scores = _vote(X, y, q[i0:i0 + step], int(n_classes), int(k), float(temperature), block, device, dtype)
        maps = scores_to_label_maps(scores, grid, out_size[i0:i0 + step] if per_image else out_size, image_block=step)
        if per_image:
            parts.extend(maps)
        else:
            parts.append(maps)
    return parts if per_image else np.concatenate(parts)
