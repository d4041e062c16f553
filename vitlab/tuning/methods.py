"""Adaptation methods: ``linear``, ``full`` (layer-wise lr decay), ``lora`` / ``dora`` (HF ``peft``), ``vpt``, ``bitfit``.

A method is named by the shared spec syntax (:mod:`vitlab._spec`)::

    linear,lora:r=8,targets=[qkv,mlp],vpt:prompts=10,deep=true,full

Each method :meth:`~Method.apply` s itself to a **copy** of a backbone (:func:`clone_backbone`: the
user's model is never touched) and marks exactly the parameters it trains; the head is trained by
the runner for every method. After training, :meth:`~Method.finalize` gives the adapted backbone for
inference (LoRA merged into the weights).

Example:
    >>> [m.name for m in parse_methods("linear,lora:r=4,vpt")]
    ['linear', 'lora', 'vpt']
    >>> parse_methods("lora:r=4")[0].config.r
    4
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from vitlab._registry import Registry
from vitlab._spec import config_from_params, split_specs
from vitlab.backbones.base import Backbone
from vitlab.errors import BackboneError, ConfigError

__all__ = ["Method", "METHODS", "parse_methods", "check_dependencies", "clone_backbone", "lora_targets",
           "LORA_TARGETS", "layer_id"]

#: LoRA target aliases → regexes on the ends of Linear module names inside the transformer blocks (timm ViT;
#: transformers ViT / DINOv2 (both naming generations), CLIP, SigLIP). Heads outside the blocks (SigLIP's
#: attention-pool head) are never selected by an alias.
LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "qkv": (r"attn\.qkv", r"attention\.attention\.(query|key|value)", r"(attention|self_attn|attn)\.(q|k|v)_proj"),
    "proj": (r"attn\.proj", r"attention\.output\.dense", r"(attention|self_attn|attn)\.(o|out)_proj"),
    "mlp": (r"mlp\.fc[12]", r"layer\.\d+\.intermediate\.dense", r"layer\.\d+\.output\.dense"),
}
_IN_BLOCK = re.compile(r"(^|\.)(blocks|layer|layers)\.\d+\.")


def clone_backbone(bb: Backbone) -> Backbone:
    """A new :class:`Backbone` of the same class and spec around a deep copy of ``bb.model``.

    The copy has its own identity (no pinned or cached ``weights_id``: a hash of its weights); ``bb`` is
    not changed.

    Example:
        >>> import vitlab
        >>> bb = vitlab.load_backbone("demo:fmnist-vit")
        >>> c = clone_backbone(bb)
        >>> c.model is bb.model, c.spec == bb.spec
        (False, True)
    """
    skip = ("_model", "_factory", "weights_id", "_weights_pin", "_weights_cache", "_device")
    new = type(bb).__new__(type(bb))
    new.__dict__.update({k: v for k, v in bb.__dict__.items() if k not in skip})
    new.__dict__["_factory"] = None
    with torch.no_grad():
        new.model = copy.deepcopy(bb.model)
    return new


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def lora_targets(model: nn.Module, targets: Sequence[str], name: str) -> list[str]:
    """Full names of the Linear modules that ``targets`` select (aliases ``qkv``, ``proj``, ``mlp``, or a
    module-name suffix such as ``fc1``).

    Raises:
        ConfigError: a target selects nothing (the message lists the model's Linear module names).

    Example:
        >>> import vitlab
        >>> lora_targets(vitlab.load_backbone("demo:fmnist-vit").model, ["qkv"], "demo")[:2]
        ['blocks.0.attn.qkv', 'blocks.1.attn.qkv']
    """
    linear = _linear_names(model)
    chosen: list[str] = []
    for t in targets:
        pats = LORA_TARGETS.get(t, (re.escape(t),))
        hit = [n for n in linear if any(re.search(rf"(^|\.){p}$", n) for p in pats)
               and (t not in LORA_TARGETS or _IN_BLOCK.search(n))]
        if not hit:
            kinds = sorted({re.sub(r"\.\d+\.", ".N.", n) for n in linear})
            listing = ", ".join(kinds[:12]) + (" ..." if len(kinds) > 12 else "") if kinds else "none"
            raise ConfigError(f"LoRA target {t!r} matches no Linear layer of {name}; its Linear layers are: {listing}. "
                              f"Use targets from {', '.join(LORA_TARGETS)} or a module-name suffix listed here.")
        chosen += [n for n in hit if n not in chosen]
    return chosen


def layer_id(param_name: str, depth: int) -> int:
    """Layer of a parameter for layer-wise lr decay: 0 = embeddings, ``i + 1`` = block ``i``,
    ``depth + 1`` = everything after the blocks (final norm).

    Example:
        >>> layer_id("pos_embed", 12), layer_id("blocks.3.attn.qkv.weight", 12), layer_id("norm.weight", 12)
        (0, 4, 13)
    """
    m = re.search(r"(?:^|\.)(?:blocks|layer|layers)\.(\d+)\.", param_name)
    if m:
        return int(m.group(1)) + 1
    if re.search(r"(cls_token|reg_token|pos_embed|patch_embed|embeddings|dist_token|mask_token)", param_name):
        return 0
    return depth + 1


class Method:
    """Base class of an adaptation method.

    Subclasses set ``name``, ``help``, ``source`` (the recipe's paper), ``default_lr``, a frozen
    ``Config``, the optional packages they import (``requires``, installed by the ``extra``) and implement
    :meth:`apply` (and :meth:`lr_scales` / :meth:`finalize` when needed).
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    source: ClassVar[str] = ""
    default_lr: ClassVar[float] = 1e-3
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = "tune"

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config: Any = None, **params: Any) -> None:
        self.config = config if config is not None else config_from_params(self.Config, params, f"method {self.name!r}")
        self._label: str | None = None

    @property
    def label(self) -> str:
        """Key of this method in records: its name, or its spec when the same method runs with two configs."""
        return self._label or self.name

    def spec(self) -> str:
        """The method's name plus its non-default parameters (``lora:r=4``)."""
        default = dataclasses.asdict(self.Config())
        diff = {k: v for k, v in dataclasses.asdict(self.config).items() if v != default.get(k)}
        fmt = lambda v: "[" + ",".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)  # noqa: E731
        return self.name + (":" + ",".join(f"{k}={fmt(v)}" for k, v in diff.items()) if diff else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dataclasses.asdict(self.config)}

    def check(self, bb: Backbone) -> None:
        """Raise one clear line if ``bb`` cannot take this method (cheap: called before any training)."""

    def apply(self, bb: Backbone, generator: torch.Generator) -> Backbone:
        """Adapt ``bb`` (a :func:`clone_backbone` copy, changed in place) and mark what it trains.

        Raises:
            BackboneError / ConfigError: the backbone cannot take this method (one line, with the fix).
        """
        bb.model.requires_grad_(False)
        return bb

    def lr_scales(self, bb: Backbone, layer_decay: float = 0.75) -> dict[str, float]:
        """Per trainable parameter name: its learning-rate multiplier (default 1; ``full`` uses ``layer_decay``)."""
        return {n: 1.0 for n, p in bb.model.named_parameters() if p.requires_grad}

    def finalize(self, bb: Backbone, merge: bool = True) -> Backbone:
        """The backbone for inference after training (default: as trained)."""
        return bb

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


