"""Shard files: safetensors tensors + a JSON sidecar holding the checksum.

Why safetensors: no pickle (safe to load), a self-describing header (names,
dtypes, shapes), zero-copy reads, and a well-kept library. A shard counts as
done only when its sidecar exists and the sha256 in it matches the file, so a
shard cut short by an interruption or corrupted on disk is recomputed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.store.fingerprint import file_sha256


@dataclass(frozen=True)
class ShardPlan:
    """Shard ``k`` covers source rows ``[start, stop)``."""

    index: int
    start: int
    stop: int

    @property
    def stem(self) -> str:
        return f"shard-{self.index:06d}"


def plan_shards(n: int, shard_size: int) -> list[ShardPlan]:
    """Split ``n`` rows into shards of ``shard_size``.

    Example:
        >>> [(s.start, s.stop) for s in plan_shards(5, 2)]
        [(0, 2), (2, 4), (4, 5)]
    """
    return [ShardPlan(k, s, min(s + shard_size, n)) for k, s in enumerate(range(0, n, shard_size))]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, then rename: readers never see half a file."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_shard(shard_dir: Path, plan: ShardPlan, arrays: dict[str, np.ndarray], skipped: list[dict[str, Any]]) -> None:
    """Write one finished shard (tensors first, then the sidecar that marks it done)."""
    from safetensors.numpy import save

    path = shard_dir / f"{plan.stem}.safetensors"
    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
    side = {"index": plan.index, "start": plan.start, "stop": plan.stop,
            "n_rows": int(len(arrays["index"])), "skipped": skipped, "sha256": file_sha256(str(path))}
    atomic_write_bytes(shard_dir / f"{plan.stem}.json", json.dumps(side).encode())


def read_shard_meta(shard_dir: Path, plan: ShardPlan) -> dict[str, Any] | None:
    """The sidecar of a valid shard, or ``None`` when missing, partial, corrupt or for another plan."""
    side_p, data_p = shard_dir / f"{plan.stem}.json", shard_dir / f"{plan.stem}.safetensors"
    try:
        side = json.loads(side_p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if (side.get("start"), side.get("stop")) != (plan.start, plan.stop) or not data_p.exists():
        return None
    if file_sha256(str(data_p)) != side.get("sha256"):
        return None
    return side


def load_shard(shard_dir: Path, plan: ShardPlan) -> dict[str, np.ndarray]:
    """All tensors of a (validated) shard."""
    from safetensors.numpy import load_file

    return load_file(str(shard_dir / f"{plan.stem}.safetensors"))


def remove_shard(shard_dir: Path, plan: ShardPlan) -> None:
    for suffix in (".json", ".safetensors"):
        (shard_dir / f"{plan.stem}{suffix}").unlink(missing_ok=True)
