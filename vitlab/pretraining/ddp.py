"""Data-parallel training over ``--nproc`` processes: torchrun-style (one process per rank, ``MASTER_ADDR`` /
``MASTER_PORT``, ``torch.distributed``), gloo on CPU, NCCL on CUDA.

The semantics are DDP's: every rank starts from the same weights, takes its share of each global batch, and the
gradients are averaged over ranks (one flat all-reduce per step, in parameter order) before the identical
optimiser step on every rank. Each image's views come from its own seed (:mod:`vitlab.pretraining.views`), so a run
on N processes sees exactly the views of the same run on one process; the loss curve then differs only by
floating-point summation order (``tests/unit/test_pretrain_ddp.py``). Rank 0 monitors, checkpoints and writes the
outputs; the others wait for it.

Example:
    >>> rank_world()
    (0, 1)
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from vitlab.errors import VitlabError

__all__ = ["rank_world", "all_reduce_grads", "all_mean", "broadcast_flag", "barrier", "launch"]


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks (one flat all-reduce; parameters without a gradient skipped,
    the same set on every rank)."""
    _, world = rank_world()
    grads = [p.grad for p in params if p.grad is not None]
    if world == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def all_mean(values: list[float], device: torch.device) -> list[float]:
    """The mean over ranks of each value (e.g. the step's loss), the values themselves in one process."""
    _, world = rank_world()
    if world == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world).tolist()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (a stop decision)."""
    _, world = rank_world()
    if world == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if rank_world()[1] > 1:
        dist.barrier()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, out: str, threads: int) -> None:
    import pickle

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    backend = "nccl" if torch.cuda.is_available() and os.environ.get("VITLAB_DDP_BACKEND") != "gloo" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        result = fn(*args)
        if rank == 0:
            Path(out).write_bytes(pickle.dumps(result))
    except (VitlabError, KeyboardInterrupt) as e:  # the parent raises it again, as one clear line
        Path(f"{out}.err{rank}").write_bytes(pickle.dumps(e))
        raise
    finally:
        dist.destroy_process_group()


def launch(nproc: int, fn: Callable[..., Any], args: tuple) -> Any:
    """Run ``fn(*args)`` on ``nproc`` spawned processes in one process group; returns rank 0's result.

    ``fn`` and ``args`` must be picklable (module-level function, plain values). Each process gets
    ``max(1, threads // nproc)`` torch threads. An error in any rank ends every rank and is raised here.
    """
    import pickle

    import torch.multiprocessing as mp

    threads = max(1, torch.get_num_threads() // nproc)
    with tempfile.TemporaryDirectory(prefix="vitlab-ddp-") as tmp:
        out = str(Path(tmp) / "rank0.pkl")
        try:
            mp.start_processes(_worker, args=(nproc, _free_port(), fn, args, out, threads), nprocs=nproc,
                               join=True, start_method="spawn")
        except Exception:
            errors = sorted(Path(tmp).glob("rank0.pkl.err*"))
            if errors:
                raise pickle.loads(errors[0].read_bytes()) from None
            raise
        return pickle.loads(Path(out).read_bytes())