METHODS = Registry("tune method", hint="Choose from linear, full, lora, dora, vpt, bitfit (comma-separated).")


def register_method(cls: type[Method]) -> type[Method]:
    METHODS.register(cls.name, cls, help=cls.help)
    return cls


@register_method
class Linear(Method):
    name, default_lr = "linear", 1e-3
    help = "the head alone on frozen features (the baseline)"
    source = "linear probing (Kornblith et al. 2019; DINOv2 evaluation)"


@register_method
class Full(Method):
    name, default_lr = "full", 1e-4
    help = "every weight, with layer-wise learning-rate decay"
    source = "MAE / BEiT fine-tuning recipe (layer_decay 0.75)"

    def check(self, bb: Backbone) -> None:
        if not any(True for _ in bb.model.parameters()):
            raise BackboneError(f"{bb.name} has no weights to fine-tune; method 'full' needs a neural backbone "
                                "(use 'linear' for this one).")

    def apply(self, bb: Backbone, generator: torch.Generator) -> Backbone:
        self.check(bb)
        bb.model.requires_grad_(True)
        return bb

    def lr_scales(self, bb: Backbone, layer_decay: float = 0.75) -> dict[str, float]:
        depth = bb.spec.depth
        return {n: layer_decay ** (depth + 1 - layer_id(n, depth)) for n, p in bb.model.named_parameters()
                if p.requires_grad}


