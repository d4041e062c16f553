"""Training and prediction of MIL heads on lists of bags, one bag per step.

Bags are ``[n_i, d]`` arrays (numpy or torch) of any size ``n_i >= 1``; they are never padded.
Training follows CLAM's recipe (Lu et al. 2021; ``mahmoodlab/CLAM`` README commands:
``--lr 2e-4 --reg 1e-5 --drop_out 0.25 --early_stopping``, batch size 1, at most 200 epochs,
early stopping on validation loss with patience 20 and no stop before epoch 50), with AdamW
(decoupled weight decay) in place of CLAM's Adam + L2. The weights of the epoch with the lowest
validation loss are restored at the end.

Determinism: the head's initialisation and dropout draw from ``torch.manual_seed(seed)`` (inside
a forked RNG, so the caller's random state is left alone) and the bag order and subsampling from
``numpy.random.default_rng(seed)``: the same inputs give the same numbers on CPU.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> bags = [rng.normal(size=(int(rng.integers(3, 9)), 8)).astype("float32") for _ in range(12)]
    >>> y = np.arange(12) % 2
    >>> fit = fit_head(bags[:8], y[:8], bags[8:], y[8:], head="abmil", n_classes=2, seed=0, epochs=3,
    ...                min_epochs=0)
    >>> proba, attention = predict(fit, bags[8:])
    >>> proba.shape, proba.dtype, attention[0].shape == (len(bags[8]),)
    ((4, 2), dtype('float32'), True)
    >>> [h["epoch"] for h in fit.history]
    [1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitlab.errors import ConfigError, DataError
from vitlab.mil.heads import HEADS, build_head

__all__ = ["MILTrainConfig", "MILTrainer", "FittedHead", "fit_head", "predict", "check_bags"]

Bag = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class MILTrainConfig:
    """How a MIL head is trained (frozen and validated).

    Attributes:
        head: a name in :data:`vitlab.mil.heads.HEADS`.
        head_cfg: the head's own keyword arguments (``{"hidden": 256}``).
        epochs: maximum number of epochs (CLAM: 200).
        lr: AdamW learning rate (CLAM's README runs: 2e-4).
        weight_decay: AdamW weight decay (CLAM's ``--reg``: 1e-5).
        patience: epochs without a lower validation loss before stopping (CLAM: 20).
        min_epochs: never stop before this epoch (CLAM's ``stop_epoch``: 50).
        accumulate: bags per optimiser step (gradient accumulation; 1 = CLAM's batch size 1).
        max_instances: during **training only**, bags with more instances are replaced by a
            seeded random subset of this many (fresh each epoch): faster steps, bounded memory,
            and a mild augmentation. Validation and prediction always see whole bags.
        grad_clip: clip the gradient norm to this value, or ``None``.
    """

    head: str = "abmil"
    head_cfg: dict[str, Any] = field(default_factory=dict)
    epochs: int = 200
    lr: float = 2e-4
    weight_decay: float = 1e-5
    patience: int = 20
    min_epochs: int = 50
    accumulate: int = 1
    max_instances: int | None = None
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            HEADS.entry(self.head)  # raises UnknownNameError with close matches
        for name in ("epochs", "patience", "accumulate"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"MIL training: {name} must be a positive integer, got {v!r}.")
        if not isinstance(self.min_epochs, int) or self.min_epochs < 0:
            raise ConfigError(f"MIL training: min_epochs must be an integer >= 0, got {self.min_epochs!r}.")
        if not self.lr > 0:
            raise ConfigError(f"MIL training: lr must be > 0, got {self.lr!r}.")
        if not self.weight_decay >= 0:
            raise ConfigError(f"MIL training: weight_decay must be >= 0, got {self.weight_decay!r}.")
        if self.max_instances is not None and (not isinstance(self.max_instances, int) or self.max_instances < 1):
            raise ConfigError(f"MIL training: max_instances must be a positive integer or None, "
                              f"got {self.max_instances!r}.")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"MIL training: grad_clip must be > 0 or None, got {self.grad_clip!r}.")


@dataclass
class FittedHead:
    """A trained head and how it got there.

    Attributes:
        module: the head (``eval()`` mode, on ``device``), with the best epoch's weights.
        config: the :class:`MILTrainConfig` used.
        in_dim: instance feature size.
        n_classes: number of classes.
        best_epoch: 1-based epoch whose weights were kept (the last epoch without validation).
        best_val_loss: its validation loss (``nan`` without validation bags).
        history: one ``{"epoch", "train_loss", "val_loss"}`` dict per epoch run.
        stopped_early: whether patience ran out before ``epochs``.
        device: where the module lives.
    """

    module: nn.Module
    config: MILTrainConfig
    in_dim: int
    n_classes: int
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]]
    stopped_early: bool
    device: str = "cpu"


def check_bags(bags: Sequence[Bag], in_dim: int | None = None, what: str = "bag") -> int:
    """Check every bag is a non-empty ``[n, d]`` array of one feature size; return ``d``.

    Raises:
        DataError: naming the first bad bag's index.

    Example:
        >>> import numpy as np
        >>> check_bags([np.zeros((3, 4)), np.zeros((1, 4))])
        4
        >>> check_bags([np.zeros((3, 4)), np.zeros((0, 4))])
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: bag 1 has 0 instances; drop empty bags (e.g. slides with no tissue tiles) first.
    """
    if len(bags) == 0:
        raise DataError(f"no {what}s given; pass a non-empty list of [n, d] arrays.")
    for i, b in enumerate(bags):
        shape = tuple(getattr(b, "shape", ()))
        if len(shape) != 2:
            raise DataError(f"{what} {i} has shape {shape}; every {what} must be a 2-D [n_instances, d] array.")
        if shape[0] == 0:
            raise DataError(f"{what} {i} has 0 instances; drop empty bags (e.g. slides with no tissue tiles) first.")
        if in_dim is None:
            in_dim = shape[1]
        elif shape[1] != in_dim:
            raise DataError(f"{what} {i} has {shape[1]} features per instance, expected {in_dim} "
                            f"(as {what} 0 / the head); embed every bag with the same backbone.")
    return int(in_dim)


def _labels(y: Any, n_bags: int, n_classes: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n_bags,):
        raise DataError(f"{what}: {y.shape[0] if y.ndim else 0} labels for {n_bags} bags; give one label per bag.")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{what}: labels must be integers 0..{n_classes - 1}.")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= n_classes:
        raise DataError(f"{what}: labels must be in 0..{n_classes - 1}, found {int(y.min())}..{int(y.max())}; "
                        "check n_classes.")
    return y.astype(np.int64)


def _tensor(b: Bag, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(b) if isinstance(b, np.ndarray) else b
    return t.to(device=device, dtype=torch.float32)


class MILTrainer:
    """Trains one MIL head with a :class:`MILTrainConfig`.

    Example:
        >>> import numpy as np
        >>> bags = [np.full((i + 1, 4), float(i % 2), dtype="float32") for i in range(6)]
        >>> fit = MILTrainer(MILTrainConfig(head="mean", epochs=2, min_epochs=0)).fit(
        ...     bags, np.arange(6) % 2, None, None, n_classes=2, seed=0)
        >>> fit.best_epoch, len(fit.history)
        (2, 2)
    """

    def __init__(self, config: MILTrainConfig | None = None, **params: Any) -> None:
        if config is not None and params:
            raise ConfigError("MILTrainer: pass either a config or keyword parameters, not both.")
        self.config = config if config is not None else MILTrainConfig(**params)

    def fit(self, train_bags: Sequence[Bag], y: Any, val_bags: Sequence[Bag] | None, y_val: Any, *,
            n_classes: int, seed: int, device: str = "cpu") -> FittedHead:
        """Fit on ``train_bags`` with early stopping on ``val_bags`` (``None``: run all epochs).

        Args:
            train_bags: ``[n_i, d]`` arrays, one per bag.
            y: ``[n_bags]`` integer labels.
            val_bags: validation bags, or ``None``.
            y_val: their labels, or ``None``.
            n_classes: number of classes ``C``.
            seed: seeds initialisation, dropout, bag order and subsampling.
            device: torch device string.

        Returns:
            A :class:`FittedHead` with the best epoch's weights.
        """
        cfg = self.config
        in_dim = check_bags(train_bags, what="bag")
        y = _labels(y, len(train_bags), n_classes, "train labels")
        has_val = val_bags is not None
        if has_val:
            check_bags(val_bags, in_dim, what="validation bag")
            y_val = _labels(y_val, len(val_bags), n_classes, "validation labels")
        dev = torch.device(device)
        fork = [dev.index or 0] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=fork):
            torch.manual_seed(seed)
            module = build_head(cfg.head, in_dim, n_classes, **cfg.head_cfg).to(dev)
            return self._loop(module, train_bags, y, val_bags if has_val else None, y_val, in_dim, n_classes,
                              seed, dev)

    def _loop(self, module: nn.Module, bags: Sequence[Bag], y: np.ndarray, val_bags: Sequence[Bag] | None,
              y_val: Any, in_dim: int, n_classes: int, seed: int, dev: torch.device) -> FittedHead:
        cfg = self.config
        rng = np.random.default_rng(seed)
        opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        history: list[dict[str, float]] = []
        best_state, best_epoch, best_loss, bad, stopped = None, 0, float("inf"), 0, False
        for epoch in range(1, cfg.epochs + 1):
            module.train()
            total, pending = 0.0, 0
            opt.zero_grad(set_to_none=True)
            for i in rng.permutation(len(bags)):
                x = _tensor(bags[i], dev)
                if cfg.max_instances is not None and x.shape[0] > cfg.max_instances:
                    keep = np.sort(rng.choice(x.shape[0], cfg.max_instances, replace=False))
                    x = x[torch.as_tensor(keep, device=dev)]
                target = torch.tensor([int(y[i])], device=dev)
                out = module(x, int(y[i]))
                loss = F.cross_entropy(out.logits[None], target)
                if out.aux_loss is not None:
                    loss = (1.0 - out.aux_weight) * loss + out.aux_weight * out.aux_loss
                (loss / cfg.accumulate).backward()
                total += float(loss.detach())
                pending += 1
                if pending == cfg.accumulate:
                    self._step(module, opt)
                    pending = 0
            if pending:
                self._step(module, opt)
            record = {"epoch": epoch, "train_loss": total / len(bags), "val_loss": float("nan")}
            if val_bags is not None:
                vl = _val_loss(module, val_bags, y_val, dev)
                record["val_loss"] = vl
                if vl < best_loss:
                    best_loss, best_epoch, bad = vl, epoch, 0
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    bad += 1
            history.append(record)
            if val_bags is not None and bad >= cfg.patience and epoch >= cfg.min_epochs:
                stopped = epoch < cfg.epochs
                break
        if best_state is not None:
            module.load_state_dict(best_state)
        else:
            best_epoch = len(history)
        module.eval()
        return FittedHead(module, cfg, in_dim, n_classes, best_epoch,
                          best_loss if val_bags is not None else float("nan"), history, stopped, str(dev))

    def _step(self, module: nn.Module, opt: torch.optim.Optimizer) -> None:
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(module.parameters(), self.config.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)


def _val_loss(module: nn.Module, bags: Sequence[Bag], y: np.ndarray, dev: torch.device) -> float:
    """Mean bag cross-entropy (no auxiliary loss, as CLAM's early stopping) in eval mode."""
    module.eval()
    total = 0.0
    with torch.inference_mode():
        for b, t in zip(bags, y):
            logits = module(_tensor(b, dev)).logits
            total += float(F.cross_entropy(logits[None].float(), torch.tensor([int(t)], device=dev)))
    return total / len(bags)


def fit_head(train_bags: Sequence[Bag], y: Any, val_bags: Sequence[Bag] | None, y_val: Any, *,
             head: str = "abmil", n_classes: int, seed: int, device: str = "cpu", epochs: int = 200,
             lr: float = 2e-4, weight_decay: float = 1e-5, patience: int = 20, min_epochs: int = 50,
             accumulate: int = 1, max_instances: int | None = None, grad_clip: float | None = None,
             head_cfg: dict[str, Any] | None = None) -> FittedHead:
    """Train a MIL head on bags, one bag per step, with early stopping on validation loss.

    See :class:`MILTrainConfig` for every option and its source; this is
    ``MILTrainer(MILTrainConfig(...)).fit(...)``.

    Args:
        train_bags: ``[n_i, d]`` arrays (numpy or torch), one per bag, any ``n_i >= 1``.
        y: ``[n_bags]`` integer labels in ``0..n_classes-1``.
        val_bags: validation bags for early stopping, or ``None`` (train ``epochs``, keep the last).
        y_val: their labels, or ``None``.
        head: a name in :data:`vitlab.mil.heads.HEADS`.
        n_classes: number of classes ``C``.
        seed: makes the run reproducible.
        device: torch device string.

    Returns:
        :class:`FittedHead`.

    Raises:
        DataError: an empty bag, a bag that is not 2-D, mismatched feature sizes (naming the bag's
            index), or bad labels.

    Example:
        >>> import numpy as np
        >>> fit_head([np.zeros((2, 4)), np.zeros((0, 4))], [0, 1], None, None, n_classes=2, seed=0)
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: bag 1 has 0 instances; drop empty bags (e.g. slides with no tissue tiles) first.
    """
    cfg = MILTrainConfig(head=head, head_cfg=dict(head_cfg or {}), epochs=epochs, lr=lr, weight_decay=weight_decay,
                         patience=patience, min_epochs=min_epochs, accumulate=accumulate, max_instances=max_instances,
                         grad_clip=grad_clip)
    return MILTrainer(cfg).fit(train_bags, y, val_bags, y_val, n_classes=n_classes, seed=seed, device=device)


def predict(head: FittedHead | nn.Module, bags: Sequence[Bag], *, device: str | None = None
            ) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Class probabilities and per-instance attention for each bag, one bag at a time.

    Runs under ``torch.inference_mode`` in eval mode; each bag's outputs are moved to the CPU as
    float32 numpy at once, so memory stays flat however many bags there are.

    Args:
        head: a :class:`FittedHead` or a bare head module.
        bags: ``[n_i, d]`` arrays.
        device: where to run (default: the fitted head's device, or the module's).

    Returns:
        ``proba [n_bags, C]`` float32 and a list of ``attention [n_i]`` float32 arrays (``None``
        entries for heads without attention).

    Example:
        >>> import numpy as np
        >>> from vitlab.mil.heads import build_head
        >>> proba, att = predict(build_head("max", 4, 3), [np.ones((2, 4)), np.ones((5, 4))])
        >>> proba.shape, att
        ((2, 3), [None, None])
    """
    module = head.module if isinstance(head, FittedHead) else head
    in_dim = head.in_dim if isinstance(head, FittedHead) else getattr(module, "in_dim", None)
    check_bags(bags, in_dim)
    if device is None:
        p = next(module.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")
    else:
        dev = torch.device(device)
        module.to(dev)
    was_training = module.training
    module.eval()
    probas: list[np.ndarray] = []
    attention: list[np.ndarray | None] = []
    try:
        with torch.inference_mode():
            for b in bags:
                out = module(_tensor(b, dev))
                probas.append(torch.softmax(out.logits.float(), dim=-1).cpu().numpy().astype(np.float32))
                attention.append(None if out.attention is None
                                 else out.attention.float().cpu().numpy().astype(np.float32))
                del out
    finally:
        module.train(was_training)
    return np.stack(probas), attention
