"""The one training recipe every adaptation method shares (:class:`TuneRecipe`), validated at construction.

Defaults and where they come from:

* AdamW, weight decay 0.05, linear warm-up then cosine decay to 0, no decay on biases, norms and
  tokens: the MAE / BEiT fine-tuning recipe (He et al. 2022, Bao et al. 2022).
* ``layer_decay`` 0.75 (layer-wise learning-rate decay for ``full``): MAE's ViT-B value.
* ``warmup_fraction`` 0.1 of the steps (MAE warms up 5 of 100 epochs; short runs need a larger share).
* learning rates per method when ``lr`` is ``None`` (:data:`vitlab.tuning.methods.METHODS`): ``linear``
  1e-3, ``full`` 1e-4 (MAE's base lr 5e-4 x batch 64 / 256 ~ 1.25e-4), ``lora`` / ``dora`` 1e-3
  (Hu et al. 2022 use 2e-4..5e-4 on language models; ViT adapters train higher), ``vpt`` 1e-2
  (VPT uses SGD with large rates; AdamW needs less), ``bitfit`` 1e-3 (Zaken et al. 2022).
* LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
  Out-of-Distribution"): every method's head starts from the linear probe (``vitlab eval``'s L-BFGS
  probe, C chosen on a holdout) fitted on the features the head reads at step 0, on the rows it trains on;
  fine-tuning from a random head distorts the pretrained features while the head is still wrong
  (``lp_init``).
* the learning rate chosen on the validation part of train from a small grid around the method's
  default (``lr_grid`` multipliers 0.3, 1, 3: half a decade each side), as Battle of the Backbones
  (Goldblum et al. 2023) and VTAB (Zhai et al. 2019) choose it on validation, never on test; the
  epoch by early stopping on the same validation part (with LP-FT the untouched start, epoch 0, is a
  candidate too). Then, as VTAB-1k does (choose on val200, train on train800 + val200), the method is
  trained once more on train + validation with the chosen rate and number of epochs (``refit``); the
  frozen probe refits on train + validation after choosing its C the same way.
* early stopping on a stratified validation part of train (``val_fraction`` 0.1) with ``patience``
  epochs, keeping the best epoch's weights.
* no augmentation by default, as VTAB-1k is fine-tuned in VPT's reference code (resize and normalise
  only). ``augment=True`` adds random shifts of up to 1/8 of the side (edge-replicating pad + crop; no
  flips, since flips change digits and text). Measured on ``sample:digits`` with the demo ViT
  (BENCHMARKS.md): the LP-FT head scores top-1 0.99 / loss 0.05 on the training images but 0.65 / 1.50
  on their shifted copies, so with shifts every method spent its first epochs learning shift
  invariance, lost validation accuracy, and early stopping kept the untouched LP start.

Example:
    >>> TuneRecipe(epochs=2, batch_size=32).epochs
    2
    >>> TuneRecipe(epochs=0)
    Traceback (most recent call last):
    ...
    vitlab.errors.ConfigError: epochs must be a whole number in 1..10000, got 0.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vitlab.errors import ConfigError

__all__ = ["TuneRecipe", "PRECISIONS", "POOLS"]

PRECISIONS = ("auto", "fp32", "bf16")
POOLS = ("auto", "cls", "mean")


def _int_in(name: str, v: Any, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{name} must be a whole number in {lo}..{hi}, got {v!r}.")


def _float_in(name: str, v: Any, lo: float, hi: float, *, lo_open: bool = False, hint: str = "") -> None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
        (lo < v if lo_open else lo <= v) and v <= hi
    if not ok:
        rng = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise ConfigError(f"{name} must be a number in {rng}, got {v!r}.{(' ' + hint) if hint else ''}")


@dataclass(frozen=True)
class TuneRecipe:
    """How every method trains (a frozen, validated config; see the module docstring for the sources).

    Args:
        epochs: most passes over the training part (early stopping may end sooner).
        batch_size: images per optimisation step.
        lr: peak learning rate; ``None`` = the method's default.
        weight_decay: AdamW decoupled weight decay (not on biases, norms, tokens, prompts).
        warmup_fraction: share of the steps with a linear warm-up, then cosine decay to 0.
        layer_decay: ``full`` only: block ``i`` of ``L`` trains at ``lr * layer_decay ** (L + 1 - (i + 1))``.
        val_fraction: share of the training part held out (stratified) for early stopping.
        patience: epochs without a better validation accuracy before stopping.
        max_steps: stop after this many optimisation steps in all (``None``: ``epochs`` decide); for
            smoke tests and benchmarks.
        augment: random shifts of up to 1/8 of the side while training (off by default, see above).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 elsewhere), ``fp32`` or ``bf16`` (CUDA only).
        pool: features the head reads: ``auto`` (``cls`` with a class token, else ``mean``), ``cls``, ``mean``.
        label_smoothing: cross-entropy label smoothing.
        lp_init: LP-FT: start the head from the linear probe on the step-0 features of the training part
            (``False``: a random head, std 0.01).
        lr_grid: multipliers of the base learning rate (``lr``, else the method's default) tried on the
            validation part; the best validation top-1 (ties: lower validation loss, then the smaller rate)
            is kept. ``(1.0,)`` trains once at the base rate.
        refit: after the choice, train again on train + validation with the chosen rate for the chosen number
            of epochs (and, with ``lp_init``, from the probe on train + validation); that model is scored.

    Example:
        >>> TuneRecipe().replace(lr=3e-4).lr
        0.0003
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float | None = None
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    layer_decay: float = 0.75
    val_fraction: float = 0.1
    patience: int = 3
    max_steps: int | None = None
    augment: bool = False
    precision: str = "auto"
    pool: str = "auto"
    label_smoothing: float = 0.0
    lp_init: bool = True
    lr_grid: tuple[float, ...] = (0.3, 1.0, 3.0)
    refit: bool = True

    def __post_init__(self) -> None:
        _int_in("epochs", self.epochs, 1, 10_000)
        _int_in("batch_size", self.batch_size, 1, 1 << 16)
        if self.lr is not None:
            _float_in("lr", self.lr, 0.0, 1.0, lo_open=True, hint="Typical values: 1e-4 (full) to 1e-2 (vpt).")
        _float_in("weight_decay", self.weight_decay, 0.0, 10.0)
        _float_in("warmup_fraction", self.warmup_fraction, 0.0, 0.9)
        _float_in("layer_decay", self.layer_decay, 0.0, 1.0, lo_open=True)
        _float_in("val_fraction", self.val_fraction, 0.0, 0.5, lo_open=True,
                  hint="Early stopping needs a validation part of train, e.g. 0.1.")
        _int_in("patience", self.patience, 1, 10_000)
        if self.max_steps is not None:
            _int_in("max_steps", self.max_steps, 1, 10**9)
        if not isinstance(self.augment, bool):
            raise ConfigError(f"augment must be true or false, got {self.augment!r}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}.")
        if self.pool not in POOLS:
            raise ConfigError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}.")
        _float_in("label_smoothing", self.label_smoothing, 0.0, 0.5)
        for name in ("lp_init", "refit"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}.")
        grid = (self.lr_grid,) if isinstance(self.lr_grid, (int, float)) else self.lr_grid
        try:
            grid = tuple(sorted(grid))
        except TypeError:
            grid = ()
        if not 1 <= len(grid) <= 10 or len(set(grid)) != len(grid):
            raise ConfigError(f"lr_grid must be 1 to 10 distinct multipliers of the learning rate, e.g. 0.3,1,3, "
                              f"got {self.lr_grid!r}.")
        for k in grid:
            _float_in("each lr_grid multiplier", k, 0.0, 1000.0, lo_open=True, hint="e.g. --lr-grid 0.3,1,3.")
        object.__setattr__(self, "lr_grid", grid)

    def learning_rates(self, default_lr: float) -> list[float]:
        """The candidate learning rates of a method whose default is ``default_lr`` (ascending).

        Example:
            >>> TuneRecipe().learning_rates(1e-3)
            [0.0003, 0.001, 0.003]
        """
        base = self.lr or default_lr
        return [float(f"{base * k:.6g}") for k in self.lr_grid]

    def replace(self, **changes: Any) -> TuneRecipe:
        """A copy with ``changes`` (validated again); unknown names get a clear error."""
        known = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ConfigError(f"the tune recipe has no setting {', '.join(map(repr, bad))}; its settings are: "
                              f"{', '.join(sorted(known))}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
