"""What ``pretrain`` and ``distill`` share: the checks made before any work, training in one process or over
``--nproc`` processes, writing the artefact, and the result type.

Example:
    >>> check_settings(nproc=3, batch_size=64, device="cpu", precision="auto")
    Traceback (most recent call last):
    ...
    vitlab.errors.ConfigError: batch_size 64 must be a multiple of --nproc 3 (each process takes an equal share), e.g. --batch-size 63.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vitlab.backbones import Backbone, resolve_device
from vitlab.data.base import DataSource
from vitlab.errors import ConfigError, DataError
from vitlab.record import RunRecord

__all__ = ["PretrainResult", "check_settings", "check_images", "export_backbone", "train_program"]


@dataclass
class PretrainResult:
    """The run record plus what stays in memory.

    Attributes:
        record: the ``pretrain`` / ``distill`` :class:`~vitlab.record.RunRecord`.
        artefact: the ``.vitlab`` file (``None`` without ``out``).
        backbone: the trained backbone (loaded back from the artefact when there is one).
        path: the record's file (with ``out``).
        loop: the training loop's :class:`~vitlab.pretraining.loop.LoopResult`.
    """

    record: RunRecord
    artefact: Path | None
    backbone: Backbone
    path: Path | None = None
    loop: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def check_settings(*, nproc: int, batch_size: int, device: str | None, precision: str) -> torch.device:
    """Cheap checks of the execution settings (before anything is loaded); returns the device."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or not 1 <= nproc <= 256:
        raise ConfigError(f"--nproc must be a whole number in 1..256 (processes for data-parallel training), got "
                          f"{nproc!r}.")
    if batch_size % nproc:
        raise ConfigError(f"batch_size {batch_size} must be a multiple of --nproc {nproc} (each process takes an "
                          f"equal share), e.g. --batch-size {batch_size - batch_size % nproc or nproc}.")
    if batch_size // nproc < 2:
        raise ConfigError(f"each process needs at least 2 images per step (DINO's centre and KoLeo compare images "
                          f"of a batch); batch_size {batch_size} over {nproc} process(es) gives "
                          f"{batch_size // nproc}: raise --batch-size.")
    dev = resolve_device(device or "cpu")
    if precision == "bf16" and dev.type != "cuda":
        raise ConfigError(f"precision bf16 (autocast) is for CUDA here; use --precision fp32 (or auto) on {dev.type}.")
    if nproc > 1 and dev.type == "cuda" and torch.cuda.device_count() < nproc:
        raise ConfigError(f"--nproc {nproc} on CUDA needs {nproc} GPUs, {torch.cuda.device_count()} are visible.")
    return dev


def check_images(source: DataSource, batch_size: int, what: str = "--data") -> int:
    """The number of training images, refused (one line, with the fix) when it cannot fill one batch."""
    n = len(source)
    if n < batch_size:
        raise DataError(f"{what} {source.uri} has {n} image(s), fewer than one batch of {batch_size}: pass "
                        f"--batch-size {max(2, min(n, 2 ** max(1, n.bit_length() - 1)))} or fewer, or add images.")
    return n


def export_backbone(base: Backbone, weights: dict[str, torch.Tensor]) -> Backbone:
    """A new backbone: a copy of ``base`` (same class and spec) holding ``weights``; ``base`` is not changed."""
    from vitlab.tuning.methods import clone_backbone

    bb = clone_backbone(base)
    bb.model.load_state_dict(weights)
    bb.model.eval().requires_grad_(False)
    return bb


def adapted_in_memory(base: Backbone, weights: dict[str, torch.Tensor], start_name: str) -> Backbone:
    """The trained backbone when no artefact is written: the weights on a copy of ``base``, with the
    ``weights_id`` the artefact would have had (never the base's)."""
    import dataclasses

    from vitlab.tuning.artefact import tensor_digest, tuned_id

    bb = export_backbone(base, weights)
    tensors = {f"body.{k}": v for k, v in bb.model.named_parameters()}
    bb.weights_id = tuned_id(base.weights_id, tensor_digest(tensors, "full"))
    bb.spec = dataclasses.replace(base.spec, name=f"{start_name}+full")
    return bb


def train_program(job: dict[str, Any]) -> Any:
    """Build everything from plain values and run the loop (the body of each ``--nproc`` process, and of the one
    process otherwise). ``job`` holds names, specs and settings only, so it pickles into spawned processes."""
    from vitlab.backbones import load_backbone
    from vitlab.data import load_source
    from vitlab.pretraining.loop import run_loop

    objs = job.get("objects") or {}
    bb = objs.get("backbone") or load_backbone(job["backbone"], pretrained=job["pretrained"], seed=job["init_seed"],
                                               **job["backbone_kwargs"])
    source = objs.get("source") or load_source(job["data"])
    program, store = job["build"](job, bb, source, objs)
    monitor = None
    if job.get("monitor") is not None:
        from vitlab.pretraining.monitor import Monitor

        mon_src = objs.get("monitor") or load_source(job["monitor"])
        monitor = Monitor(mon_src, bb.spec.preprocessing, seed=job["seed"],
                          test_fraction=job["test_fraction"], val_fraction=job["recipe"].val_fraction,
                          protocols=job["recipe"].monitor_protocols, n_resamples=job["n_resamples"])
    res = run_loop(program, store, recipe=job["recipe"], seed=job["seed"], total=job["total"], warmup=job["warmup"],
                   lr=job["lr"], layer_decay=job["layer_decay"], export=job["export"],
                   device=torch.device(job["device"]), monitor=monitor, run_dir=job["run_dir"], run_id=job["run_id"],
                   progress=job["progress"], label=job["label"], on_step=job.get("on_step"))
    return res


def run_training(job: dict[str, Any], nproc: int) -> Any:
    """:func:`train_program` here (``nproc == 1``) or over ``nproc`` spawned processes (rank 0's result)."""
    if nproc == 1:
        return train_program(job)
    from vitlab.pretraining.ddp import launch

    if job.get("objects"):
        raise ConfigError("--nproc > 1 rebuilds the backbone and the data in each process: give them by name (e.g. "
                          "'demo:fmnist-vit', 'sample:digits'), not as objects.")
    if job["run_dir"] is None:
        raise ConfigError("--nproc > 1 needs --out (the processes share checkpoints through it).")
    if job.get("on_step") is not None:
        raise ConfigError("on_step hooks run in one process only; use nproc=1.")
    return launch(nproc, train_program, (job,))
