"""Extraction engine: batched, resumable forward passes that write shards as they go.

A DataLoader (with workers) decodes and preprocesses; the main process runs the
backbone under ``inference_mode`` (bf16 autocast and channels-last on GPU). A
batch never straddles two shards, so each shard is written the moment its last
batch is done; an interrupted run keeps every finished shard.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from vitlab.backbones.base import Backbone
from vitlab.data.base import DataSource
from vitlab.data.images import ImageDecodeError
from vitlab.errors import DataError
from vitlab.store.progress import image_progress
from vitlab.store.shards import ShardPlan, write_shard

ON_ERROR = ("raise", "skip")
_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


class _Images(Dataset):
    """Decode + preprocess one row; returns ``(row, tensor | None, error | None)``, never raises."""

    def __init__(self, source: DataSource, transform: Callable, min_side: int, patch: str) -> None:
        self.source, self.transform, self.min_side, self.patch = source, transform, min_side, patch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            img = self.source.load_image(i)
        except ImageDecodeError as e:
            return i, None, str(e)
        except DataError as e:
            return i, None, str(e)
        if min(img.size) < self.min_side:
            return i, None, (f"{self.source.describe_item(i)}: image is {img.size[0]}x{img.size[1]} px, smaller than "
                             f"one {self.patch} patch; upsampling it would invent content")
        return i, self.transform(img), None


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]):
    good = [(i, x) for i, x, e in items if x is not None]
    errors = [(i, e) for i, x, e in items if x is None]
    rows = torch.tensor([i for i, _ in good], dtype=torch.long)
    batch = torch.stack([x for _, x in good]) if good else None
    return rows, batch, errors


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


@dataclass
class ExtractStats:
    """What one extraction run measured (stored in the manifest)."""

    images: int = 0
    seconds: float = 0.0
    forward_seconds: float = 0.0
    peak_memory_mb: float = 0.0
    memory_kind: str = "cpu_peak_rss"
    device: str = "cpu"
    batch_size: int = 0
    num_workers: int = 0
    shards_written: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "seconds": round(self.seconds, 4), "images_per_s": round(self.images_per_s, 2),
                "forward_seconds": round(self.forward_seconds, 4), "peak_memory_mb": round(self.peak_memory_mb, 1),
                "memory_kind": self.memory_kind, "device": self.device, "batch_size": self.batch_size,
                "num_workers": self.num_workers, "shards_written": self.shards_written}


def default_num_workers() -> int:
    """One fewer than the CPU count, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def extract(backbone: Backbone, source: DataSource, plans: list[ShardPlan], shard_dir: Path, *,
            layers: tuple[int, ...], pools: tuple[str, ...], batch_size: int, num_workers: int,
            precision: str, on_error: str, progress: bool,
            on_batch: Callable[[int], None] | None = None) -> ExtractStats:
    """Compute and write the given (pending) shards. Returns measured throughput and memory.

    ``on_batch(n_done)`` is called after each batch (tests use it to simulate interruption).
    """
    device = backbone.device
    ph, pw = backbone.spec.patch_size
    min_side = getattr(backbone, "min_image_side", None) or max(ph, pw)  # CNN encoders may upsample tiny images
    ds = _Images(source, backbone.spec.preprocessing.build_transform(), min_side, f"{ph}x{pw} px")
    batches = [list(range(s, min(s + batch_size, p.stop))) for p in plans for s in range(p.start, p.stop, batch_size)]
    loader = DataLoader(ds, batch_sampler=batches, num_workers=num_workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda", worker_init_fn=_worker_init if num_workers else None)
    amp = _AMP.get(precision) if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        backbone.model.to(memory_format=torch.channels_last)
    stats = ExtractStats(device=str(device), batch_size=batch_size, num_workers=num_workers,
                         memory_kind="cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss")
    total = sum(p.stop - p.start for p in plans)
    plan_iter = iter(plans)
    current = next(plan_iter, None)
    remaining = current.stop - current.start if current else 0
    buf: dict[str, list[np.ndarray]] = {}
    skipped: list[dict[str, Any]] = []
    seen = 0
    t0 = time.perf_counter()
    with image_progress(disable=not progress) as bar:
        task = bar.add_task(f"embed {backbone.name}", total=total)
        for rows, x, errors in loader:
            for row, msg in errors:
                if on_error == "raise":
                    raise DataError(f"{msg}. Remove or fix it, or pass --on-error skip to skip bad images "
                                    "(they are then listed, never dropped silently).")
                skipped.append({"row": int(row), "id": source.ids[row], "reason": msg})
            if x is not None:
                tf = time.perf_counter()
                out = _forward(backbone, x.to(device, non_blocking=True), layers, pools, amp)
                stats.forward_seconds += time.perf_counter() - tf
                for k, v in out.items():
                    buf.setdefault(k, []).append(v)
                buf.setdefault("index", []).append(rows.numpy())
            n = len(rows) + len(errors)
            seen += n
            stats.images += len(rows)
            bar.advance(task, n)
            remaining -= n
            if remaining == 0:  # batches never straddle shards, so this shard is complete
                write_shard(shard_dir, current, _shard_arrays(buf, layers, pools, backbone.spec.embed_dim), skipped)
                stats.shards_written += 1
                buf, skipped = {}, []
                current = next(plan_iter, None)
                remaining = current.stop - current.start if current else 0
            if on_batch is not None:
                on_batch(seen)
    stats.seconds = time.perf_counter() - t0
    if device.type == "cuda":
        stats.peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        stats.peak_memory_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return stats


def _shard_arrays(buf: dict[str, list[np.ndarray]], layers: tuple[int, ...], pools: tuple[str, ...],
                  dim: int) -> dict[str, np.ndarray]:
    """Concatenate a shard's batches; a shard whose every image was skipped gets empty arrays."""
    out = {"index": np.concatenate(buf["index"]) if "index" in buf else np.zeros((0,), np.int64)}
    for layer in layers:
        for pool in pools:
            k = f"L{layer}.{pool}"
            out[k] = np.concatenate(buf[k]) if k in buf else np.zeros((0, dim), np.float32)
    return out


@torch.inference_mode()
def _forward(backbone: Backbone, x: torch.Tensor, layers: tuple[int, ...], pools: tuple[str, ...],
             amp: torch.dtype | None) -> dict[str, np.ndarray]:
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        out = backbone.forward_tokens(x, layers)
    return {f"L{layer}.{pool}": out.pooled(layer, pool).float().cpu().numpy() for layer in layers for pool in pools}
