"""The training recipe shared by ``vitlab pretrain`` and ``vitlab distill`` (:class:`PretrainRecipe`), validated at
construction.

Defaults and where they come from (the method's own settings, e.g. DINO's temperatures, live with the method in
:mod:`vitlab.pretraining.methods`):

* AdamW, gradient-norm clipping at 3.0, weight decay 0.04, no decay on biases, norms and tokens: DINO
  (Caron et al. 2021, ``main_dino.py``: ``clip_grad 3.0``, ``weight_decay 0.04``).
* **Head warm-up before any backbone weight moves** (``head_warmup`` 0.2 of the steps): the new projection heads
  (or adaptors, decoder, mask token) train while the backbone is frozen, then the backbone joins. Without it the
  backbone follows the gradients of random heads and its features degrade first (dinov2 issue #204: kNN 80% ->
  10%); the same reasoning as linear-probing-then-fine-tuning (LP-FT, Kumar et al. 2022).
* Then a low learning rate for the backbone with layer-wise decay 0.9 (DINOv2 ``optim.layerwise_decay: 0.9``):
  ``lr`` 5e-5 for continued pretraining, a tenth of DINO's 5e-4 x batch 64 / 256 (the backbone already holds good
  features; DINOv2's 4e-3 is a from-scratch rate), linear warm-up over ``warmup_fraction`` 0.1 of the backbone's
  steps, then cosine decay to ``min_lr_fraction`` 0.01 of the peak (DINO decays to ``min_lr`` 1e-6). Heads train
  at ``head_lr`` 5e-4 (DINO's base lr at batch 256) on the same cosine.
* A random-init student (``vitlab distill --student random:<name>``) has nothing to protect: no head warm-up,
  no layer decay, ``lr`` 5e-4 (DeiT's 5e-4 at batch 512 scaled up for short runs).
* Monitoring every ``monitor_every`` steps (default: about 8 points per run) with vitlab's kNN protocol;
  checkpoints every ``checkpoint_minutes`` 5 and at the end.

Example:
    >>> PretrainRecipe(epochs=2, batch_size=32).batch_size
    32
    >>> PretrainRecipe(head_warmup=1.5)
    Traceback (most recent call last):
    ...
    vitlab.errors.ConfigError: head_warmup must be a fraction in [0, 0.9] of the steps or a whole number of steps >= 1, got 1.5.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vitlab.errors import ConfigError
from vitlab.tuning.recipe import _float_in, _int_in  # the one home of these checks

__all__ = ["PretrainRecipe", "PRECISIONS", "EXPORTS"]

PRECISIONS = ("auto", "fp32", "bf16")
EXPORTS = ("auto", "teacher", "student")


@dataclass(frozen=True)
class PretrainRecipe:
    """How continued pretraining and distillation train, monitor and checkpoint (see the module docstring).

    Args:
        epochs: passes over the unlabelled data (``max_steps`` may end sooner).
        max_steps: stop after this many optimisation steps (``None``: ``epochs`` decide).
        batch_size: images per step, over all processes (``--nproc``).
        lr: backbone peak learning rate; ``None``: 5e-5, or 5e-4 for a random-init student.
        head_lr: peak learning rate of the new parts (heads, adaptors, decoder, mask token).
        layer_decay: block ``i`` of ``L`` trains at ``lr * layer_decay ** (L - i)``; ``None``: 0.9, or 1.0 for a
            random-init student.
        weight_decay: AdamW decoupled weight decay (not on biases, norms, tokens).
        head_warmup: steps with the backbone frozen while the new parts train: a fraction of all steps in
            ``[0, 0.9]`` or a whole number of steps; ``None``: 0.2, or 0 for a random-init student.
        warmup_fraction: linear lr warm-up share of the backbone's steps.
        min_lr_fraction: the cosine decays to this share of each peak learning rate.
        clip_grad: gradient-norm clipping (0 = off).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``fp32`` or ``bf16`` (CUDA only).
        export: which network becomes the artefact: ``auto`` (the EMA teacher for DINO-style methods, which
            DINO and DINOv2 evaluate; the student otherwise), ``teacher`` or ``student``.
        monitor_every: steps between monitoring points (``None``: about 8 points per run); 0 = only at the
            start and the end.
        monitor_protocols: protocols of the monitoring points (``knn``, or ``knn,linear``).
        val_fraction: share of the monitor data's training part held out as the validation part that the
            monitor scores (the test part is ``vitlab eval``'s, kept for the final verdict).
        collapse_guard: stop when the monitored metric's interval lies wholly below the base model's value.
        checkpoint_minutes: minutes between checkpoints (one is always written at the end).

    Example:
        >>> PretrainRecipe().replace(lr=1e-4).lr
        0.0001
    """

    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 64
    lr: float | None = None
    head_lr: float = 5e-4
    layer_decay: float | None = None
    weight_decay: float = 0.04
    head_warmup: float | int | None = None
    warmup_fraction: float = 0.1
    min_lr_fraction: float = 0.01
    clip_grad: float = 3.0
    precision: str = "auto"
    export: str = "auto"
    monitor_every: int | None = None
    monitor_protocols: str = "knn"
    val_fraction: float = 0.1
    collapse_guard: bool = True
    checkpoint_minutes: float = 5.0

    def __post_init__(self) -> None:
        _int_in("epochs", self.epochs, 1, 100_000)
        if self.max_steps is not None:
            _int_in("max_steps", self.max_steps, 1, 10**9)
        _int_in("batch_size", self.batch_size, 2, 1 << 16)
        if self.lr is not None:
            _float_in("lr", self.lr, 0.0, 1.0, lo_open=True, hint="Continued pretraining: about 1e-5 .. 1e-4.")
        _float_in("head_lr", self.head_lr, 0.0, 1.0, lo_open=True)
        if self.layer_decay is not None:
            _float_in("layer_decay", self.layer_decay, 0.0, 1.0, lo_open=True)
        _float_in("weight_decay", self.weight_decay, 0.0, 10.0)
        hw = self.head_warmup
        if hw is not None:
            ok = (isinstance(hw, int) and not isinstance(hw, bool) and hw >= 0) or \
                (isinstance(hw, float) and math.isfinite(hw) and 0.0 <= hw <= 0.9)
            if not ok:
                raise ConfigError(f"head_warmup must be a fraction in [0, 0.9] of the steps or a whole number of "
                                  f"steps >= 1, got {hw!r}.")
        _float_in("warmup_fraction", self.warmup_fraction, 0.0, 0.9)
        _float_in("min_lr_fraction", self.min_lr_fraction, 0.0, 1.0)
        _float_in("clip_grad", self.clip_grad, 0.0, 1e6)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        if self.export not in EXPORTS:
            raise ConfigError(f"export must be one of {', '.join(EXPORTS)}, got {self.export!r}.")
        if self.monitor_every is not None:
            _int_in("monitor_every", self.monitor_every, 0, 10**9)
        if not isinstance(self.monitor_protocols, str) or not self.monitor_protocols.strip():
            raise ConfigError(f"monitor_protocols must be protocol names such as 'knn' or 'knn,linear', got "
                              f"{self.monitor_protocols!r}.")
        _float_in("val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True,
                  hint="The monitor scores a validation part of the monitor data's training part, e.g. 0.1.")
        if not isinstance(self.collapse_guard, bool):
            raise ConfigError(f"collapse_guard must be true or false, got {self.collapse_guard!r}.")
        _float_in("checkpoint_minutes", self.checkpoint_minutes, 0.0, 1e6)

    def replace(self, **changes: Any) -> PretrainRecipe:
        """A copy with ``changes`` (validated again); unknown names get a clear error."""
        known = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ConfigError(f"the pretraining recipe has no setting {', '.join(map(repr, bad))}; its settings "
                              f"are: {', '.join(sorted(known))}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved(self, *, random_init: bool) -> dict[str, Any]:
        """The settings that depend on the starting point, filled in: ``lr``, ``layer_decay``, ``head_warmup``.

        Example:
            >>> r = PretrainRecipe().resolved(random_init=True)
            >>> r["lr"], r["layer_decay"], r["head_warmup"]
            (0.0005, 1.0, 0)
        """
        return {"lr": self.lr if self.lr is not None else (5e-4 if random_init else 5e-5),
                "layer_decay": self.layer_decay if self.layer_decay is not None else (1.0 if random_init else 0.9),
                "head_warmup": self.head_warmup if self.head_warmup is not None else (0 if random_init else 0.2)}

    def total_steps(self, n_images: int) -> int:
        """Optimisation steps of the run on ``n_images`` images: ``epochs`` full batches each, capped by
        ``max_steps`` (a partial last batch is dropped, as DINO's loader does).

        Example:
            >>> PretrainRecipe(epochs=2, batch_size=64).total_steps(200), PretrainRecipe(max_steps=5).total_steps(10**4)
            (6, 5)
        """
        per_epoch = max(1, n_images // self.batch_size)
        total = self.epochs * per_epoch
        return total if self.max_steps is None else min(total, self.max_steps)

    def warmup_steps(self, total: int, random_init: bool) -> int:
        """Steps of the head warm-up (backbone frozen), at most ``total - 1`` so the backbone trains at least once.

        Example:
            >>> PretrainRecipe().warmup_steps(100, random_init=False), PretrainRecipe(head_warmup=7).warmup_steps(5, False)
            (20, 4)
        """
        hw = self.resolved(random_init=random_init)["head_warmup"]
        steps = int(round(hw * total)) if isinstance(hw, float) else int(hw)
        return max(0, min(steps, total - 1))

    def monitor_steps(self, total: int) -> list[int]:
        """The steps after which the monitor scores (always the start, 0, and the end, ``total``).

        Example:
            >>> PretrainRecipe(monitor_every=4).monitor_steps(10)
            [0, 4, 8, 10]
        """
        every = self.monitor_every if self.monitor_every is not None else max(1, math.ceil(total / 8))
        steps = {0, total} | (set(range(every, total, every)) if every > 0 else set())
        return sorted(steps)
