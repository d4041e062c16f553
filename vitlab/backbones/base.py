"""The one ``Backbone`` contract every model source is turned into.

A backbone gives, from one forward pass, the tokens of any set of layers
(final norm applied, as DINOv2's ``get_intermediate_layers(norm=True)``),
knows its prefix tokens (CLS + registers) and patch grid, and pools tokens
into ``cls`` / ``mean`` / ``cls+mean`` embeddings.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from vitlab.backbones.preprocessing import Preprocessing
from vitlab.errors import ConfigError

POOLS = ("cls", "mean", "cls+mean")


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is: its name, shape facts and preprocessing.

    Args:
        name: canonical prefixed name, e.g. ``"timm:vit_small_patch14_dinov2.lvd142m"``.
        embed_dim: token width ``C``.
        depth: number of transformer blocks (valid layer indices are ``0..depth-1``).
        patch_size: ``(ph, pw)`` in pixels.
        num_prefix_tokens: tokens before the patch tokens (CLS + registers + distillation).
        num_register_tokens: register tokens among the prefix tokens.
        has_cls_token: whether token 0 is a class token.
        preprocessing: the transform the weights expect.
        pretrained: whether pretrained weights were loaded.
        num_heads: attention heads, when known.
    """

    name: str
    embed_dim: int
    depth: int
    patch_size: tuple[int, int]
    num_prefix_tokens: int
    num_register_tokens: int
    has_cls_token: bool
    preprocessing: Preprocessing
    pretrained: bool
    num_heads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid ``(h, w)`` at the preprocessing's input size."""
        (h, w), (ph, pw) = self.preprocessing.input_size, self.patch_size
        return h // ph, w // pw

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocessing"] = self.preprocessing.to_dict()
        d["patch_size"] = list(self.patch_size)
        return d


@dataclass
class TokenOutput:
    """Tokens of several layers from one forward pass.

    Attributes:
        tokens: absolute layer index → ``[B, P + N, C]`` (P prefix tokens, N = h*w patches).
        num_prefix_tokens: P.
        grid: patch grid ``(h, w)``.
        has_cls_token: whether token 0 is CLS.
    """

    tokens: dict[int, torch.Tensor]
    num_prefix_tokens: int
    grid: tuple[int, int]
    has_cls_token: bool

    def patch_tokens(self, layer: int) -> torch.Tensor:
        """Patch tokens ``[B, N, C]`` of ``layer`` (prefix tokens removed)."""
        return self.tokens[layer][:, self.num_prefix_tokens:]

    def patch_map(self, layer: int) -> torch.Tensor:
        """Patch tokens as a feature map ``[B, C, h, w]``."""
        t = self.patch_tokens(layer)
        return t.transpose(1, 2).reshape(t.shape[0], t.shape[2], *self.grid)

    def pooled(self, layer: int, mode: str) -> torch.Tensor:
        """Pooled embedding of ``layer``; see :func:`pool_tokens`."""
        return pool_tokens(self.tokens[layer], mode, self.num_prefix_tokens, self.has_cls_token)


def check_pool(mode: str, has_cls_token: bool = True) -> None:
    """Raise a clear error unless ``mode`` is a pooling this backbone can do.

    Example:
        >>> check_pool("mean", has_cls_token=False)
    """
    if mode not in POOLS:
        raise ConfigError(f"unknown pooling {mode!r}; choose one of {', '.join(POOLS)}.")
    if mode in ("cls", "cls+mean") and not has_cls_token:
        raise ConfigError(f"pooling {mode!r} needs a class token, and this backbone has none. Use --pool mean.")


def pool_tokens(tokens: torch.Tensor, mode: str, num_prefix_tokens: int, has_cls_token: bool) -> torch.Tensor:
    """Pool ``[B, P + N, C]`` tokens into an embedding.

    ``cls`` → token 0 ``[B, C]``; ``mean`` → mean of the N patch tokens, excluding
    CLS and register tokens ``[B, C]``; ``cls+mean`` → both concatenated ``[B, 2C]``
    (DINOv2's linear-evaluation features).

    Example:
        >>> t = torch.arange(12.0).reshape(1, 3, 4)  # 1 prefix + 2 patches, C=4
        >>> pool_tokens(t, "mean", 1, True).tolist()
        [[6.0, 7.0, 8.0, 9.0]]
    """
    check_pool(mode, has_cls_token)
    if mode == "cls":
        return tokens[:, 0]
    mean = tokens[:, num_prefix_tokens:].mean(dim=1)
    return mean if mode == "mean" else torch.cat([tokens[:, 0], mean], dim=1)


