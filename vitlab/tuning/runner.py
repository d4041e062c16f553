"""The one training loop of every adaptation method: AdamW, warm-up + cosine, light augmentation,
early stopping on a validation part of train, bf16 autocast on CUDA only, seeded.

Written here rather than with a trainer library (HF ``Trainer``, Lightning): the loop is ~100 lines,
and it must keep vitlab's contracts (the Backbone forward, the store's progress bar on stderr only,
float64 probabilities for the scorer, one clear error line on bad input or GPU memory).

Example:
    >>> import vitlab, numpy as np
    >>> from vitlab.tuning.methods import parse_methods, clone_backbone
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> src = vitlab.load_source("sample:digits?limit=60")
    >>> bank = ImageBank(src, bb.spec.preprocessing)
    >>> net = TuneNet(clone_backbone(bb), 10, "cls", torch.Generator().manual_seed(0))
    >>> rep = fit(net, bank, src.labels, np.arange(40), np.arange(40, 50), parse_methods("linear")[0],
    ...           TuneRecipe(epochs=1), lr=1e-3, seed=0, device=torch.device("cpu"), progress=False, label="linear")
    >>> rep.epochs_run, predict(net, bank, np.arange(50, 60), torch.device("cpu")).shape
    (1, (10, 10))
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vitlab.backbones.base import Backbone
from vitlab.backbones.preprocessing import Preprocessing
from vitlab.data.base import DataSource
from vitlab.errors import ConfigError
from vitlab.tuning.methods import Method
from vitlab.tuning.recipe import TuneRecipe

__all__ = ["ImageBank", "TuneNet", "FitReport", "fit", "predict", "trainable_parameters", "shift_augment"]

#: images are kept preprocessed in memory up to this many bytes, else re-read per batch
BANK_BYTES = 1 << 30


class ImageBank:
    """Preprocessed images of a source, ``[B, 3, H, W]`` float32 per batch of source rows.

    All images are decoded and preprocessed once when they fit in :data:`BANK_BYTES`; otherwise each
    batch is read from the source again (slower, bounded memory).
    """

    def __init__(self, source: DataSource, preprocessing: Preprocessing, max_bytes: int = BANK_BYTES) -> None:
        self.source, self.transform = source, preprocessing.build_transform()
        h, w = preprocessing.input_size
        self.cached: torch.Tensor | None = None
        if len(source) * 3 * h * w * 4 <= max_bytes:
            self.cached = torch.stack([self._load(i) for i in range(len(source))])

    def _load(self, i: int) -> torch.Tensor:
        return self.transform(self.source.load_image(int(i)))

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        """Images of source rows ``rows`` as ``[len(rows), 3, H, W]``."""
        if self.cached is not None:
            return self.cached[torch.as_tensor(np.asarray(rows, dtype=np.int64))]
        return torch.stack([self._load(i) for i in rows])


class TuneNet(nn.Module):
    """A backbone (being adapted) plus a linear head on its pooled last-layer features.

    Args:
        bb: the backbone copy to train (its model is registered as ``body``).
        n_classes: head outputs.
        pool: ``cls`` or ``mean`` (:func:`vitlab.backbones.base.pool_tokens`).
        generator: seeds the head initialisation (normal, std 0.01; bias 0).
    """

    def __init__(self, bb: Backbone, n_classes: int, pool: str, generator: torch.Generator) -> None:
        super().__init__()
        self.bb, self.pool, self.layer = bb, pool, bb.spec.depth - 1
        self.body = bb.model
        dim = bb.spec.embed_dim
        self.head = nn.Linear(dim, n_classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(n_classes, dim, generator=generator) * 0.01)
            self.head.bias.zero_()
        self.head.to(next(iter(self.body.parameters()), torch.zeros(())).device)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled last-layer features ``[B, C]`` of images ``[B, 3, H, W]``."""
        out = self.bb.forward_tokens(x, self.layer)
        return self.bb.pool(out, self.layer, self.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def trainable_parameters(net: TuneNet) -> dict[str, nn.Parameter]:
    """Name → parameter for everything that trains (``body.*`` of the method, and ``head.*``)."""
    return {n: p for n, p in net.named_parameters() if p.requires_grad}


def shift_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shift of each image by up to 1/8 of its side (edge-replicating pad, then crop) ``[B, 3, H, W]``.

    Example:
        >>> shift_augment(torch.zeros(2, 3, 8, 8), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 8, 8])
    """
    b, _, h, w = x.shape
    ph, pw = max(1, h // 8), max(1, w // 8)
    xp = F.pad(x, (pw, pw, ph, ph), mode="replicate")
    oy = torch.randint(0, 2 * ph + 1, (b,), generator=generator).tolist()
    ox = torch.randint(0, 2 * pw + 1, (b,), generator=generator).tolist()
    return torch.stack([xp[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w] for i in range(b)])


@dataclass
class FitReport:
    """What training did: ``best_epoch`` (1-based; 0 = the starting weights, a candidate with
    ``start_candidate``) whose weights were kept, with its ``best_val_top1`` and ``best_val_loss``, ``epochs_run``,
    ``steps``, ``images_seen`` (training images through forward + backward), ``history`` per epoch
    ``{epoch, train_loss, val_loss, val_top1}``, ``features_cached`` (frozen body: features computed once)."""

    best_epoch: int = 0
    epochs_run: int = 0
    steps: int = 0
    images_seen: int = 0
    features_cached: bool = False
    history: list[dict[str, float | None]] = field(default_factory=list)
    best_val_top1: float | None = None
    best_val_loss: float | None = None


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim <= 1 or name.endswith(("cls_token", "reg_token", "pos_embed", "dist_token", "prompts"))


def _param_groups(net: TuneNet, method: Method, recipe: TuneRecipe, lr: float) -> list[dict[str, Any]]:
    scales = method.lr_scales(net.bb, recipe.layer_decay)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in trainable_parameters(net).items():
        scale = scales.get(name.removeprefix("body."), 1.0) if name.startswith("body.") else 1.0
        wd = 0.0 if _no_decay(name, p) else recipe.weight_decay
        groups.setdefault((lr * scale, wd), []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in groups.items()]


def _schedule(total: int, warmup_fraction: float):
    warm = int(round(warmup_fraction * total))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    return f


def _autocast(device: torch.device, recipe: TuneRecipe):
    from vitlab.perf.measure import autocast_context

    bf16 = recipe.precision == "bf16" or (recipe.precision == "auto" and device.type == "cuda")
    return autocast_context(device, "bf16" if bf16 else "fp32")


@torch.no_grad()
def _features(net: TuneNet, bank: ImageBank, rows: np.ndarray, device: torch.device, recipe: TuneRecipe
              ) -> torch.Tensor:
    net.eval()
    out = []
    for s in range(0, len(rows), recipe.batch_size):
        with _autocast(device, recipe):
            out.append(net.features(bank.batch(rows[s:s + recipe.batch_size]).to(device)).float())
    return torch.cat(out) if out else torch.zeros(0, net.head.in_features, device=device)


@torch.no_grad()
def predict(net: TuneNet, bank: ImageBank, rows: np.ndarray, device: torch.device,
            recipe: TuneRecipe | None = None, feats: torch.Tensor | None = None) -> np.ndarray:
    """Class probabilities ``[len(rows), C]`` (float64) of source rows ``rows`` (or of given features)."""
    recipe = recipe or TuneRecipe()
    net.eval()
    if feats is None:
        feats = _features(net, bank, rows, device, recipe)
    return torch.softmax(net.head(feats).double(), dim=1).cpu().numpy()


def _val_scores(net: TuneNet, bank: ImageBank, rows: np.ndarray, y: torch.Tensor, device: torch.device,
                recipe: TuneRecipe, feats: torch.Tensor | None) -> tuple[float, float]:
    p = torch.as_tensor(predict(net, bank, rows, device, recipe, feats))
    loss = float(F.nll_loss(torch.log(p.clamp_min(1e-12)), y.cpu()))
    return float((p.argmax(1) == y.cpu()).double().mean()), loss


def fit(net: TuneNet, bank: ImageBank, labels: np.ndarray, train_rows: np.ndarray, val_rows: np.ndarray,
        method: Method, recipe: TuneRecipe, *, lr: float, seed: int, device: torch.device,
        progress: bool | None, label: str, start_candidate: bool = False, stop_after: int | None = None
        ) -> FitReport:
    """Train ``net`` (its trainable parameters and head) on ``train_rows``, early-stopped on ``val_rows``.

    The best epoch's weights (validation top-1, ties broken by validation loss) are put back at the
    end; with ``start_candidate`` the starting weights are scored first as epoch 0 and kept if no epoch
    beats them (LP-FT: a head that starts at the linear probe). A frozen body (``linear``) computes the
    features once and trains the head on them (no augmentation: the features do not change). Seeded:
    the same inputs give the same weights on CPU.

    Refit (empty ``val_rows``): no validation, the weights after ``stop_after`` epochs are kept (the
    learning-rate schedule stays the one of ``recipe.epochs`` epochs, as in the run that chose the epoch).

    Raises:
        ConfigError: out of GPU memory (the message suggests a smaller batch).
    """
    from vitlab.store.progress import image_progress, show_progress

    rep = FitReport()
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    y_tr, y_val = y_all[train_rows].to(device), y_all[val_rows].to(device)
    params = trainable_parameters(net)
    frozen_body = not any(n.startswith("body.") for n in params)
    opt = torch.optim.AdamW(_param_groups(net, method, recipe, lr), betas=(0.9, 0.999))
    per_epoch = math.ceil(len(train_rows) / recipe.batch_size)
    total = recipe.epochs * per_epoch if recipe.max_steps is None else min(recipe.max_steps, recipe.epochs * per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total, recipe.warmup_fraction))
    best: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] = {}
    bad = 0
    try:
        f_tr = f_val = None
        if frozen_body:
            f_tr = _features(net, bank, train_rows, device, recipe)
            f_val = _features(net, bank, val_rows, device, recipe)
            rep.features_cached = True
        validate = len(val_rows) > 0
        if start_candidate and validate:
            acc, vloss = _val_scores(net, bank, val_rows, y_val, device, recipe, f_val)
            rep.history.append({"epoch": 0, "train_loss": None, "val_loss": vloss, "val_top1": acc})
            best, rep.best_epoch = (acc, vloss), 0
            best_state = {n: p.detach().clone() for n, p in params.items()}
        cuda_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_ids), \
                image_progress(disable=not show_progress(progress)) as bar:
            torch.manual_seed(seed)  # dropout (LoRA) draws from the global RNG: seed it, then give it back
            task = bar.add_task(f"{label} (seed {seed})", total=total * recipe.batch_size)
            for epoch in range(1, (recipe.epochs if stop_after is None else stop_after) + 1):
                net.train()
                order = torch.randperm(len(train_rows), generator=gen).numpy()
                losses = []
                for s in range(0, len(order), recipe.batch_size):
                    if rep.steps >= total:
                        break
                    idx = order[s:s + recipe.batch_size]
                    with _autocast(device, recipe):
                        if frozen_body:
                            logits = net.head(f_tr[torch.as_tensor(idx, device=device)])
                        else:
                            x = bank.batch(train_rows[idx])
                            if recipe.augment:
                                x = shift_augment(x, gen)
                            logits = net(x.to(device))
                        loss = F.cross_entropy(logits.float(), y_tr[torch.as_tensor(idx, device=device)],
                                               label_smoothing=recipe.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    rep.steps += 1
                    rep.images_seen += len(idx)
                    losses.append(float(loss.detach()))
                    bar.update(task, advance=len(idx), description=f"{label} (seed {seed}) loss {losses[-1]:.3f}")
                if not losses:
                    break
                rep.epochs_run = epoch
                if not validate:
                    rep.best_epoch = epoch
                    rep.history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": None,
                                        "val_top1": None})
                    continue
                acc, vloss = _val_scores(net, bank, val_rows, y_val, device, recipe, f_val)
                rep.history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": vloss,
                                    "val_top1": acc})
                if best is None or acc > best[0] or (acc == best[0] and vloss < best[1]):
                    best, bad, rep.best_epoch = (acc, vloss), 0, epoch
                    best_state = {n: p.detach().clone() for n, p in params.items()}
                else:
                    bad += 1
                    if bad >= recipe.patience:
                        break
    except torch.cuda.OutOfMemoryError:
        raise ConfigError(f"out of GPU memory while training {label} with batch_size {recipe.batch_size}: pass a "
                          f"smaller batch (--batch-size {max(1, recipe.batch_size // 2)}) or a smaller backbone."
                          ) from None
    with torch.no_grad():
        for n, t in best_state.items():
            params[n].copy_(t)
    if best is not None:
        rep.best_val_top1, rep.best_val_loss = best
    net.eval()
    return rep


def timed(fn, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)``."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
