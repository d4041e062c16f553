"""Training checkpoints: everything a run needs to go on bit-identically, written atomically.

A checkpoint holds the program (student, teacher, heads, loss state such as DINO's centre), the optimiser, the
scheduler, the process RNGs (torch, CUDA, numpy, ``random``), the data position (step and epoch; the views
themselves are drawn from per-image seeds, :mod:`vitlab.pretraining.views`), the loss curve, the monitored curve and
the best point so far. Files are written to a temporary name and renamed, so an interrupted write never leaves a
damaged checkpoint, and read with ``torch.load(weights_only=True)`` (no code runs on load).

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.pt"
    >>> save_checkpoint(p, {"run_id": "ab", "step": 3})
    >>> load_checkpoint(p, "ab")["step"]
    3
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitlab.errors import DataError

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

FORMAT = "vitlab-pretrain-checkpoint/1"


def rng_state() -> dict[str, Any]:
    """The process RNG states (torch CPU and CUDA, numpy's legacy global, Python's ``random``) as plain data.

    Example:
        >>> s = rng_state(); a = torch.rand(1); set_rng_state(s); bool(torch.equal(a, torch.rand(1)))
        True
    """
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    out: dict[str, Any] = {"torch": torch.get_rng_state(),
                           "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                                     int(has_gauss), float(gauss)],
                           "python": random.getstate()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the format tag) to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, run_id: str | None = None) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (``None`` when there is none).

    Raises:
        DataError: the file is unreadable, not a vitlab pretraining checkpoint, or belongs to another run
        (one line naming the file and the fix).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for damaged files
        raise DataError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}). Delete it to start the run "
                        "again from the beginning.") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{path}: not a vitlab pretraining checkpoint. Move it away or choose another --out.")
    if run_id is not None and state.get("run_id") != run_id:
        raise DataError(f"{path}: the checkpoint belongs to run {state.get('run_id')!r}, not {run_id!r}. Move it "
                        "away or choose another --out.")
    return state
