"""``open_clip:<arch>/<tag>`` backbones: the visual tower of an OpenCLIP model, and its text tower.

``bb.model`` is the image tower (what ``weights_id`` hashes, and what accelerators copy); the
rest of the CLIP model (token embedding, text transformer, final norm, text projection, logit
scale) is ``bb.text_model``, hashed separately as ``bb.text_weights_id``. The image tower keeps
its own projection (``proj``, or the timm tower's head), so the joint-space ``embed`` pooling is
covered by ``weights_id``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from vitlab.backbones._seed import seeded
from vitlab.backbones.base import Backbone, BackboneSpec, TokenOutput
from vitlab.backbones.identity import carry_over, tracked_hash, weights_signature
from vitlab.backbones.preprocessing import Preprocessing
from vitlab.backbones.timm import TimmBackbone, spec_from_timm
from vitlab.errors import BackboneError, ConfigError, UnknownNameError

_RESIZE = {"shortest": "shorter", "squash": "stretch"}
TEXT_BATCH = 256  # prompts per text-tower forward in encode_text


class TextTowerMixin:
    """A text tower held beside the image tower, for backbones such as CLIP and SigLIP.

    Set up with :meth:`_init_text`; subclasses implement :meth:`_encode_text_batch` (tokenise and
    encode a list of strings) and :meth:`_embed_last` (last-layer tokens → joint-space image
    embedding). ``text_model`` is moved by :meth:`to` with the image tower and hashed by
    :attr:`text_weights_id`. ``text_unavailable`` (a sentence) turns the tower off while keeping
    the reason for the error message.

    Example:
        >>> import vitlab
        >>> bb = vitlab.load_backbone("open_clip:ViT-S-32", pretrained=False)  # random weights: offline
        >>> bb.has_text, bb.encode_text(["a photo of a cat."]).shape
        (True, torch.Size([1, 384]))
    """

    text_model: nn.Module | None = None
    text_unavailable: str | None = None

    def _init_text(self, text_model: nn.Module | None, tokenizer: Callable[[], Any] | None,
                   unavailable: str | None = None) -> None:
        self.text_model = text_model.eval().requires_grad_(False) if text_model is not None else None
        self._tokenizer_factory = tokenizer
        self._tokenizer = None
        self.text_unavailable = unavailable

    @property
    def has_text(self) -> bool:
        return self.text_model is not None and self.text_unavailable is None

    def _require_text(self) -> None:
        if self.text_unavailable is not None:
            raise BackboneError(self.text_unavailable)

    @property
    def text_weights_id(self) -> str:
        """Hash of the text tower's weights (:func:`hash_state_dict` of ``text_model``), recomputed when a
        :func:`weights_signature` shows they changed (in place included).

        Example:
            >>> bb = load_open_clip("ViT-S-32", pretrained=False)
            >>> before = bb.text_weights_id
            >>> _ = next(bb.text_model.parameters()).data.mul_(2)
            >>> bb.text_weights_id != before
            True
        """
        if self.text_model is None:
            raise BackboneError(f"{self.spec.name} has no text tower, so it has no text weights id.")
        return tracked_hash(self.__dict__, "_text_weights_cache", self.text_model)

    @property
    def text_device(self) -> torch.device:
        p = next(iter(self.text_model.parameters()), None) if self.text_model is not None else None
        return p.device if p is not None else torch.device("cpu")

    @property
    def logit_scale(self) -> float | None:
        """The model's learned logit scale ``exp(logit_scale)`` (CLIP: 100 when trained), or None."""
        t = getattr(self.text_model, "logit_scale", None) if self.text_model is not None else None
        return float(t.detach().float().exp().reshape(-1)[0]) if isinstance(t, torch.Tensor) else None

    def to(self, device: str | torch.device):
        super().to(device)  # type: ignore[misc]
        if self.text_model is not None:
            sig = weights_signature(self.text_model)
            self.text_model.to(device)  # a move keeps the values: keep the hash
            carry_over(self.__dict__, self.text_model, sig, weights_signature(self.text_model),
                       keys=("_text_weights_cache",))
        return self

    def tokenizer(self) -> Any:
        """The text tokenizer, built on first use (it may need the network once)."""
        if self._tokenizer is None:
            if self._tokenizer_factory is None:
                raise BackboneError(f"{self.spec.name} has no tokenizer; it cannot encode text.")
            self._tokenizer = self._tokenizer_factory()
        return self._tokenizer

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``[n, D]`` in the joint image–text space (not normalised), float32 on the text
        tower's device, computed in batches of :data:`TEXT_BATCH` prompts.

        Raises:
            BackboneError: no text tower, or its tokenizer cannot be loaded.
            ConfigError: ``texts`` is not a non-empty list of strings.
        """
        if self.text_model is None:
            return super().encode_text(texts)  # type: ignore[misc]
        self._require_text()
        if isinstance(texts, str) or not len(texts) or not all(isinstance(t, str) for t in texts):
            raise ConfigError("encode_text takes a non-empty list of strings, e.g. ['a photo of a cat.'].")
        texts = list(texts)
        with torch.inference_mode():
            out = [self._encode_text_batch(texts[i:i + TEXT_BATCH]).float() for i in range(0, len(texts), TEXT_BATCH)]
        return torch.cat(out)

    def embed_image(self, out: TokenOutput) -> torch.Tensor:
        """Joint-space image embeddings ``[B, D]`` from ``out``, which must hold the last block's tokens
        (``forward_tokens(x, -1)``); equal to the model's own image embedding.

        Raises:
            BackboneError: no image–text head.
            ConfigError: ``out`` lacks the last block.
        """
        if self.text_model is None:
            return super().embed_image(out)  # type: ignore[misc]
        self._require_text()
        last = self.spec.depth - 1
        if last not in out.tokens:
            raise ConfigError(f"embed_image needs the tokens of the last block ({last}) of {self.spec.name}; "
                              f"got layers {sorted(out.tokens)}. Use forward_tokens(x, layers=-1).")
        return self._embed_last(out.tokens[last])

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def _embed_last(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class OpenCLIPBackbone(TextTowerMixin, Backbone):
    """An OpenCLIP ``VisionTransformer`` tower; tokens are ``ln_post``-normalised, before ``proj``.

    ``embed_image`` pools them as the tower does (class token, or the mean of the patch tokens)
    and applies ``proj``: ``model.encode_image(x)`` exactly.
    """

    def _forward_layers(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        out = self.model.forward_intermediates(
            x, indices=list(layers), stop_early=True, normalize_intermediates=True,
            intermediates_only=True, output_fmt="NLC", output_extra_tokens=True)
        return [torch.cat([p, s], dim=1) for s, p in zip(out["image_intermediates"], out["image_intermediates_prefix"])]

    def _embed_last(self, tokens: torch.Tensor) -> torch.Tensor:
        v = self.model
        pooled = tokens[:, 1:].mean(dim=1) if v.pool_type == "avg" else tokens[:, 0]
        return pooled @ v.proj if v.proj is not None else pooled

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer()(texts).to(self.text_device)
        return self.text_model.encode_text(ids)


class OpenCLIPTimmBackbone(TextTowerMixin, TimmBackbone):
    """An OpenCLIP timm image tower (e.g. SigLIP): the timm trunk, with open_clip's projection head
    attached as ``model.open_clip_head``. ``embed_image`` = ``head(trunk.forward_head(tokens))``."""

    def _embed_last(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.open_clip_head(self.model.forward_head(tokens))

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer()(texts).to(self.text_device)
        return self.text_model.encode_text(ids)


def _preprocessing(visual: Any, arch: str) -> Preprocessing:
    cfg = dict(getattr(visual, "preprocess_cfg", {}) or {})
    size = cfg.get("size", getattr(visual, "image_size", 224))
    size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
    mode = cfg.get("resize_mode", "shortest")
    if mode not in _RESIZE:
        raise BackboneError(f"open_clip:{arch} uses resize_mode={mode!r}, which vitlab does not reproduce yet "
                            "(supported: shortest, squash).")
    kw = {k: tuple(cfg[k]) for k in ("mean", "std") if k in cfg}
    return Preprocessing(input_size=size, resize=_RESIZE[mode], interpolation=cfg.get("interpolation", "bicubic"), **kw)


def _tokenizer_factory(arch: str, context_length: int | None) -> Callable[[], Any]:
    def build() -> Any:
        import open_clip

        try:
            kw = {"context_length": context_length} if context_length else {}
            return open_clip.get_tokenizer(arch, **kw)
        except (OSError, RuntimeError, ValueError, ImportError) as e:
            raise BackboneError(f"open_clip:{arch}: cannot load its text tokenizer ({type(e).__name__}: {e}). "
                                "Check the network or the Hugging Face cache (HF_HUB_OFFLINE=1).") from e
    return build


def _image_head_problem(visual: Any, arch: str) -> str | None:
    """Why the joint-space image embedding cannot be rebuilt exactly from ``ln_post``-normalised tokens."""
    pool = getattr(visual, "pool_type", "tok")
    if pool == "avg" and getattr(visual, "final_ln_after_pool", False):
        return (f"open_clip:{arch} normalises after average pooling (final_ln_after_pool), which cannot be "
                "rebuilt from its normalised tokens; its image–text embedding (and zero-shot) is not supported yet.")
    if pool not in ("tok", "avg"):
        return f"open_clip:{arch} has pool_type={pool!r}, with no single image embedding; zero-shot is not supported."
    return None


def load_open_clip(target: str, *, pretrained: bool = True, seed: int = 0, **kwargs: Any) -> Backbone:
    """Load ``open_clip:<arch>/<tag>`` (e.g. ``ViT-B-16/openai``); ``tag`` may be omitted with ``pretrained=False``.

    The text tower is kept (``bb.has_text``, ``bb.encode_text``); its tokenizer is built on first use.

    Example:
        >>> bb = load_open_clip("ViT-S-32", pretrained=False)
        >>> bb.spec.grid_size, bb.has_text
        ((7, 7), True)
    """
    try:
        import open_clip
    except ImportError as e:
        raise BackboneError("open_clip: backbones need open_clip_torch: pip install 'vitlab[open_clip]'.") from e
    arch, _, tag = target.partition("/")
    if arch not in open_clip.list_models():
        raise UnknownNameError("open_clip architecture", arch, open_clip.list_models(),
                               "See open_clip.list_pretrained() for arch/tag pairs.")
    if pretrained and not tag:
        tags = [t for a, t in open_clip.list_pretrained() if a == arch]
        raise BackboneError(f"open_clip:{arch} needs a pretrained tag, e.g. open_clip:{arch}/{tags[0] if tags else 'TAG'}"
                            f" (known: {', '.join(tags) or 'none'}), or pass --no-pretrained.")
    try:
        model = seeded(lambda: open_clip.create_model(arch, pretrained=tag if pretrained else None, **kwargs), seed)
    except (OSError, RuntimeError, ValueError) as e:
        raise BackboneError(f"open_clip:{target}: cannot load ({type(e).__name__}: {e}). Check the tag and the "
                            "network, or pass --no-pretrained.") from e
    visual = model.visual
    name = f"open_clip:{arch}/{tag}" if tag else f"open_clip:{arch}"
    prep = _preprocessing(visual, arch)
    has_text_tower = callable(getattr(model, "encode_text", None)) and not hasattr(model, "text_decoder")  # not CoCa
    tokenizer = _tokenizer_factory(arch, getattr(model, "context_length", None)) if has_text_tower else None
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:  # timm-based tower (e.g. SigLIP): reuse the timm adapter on its trunk
        spec = spec_from_timm(trunk, name, pretrained, prep)
        head = getattr(visual, "head", None)
        trunk.add_module("open_clip_head", head if isinstance(head, nn.Module) else nn.Identity())
        problem = None
    else:
        if not hasattr(visual, "forward_intermediates") or not hasattr(visual, "transformer"):
            raise BackboneError(f"open_clip:{arch} has a {type(visual).__name__} image tower, not a ViT; "
                                "vitlab needs patch tokens.")
        if getattr(visual, "attn_pool", None) is not None:
            raise BackboneError(f"open_clip:{arch} pools with attention (CoCa-style); not supported yet.")
        ps = visual.patch_size if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2
        spec = BackboneSpec(
            name=name, embed_dim=int(visual.transformer.width), depth=len(visual.transformer.resblocks),
            patch_size=tuple(int(p) for p in ps), num_prefix_tokens=1, num_register_tokens=0, has_cls_token=True,
            preprocessing=prep, pretrained=pretrained,
            num_heads=getattr(visual.transformer.resblocks[0].attn, "num_heads", None))
        problem = _image_head_problem(visual, arch)
    text_model = None
    if has_text_tower:
        model.visual = nn.Identity()  # the image tower lives in bb.model; the rest is the text tower
        text_model = model
    bb = (OpenCLIPTimmBackbone if trunk is not None else OpenCLIPBackbone)(trunk if trunk is not None else visual, spec)
    bb._init_text(text_model, tokenizer, problem)
    return bb