@register_method
class BitFit(Method):
    name, default_lr = "bitfit", 1e-3
    help = "bias terms only"
    source = "BitFit (Zaken et al. 2022)"

    def check(self, bb: Backbone) -> None:
        if not any(n.endswith("bias") for n, _ in bb.model.named_parameters()):
            raise BackboneError(f"{bb.name} has no bias terms; method 'bitfit' needs a backbone with biases "
                                "(use 'lora' or 'full').")

    def apply(self, bb: Backbone, generator: torch.Generator) -> Backbone:
        self.check(bb)
        bb.model.requires_grad_(False)
        for p in [p for n, p in bb.model.named_parameters() if n.endswith("bias")]:
            p.requires_grad_(True)
        return bb


@register_method
class LoRA(Method):
    name, default_lr = "lora", 1e-3
    help = "low-rank adapters (HF peft) on qkv / proj / mlp"
    source = "LoRA (Hu et al. 2022) through HF peft"
    requires = ("peft",)
    use_dora: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Config:
        """``r``: rank; ``alpha``: scaling numerator (update x alpha / r); ``dropout`` on the adapter input;
        ``targets``: aliases ``qkv``, ``proj``, ``mlp`` or Linear module-name suffixes."""

        r: int = 8
        alpha: float = 16.0
        dropout: float = 0.0
        targets: tuple[str, ...] = ("qkv",)

        def __post_init__(self) -> None:
            if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
                raise ConfigError(f"LoRA rank r must be a whole number >= 1, got {self.r!r}.")
            if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
                raise ConfigError(f"LoRA alpha must be > 0, got {self.alpha!r}.")
            if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
                raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}.")
            targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise ConfigError(f"LoRA targets must be names such as [qkv,mlp], got {self.targets!r}.")
            object.__setattr__(self, "targets", targets)

    def check(self, bb: Backbone) -> None:
        lora_targets(bb.model, self.config.targets, bb.name)

    def apply(self, bb: Backbone, generator: torch.Generator) -> Backbone:
        from peft import LoraConfig
        from peft.tuners.lora import LoraModel

        c = self.config
        names = lora_targets(bb.model, c.targets, bb.name)
        bb.model.requires_grad_(False)
        cfg = LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=names,
                         use_dora=self.use_dora, bias="none")
        with torch.random.fork_rng(devices=[]):  # peft initialises lora_A with the global RNG: seed it
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            lora = LoraModel(bb.model, cfg, "default")  # injects the adapters into bb.model in place
        bb.__dict__["_lora"] = lora
        for n, p in bb.model.named_parameters():
            p.requires_grad_("lora_" in n)
        return bb

    def finalize(self, bb: Backbone, merge: bool = True) -> Backbone:
        lora = bb.__dict__.pop("_lora", None)
        if merge and lora is not None:
            with torch.no_grad():
                bb.model = lora.merge_and_unload()
            bb.model.eval().requires_grad_(False)
        return bb


