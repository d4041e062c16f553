"""Input checks and warnings shared by the generative-evaluation metrics.

Every metric in :mod:`vitlab.metrics` takes numpy feature arrays of shape
``[n, d]``. The helpers here turn bad inputs into :class:`~vitlab.errors.DataError`
/ :class:`~vitlab.errors.ConfigError` with messages that name the offending
values and say how to fix them, and emit :class:`SmallSampleWarning` when a
sample is too small for the estimate to be trusted.

Example:
    >>> import numpy as np
    >>> x = check_features(np.zeros((4, 3), dtype=np.float32), "real")
    >>> x.dtype, x.shape
    (dtype('float64'), (4, 3))
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.stats.interval import check_level  # noqa: F401  (its home is vitlab.stats)

__all__ = [
    "SmallSampleWarning",
    "check_features",
    "check_same_dim",
    "check_k",
    "check_positive_int",
    "check_level",
    "warn_small_sample",
]


class SmallSampleWarning(UserWarning):
    """A metric was computed on fewer samples than it needs to be reliable.

    The value is still returned; the warning says how many samples are needed.
    Silence it with ``warnings.simplefilter("ignore", SmallSampleWarning)``.
    """


def check_features(x: Any, name: str, dtype: np.dtype | type = np.float64) -> np.ndarray:
    """Validate a feature array and return it as a C-contiguous ``dtype`` array.

    Args:
        x: Array-like of shape ``[n, d]``.
        name: What the array is (``"real"``, ``"fake"``, ...), used in messages.
        dtype: Output dtype (default float64).

    Returns:
        ``np.ndarray`` of shape ``[n, d]`` and dtype ``dtype`` (no copy when
        ``x`` already is one).

    Raises:
        DataError: ``x`` is not 2-D, has no rows or no columns, or holds NaN/inf.

    Example:
        >>> check_features([[1.0, 2.0]], "fake").shape
        (1, 2)
    """
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise DataError(
            f"{name} features must be a 2-D array [n, d] but got shape {tuple(arr.shape)}: "
            "pool token/patch features to one vector per image (e.g. CLS or mean) "
            "and stack them into [n, d]."
        )
    n, d = arr.shape
    if n == 0:
        raise DataError(
            f"{name} features are empty (shape {tuple(arr.shape)}): "
            "pass at least one sample per set."
        )
    if d == 0:
        raise DataError(
            f"{name} features have dimension 0 (shape {tuple(arr.shape)}): "
            "pass feature vectors with at least one dimension."
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise DataError(
            f"{name} features have dtype {arr.dtype}, expected real numbers: "
            "convert them with np.asarray(x, dtype=np.float32)."
        )
    arr = np.ascontiguousarray(arr, dtype=dtype)
    finite_rows = np.isfinite(arr).all(axis=1)
    if not finite_rows.all():
        bad = np.flatnonzero(~finite_rows)
        raise DataError(
            f"{name} features contain NaN or inf in {bad.size} of {n} rows "
            f"(first bad rows: {bad[:5].tolist()}): drop or recompute those rows "
            "before computing metrics."
        )
    return arr


def check_same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise :class:`DataError` unless ``a`` and ``b`` have the same feature dim.

    Example:
        >>> check_same_dim(np.zeros((2, 3)), np.zeros((5, 3)), "real", "fake")
    """
    if a.shape[1] != b.shape[1]:
        raise DataError(
            f"{name_a} features have dim {a.shape[1]} but {name_b} features have dim "
            f"{b.shape[1]}: both sets must come from the same encoder."
        )


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """Return ``value`` as ``int`` if it is an integer ``>= minimum``, else raise ConfigError.

    Example:
        >>> check_positive_int(5, "nearest_k")
        5
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer >= {minimum} but got {value!r}.")
    if value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum} but got {value}.")
    return int(value)


def check_k(k: Any, n: int, name: str, what: str = "nearest_k") -> int:
    """Check a k-nearest-neighbour count against the number of samples ``n``.

    The k-th neighbour excludes the point itself, so ``k`` must satisfy
    ``1 <= k < n``.

    Raises:
        ConfigError: ``k`` is not an integer in ``[1, n - 1]``.

    Example:
        >>> check_k(5, 100, "real")
        5
    """
    k = check_positive_int(k, what)
    if k >= n:
        raise ConfigError(
            f"{what}={k} but {name} features have only {n} rows: k must be < n "
            f"(need at least k+1 = {k + 1} samples). Lower {what} or pass more samples."
        )
    return k


def canonical_order(x: np.ndarray) -> np.ndarray:
    """A row order of ``x [n, d]`` that depends only on the rows' contents, not on the order they came in.

    Rows are sorted by two fixed projections (seeded unit vectors; each row's dot product is a row-wise
    sum, so it does not depend on the row's position); rows equal on both are identical in practice. Metrics that draw
    seeded subsets of rows (KD subsets, FD-infinity sizes, half-sample intervals, PRDC's ``reduced_n``)
    draw from this order, so shuffling a set changes none of their values. Identical rows are
    interchangeable, so their relative order does not matter.

    Example:
        >>> x = np.array([[3.0, 1.0], [1.0, 2.0], [2.0, 0.0]])
        >>> x[canonical_order(x)].tolist() == x[::-1][canonical_order(x[::-1])].tolist()
        True
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        return np.arange(len(x))
    v = np.random.default_rng(0x5EED).standard_normal((2, x.shape[1]))
    k1, k2 = (x * v[0]).sum(axis=1), (x * v[1]).sum(axis=1)
    return np.lexsort((k2, k1))


def warn_small_sample(message: str, stacklevel: int = 3) -> None:
    """Emit a :class:`SmallSampleWarning` with ``message``."""
    warnings.warn(message, SmallSampleWarning, stacklevel=stacklevel)
