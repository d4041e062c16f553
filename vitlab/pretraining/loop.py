"""The one training loop of ``pretrain`` and ``distill``: head warm-up, layer-wise decay, monitoring, the collapse
guard, checkpoints and exact resume, on one process or as a rank of ``--nproc`` (:mod:`vitlab.pretraining.ddp`).

Per step ``s`` (0-based) of ``total``: the global batch is ``order_e[k B : (k + 1) B]`` with ``order_e`` a seeded
permutation of the images for epoch ``e`` (``k`` the step within the epoch; a partial last batch is dropped) and
each rank takes its contiguous share; the program builds the views, the loss is back-propagated, gradients are
averaged over ranks, clipped, and AdamW steps with per-group learning rates from :func:`lr_factor`. While
``s < warmup`` the backbone's weights do not require gradients (the head warm-up); the teacher's EMA then skips
the (equal) backbones, so the warm-up leaves both backbones bit-identical. After the steps of
:meth:`PretrainRecipe.monitor_steps` the monitor scores the exported network; the best point's weights are kept
(``best.pt``) and the collapse guard may stop the run.

Example:
    >>> lr_factor(0, total=10, start=0, warmup=2), lr_factor(1, total=10, start=0, warmup=2)
    (0.5, 1.0)
    >>> lr_factor(3, total=10, start=5, warmup=2)
    0.0
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vitlab.errors import ConfigError, Interrupted
from vitlab.pretraining.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vitlab.pretraining.ddp import all_mean, all_reduce_grads, broadcast_flag, rank_world
from vitlab.pretraining.methods import Program
from vitlab.pretraining.recipe import PretrainRecipe

__all__ = ["LoopResult", "run_loop", "lr_factor", "batch_rows", "param_groups"]


@dataclass
class LoopResult:
    """What the loop did: steps, the per-step loss curve, the monitored curve, the best point, why it stopped."""

    total: int
    warmup: int
    steps_done: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    stop: dict[str, Any] | None = None
    resumed_from: int | None = None
    train_s: float = 0.0
    warmup_check: dict[str, Any] = field(default_factory=dict)
    best_weights: dict[str, torch.Tensor] | None = None
    final_weights: dict[str, torch.Tensor] | None = None


def lr_factor(step: int, *, total: int, start: int, warmup: int, min_fraction: float = 0.0) -> float:
    """Learning-rate multiplier at ``step``: 0 before ``start``, then a linear warm-up over ``warmup`` steps and a
    cosine decay to ``min_fraction`` at ``total`` (DINO's schedule, started late for the backbone)."""
    if step < start:
        return 0.0
    s, span = step - start, max(1, total - start)
    w = max(1, min(warmup, span))
    if s < w:
        return (s + 1) / w
    progress = min(1.0, (s - w) / max(1, span - w))
    return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * progress))


def batch_rows(step: int, n: int, batch: int, seed: int, rank: int = 0, world: int = 1) -> tuple[np.ndarray, int]:
    """``(rows of this rank, epoch)`` of ``step``: epoch ``step // (n // batch)``, its seeded permutation sliced.

    Example:
        >>> rows, epoch = batch_rows(3, 10, 4, seed=0)
        >>> len(rows), epoch
        (4, 1)
    """
    per_epoch = max(1, n // batch)
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([int(seed), int(epoch), 7]).permutation(n)
    rows = order[k * batch:(k + 1) * batch]
    share = batch // world
    return rows[rank * share:(rank + 1) * share], epoch


def param_groups(program: Program, *, lr: float, head_lr: float, layer_decay: float, weight_decay: float
                 ) -> list[dict[str, Any]]:
    """AdamW groups: the student backbone per layer (``lr * layer_decay ** (L + 1 - layer_id)``, DINOv2 / BEiT's
    rule, :func:`vitlab.tuning.methods.layer_id`) and the new parts at ``head_lr``; no decay on biases, norms, tokens."""
    from vitlab.tuning.methods import layer_id
    from vitlab.tuning.runner import _no_decay

    depth = program.student.bb.spec.depth
    groups: dict[tuple[str, float, float], list[torch.nn.Parameter]] = {}
    for n, p in program.student.body.named_parameters():
        scale = layer_decay ** (depth + 1 - layer_id(n, depth))
        groups.setdefault(("backbone", lr * scale, 0.0 if _no_decay(n, p) else weight_decay), []).append(p)
    for n, p in program.new_parameters().items():
        groups.setdefault(("head", head_lr, 0.0 if _no_decay(n, p) else weight_decay), []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd, "kind": kind} for (kind, g_lr, wd), ps in groups.items()]


