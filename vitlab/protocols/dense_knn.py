"""Training-free dense probe: kNN label transfer of patch labels (Hummingbird; pure array code).

Hummingbird (Balažević et al. 2023, "Towards In-context Scene Understanding", NeurIPS): a memory
bank of training patch features; each test patch takes its ``k`` nearest bank patches (cosine),
weighs their labels by ``softmax(similarity / temperature)`` and votes. Defaults ``k=30``,
``temperature=0.02`` as in the paper's open reproduction (open-hummingbird-eval). Shapes and the
grid convention are those of :mod:`vitlab.protocols.dense`.

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

from vitlab.errors import ConfigError, DataError
from vitlab.neighbors import DEFAULT_BLOCK, search
from vitlab.protocols.dense import _flatten_train, _grid, _tokens, scores_to_label_maps
from vitlab.protocols.dense import patch_labels  # noqa: F401  (the example uses it)

__all__ = ["knn_patch_scores", "knn_label_transfer", "HUMMINGBIRD_K", "HUMMINGBIRD_TEMPERATURE"]

#: Neighbours per test patch (Balažević et al. 2023; open-hummingbird-eval's ``num_neighbour=30``).
HUMMINGBIRD_K = 30
#: Softmax temperature on cosine similarities (open-hummingbird-eval's cross-attention ``beta=0.02``).
HUMMINGBIRD_TEMPERATURE = 0.02
#: Query patches per chunk of :func:`knn_label_transfer` (bounds the ``[patches, k]`` neighbour buffers).
_QUERY_PATCHES = 4096


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
