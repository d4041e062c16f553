"""The one ``Backbone`` contract every model source is turned into.

(Over 400 lines by design: the contract itself, its token outputs and pooling; the weights identity is in
:mod:`vitlab.backbones.identity`, token helpers in :mod:`vitlab.backbones.tokens`.)

A backbone gives, from one forward pass, the tokens of any set of layers
(final norm applied, as DINOv2's ``get_intermediate_layers(norm=True)``),
knows its prefix tokens (CLS + registers) and patch grid, and pools tokens
into ``cls`` / ``mean`` / ``cls+mean`` embeddings.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from vitlab.backbones.identity import (carry_over, hash_state_dict, pinned_or_tracked,  # noqa: F401
                                       weights_signature)
from vitlab.backbones.preprocessing import Preprocessing
from vitlab.errors import BackboneError, ConfigError

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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneSpec:
        """Inverse of :meth:`to_dict`.

        Example:
            >>> s = BackboneSpec("x", 8, 2, (4, 4), 1, 0, True, Preprocessing(input_size=(8, 8)), False)
            >>> BackboneSpec.from_dict(s.to_dict()) == s
            True
        """
        d = dict(d)
        prep = d.pop("preprocessing")
        if isinstance(prep.get("input_size"), list):
            prep = {**prep, "input_size": tuple(prep["input_size"])}
        return cls(**{**d, "patch_size": tuple(d["patch_size"]), "preprocessing": Preprocessing.from_dict(prep)})


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


class Backbone(ABC):
    """A frozen ViT feature extractor with one contract for every model source.

    Subclasses implement :meth:`_forward_layers`. Build one with
    :func:`vitlab.load_backbone`, not directly.

    Example:
        >>> import vitlab
        >>> bb = vitlab.load_backbone("demo:fmnist-vit")
        >>> out = bb.forward_tokens(torch.randn(2, 3, 28, 28), layers=[-1, -4])
        >>> out.pooled(5, "cls+mean").shape
        torch.Size([2, 192])
    """

    def __init__(self, model: nn.Module, spec: BackboneSpec, *, accel: dict[str, Any] | None = None) -> None:
        self.__dict__["_factory"] = None
        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.accel = accel

    @classmethod
    def deferred(cls, factory: Callable[[], nn.Module], spec: BackboneSpec, weights_id: str,
                 device: str | torch.device = "cpu") -> Backbone:
        """A backbone whose model is built by ``factory()`` on first use of :attr:`model`.

        For loaders that know the spec and a sound weights id without building the model (a local
        checkpoint identified by its content hash): a cache hit then never builds it. The id is
        pinned; if the model, once built, is changed in place, the id changes with it.

        Example:
            >>> import vitlab
            >>> from vitlab.backbones.timm import TimmBackbone
            >>> demo = vitlab.load_backbone("demo:fmnist-vit")
            >>> bb = TimmBackbone.deferred(lambda: demo.model, demo.spec, "ab12")
            >>> bb.model_loaded, bb.weights_id
            (False, 'ab12')
        """
        bb = cls.__new__(cls)
        bb.__dict__.update(_model=None, _factory=factory, _device=torch.device(device), spec=spec, accel=None)
        bb.weights_id = weights_id
        return bb

    @property
    def model(self) -> nn.Module:
        """The ``nn.Module`` (built now if this backbone was :meth:`deferred`)."""
        d = self.__dict__
        if d.get("_model") is None and d.get("_factory") is not None:
            # first use may come inside torch.inference_mode (a forward pass): build normal tensors anyway
            with torch.inference_mode(False), torch.no_grad():
                m = d["_factory"]().eval().requires_grad_(False).to(d.get("_device", "cpu"))
                d["_model"], d["_factory"] = m, None
                if d.get("weights_id") is not None:  # the pin holds for the weights as built
                    d["_weights_pin"] = (d["weights_id"], id(m), weights_signature(m))
        return d["_model"]

    @model.setter
    def model(self, m: nn.Module) -> None:
        self.__dict__["_model"] = m
        self.__dict__["_factory"] = None

    @property
    def model_loaded(self) -> bool:
        """Whether the model has been built (always, unless the backbone was :meth:`deferred`)."""
        return self.__dict__.get("_model") is not None

    # -- identity ---------------------------------------------------------------
    @property
    def weights_id(self) -> str:
        """Hash of the weights (:func:`hash_state_dict`): follows the model, even when changed in place.

        The hash is cached with a :func:`weights_signature` of ``self.model`` and recomputed when
        the signature differs, so ``p.data.add_()``, ``with torch.no_grad(): p.add_(1)``,
        ``load_state_dict`` and ``p.data = t`` all give a new id (and a new cache key) while an
        unchanged model costs only the signature. Accelerators pin the id of the source weights
        (``bb.weights_id = source_id``, or ``bb.__dict__["weights_id"]``); a pinned id holds
        while the model it was pinned on is unchanged, and becomes a hash of (pin, new weights)
        if that model is then changed in place.

        Example:
            >>> import vitlab
            >>> bb = vitlab.load_backbone("demo:fmnist-vit")
            >>> before = bb.weights_id
            >>> _ = next(bb.model.parameters()).data.mul_(2)
            >>> bb.weights_id != before
            True
        """
        return pinned_or_tracked(self.__dict__, self.model if self.model_loaded else None)

    @weights_id.setter
    def weights_id(self, value: str) -> None:
        """Pin the id (accelerators: a derived model keeps the id of the weights it came from)."""
        self.__dict__["weights_id"] = value
        self.__dict__.pop("_weights_pin", None)

    @contextmanager
    def same_weights(self):
        """Context for a value-preserving change of the model (device move, memory format):
        the cached :attr:`weights_id` is carried over instead of re-hashed afterwards.

        Example:
            >>> import vitlab
            >>> bb = vitlab.load_backbone("demo:fmnist-vit")
            >>> before = bb.weights_id
            >>> with bb.same_weights():
            ...     _ = bb.model.to(memory_format=torch.channels_last)
            >>> bb.weights_id == before
            True
        """
        d = self.__dict__
        self.model  # a deferred model is built now: its pin must be in place to be carried over the change
        if "_weights_cache" not in d and "_weights_pin" not in d:
            yield
            return
        before = weights_signature(self.model)
        yield
        carry_over(d, self.model, before, weights_signature(self.model))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def device(self) -> torch.device:
        if not self.model_loaded:
            return torch.device(self.__dict__.get("_device", "cpu"))
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def fingerprint(self) -> dict[str, Any]:
        """Everything about the backbone that changes its embeddings."""
        return {"name": self.spec.name, "weights_id": self.weights_id, "depth": self.spec.depth,
                "preprocessing": self.spec.preprocessing.to_dict(), "accel": self.accel}

    def to(self, device: str | torch.device) -> Backbone:
        """Move the model to ``device`` (in place on this backbone's own model) and return self."""
        if not self.model_loaded:
            self.__dict__["_device"] = torch.device(device)
            return self
        with self.same_weights():
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

    def block_ops(self) -> tuple[Any, str | None]:
        """The per-block adapter of this backbone's model (:mod:`vitlab.backbones.blocks`), or ``(None, reason)``.

        Accelerators and inspection run blocks piece by piece through it. Subclasses whose model
        the structural default cannot read (or that carry their own adapter) override this.

        Example:
            >>> import vitlab
            >>> ops, why = vitlab.load_backbone("demo:fmnist-vit").block_ops()
            >>> ops.kind, why
            ('timm', None)
        """
        from vitlab.backbones.blocks import ops_for

        return ops_for(self)

    def token_layout(self, input_hw: tuple[int, int] | None = None) -> Any:
        """Where CLS, registers and the patch grid sit for inputs of ``input_hw = (H, W)`` (default: the
        preprocessing size): a :class:`~vitlab.backbones.blocks.TokenLayout`.

        Example:
            >>> import vitlab
            >>> vitlab.load_backbone("demo:fmnist-vit").token_layout((28, 56)).grid
            (7, 14)
        """
        from vitlab.backbones.blocks import token_layout

        return token_layout(self.spec, input_hw)

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

    # -- pooling and the optional image–text head --------------------------------
    @property
    def stored_pools(self) -> tuple[str, ...]:
        """Poolings the embedding store keeps for every layer: ``cls`` (with a class token) and ``mean``,
        plus ``embed`` (the joint image–text space, last layer only) when the backbone has a text tower.

        Example:
            >>> import vitlab
            >>> vitlab.load_backbone("demo:fmnist-vit").stored_pools
            ('cls', 'mean')
        """
        pools = ("cls", "mean") if self.spec.has_cls_token else ("mean",)
        return pools + (("embed",) if self.has_text else ())

    def pool(self, out: TokenOutput, layer: int, mode: str) -> torch.Tensor:
        """Pool the tokens of ``layer``: ``cls``, ``mean``, ``cls+mean`` (:func:`pool_tokens`), or
        ``embed``: the model's own image embedding in the joint image–text space ``[B, D]``
        (:meth:`embed_image`; last layer only).
        """
        if mode == "embed":
            if layer != self.spec.depth - 1:
                raise ConfigError(f"pooling 'embed' (the image–text embedding) exists only for the last block "
                                  f"({self.spec.depth - 1}) of {self.spec.name}, not layer {layer}.")
            return self.embed_image(out)
        return out.pooled(layer, mode)

    @property
    def has_text(self) -> bool:
        """Whether this backbone has a text tower (CLIP, SigLIP...): :meth:`encode_text` and
        :meth:`embed_image` work, and the ``zeroshot`` protocol can use it."""
        return False

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``[n, D]`` in the joint image–text space (not normalised).

        Raises:
            BackboneError: the backbone has no text tower.
        """
        raise BackboneError(f"{self.spec.name} has no text tower: zero-shot classification needs an image–text "
                            "model, e.g. open_clip:ViT-B-32/laion2b_s34b_b79k or hf:openai/clip-vit-base-patch32.")

    def embed_image(self, out: TokenOutput) -> torch.Tensor:
        """Image embeddings ``[B, D]`` in the joint image–text space, from the last layer's tokens
        (CLIP: final norm of the class token, then the projection; SigLIP: its attention-pool head).

        Raises:
            BackboneError: the backbone has no text tower.
        """
        raise BackboneError(f"{self.spec.name} has no image–text head, so it has no 'embed' pooling. "
                            "Use cls or mean, or an image–text model.")

    def __repr__(self) -> str:
        s = self.spec
        return (f"{type(self).__name__}({s.name!r}, dim={s.embed_dim}, depth={s.depth}, "
                f"patch={s.patch_size}, prefix={s.num_prefix_tokens}, pretrained={s.pretrained})")
