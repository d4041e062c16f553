"""``Embeddings``: a finished, memory-mapped embedding set with its row metadata.

Three views of one set: pooled vectors (:meth:`Embeddings.get`), patch tokens
(:meth:`Embeddings.tokens`, entries embedded with ``view="tokens"``) and rows grouped
into bags (:meth:`Embeddings.bags`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.backbones.base import POOLS
from vitlab.data.splits import make_splits
from vitlab.errors import ConfigError, DataError
from vitlab.store.bags import Bags, make_bags


@dataclass
class Embeddings:
    """Embeddings of one (backbone, source, layers) set, read back memory-mapped.

    Rows follow the source order, minus any skipped images (listed in ``skipped``).

    Attributes:
        arrays: ``"L{layer}.{pool}"`` → ``[n, C]`` float32 memmap, for pool in ``cls``/``mean``
            (``embed``: ``[n, D]``, last block, image–text models only); in the ``tokens`` view also
            ``"L{layer}.tokens"`` → ``[n, N, C]`` patch tokens (float32 or float16).
        layers: absolute layer indices stored; ``depth`` the backbone's block count.
        index: ``[n]`` source row of each embedding row.
        ids, labels (``[n]`` int64 or ``None``), classes, groups, split_column: row metadata.
        pool: default pooling for :meth:`get` (the one asked for at :func:`vitlab.embed`).
        skipped: ``[{"row", "id", "reason"}]`` for images that could not be embedded.
        stats: throughput / memory of the run that computed them; ``from_cache`` whether
            this call reused them.
        view: ``pooled`` or ``tokens``; for ``tokens``, ``token_dtype``, the patch ``grid``
            ``(h, w)`` (``N = h * w``), ``num_prefix_tokens`` (CLS + registers, stripped from the
            tokens), ``num_register_tokens`` and the model ``input_size`` ``(H, W)``; ``None`` otherwise.

    Example:
        >>> import vitlab
        >>> emb = vitlab.embed("demo:fmnist-vit", "sample:digits?limit=64", progress=False)
        >>> emb.get().shape
        (64, 96)
        >>> tok = vitlab.embed("demo:fmnist-vit", "sample:digits?limit=64", view="tokens", progress=False)
        >>> tok.tokens().shape, tok.grid, tok.num_prefix_tokens
        ((64, 49, 96), (7, 7), 1)
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
    view: str = "pooled"
    token_dtype: str | None = None
    grid: tuple[int, int] | None = None
    num_prefix_tokens: int | None = None
    num_register_tokens: int | None = None
    input_size: tuple[int, int] | None = None

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
            pool: ``cls``, ``mean`` or ``cls+mean``, or ``embed`` (the image–text embedding
                ``[n, D]`` of image–text models, last block only); default :attr:`pool`.

        Example:
            >>> import vitlab
            >>> emb = vitlab.embed("demo:fmnist-vit", "sample:digits?limit=64", progress=False)
            >>> emb.get(-1, "cls+mean").shape
            (64, 192)
        """
        a, pool = self._layer(layer), pool or self.pool
        if pool == "embed":
            return self._embed(a)
        if pool not in POOLS:
            raise ConfigError(f"unknown pooling {pool!r}; choose one of {', '.join(POOLS)}, embed.")
        parts = ("cls", "mean") if pool == "cls+mean" else (pool,)
        missing = [p for p in parts if f"L{a}.{p}" not in self.arrays]
        if missing:
            raise ConfigError(f"pooling {pool!r} is not available: this backbone has no class token. Use pool='mean'.")
        if len(parts) == 1:
            return self.arrays[f"L{a}.{parts[0]}"]
        return np.concatenate([self.arrays[f"L{a}.{p}"] for p in parts], axis=1)

    def _embed(self, a: int) -> np.ndarray:
        name = self.key["backbone"]["name"]
        if not any(k.endswith(".embed") for k in self.arrays):
            raise ConfigError(f"pooling 'embed' is not available: {name} has no image–text head. "
                              "Use pool='cls' or 'mean', or an image–text backbone.")
        if a != self.depth - 1:
            raise ConfigError(f"pooling 'embed' exists only for the last block ({self.depth - 1}) of {name}, "
                              f"not layer {a}; use get(layer=-1, pool='embed').")
        return self.arrays[f"L{a}.embed"]

    def tokens(self, layer: int | None = None) -> np.ndarray:
        """Patch tokens ``[n, N, C]`` of one layer (memory-mapped, ``token_dtype``), prefix tokens
        (CLS, registers) stripped; token ``j`` is grid cell ``divmod(j, grid[1])``.

        Args:
            layer: absolute or negative index; default the last extracted layer.

        Raises:
            ConfigError: these embeddings were stored without tokens (``view="pooled"``).

        Example:
            >>> import vitlab
            >>> emb = vitlab.embed("demo:fmnist-vit", "sample:digits?limit=64", view="tokens", progress=False)
            >>> emb.tokens(-1).reshape(len(emb), *emb.grid, -1).shape
            (64, 7, 7, 96)
        """
        if self.view != "tokens":
            raise ConfigError("these embeddings hold pooled vectors only (view='pooled'); embed with "
                              "view='tokens' (vitlab embed --view tokens) to store patch tokens.")
        return self.arrays[f"L{self._layer(layer)}.tokens"]

    def bags(self, by: str | Sequence[Any] = "group") -> Bags:
        """Rows grouped into bags (e.g. the patches or slices of one patient), a ragged index.

        Args:
            by: ``"group"`` (the source's group column) or one key per row (``len(self)`` of them).

        Raises:
            DataError: the source has no group column, or a row has no key (``None``; the first one is named).
            ConfigError: ``by`` has the wrong length.

        Example:
            >>> import vitlab
            >>> emb = vitlab.embed("demo:fmnist-vit", "sample:digits?limit=64", progress=False)
            >>> bags = emb.bags([i // 16 for i in range(len(emb))])  # 4 bags of 16 consecutive rows
            >>> [X_i.shape for X_i in bags.features(emb.get())][:2]
            [(16, 96), (16, 96)]
        """
        if isinstance(by, str):
            if by != "group":
                raise ConfigError(f"by={by!r}: pass 'group' (the source's group column) or one key per row.")
            if self.groups is None:
                raise DataError("this data source has no group column, so there are no bags by 'group'; give the "
                                "source groups, or pass by=<one key per row>.")
            keys: Sequence[Any] = self.groups
        else:
            keys = list(by)
            if len(keys) != len(self):
                raise ConfigError(f"by has {len(keys)} keys but these embeddings have {len(self)} rows; pass one key "
                                  "per row (in emb.ids order).")
        return make_bags(keys, self.ids)

    @property
    def X(self) -> np.ndarray:
        """Shorthand for ``get()``: last layer, default pooling."""
        return self.get()

    def splits(self, *, seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.0) -> np.ndarray:
        """``[n]`` split names: the source's split column, else seeded, stratified, group-aware."""
        if self.split_column is not None:
            return np.asarray(self.split_column, dtype=str)
        return make_splits(self.labels, self.groups, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction,
                           n=len(self))

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (CLI output, run records)."""
        out = {"digest": self.digest, "path": str(self.path), "n": len(self), "layers": list(self.layers),
               "pool": self.pool, "shape": list(self.get().shape), "from_cache": self.from_cache,
               "skipped": self.skipped, "stats": self.stats, "backbone": self.key["backbone"]["name"],
               "source": self.key["source"], "view": self.view}
        if self.view == "tokens":  # ``shape`` is then the token array's; the default pooling's is ``pooled_shape``
            out.update(pooled_shape=out["shape"], shape=list(self.tokens().shape), token_dtype=self.token_dtype,
                       grid=list(self.grid or ()), num_prefix_tokens=self.num_prefix_tokens,
                       num_register_tokens=self.num_register_tokens, input_size=list(self.input_size or ()))
        return out