def hash_state_dict(module: nn.Module) -> str:
    """Stable content hash of a module's parameters and buffers (names, dtypes, shapes, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Backbone(ABC):
    """A frozen ViT feature extractor with one contract for every model source.

    Subclasses implement :meth:`_forward_layers`. Build one with
    :func:`vitlab.load_backbone`, not directly.

    Example:
        >>> bb = vitlab.load_backbone("demo:fmnist-vit")  # doctest: +SKIP
        >>> out = bb.forward_tokens(torch.randn(2, 3, 28, 28), layers=[-1, -4])  # doctest: +SKIP
        >>> out.pooled(5, "cls+mean").shape  # doctest: +SKIP
        torch.Size([2, 192])
    """

    def __init__(self, model: nn.Module, spec: BackboneSpec, *, accel: dict[str, Any] | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.accel = accel

    # -- identity ---------------------------------------------------------------
    @cached_property
    def weights_id(self) -> str:
        """Hash of the weights: changes whenever any parameter or buffer changes."""
        return hash_state_dict(self.model)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def fingerprint(self) -> dict[str, Any]:
        """Everything about the backbone that changes its embeddings."""
        return {"name": self.spec.name, "weights_id": self.weights_id, "depth": self.spec.depth,
                "preprocessing": self.spec.preprocessing.to_dict(), "accel": self.accel}

    def to(self, device: str | torch.device) -> Backbone:
        """Move the model to ``device`` (in place on this backbone's own model) and return self."""
        self.model.to(device)
        return self

    # -- forward ----------------------------------------------------------------
    def resolve_layers(self, layers: int | Sequence[int]) -> tuple[int, ...]:
        """Map layer indices (negative counts from the end) to sorted unique absolute indices."""
        if isinstance(layers, int):
            layers = [layers]
        depth = self.spec.depth
        out = []
        for layer in layers:
            a = layer + depth if layer < 0 else layer
            if not 0 <= a < depth:
                raise ConfigError(
                    f"layer {layer} is out of range for {self.spec.name}, which has {depth} blocks; "
                    f"use -{depth}..{depth - 1} (e.g. -1 for the last block).")
            out.append(a)
        if not out:
            raise ConfigError("no layers requested; pass at least one, e.g. layers=[-1].")
        return tuple(sorted(set(out)))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error unless ``x`` is ``[B, 3, H, W]`` with H, W multiples of the patch size."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(f"expected images as a float tensor [B, 3, H, W], got {shape}.")
        (ph, pw), (h, w) = self.spec.patch_size, x.shape[-2:]
        if h < ph or w < pw:
            raise ConfigError(f"input {h}x{w} is smaller than one {ph}x{pw} patch of {self.spec.name}.")

    @abstractmethod
    def _forward_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Tokens ``[B, P + N, C]`` for each absolute layer index, final norm applied, one pass."""

    def forward_tokens(self, x: torch.Tensor, layers: int | Sequence[int] = -1) -> TokenOutput:
        """Run one forward pass and return the tokens of ``layers``.

        Args:
            x: preprocessed images ``[B, 3, H, W]``.
            layers: block indices, negative from the end (``-1`` = last block).

        Returns:
            :class:`TokenOutput` keyed by absolute layer index.
        """
        self.check_input(x)
        idx = self.resolve_layers(layers)
        outs = self._forward_layers(x, idx)
        (ph, pw) = self.spec.patch_size
        grid = (x.shape[-2] // ph, x.shape[-1] // pw)
        return TokenOutput(dict(zip(idx, outs)), self.spec.num_prefix_tokens, grid, self.spec.has_cls_token)

    def __repr__(self) -> str:
        s = self.spec
        return (f"{type(self).__name__}({s.name!r}, dim={s.embed_dim}, depth={s.depth}, "
                f"patch={s.patch_size}, prefix={s.num_prefix_tokens}, pretrained={s.pretrained})")