def _autocast(device: torch.device, precision: str):
    from vitlab.perf.measure import autocast_context

    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return autocast_context(device, "bf16" if bf16 else "fp32")


def run_loop(program: Program, store: Any, *, recipe: PretrainRecipe, seed: int, total: int, warmup: int,
             lr: float, layer_decay: float, export: str, device: torch.device, monitor: Any = None,
             run_dir: Path | None = None, run_id: str = "", progress: bool | None = None, label: str = "pretrain",
             on_step: Callable[[int], None] | None = None) -> LoopResult:
    """Train ``program`` for ``total`` steps (resuming from ``run_dir/checkpoint.pt`` when it is there).

    Raises:
        Interrupted: Ctrl-C; the message says which checkpoint is kept and how to resume.
        ConfigError: out of GPU memory (the message suggests a smaller batch).
    """
    from vitlab.backbones.base import hash_state_dict
    from vitlab.store.progress import image_progress, show_progress

    rank, world = rank_world()
    lead = rank == 0
    program.to(device)
    groups = param_groups(program, lr=lr, head_lr=recipe.head_lr, layer_decay=layer_decay,
                          weight_decay=recipe.weight_decay)
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999))
    head_warm = max(1, round(0.1 * total))
    back_warm = max(1, round(recipe.warmup_fraction * max(1, total - warmup)))
    fns = [(lambda s, w=head_warm: lr_factor(s, total=total, start=0, warmup=w, min_fraction=recipe.min_lr_fraction))
           if g["kind"] == "head" else
           (lambda s, w=back_warm: lr_factor(s, total=total, start=warmup, warmup=w,
                                             min_fraction=recipe.min_lr_fraction)) for g in groups]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, fns)
    trainable = [p for g in groups for p in g["params"]]
    res = LoopResult(total=total, warmup=warmup)
    ckpt = run_dir / "checkpoint.pt" if run_dir is not None else None
    best_path = run_dir / "best.pt" if run_dir is not None else None
    state = load_checkpoint(ckpt, run_id) if ckpt is not None else None
    start, base_hash = 0, None
    if state is not None:
        program.load_state_dict(state["program"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start, res.resumed_from = int(state["step"]), int(state["step"])
        res.curve, res.history, res.best = list(state["curve"]), list(state["history"]), state["best"]
        res.stop, res.warmup_check, base_hash = state.get("stop"), dict(state["warmup_check"]), state["base_hash"]
        res.train_s = float(state["train_s"])
        best = load_checkpoint(best_path, run_id) if res.best is not None else None
        res.best_weights = best["weights"] if best is not None else None
    else:
        torch.manual_seed(seed)  # dropout / drop-path draw from the global RNG
        base_hash = hash_state_dict(program.student.body)
    monitor_at = set(recipe.monitor_steps(total)) if monitor is not None else set()
    metric_key = monitor.protocols[0].label if monitor is not None else None
    last_ckpt, saved_step = time.monotonic(), start if state is not None else None

    def checkpoint(step: int) -> None:
        nonlocal last_ckpt, saved_step
        if ckpt is None or not lead:
            return
        save_checkpoint(ckpt, {"run_id": run_id, "step": step, "program": program.state_dict(),
                               "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng_state(),
                               "curve": res.curve, "history": res.history, "best": res.best, "stop": res.stop,
                               "warmup_check": res.warmup_check, "base_hash": base_hash, "train_s": res.train_s})
        last_ckpt, saved_step = time.monotonic(), step

    def observe(step: int) -> bool:
        """Monitor after ``step`` steps; ``True`` when the collapse guard fires (on every rank)."""
        fire = False
        if lead:
            net = program.export_net(export)
            point = monitor.score(net, device, _autocast(device, recipe.precision))
            since = res.history[-1]["step"] if res.history else 0
            ent = [c["teacher_entropy"] for c in res.curve if since < c["step"] <= step and "teacher_entropy" in c]
            point.update(step=step, epoch=step / max(1, len(store) // recipe.batch_size),
                         images_seen=step * recipe.batch_size, teacher_entropy=float(np.mean(ent)) if ent else None)
            res.history.append(point)
            cur = point["metrics"][metric_key]["top1"]
            if res.best is None or cur["value"] >= res.best["value"]:  # ties: the later, more trained point
                res.best = {"step": step, "value": cur["value"], "metric": f"{metric_key} top1 (validation part)"}
                res.best_weights = {k: v.detach().cpu().clone() for k, v in net.body.state_dict().items()}
                if best_path is not None:
                    save_checkpoint(best_path, {"run_id": run_id, "step": step, "which": export,
                                                "weights": res.best_weights})
            base = res.history[0]["metrics"][metric_key]["top1"]
            from vitlab.pretraining.monitor import collapsed

            if recipe.collapse_guard and step > 0 and collapsed(cur, base):
                fire = True
                res.stop = {"reason": "collapse", "step": step,
                            "message": f"stopped at step {step}: the monitored {metric_key} top-1 fell to "
                                       f"{cur['value']:.3f} [{cur['low']:.3f}, {cur['high']:.3f}], below the base "
                                       f"model's {base['value']:.3f} by more than its interval (collapse guard); "
                                       f"the best checkpoint (step {res.best['step']}) is kept."}
        return broadcast_flag(fire, device)

    if start == 0 and 0 in monitor_at:
        observe(0)
    show = lead and show_progress(progress)
    t_run = time.perf_counter()
    step = start
    try:
        with image_progress(disable=not show) as bar:
            task = bar.add_task(label, total=total * recipe.batch_size, completed=start * recipe.batch_size)
            while step < total and res.stop is None:
                trains = step >= warmup
                program.student.body.requires_grad_(trains)
                program.train()
                rows, epoch = batch_rows(step, len(store), recipe.batch_size, seed, rank, world)
                batch = program.make_batch(store.batch(rows), rows, seed=seed, epoch=epoch, device=device)
                with _autocast(device, recipe.precision):
                    loss, stats = program.loss(batch, step, total)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                all_reduce_grads(trainable)
                if recipe.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_([p for p in trainable if p.grad is not None], recipe.clip_grad)
                lrs = {g["kind"]: g["lr"] for g in opt.param_groups}
                opt.step()
                sched.step()
                program.after_step(step, total, trains)
                keys = sorted(stats)
                vals = all_mean([float(loss.detach())] + [float(stats[k]) for k in keys], device)
                entry = {"step": step + 1, "loss": vals[0], **dict(zip(keys, vals[1:])),
                         "lr": lrs.get("backbone", 0.0), "head_lr": lrs.get("head", 0.0)}
                res.curve.append(entry)
                step += 1
                if step == warmup and warmup > 0:
                    res.warmup_check = {"steps": warmup, "backbone_hash_before": base_hash,
                                        "backbone_hash_after": hash_state_dict(program.student.body)}
                    res.warmup_check["backbone_unchanged"] = (res.warmup_check["backbone_hash_before"]
                                                              == res.warmup_check["backbone_hash_after"])
                bar.update(task, advance=recipe.batch_size,
                           description=f"{label} step {step}/{total} loss {vals[0]:.4f}")
                if not math.isfinite(vals[0]):
                    res.stop = {"reason": "non-finite loss", "step": step,
                                "message": f"stopped at step {step}: the loss is {vals[0]} (diverged); lower --lr "
                                           "or --head-lr. The best checkpoint is kept."}
                elif step in monitor_at and observe(step) and res.stop is None:  # rank 0 stopped: every rank
                    res.stop = {"reason": "collapse", "step": step, "message": "stopped by the collapse guard."}
                if step == total or res.stop is not None or \
                        time.monotonic() - last_ckpt >= recipe.checkpoint_minutes * 60:
                    res.train_s += time.perf_counter() - t_run
                    t_run = time.perf_counter()
                    checkpoint(step)
                if on_step is not None:
                    on_step(step)
    except KeyboardInterrupt:
        if ckpt is None:
            raise Interrupted(f"stopped at step {step} of {total}; nothing is kept without --out (pass --out to "
                              "checkpoint and resume).") from None
        kept = (f"the checkpoint of step {saved_step} is kept in {ckpt}" if saved_step is not None else
                f"no checkpoint was written yet (every {recipe.checkpoint_minutes:g} min)")
        raise Interrupted(f"stopped at step {step} of {total}; {kept}: run the same command again to resume."
                          ) from None
    except torch.cuda.OutOfMemoryError:
        raise ConfigError(f"out of GPU memory at batch size {recipe.batch_size}: pass --batch-size "
                          f"{max(2, recipe.batch_size // 2)} (or fewer local crops, e.g. --method dino:n_local=2, "
                          "or --precision bf16).") from None
    res.train_s += time.perf_counter() - t_run
    res.steps_done = step
    res.final_weights = {k: v.detach().cpu().clone() for k, v in program.export_net(export).body.state_dict().items()}
    return res
