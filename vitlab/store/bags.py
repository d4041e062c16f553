"""``Bags``: a ragged index of rows grouped by a bag id (multiple-instance learning, patients, slides).

Pure bookkeeping, no copies of the features: ``order`` lists the row indices bag by
bag, ``offsets`` marks where each bag starts (CSR layout), so bag ``i`` is
``order[offsets[i]:offsets[i + 1]]``.

Example:
    >>> bags = make_bags(["p1", "p2", "p1", "p3", "p2"])
    >>> bags.ids, bags.sizes.tolist(), bags.bag(0).tolist()
    (['p1', 'p2', 'p3'], [2, 2, 1], [0, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError


@dataclass(frozen=True)
class Bags:
    """Rows grouped into bags.

    Attributes:
        ids: bag ids (``str`` of the keys), in order of first appearance.
        offsets: ``[n_bags + 1]`` int64; bag ``i`` holds ``order[offsets[i]:offsets[i + 1]]``.
        order: ``[n_rows]`` int64 row indices grouped by bag (ascending within a bag).

    Example:
        >>> bags = make_bags([7, 7, 3])
        >>> len(bags), bags.ids, bags.offsets.tolist(), bags.order.tolist()
        (2, ['7', '3'], [0, 2, 3], [0, 1, 2])
    """

    ids: list[str]
    offsets: np.ndarray
    order: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sizes(self) -> np.ndarray:
        """``[n_bags]`` rows per bag."""
        return np.diff(self.offsets)

    @property
    def n_rows(self) -> int:
        return len(self.order)

    def bag(self, i: int) -> np.ndarray:
        """Row indices of bag ``i`` (negative counts from the end).

        Example:
            >>> make_bags(["a", "b", "a"]).bag(-1).tolist()
            [1]
        """
        n = len(self)
        if not -n <= i < n:
            raise ConfigError(f"bag {i} is out of range; there are {n} bags (0..{n - 1}).")
        i %= n
        return self.order[self.offsets[i]:self.offsets[i + 1]]

    def features(self, X: np.ndarray) -> list[np.ndarray]:
        """One ``[n_i, ...]`` array per bag from the per-row array ``X`` (``[n_rows, ...]``).

        The bags are slices (views) of ``X`` itself when its rows are already grouped by bag
        (a memmap stays a memmap), else of one reordered copy ``X[order]``.

        Example:
            >>> X = np.arange(6.0).reshape(3, 2)
            >>> [x.tolist() for x in make_bags(["a", "b", "a"]).features(X)]
            [[[0.0, 1.0], [4.0, 5.0]], [[2.0, 3.0]]]
        """
        if len(X) != self.n_rows:
            raise ConfigError(f"X has {len(X)} rows but the bags index {self.n_rows}; pass the array of the same "
                              "embeddings (emb.get(), emb.tokens()).")
        grouped = X if np.array_equal(self.order, np.arange(self.n_rows)) else X[self.order]
        return [grouped[a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]


def make_bags(keys: Sequence[Any], ids: Sequence[str] | None = None) -> Bags:
    """Group rows by key: bags in order of first appearance, rows in order within each bag.

    Args:
        keys: one bag key per row (any hashable; bag ids are ``str(key)``).
        ids: row ids, used only to name a row without a key in the error.

    Raises:
        DataError: a key is ``None`` or NaN (the first such row is named).

    Example:
        >>> b = make_bags(["s2", "s1", "s2", "s2"])
        >>> b.ids, b.offsets.tolist(), b.order.tolist()
        (['s2', 's1'], [0, 3, 4], [0, 2, 3, 1])
        >>> make_bags(["s1", None], ids=["a.png", "b.png"])
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: row 'b.png' (row 1) has no bag key (None); give every row a group, or pass by=<one key per row> without None.
    """
    codes = np.empty(len(keys), np.int64)
    first: dict[str, int] = {}
    for i, k in enumerate(keys):
        if k is None or (isinstance(k, float) and k != k):  # None, or NaN (an empty cell of a table)
            name = f"{ids[i]!r} (row {i})" if ids is not None else str(i)
            raise DataError(f"row {name} has no bag key ({k}); give every row a group, or pass "
                            "by=<one key per row> without None.")
        codes[i] = first.setdefault(str(k), len(first))
    order = np.argsort(codes, kind="stable").astype(np.int64)
    offsets = np.zeros(len(first) + 1, np.int64)
    np.cumsum(np.bincount(codes, minlength=len(first)), out=offsets[1:])
    return Bags(ids=list(first), offsets=offsets, order=order)
