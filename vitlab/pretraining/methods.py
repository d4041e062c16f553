"""Continued self-supervised pretraining methods: ``dino``, ``dinov2`` (:mod:`vitlab.pretraining.mae`: ``mae``).

A method is named by the shared spec syntax (:mod:`vitlab._spec`), e.g. ``dino:n_local=6,out_dim=4096``. Its
:meth:`~SSLMethod.build` makes a :class:`Program`: the student (a copy of the user's backbone plus new heads), the
teacher when the method has one (a second copy: the teacher starts as the user's pretrained weights), and the
loss. The training loop (:mod:`vitlab.pretraining.loop`) only sees the :class:`Program` interface.

Defaults and sources:

* ``dino``: teacher temperature 0.04, student 0.1, centre momentum 0.9, teacher momentum 0.996 -> 1 (cosine),
  2 global + local crops (DINO, Caron et al. 2021, ViT defaults); projection head 512-64-2048 (lightly's DINO
  example; DINO's 2048-256-65536 head is sized for ImageNet); ``n_local`` 4 (DINO uses 6-10: fewer for CPU).
* ``dinov2``: ``dino`` plus the iBOT masked-patch loss (weight 1.0, shared head, half the images masked with
  10-50% of their patches in blocks) and KoLeo on the student's CLS tokens (weight 0.1): DINOv2's
  ``ssl_default_config.yaml``; teacher temperature 0.07 and momentum 0.992 (its values after warm-up).

Example:
    >>> m = parse_method("dino:n_local=2")
    >>> m.name, m.config.n_local, m.spec()
    ('dino', 2, 'dino:n_local=2')
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vitlab._registry import Registry
from vitlab._spec import config_from_params, split_specs
from vitlab.backbones.base import Backbone
from vitlab.errors import BackboneError, ConfigError
from vitlab.pretraining.forward import TokenNet
from vitlab.pretraining.views import block_masks, dino_specs, make_views, normalize

__all__ = ["SSLMethod", "Program", "METHODS", "parse_method", "DINO", "DINOv2", "dino_head"]

METHODS = Registry("pretraining method", hint="Choose dino, dinov2 or mae.")


class Program(nn.Module):
    """What the training loop trains. Subclasses set ``student`` (a :class:`TokenNet`) and implement the hooks.

    Everything that must survive a resume is a parameter or buffer of this module (so ``state_dict`` holds
    student, teacher, heads and loss state such as DINO's centre).
    """

    has_teacher: ClassVar[bool] = False
    student: TokenNet

    def new_parameters(self) -> dict[str, nn.Parameter]:
        """Name → parameter of the new parts that train from the first step (heads, adaptors, mask token)."""
        raise NotImplementedError

    def make_batch(self, images: torch.Tensor, indices: np.ndarray, *, seed: int, epoch: int,
                   device: torch.device) -> dict[str, Any]:
        """The inputs of one step from uint8 images ``[B, 3, H, W]`` (source rows ``indices``)."""
        raise NotImplementedError

    def loss(self, batch: dict[str, Any], step: int, total: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one step and its parts / diagnostics (``teacher_entropy`` when there is a teacher)."""
        raise NotImplementedError

    def after_step(self, step: int, total: int, backbone_trains: bool) -> None:
        """After the optimiser step (EMA of the teacher)."""

    def train(self, mode: bool = True) -> Program:
        """Train mode for the student and the new parts; a teacher always stays in eval mode (no dropout)."""
        super().train(mode)
        if self.has_teacher:
            self.teacher.eval()
        return self

    def export_net(self, which: str) -> TokenNet:
        """The network that becomes the artefact and that the monitor scores: ``teacher`` or ``student``."""
        return self.teacher if which == "teacher" and self.has_teacher else self.student


class SSLMethod:
    """Base class of a pretraining method: ``name``, ``help``, ``source``, a frozen ``Config``, :meth:`build`."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    source: ClassVar[str] = ""
    needs_masking: ClassVar[bool] = False
    export_default: ClassVar[str] = "student"

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config: Any = None, **params: Any) -> None:
        self.config = config if config is not None else config_from_params(self.Config, params,
                                                                           f"method {self.name!r}")

    def spec(self) -> str:
        """The name plus the non-default parameters (``dino:n_local=2``)."""
        default = dataclasses.asdict(self.Config())
        diff = {k: v for k, v in dataclasses.asdict(self.config).items() if v != default.get(k)}
        fmt = lambda v: "[" + ",".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)  # noqa: E731
        return self.name + (":" + ",".join(f"{k}={fmt(v)}" for k, v in diff.items()) if diff else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec(), "source": self.source, **dataclasses.asdict(self.config)}

    def check(self, bb: Backbone) -> None:
        """One clear line if ``bb`` cannot take this method (cheap, before any training)."""
        if self.needs_masking and not TokenNet(bb).can_mask:
            raise BackboneError(f"method {self.name!r} masks patches, and {bb.name} cannot mask them here (only timm "
                                "ViTs can: timm:, file:, demo: and the dinov2-*/mae-* aliases). Use --method dino, or "
                                "load the weights through timm:.")

    def crop_sizes(self, bb: Backbone) -> tuple[tuple[int, int], tuple[int, int] | None]:
        """``(global, local)`` crop sizes in pixels (``local`` ``None`` when the method has no local crops)."""
        return tuple(bb.spec.preprocessing.input_size), None

    def build(self, bb: Backbone, generator: torch.Generator) -> Program:
        """The :class:`Program` training ``bb`` (a private copy; the user's backbone is never touched)."""
        raise NotImplementedError


def register_method(cls: type[SSLMethod]) -> type[SSLMethod]:
    METHODS.register(cls.name, cls, help=cls.help)
    return cls


def parse_method(spec: str | SSLMethod) -> SSLMethod:
    """One method spec → a validated :class:`SSLMethod` (unknown names get suggestions).

    Example:
        >>> parse_method("dinoo")
        Traceback (most recent call last):
        ...
        vitlab.errors.UnknownNameError: unknown pretraining method 'dinoo'. Did you mean: dino, dinov2? Choose dino, dinov2 or mae.
    """
    if isinstance(spec, SSLMethod):
        return spec
    from vitlab.pretraining import mae  # noqa: F401  (registers "mae")

    items = split_specs(spec, "method spec")
    if len(items) != 1:
        raise ConfigError(f"give one pretraining method, got {len(items)} in {spec!r}.")
    name, params = items[0]
    return METHODS.get(name)(**params)


def dino_head(dim: int, hidden: int, bottleneck: int, out: int) -> nn.Module:
    """lightly's ``DINOProjectionHead`` (MLP, L2-normalised bottleneck, weight-normalised last layer)."""
    from lightly.models.modules.heads import DINOProjectionHead

    with warnings.catch_warnings():  # lightly uses torch's (deprecated, equivalent) weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        return DINOProjectionHead(dim, hidden, bottleneck, out)


def _local_size(global_size: tuple[int, int], patch: tuple[int, int], fraction: float) -> tuple[int, int]:
    """DINO's local crop (96 of 224 px: ``fraction`` 3/7) rounded to whole patches, at least one patch."""
    return tuple(max(p, int(round(g * fraction / p)) * p) for g, p in zip(global_size, patch))  # type: ignore[return-value]


@register_method
class DINO(SSLMethod):
    name, export_default = "dino", "teacher"
    help = "EMA teacher, multi-crop, centring and sharpening (DINO)"
    source = "DINO (Caron et al. 2021) through lightly's DINOLoss and DINOProjectionHead"

    @dataclass(frozen=True)
    class Config:
        """Temperatures, momenta, head sizes and crops (module docstring for the sources)."""

        teacher_temp: float = 0.04
        student_temp: float = 0.1
        center_momentum: float = 0.9
        momentum: float = 0.996
        hidden_dim: int = 512
        bottleneck_dim: int = 64
        out_dim: int = 2048
        n_local: int = 4
        local_fraction: float = 3 / 7
        global_scale: tuple[float, float] = (0.32, 1.0)
        local_scale: tuple[float, float] = (0.05, 0.32)
        hflip: float = 0.5

        def __post_init__(self) -> None:
            for k in ("teacher_temp", "student_temp"):
                v = getattr(self, k)
                if not isinstance(v, (int, float)) or not 0 < v <= 10:
                    raise ConfigError(f"{k} must be in (0, 10], got {v!r}.")
            for k in ("center_momentum", "momentum"):
                v = getattr(self, k)
                if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                    raise ConfigError(f"{k} must be in [0, 1], got {v!r}.")
            for k in ("hidden_dim", "bottleneck_dim", "out_dim"):
                v = getattr(self, k)
                if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                    raise ConfigError(f"{k} must be a whole number >= 2, got {v!r}.")
            if isinstance(self.n_local, bool) or not isinstance(self.n_local, int) or not 0 <= self.n_local <= 64:
                raise ConfigError(f"n_local (local crops) must be a whole number in 0..64, got {self.n_local!r}.")
            if not isinstance(self.local_fraction, (int, float)) or not 0 < self.local_fraction <= 1:
                raise ConfigError(f"local_fraction must be in (0, 1], got {self.local_fraction!r}.")
            for k in ("global_scale", "local_scale"):
                v = tuple(getattr(self, k))
                if len(v) != 2 or not 0 < v[0] <= v[1] <= 1:
                    raise ConfigError(f"{k} must be [low,high] with 0 < low <= high <= 1, got {getattr(self, k)!r}.")
                object.__setattr__(self, k, v)
            if not isinstance(self.hflip, (int, float)) or not 0 <= self.hflip <= 1:
                raise ConfigError(f"hflip must be a probability in [0, 1], got {self.hflip!r}.")

    def crop_sizes(self, bb: Backbone) -> tuple[tuple[int, int], tuple[int, int] | None]:
        g = tuple(bb.spec.preprocessing.input_size)
        if self.config.n_local == 0:
            return g, None
        local = _local_size(g, tuple(bb.spec.patch_size), self.config.local_fraction)
        return g, (local if TokenNet(bb).any_size else g)

    def build(self, bb: Backbone, generator: torch.Generator) -> Program:
        return DINOProgram(self, bb, generator)


@register_method
class DINOv2(DINO):
    name = "dinov2"
    help = "DINO plus the iBOT masked-patch loss plus KoLeo (DINOv2)"
    source = "DINOv2 (Oquab et al. 2024): lightly's DINOLoss, IBOTPatchLoss, KoLeoLoss"
    needs_masking = True

    @dataclass(frozen=True)
    class Config(DINO.Config):
        teacher_temp: float = 0.07
        momentum: float = 0.992
        ibot_weight: float = 1.0
        koleo_weight: float = 0.1
        mask_probability: float = 0.5
        mask_ratio: tuple[float, float] = (0.1, 0.5)

        def __post_init__(self) -> None:
            super().__post_init__()
            for k in ("ibot_weight", "koleo_weight"):
                v = getattr(self, k)
                if not isinstance(v, (int, float)) or not 0 <= v <= 100:
                    raise ConfigError(f"{k} must be in [0, 100], got {v!r}.")
            if not isinstance(self.mask_probability, (int, float)) or not 0 <= self.mask_probability <= 1:
                raise ConfigError(f"mask_probability must be in [0, 1], got {self.mask_probability!r}.")
            r = tuple(self.mask_ratio)
            if len(r) != 2 or not 0 < r[0] <= r[1] < 1:
                raise ConfigError(f"mask_ratio must be [low,high] with 0 < low <= high < 1, got {self.mask_ratio!r}.")
            object.__setattr__(self, "mask_ratio", r)


class DINOProgram(Program):
    """DINO / DINOv2: student and EMA teacher (both start as the user's weights), shared-shape heads, the losses."""

    has_teacher = True

    def __init__(self, method: DINO, bb: Backbone, generator: torch.Generator) -> None:
        from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss

        from vitlab.tuning.methods import clone_backbone

        super().__init__()
        c = method.config
        self.cfg, self.v2 = c, isinstance(method, DINOv2)
        self.student, self.teacher = TokenNet(clone_backbone(bb)), TokenNet(clone_backbone(bb))
        self.teacher.requires_grad_(False)
        dim = self.student.dim
        with torch.random.fork_rng(devices=[]):  # lightly initialises its heads from the global RNG: seed it
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            self.s_head = dino_head(dim, c.hidden_dim, c.bottleneck_dim, c.out_dim)
            self.t_head = dino_head(dim, c.hidden_dim, c.bottleneck_dim, c.out_dim)
            self.mask_token = nn.Parameter(torch.randn(dim) * 0.02) if self.v2 else None
        self.t_head.load_state_dict(self.s_head.state_dict())
        self.t_head.requires_grad_(False)
        self.dino_loss = DINOLoss(c.out_dim, warmup_teacher_temp=c.teacher_temp, teacher_temp=c.teacher_temp,
                                  warmup_teacher_temp_epochs=1, student_temp=c.student_temp,
                                  center_momentum=c.center_momentum)
        if self.v2:
            self.ibot_loss = IBOTPatchLoss(c.out_dim, teacher_temp=c.teacher_temp, student_temp=c.student_temp,
                                           center_momentum=c.center_momentum)
            self.koleo_loss = KoLeoLoss()
        g, local = method.crop_sizes(bb)
        self.specs = dino_specs(g, local or g, c.n_local if local else 0, global_scale=c.global_scale,
                                local_scale=c.local_scale, hflip=c.hflip)
        prep = bb.spec.preprocessing
        self.mean, self.std = prep.mean, prep.std
        self.grid = (g[0] // bb.spec.patch_size[0], g[1] // bb.spec.patch_size[1])

    def new_parameters(self) -> dict[str, nn.Parameter]:
        out = {f"s_head.{n}": p for n, p in self.s_head.named_parameters() if p.requires_grad}
        if self.mask_token is not None:
            out["mask_token"] = self.mask_token
        return out

    def make_batch(self, images: torch.Tensor, indices: np.ndarray, *, seed: int, epoch: int,
                   device: torch.device) -> dict[str, Any]:
        views = [normalize(v, self.mean, self.std).to(device)
                 for v in make_views(images, indices, self.specs, seed=seed, epoch=epoch)]
        batch: dict[str, Any] = {"global": torch.cat(views[:2]),
                                 "local": torch.cat(views[2:]) if len(views) > 2 else None, "n": len(indices)}
        if self.v2 and self.cfg.ibot_weight > 0:
            masks = [block_masks(indices, self.grid, seed=seed, epoch=epoch, view=k,
                                 probability=self.cfg.mask_probability, ratio=self.cfg.mask_ratio) for k in (0, 1)]
            if self.cfg.mask_probability > 0 and not any(bool(m.any()) for m in masks):
                # at least one masked image per batch (DINOv2 masks a fixed share of each batch)
                masks[0] = block_masks(indices[:1], self.grid, seed=seed, epoch=epoch, view=0, probability=1.0,
                                       ratio=self.cfg.mask_ratio).expand(len(indices), -1, -1).clone()
                masks[0][1:] = False
            batch["masks"] = torch.cat(masks).to(device)
        return batch

    def loss(self, batch: dict[str, Any], step: int, total: int) -> tuple[torch.Tensor, dict[str, float]]:
        from vitlab.pretraining.health import mean_entropy
        from vitlab.pretraining.losses import teacher_probs

        c, n = self.cfg, batch["n"]
        masks = batch.get("masks")
        with torch.no_grad():
            t_tok = self.teacher(batch["global"])
            t_out = self.t_head(self.teacher.pooled(t_tok))
        s_tok = self.student(batch["global"], mask=masks, mask_token=self.mask_token)
        s_cls = self.student.pooled(s_tok)
        s_out = [self.s_head(s_cls)]
        if batch["local"] is not None:
            s_out.append(self.s_head(self.student.pooled(self.student(batch["local"]))))
        s_views = list(torch.cat(s_out).float().split(n))
        t_views = list(t_out.float().split(n))
        entropy = mean_entropy(teacher_probs(t_out, self.dino_loss.center.view(1, -1), c.teacher_temp).cpu())
        dino = self.dino_loss(t_views, s_views, teacher_temp=c.teacher_temp)
        total_loss, stats = dino, {"dino": float(dino.detach()), "teacher_entropy": entropy,
                                   "teacher_entropy_max": math.log(c.out_dim)}
        if self.v2:
            if c.koleo_weight > 0:
                koleo = sum(self.koleo_loss(p.float()) for p in s_cls.chunk(2))
                total_loss = total_loss + c.koleo_weight * koleo
                stats["koleo"] = float(koleo.detach())
            if masks is not None and bool(masks.any()):
                flat = masks.flatten(1)
                with torch.no_grad():
                    t_patch = self.t_head(self.teacher.patches(t_tok)[flat])
                s_patch = self.s_head(self.student.patches(s_tok)[flat])
                ibot = self.ibot_loss(t_patch.float(), s_patch.float(), mask=masks, teacher_temp=c.teacher_temp)
                total_loss = total_loss + c.ibot_weight * ibot
                stats["ibot"] = float(ibot.detach())
        return total_loss, stats

    def after_step(self, step: int, total: int, backbone_trains: bool) -> None:
        from vitlab.pretraining.losses import ema_update, momentum_at

        m = momentum_at(step, total, self.cfg.momentum)
        ema_update(self.t_head, self.s_head, m)
        if backbone_trains:  # while the backbone is frozen student and teacher backbones are equal: nothing to do
            ema_update(self.teacher.body, self.student.body, m)
