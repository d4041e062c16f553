"""The options of one embedding request, as a frozen object validated when it is built.

Everything that can be checked without loading the backbone or the data is checked here, so a
bad option fails before any model download or image read.

Example:
    >>> EmbedOptions(layers=(-1, -4), pool="cls+mean").layers
    (-1, -4)
    >>> EmbedOptions(view="tokens", token_dtype="float16").token_dtype
    'float16'
    >>> EmbedOptions(batch_size=0)
    Traceback (most recent call last):
    ...
    vitlab.errors.ConfigError: batch_size and shard_size must be >= 1, got 0 and None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vitlab.backbones.base import Backbone, check_pool
from vitlab.backbones.preprocessing import DECODERS
from vitlab.errors import ConfigError
from vitlab.store.extract import ON_ERROR
from vitlab.store.fingerprint import PRECISIONS, TOKEN_DTYPES, VIEWS
from vitlab.store.ray_engine import check_engine

__all__ = ["EmbedOptions", "check_view", "check_embed"]


@dataclass(frozen=True)
class EmbedOptions:
    """How to compute (or find) one embedding set; see :meth:`~vitlab.store.EmbeddingStore.get_or_compute`
    for each field. ``layers`` is kept as a tuple (or one int); ``precision=None`` means the device's
    default (bf16 on CUDA, fp32 elsewhere). ``on_batch`` is a test hook, not part of the identity."""

    layers: tuple[int, ...] | int = -1
    pool: str = "cls"
    batch_size: int = 64
    num_workers: int | None = None
    device: str | None = None
    precision: str | None = None
    on_error: str = "raise"
    progress: bool | None = None
    shard_size: int | None = None
    verify: bool = False
    pretrained: bool = True
    view: str = "pooled"
    token_dtype: str = "float32"
    engine: str = "local"
    ray_address: str | None = None
    ray_options: dict[str, Any] | None = None
    decoder: str | None = None
    on_batch: Callable[[int], None] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.layers, Sequence) and not isinstance(self.layers, str):
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        check_engine(self.engine, self.ray_address, self.ray_options)
        if self.decoder is not None and self.decoder not in DECODERS:
            raise ConfigError(f"unknown decoder {self.decoder!r}; choose one of {', '.join(DECODERS)}.")
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}.")
        if self.pool != "embed":
            check_pool(self.pool)
        check_view(self.view, self.token_dtype)
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}.")
        if self.batch_size < 1 or (self.shard_size is not None and self.shard_size < 1):
            raise ConfigError(f"batch_size and shard_size must be >= 1, got {self.batch_size} and {self.shard_size}.")

    @property
    def ray(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~vitlab.store.ray_engine.extract_ray` beyond the data."""
        return {"address": self.ray_address, **(self.ray_options or {})}


def check_view(view: str, token_dtype: str) -> None:
    """Validate a view and its token storage dtype.

    Example:
        >>> check_view("pooled", "float16")
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: token_dtype='float16' applies only to view='tokens'; pass view='tokens' (--view tokens) or drop it.
    """
    if view not in VIEWS:
        raise ConfigError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}.")
    if token_dtype not in TOKEN_DTYPES:
        raise ConfigError(f"unknown token_dtype {token_dtype!r}; choose one of {', '.join(TOKEN_DTYPES)}.")
    if view != "tokens" and token_dtype != "float32":
        raise ConfigError(f"token_dtype={token_dtype!r} applies only to view='tokens'; pass view='tokens' "
                          "(--view tokens) or drop it.")


def check_embed(backbone: Backbone, layers: Sequence[int] | int) -> None:
    """``pool="embed"`` needs an image–text model and the last block among ``layers``."""
    if "embed" not in backbone.stored_pools:
        raise ConfigError(f"pooling 'embed' needs an image–text model and {backbone.name} has no text tower. "
                          "Use pool='cls' or 'mean'.")
    last = backbone.spec.depth - 1
    if last not in backbone.resolve_layers(layers):
        raise ConfigError(f"pooling 'embed' exists only for the last block ({last}) of {backbone.name}; "
                          "include layer -1 in layers.")