@register_method
class DoRA(LoRA):
    name = "dora"
    help = "weight-decomposed low-rank adapters (HF peft use_dora)"
    source = "DoRA (Liu et al. 2024) through HF peft"
    use_dora = True


@register_method
class VPT(Method):
    name, default_lr = "vpt", 1e-2
    help = "visual prompt tuning, shallow or deep (prompts after CLS and registers)"
    source = "VPT (Jia et al. 2022)"

    @dataclass(frozen=True)
    class Config:
        """``prompts``: tokens per layer; ``deep``: a prompt set per block (VPT-deep), else at the input only."""

        prompts: int = 10
        deep: bool = True

        def __post_init__(self) -> None:
            if isinstance(self.prompts, bool) or not isinstance(self.prompts, int) or not 0 <= self.prompts <= 1024:
                raise ConfigError(f"vpt prompts must be a whole number in 0..1024, got {self.prompts!r}.")
            if not isinstance(self.deep, bool):
                raise ConfigError(f"vpt deep must be true or false, got {self.deep!r}.")

    def check(self, bb: Backbone) -> None:
        from vitlab.tuning.vpt import check_vpt_support

        check_vpt_support(bb.model, bb.name)

    def apply(self, bb: Backbone, generator: torch.Generator) -> Backbone:
        from vitlab.tuning.vpt import PromptedViT, VPTBackbone, check_vpt_support

        check_vpt_support(bb.model, bb.name)
        bb.model.requires_grad_(False)
        prompted = PromptedViT(bb.model, self.config.prompts, self.config.deep, generator=generator)
        out = VPTBackbone(prompted, bb.spec)  # Backbone.__init__ freezes everything: open the prompts again
        out.model.prompts.requires_grad_(True)
        return out


def check_dependencies(methods: Sequence[Method]) -> None:
    """Raise one line naming the extra to install when a method's optional package is missing (cheap: looks the
    package up, imports nothing; called before any work).

    Raises:
        ConfigError: e.g. ``method lora needs the package peft, which is not installed: pip install 'vitlab[tune]'.``

    Example:
        >>> check_dependencies(parse_methods("linear,vpt"))  # nothing optional needed
    """
    import importlib.util

    missing: dict[str, list[Method]] = {}
    for m in methods:
        for mod in m.requires:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):  # a broken install or a stub left in sys.modules
                found = False
            if not found:
                missing.setdefault(mod, []).append(m)
    if missing:
        parts = []
        for mod, ms in missing.items():
            names = ", ".join(dict.fromkeys(m.label for m in ms))
            parts.append(f"method{'s' if len(ms) > 1 else ''} {names} need{'' if len(ms) > 1 else 's'} the package "
                         f"{mod}, which is not installed: pip install 'vitlab[{ms[0].extra}]'")
        raise ConfigError("; ".join(parts) + ".")


def parse_methods(spec: str | Method | Sequence[str | Method]) -> list[Method]:
    """Method specs (or instances) → validated :class:`Method` objects, checked before any work.

    Raises:
        UnknownNameError: an unknown method, with suggestions. ConfigError: a bad parameter, or a method listed twice.

    Example:
        >>> parse_methods("lora:r=0")
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: LoRA rank r must be a whole number >= 1, got 0.
    """
    items = [spec] if isinstance(spec, (str, Method)) else list(spec)
    out: list[Method] = []
    for item in items:
        if isinstance(item, Method):
            out.append(item)
            continue
        for name, params in split_specs(item, "method spec"):
            out.append(METHODS.get(name)(**params))
    if not out:
        raise ConfigError("no method given; choose from " + ", ".join(METHODS.names()) + ".")
    specs = [m.spec() for m in out]
    dup = sorted({s for s in specs if specs.count(s) > 1})
    if dup:
        raise ConfigError(f"method(s) {', '.join(map(repr, dup))} listed twice; list each once.")
    names = [m.name for m in out]
    for m in out:
        m._label = m.spec() if names.count(m.name) > 1 else None
    return out
