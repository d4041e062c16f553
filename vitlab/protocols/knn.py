"""Weighted k-nearest-neighbour classification on frozen embeddings (DINOv2 protocol).

Cosine similarity on L2-normalised features; each of the k nearest training
samples votes for its label with weight ``exp(sim / T)`` ("softmax", as in
DINO/DINOv2 ``knn.py``) or weight 1 ("uniform"). Neighbours come from
:func:`vitlab.neighbors.search` (blocked, exact, ties to the smaller training
index), so neither the full ``[n_test, n_train]`` similarity matrix nor a
``[chunk, n_train]`` block for a huge training set is ever materialised. One
top-k over ``max(ks)`` is computed and smaller ``k`` are slices of it.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> tr, te = rng.normal(size=(100, 8)), rng.normal(size=(5, 8))
    >>> y = rng.integers(0, 3, 100)
    >>> proba = knn_predict_proba(tr, y, te, ks=(5, 10))
    >>> sorted(proba), proba[5].shape
    ([5, 10], (5, 3))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from vitlab.errors import ConfigError, DataError
from vitlab.neighbors import search

__all__ = ["knn_predict_proba", "knn_predict", "WEIGHTINGS"]

WEIGHTINGS = ("softmax", "uniform")


def _check_inputs(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    train_x = np.asarray(train_x)
    test_x = np.asarray(test_x)
    train_y = np.asarray(train_y)
    if train_x.ndim != 2 or test_x.ndim != 2:
        raise DataError(
            f"features must be 2-D [n, d]; got train_x.shape={train_x.shape}, "
            f"test_x.shape={test_x.shape}. Flatten or pool embeddings to one vector per sample."
        )
    if train_x.shape[0] == 0 or test_x.shape[0] == 0:
        raise DataError(
            f"empty feature array: train_x has {train_x.shape[0]} rows, test_x has "
            f"{test_x.shape[0]} rows. Check that the embedding store returned samples for both splits."
        )
    if train_x.shape[1] != test_x.shape[1]:
        raise DataError(
            f"feature dimension mismatch: train_x has d={train_x.shape[1]}, test_x has "
            f"d={test_x.shape[1]}. Embed both splits with the same backbone and pooling."
        )
    if train_y.shape != (train_x.shape[0],):
        raise DataError(
            f"train_y.shape={train_y.shape} does not match train_x rows ({train_x.shape[0]}). "
            "Pass one integer label per training sample."
        )
    if not np.issubdtype(train_y.dtype, np.integer):
        raise DataError(
            f"train_y must hold integer class ids 0..C-1, got dtype {train_y.dtype}. "
            "Encode labels first, e.g. with np.unique(y, return_inverse=True)."
        )
    if train_y.min() < 0:
        raise DataError(f"train_y has negative label {int(train_y.min())}; labels must be 0..C-1.")
    max_label = int(train_y.max())
    if num_classes is None:
        num_classes = max_label + 1
    elif num_classes <= max_label:
        raise ConfigError(
            f"num_classes={num_classes} but train_y contains label {max_label}. "
            f"Use num_classes >= {max_label + 1} or leave it as None."
        )
    for name, arr in (("train_x", train_x), ("test_x", test_x)):
        if not np.isfinite(arr).all():
            raise DataError(f"{name} contains NaN or inf values. Re-extract or drop those samples.")
    return train_x, train_y.astype(np.int64), test_x, int(num_classes)


def knn_predict_proba(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    *,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    weighting: Literal["softmax", "uniform"] = "softmax",
    num_classes: int | None = None,
    chunk_size: int = 4096,
    train_chunk_size: int = 65536,
    device: str | torch.device = "cpu",
) -> dict[int, np.ndarray]:
    """Class probabilities from a cosine kNN vote, for several k at once.

    For each test sample the ``max(ks)`` most cosine-similar training samples
    are found; for each ``k`` in ``ks`` the first ``k`` of them vote. With
    ``weighting="softmax"`` a neighbour with similarity ``s`` votes with weight
    ``exp(s / temperature)`` (DINOv2); the votes are normalised to sum to one,
    i.e. the result is the softmax of ``s / T`` over the k neighbours summed per
    class. With ``"uniform"`` each neighbour has weight ``1 / k`` (the same
    probabilities as ``KNeighborsClassifier(metric="cosine")``).

    Args:
        train_x: ``[n_train, d]`` training embeddings.
        train_y: ``[n_train]`` integer labels in ``0..C-1``.
        test_x: ``[n_test, d]`` embeddings to classify.
        ks: Numbers of neighbours; each must be ``<= n_train``.
        temperature: Softmax temperature ``T > 0`` (ignored for uniform).
        weighting: ``"softmax"`` or ``"uniform"``.
        num_classes: Number of classes ``C``; defaults to ``max(train_y) + 1``.
        chunk_size: Test samples per block.
        train_chunk_size: Training samples per block; peak memory of the
            similarity block is ``chunk_size * train_chunk_size`` floats.
        device: torch device for the matmul / top-k (``"cpu"``, ``"cuda"``).

    Returns:
        ``{k: proba}`` with ``proba`` a ``[n_test, C]`` float32 array whose rows sum to 1.

    Raises:
        ConfigError: bad ``ks``, ``temperature``, ``weighting``, chunk sizes or ``num_classes``.
        DataError: empty / non-2-D / non-finite arrays or mismatched dimensions.

    Example:
        >>> x = np.eye(4, dtype=np.float32); y = np.array([0, 0, 1, 1])
        >>> knn_predict_proba(x, y, x[:1], ks=(1,), weighting="uniform")[1]
        array([[1., 0.]], dtype=float32)
    """
    if weighting not in WEIGHTINGS:
        raise ConfigError(
            f"unknown weighting {weighting!r}. Use one of: {', '.join(WEIGHTINGS)}."
        )
    if not temperature > 0:
        raise ConfigError(
            f"temperature={temperature} must be > 0. DINOv2 uses 0.07, e.g. --temperature 0.07."
        )
    if chunk_size < 1 or train_chunk_size < 1:
        raise ConfigError(
            f"chunk_size={chunk_size} and train_chunk_size={train_chunk_size} must be >= 1, "
            "e.g. chunk_size=4096."
        )
    ks = tuple(int(k) for k in ks)
    if not ks:
        raise ConfigError("ks is empty. Pass at least one k, e.g. ks=(10, 20, 100, 200).")
    train_x, train_y, test_x, n_cls = _check_inputs(train_x, train_y, test_x, num_classes)
    n_train = train_x.shape[0]
    if min(ks) < 1:
        raise ConfigError(f"ks={ks} contains k < 1. Use positive k, e.g. --k 10,20,100.")
    if max(ks) > n_train:
        raise ConfigError(
            f"k={max(ks)} is larger than the training set ({n_train} samples). "
            f"Use k <= {n_train}, e.g. --k {','.join(str(k) for k in (1, 5, 10) if k <= n_train)}."
        )
    kmax = max(ks)
    dev = torch.device(device)
    nb = search(test_x, train_x, kmax, metric="cosine", block=chunk_size, ref_block=train_chunk_size,
                dtype="float32", device=dev)
    sims = torch.as_tensor(nb.scores, device=dev)
    nbr = torch.as_tensor(train_y, device=dev)[torch.as_tensor(nb.indices, device=dev)]  # [n_test, kmax]
    if weighting == "softmax":
        # exp((s - s_max) / T): the shift cancels in the normalisation and avoids overflow.
        w = ((sims - sims[:, :1]) / temperature).exp()
    else:
        w = torch.ones_like(sims)
    # ks are nested: add the votes of neighbours prev_k..k-1 to a running [n, C] tally.
    votes = torch.zeros(sims.shape[0], n_cls, dtype=sims.dtype, device=dev)
    out: dict[int, np.ndarray] = {}
    prev = 0
    for k in sorted(set(ks)):
        votes.scatter_add_(1, nbr[:, prev:k], w[:, prev:k])
        prev = k
        out[k] = (votes / votes.sum(dim=1, keepdim=True)).cpu().numpy().astype(np.float32)
    return {k: out[k] for k in ks}


def knn_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    **kwargs,
) -> dict[int, np.ndarray]:
    """Predicted labels ``{k: [n_test] int64}``; argmax of :func:`knn_predict_proba`.

    Ties between classes go to the smallest class id (as in sklearn).

    Example:
        >>> x = np.eye(4, dtype=np.float32); y = np.array([0, 0, 1, 1])
        >>> knn_predict(x, y, x[2:3], ks=(1,))[1]
        array([1])
    """
    return {
        k: p.argmax(axis=1).astype(np.int64)
        for k, p in knn_predict_proba(train_x, train_y, test_x, **kwargs).items()
    }
