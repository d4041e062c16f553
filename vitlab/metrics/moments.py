"""Mergeable first and second moments (mean, covariance) of feature rows, in float64.

The reference statistics of the Fréchet distance are a mean ``[d]`` and a covariance
``[d, d]``. :class:`Moments` holds them as a mergeable state, so a set can be summarised
chunk by chunk (the store's memory-mapped arrays), shard by shard or process by process,
and the parts combined in any order and any partition: the whole ``[n, d]`` matrix is
never needed in memory.

State per part: the row count ``n``, the mean ``[d]`` and the centred scatter matrix
``M2 = sum_i (x_i - mean)(x_i - mean)^T`` ``[d, d]``, all float64. Two parts merge with
the pairwise update of Chan, Golub & LeVeque (1979), the form torchmetrics-style
parallel reductions use for variances::

    n     = n_a + n_b
    delta = mean_b - mean_a
    mean  = mean_a + delta * n_b / n
    M2    = M2_a + M2_b + outer(delta, delta) * n_a * n_b / n

Why centred scatter and not raw sums ``(n, sum x, sum x x^T)`` (what torchmetrics' FID
keeps): ``cov = (sum x x^T - n mu mu^T) / (n - 1)`` subtracts two large numbers when the
features have a mean far from 0 compared with their spread (typical of ViT/Inception
features), losing up to ``log10(|mu|^2 / var)`` digits; the centred form keeps the
one-pass (two-pass-per-chunk) accuracy and still merges exactly (``test_moments.py``
checks agreement with ``np.cov`` to 1e-10 over several partitions and merge orders,
and shows the raw-sum form failing on an offset set). The per-chunk part is the
two-pass formula (``mean`` first, then ``(x - mean)^T (x - mean)``), the same as
:func:`vitlab.metrics.fd.gaussian_stats`.

No library offers a mergeable float64 covariance for NumPy arrays (torchmetrics keeps
raw sums inside its FID metric, tied to torch and its Inception), so this is written here.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((100, 3))
    >>> m = Moments.of(x[:30]).merge(Moments.of(x[30:]))
    >>> np.allclose(m.covariance(), np.cov(x, rowvar=False)), m.n
    (True, 100)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from vitlab.errors import DataError

#: Rows per chunk when summarising a memory-mapped array: 8,192 x 768 float64 = 50 MB of working memory.
DEFAULT_CHUNK_ROWS = 8192


@dataclass(frozen=True, eq=False)
class Moments:
    """Mergeable float64 moments of a set of ``d``-dimensional rows.

    Attributes:
        n: number of rows summarised.
        mean: ``[d]`` float64 mean of the rows.
        m2: ``[d, d]`` float64 centred scatter ``sum_i (x_i - mean)(x_i - mean)^T``.

    Example:
        >>> Moments.of(np.eye(3)).n, Moments.empty(3).n
        (3, 0)
    """

    n: int
    mean: np.ndarray
    m2: np.ndarray

    def __post_init__(self) -> None:
        d = self.mean.shape[0] if self.mean.ndim == 1 else -1
        if self.n < 0 or self.mean.ndim != 1 or self.m2.shape != (d, d):
            raise DataError(f"inconsistent moments: n={self.n}, mean {self.mean.shape}, m2 {self.m2.shape}; "
                            "build them with Moments.of(x) or Moments.empty(d).")

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def empty(cls, dim: int) -> Moments:
        """The moments of no rows (the identity of :meth:`merge`)."""
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def of(cls, x: np.ndarray, *, first_row: int = 0) -> Moments:
        """Moments of one in-memory block of rows ``[m, d]`` (two-pass: mean, then centred scatter).

        Args:
            x: ``[m, d]`` real array (any float dtype; a float32 memmap slice is fine), converted
                to float64 for this block only; NaN or inf is refused.
            first_row: row number of ``x[0]`` in the whole set (for the error message).

        Raises:
            DataError: not 2-D, or NaN/inf in the block.
        """
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2:
            raise DataError(f"moments need a [n, d] array, got shape {a.shape}.")
        if not np.isfinite(a).all():
            bad = first_row + int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
            raise DataError(f"features contain NaN or inf (first in row {bad}); fix the features "
                            "(or the images that produced them) before computing statistics.")
        m, d = a.shape
        if m == 0:
            return cls.empty(d)
        mean = a.mean(axis=0)
        xc = a - mean
        return cls(m, mean, xc.T @ xc)

    def merge(self, other: Moments) -> Moments:
        """Combine two disjoint parts (Chan et al.'s pairwise update; see the module docstring).

        Raises:
            DataError: the parts have different dimensions.
        """
        if other.dim != self.dim:
            raise DataError(f"cannot merge moments of {self.dim}-d and {other.dim}-d features; both parts must come "
                            "from the same encoder and layer.")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, m2)

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """``[d, d]`` covariance ``M2 / (n - ddof)``, symmetrised (``ddof=1`` as ``np.cov``).

        Raises:
            DataError: ``n <= ddof`` (a covariance needs at least ``ddof + 1`` rows).
        """
        if self.n <= ddof:
            raise DataError(f"features have only {self.n} row(s): a covariance needs at least {ddof + 1} samples "
                            f"(and more than d = {self.dim} for a full-rank one).")
        s = self.m2 / (self.n - ddof)
        return 0.5 * (s + s.T)

    def gaussian(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mu [d], sigma [d, d])``, the inputs of :func:`vitlab.metrics.fd.frechet_distance_from_stats`."""
        return self.mean.copy(), self.covariance()


def merge_all(parts: Iterable[Moments]) -> Moments:
    """Merge any number of parts, left to right (any order gives the same result to rounding).

    Raises:
        DataError: no parts, or parts of different dimensions.

    Example:
        >>> x = np.arange(12.0).reshape(6, 2)
        >>> merge_all(Moments.of(x[i:i + 2]) for i in (0, 2, 4)).mean
        array([5., 6.])
    """
    out: Moments | None = None
    for p in parts:
        out = p if out is None else out.merge(p)
    if out is None:
        raise DataError("no parts to merge: there are no feature rows.")
    return out


def chunked_moments(x: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Moments:
    """Moments of ``x`` ``[n, d]`` read ``chunk_rows`` rows at a time (a memmap stays on disk).

    Working memory is ``O(chunk_rows * d + d^2)`` float64, whatever ``n``.

    Args:
        x: ``[n, d]`` array or memmap (float32 from the store).
        chunk_rows: rows per block, ``>= 1``.

    Raises:
        DataError: not 2-D, ``chunk_rows < 1``, or NaN/inf (the first bad row is named).

    Example:
        >>> x = np.random.default_rng(1).standard_normal((1000, 4))
        >>> np.allclose(chunked_moments(x, 97).covariance(), np.cov(x, rowvar=False), rtol=0, atol=1e-12)
        True
    """
    if chunk_rows < 1:
        raise DataError(f"chunk_rows must be >= 1, got {chunk_rows}.")
    if np.ndim(x) != 2:
        raise DataError(f"moments need a [n, d] array, got shape {np.shape(x)}.")
    n, d = x.shape
    out = Moments.empty(d)
    for s in range(0, n, chunk_rows):
        out = out.merge(Moments.of(x[s:s + chunk_rows], first_row=s))
    return out
