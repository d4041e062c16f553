"""``Embeddings``: a finished, memory-mapped embedding set with its row metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.backbones.base import POOLS
from vitlab.data.splits import make_splits
from vitlab.errors import ConfigError


@dataclass
class Embeddings:
    """Pooled embeddings of one (backbone, source, layers) set, read back memory-mapped.

    Rows follow the source order, minus any skipped images (listed in ``skipped``).

    Attributes:
        arrays: ``"L{layer}.{pool}"`` → ``[n, C]`` float32 memmap, for pool in ``cls``/``mean``.
        layers: absolute layer indices stored; ``depth`` the backbone's block count.
        index: ``[n]`` source row of each embedding row.
        ids, labels (``[n]`` int64 or ``None``), classes, groups, split_column: row metadata.
        pool: default pooling for :meth:`get` (the one asked for at :func:`vitlab.embed`).
        skipped: ``[{"row", "id", "reason"}]`` for images that could not be embedded.
        stats: throughput / memory of the run that computed them; ``from_cache`` whether
            this call reused them.

    Example:
        >>> emb = vitlab.embed("demo:fmnist-vit", "sample:fashion-mnist", progress=False)  # doctest: +SKIP
        >>> emb.get().shape  # doctest: +SKIP
        (2000, 96)
    """

    digest: str
    path: Path
    key: dict[str, Any]
    layers: tuple[int, ...]
    depth: int
    arrays: dict[str, np.ndarray]
    index: np.ndarray
    ids: list[str]
    labels: np.ndarray | None
    classes: list[str]
    groups: list[str] | None = None
    split_column: list[str] | None = None
    pool: str = "cls"
    skipped: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def _layer(self, layer: int | None) -> int:
        if layer is None:
            return self.layers[-1]
        a = layer + self.depth if layer < 0 else layer
        if a not in self.layers:
            raise ConfigError(f"layer {layer} was not extracted; these embeddings hold layers "
                              f"{list(self.layers)} (of {self.depth}). Re-run embed with --layers including {layer}.")
        return a

    def get(self, layer: int | None = None, pool: str | None = None) -> np.ndarray:
        """Embeddings ``[n, C]`` (``[n, 2C]`` for ``cls+mean``) of one layer and pooling.

        Args:
            layer: absolute or negative index; default the last extracted layer.
            pool: ``cls``, ``mean`` or ``cls+mean``; default :attr:`pool`.
        """
        a, pool = self._layer(layer), pool or self.pool
        if pool not in POOLS:
            raise ConfigError(f"unknown pooling {pool!r}; choose one of {', '.join(POOLS)}.")
        parts = ("cls", "mean") if pool == "cls+mean" else (pool,)
        missing = [p for p in parts if f"L{a}.{p}" not in self.arrays]
        if missing:
            raise ConfigError(f"pooling {pool!r} is not available: this backbone has no class token. Use pool='mean'.")
        if len(parts) == 1:
            return self.arrays[f"L{a}.{parts[0]}"]
        return np.concatenate([self.arrays[f"L{a}.{p}"] for p in parts], axis=1)

    @property
    def X(self) -> np.ndarray:
        """Shorthand for ``get()``: last layer, default pooling."""
        return self.get()

    def splits(self, *, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.0) -> np.ndarray:
        """``[n]`` split names: the source's split column, else seeded, stratified, group-aware."""
        if self.split_column is not None:
            return np.asarray(self.split_column, dtype=str)
        return make_splits(self.labels, self.groups, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (CLI output, run records)."""
        return {"digest": self.digest, "path": str(self.path), "n": len(self), "layers": list(self.layers),
                "pool": self.pool, "shape": list(self.get().shape), "from_cache": self.from_cache,
                "skipped": self.skipped, "stats": self.stats, "backbone": self.key["backbone"]["name"],
                "source": self.key["source"]}
