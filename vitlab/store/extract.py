"""Extraction engine: batched, resumable forward passes that write shards as they go.

A DataLoader (with workers) decodes and preprocesses; the main process runs the
backbone under ``inference_mode`` (channels-last on GPU; ``bf16``/``fp16`` autocast
on any device when asked for: the cache key's precision is what was computed).
Batches follow the fixed grid of :func:`~vitlab.store.shards.batch_grid`; a shard is
written after the batch that ends a grid block, ends a pending range, or comes
``flush_seconds`` after the last shard, so an interrupted run keeps every finished
shard and loses at most about ``flush_seconds`` of work.
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
from vitlab.data.images import ImageDecodeError, jpeg_draft
from vitlab.errors import ConfigError, DataError
from vitlab.store.progress import image_progress
from vitlab.store.shards import batch_grid, write_shard

ON_ERROR = ("raise", "skip")
_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def min_image_side(backbone: Backbone) -> tuple[int, str]:
    """The smallest image side the store accepts for ``backbone`` (one patch; CNN encoders may set
    ``min_image_side`` as they upsample tiny images) and that patch as text, for messages.

    Example:
        >>> import vitlab
        >>> min_image_side(vitlab.load_backbone("demo:fmnist-vit"))
        (4, '4x4 px')
    """
    ph, pw = backbone.spec.patch_size
    return getattr(backbone, "min_image_side", None) or max(ph, pw), f"{ph}x{pw} px"


def read_image(source: DataSource, i: int, min_side: int, patch: str) -> tuple[Any, str | None]:
    """Decode row ``i`` of ``source`` with the store's checks: ``(image, None)``, or ``(None, reason)`` for
    an image the store refuses (undecodable or not an image, over the pixel limit, smaller than one patch).
    The reason is one line naming the item; the store, ``inspect`` and ``robust`` all load through here.

    Example:
        >>> from vitlab.data.sample import SampleSource
        >>> img, err = read_image(SampleSource("fashion-mnist"), 0, 4, "4x4 px")
        >>> img.size, err
        ((28, 28), None)
        >>> read_image(SampleSource("fashion-mnist"), 0, 32, "32x32 px")[1]
        't10k-00002: image is 28x28 px, smaller than one 32x32 px patch; upsampling it would invent content'
    """
    try:
        img = source.load_image(i)
    except (ImageDecodeError, DataError) as e:
        return None, str(e)
    if min(img.size) < min_side:
        return None, (f"{source.describe_item(i)}: image is {img.size[0]}x{img.size[1]} px, smaller than "
                      f"one {patch} patch; upsampling it would invent content")
    return img, None


class _Images(Dataset):
    """Decode + preprocess one row; returns ``(row, tensor | None, error | None)``, never raises."""

    def __init__(self, source: DataSource, transform: Callable, min_side: int, patch: str,
                 draft: Callable[[int, int], tuple[int, int] | None] | None = None) -> None:
        self.source, self.transform, self.min_side, self.patch = source, transform, min_side, patch
        self.draft = draft

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        with jpeg_draft(self.draft):
            img, err = read_image(self.source, i, self.min_side, self.patch)
        if err is not None:
            return i, None, err
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
    """What one extraction run measured (stored in the manifest).

    ``data_seconds`` is the time the forward loop waited for the next decoded, preprocessed batch
    (the data path: decode + resize in the DataLoader workers, or in the loop itself without
    workers); ``forward_seconds`` the time in the backbone's forward pass. When ``data_seconds``
    dominates, more ``num_workers`` (or a faster decoder) helps, not a faster device. With the
    Ray engine both are sums over the actors (actor-seconds), ``seconds`` is the driver's wall
    time and ``peak_memory_mb`` the largest actor's; ``extra`` holds engine details (actors, units).
    """

    images: int = 0
    seconds: float = 0.0
    forward_seconds: float = 0.0
    data_seconds: float = 0.0
    peak_memory_mb: float = 0.0
    memory_kind: str = "cpu_peak_rss"
    device: str = "cpu"
    batch_size: int = 0
    num_workers: int = 0
    shards_written: int = 0
    engine: str = "local"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "seconds": round(self.seconds, 4), "images_per_s": round(self.images_per_s, 2),
                "forward_seconds": round(self.forward_seconds, 4), "data_seconds": round(self.data_seconds, 4),
                "peak_memory_mb": round(self.peak_memory_mb, 1), "memory_kind": self.memory_kind,
                "device": self.device, "batch_size": self.batch_size, "num_workers": self.num_workers,
                "shards_written": self.shards_written, "engine": self.engine, **self.extra}


def default_num_workers() -> int:
    """One fewer than the CPU count, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def extract(backbone: Backbone, source: DataSource, ranges: list[tuple[int, int]], shard_dir: Path, *,
            block: int, flush_seconds: float | None, layers: tuple[int, ...], pools: tuple[str, ...],
            batch_size: int, num_workers: int, precision: str, on_error: str, progress: bool,
            tokens: str | None = None, on_batch: Callable[[int], None] | None = None,
            on_shard: Callable[[dict[str, Any]], None] | None = None) -> ExtractStats:
    """Compute the source rows in ``ranges`` and write them as shards. Returns measured throughput and memory.

    Args:
        ranges: sorted, non-overlapping ``[start, stop)`` row ranges still to compute.
        block: largest shard, in rows (the batch grid's block; keep it fixed across resumes).
        flush_seconds: also write a shard once this long has passed since the last one
            (``None``: only at block and range ends).
        pools: poolings of every layer (``embed``: last block only), via ``backbone.pool``.
        tokens: also store the patch tokens ``L{layer}.tokens`` ``[n, N, C]`` in this dtype
            (``float32``/``float16``); ``None``: pooled vectors only.
        on_batch: called after each batch with the number of rows done (tests simulate interruption).
        on_shard: called with each shard's sidecar once it is on disk.
    """
    device = backbone.device
    min_side, patch = min_image_side(backbone)
    prep = backbone.spec.preprocessing
    ds = _Images(source, prep.build_transform(), min_side, patch,
                 prep.draft_size if prep.decoder.endswith("draft") else None)
    batches = batch_grid(ranges, block, batch_size)
    loader = DataLoader(ds, batch_sampler=[list(range(a, b)) for a, b in batches], num_workers=num_workers,
                        collate_fn=_collate, pin_memory=device.type == "cuda",
                        worker_init_fn=_worker_init if num_workers else None)
    amp = _AMP.get(precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        with backbone.same_weights():
            backbone.model.to(memory_format=torch.channels_last)
    stats = ExtractStats(device=str(device), batch_size=batch_size, num_workers=num_workers,
                         memory_kind="cuda_max_allocated" if device.type == "cuda" else "cpu_peak_rss")
    total = sum(b - a for a, b in ranges)
    buf: dict[str, list[np.ndarray]] = {}
    skipped: list[dict[str, Any]] = []
    seen = 0
    shard_start = batches[0][0] if batches else 0
    t0 = last_flush = time.perf_counter()
    with image_progress(disable=not progress) as bar:
        task = bar.add_task(f"embed {backbone.name}", total=total)
        it = iter(loader)
        for k in range(len(batches)):
            td = time.perf_counter()
            rows, x, errors = next(it)
            stats.data_seconds += time.perf_counter() - td
            b_start, b_stop = batches[k]
            for row, msg in errors:
                if on_error == "raise":
                    raise DataError(f"{msg}. Remove or fix it, or pass --on-error skip to skip bad images "
                                    "(they are then listed, never dropped silently).")
                skipped.append({"row": int(row), "id": source.ids[row], "reason": msg})
            if x is not None:
                tf = time.perf_counter()
                out = _forward(backbone, x.to(device, non_blocking=True), layers, pools, amp, tokens)
                stats.forward_seconds += time.perf_counter() - tf
                for name, v in out.items():
                    buf.setdefault(name, []).append(v)
                buf.setdefault("index", []).append(rows.numpy())
            n = b_stop - b_start
            seen += n
            stats.images += len(rows)
            bar.advance(task, n)
            next_start = batches[k + 1][0] if k + 1 < len(batches) else None
            now = time.perf_counter()
            if (next_start != b_stop or b_stop % block == 0
                    or (flush_seconds is not None and now - last_flush >= flush_seconds)):
                side = write_shard(shard_dir, shard_start, b_stop, _shard_arrays(buf, backbone, layers, pools, tokens),
                                   skipped)
                stats.shards_written += 1
                if on_shard is not None:
                    on_shard(side)
                buf, skipped, shard_start, last_flush = {}, [], next_start, time.perf_counter()
            if on_batch is not None:
                on_batch(seen)
    stats.seconds = time.perf_counter() - t0
    if device.type == "cuda":
        stats.peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        stats.peak_memory_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return stats


def check_precision(backbone: Backbone, precision: str, layers: tuple[int, ...], pools: tuple[str, ...]) -> None:
    """Raise a one-line ConfigError unless ``backbone`` runs under ``precision``'s autocast.

    Called before extraction: autocast must be available on the backbone's device, and one
    zero image must go through (quantised int8 kernels, for one, reject bf16 inputs).

    Example:
        >>> import vitlab
        >>> bb = vitlab.load_backbone("demo:fmnist-vit")
        >>> check_precision(bb, "bf16", (5,), ("cls",))  # CPU autocast: fine
    """
    amp = _AMP.get(precision)
    if amp is None:
        return
    device = backbone.device
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(device.type):
        raise ConfigError(f"precision {precision!r} needs autocast, which torch does not support on {device}. "
                          "Use --precision fp32 or another --device.")
    h, w = backbone.spec.preprocessing.input_size
    try:
        _forward(backbone, torch.zeros(1, 3, h, w, device=device), layers[-1:], pools[:1], amp)
    except (RuntimeError, NotImplementedError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"precision {precision!r} does not run on {backbone.name} on {device} "
                          f"(autocast failed: {reason}). Use --precision fp32.") from None


def _shard_arrays(buf: dict[str, list[np.ndarray]], backbone: Backbone, layers: tuple[int, ...],
                  pools: tuple[str, ...], tokens: str | None) -> dict[str, np.ndarray]:
    """Concatenate a shard's batches; a shard whose every image was skipped gets empty arrays
    (consolidation takes array shapes from shards that have rows)."""
    out = {"index": np.concatenate(buf["index"]) if "index" in buf else np.zeros((0,), np.int64)}
    h, w = backbone.spec.grid_size
    empty = {"tokens": ((h * w, backbone.spec.embed_dim), tokens or "float32")}
    for name in _array_names(backbone, layers, pools, tokens):
        shape, dtype = empty.get(name.split(".", 1)[1], ((backbone.spec.embed_dim,), "float32"))
        out[name] = np.concatenate(buf[name]) if name in buf else np.zeros((0, *shape), dtype)
    return out


def _array_names(backbone: Backbone, layers: tuple[int, ...], pools: tuple[str, ...],
                 tokens: str | None) -> list[str]:
    last = backbone.spec.depth - 1
    names = [f"L{layer}.{pool}" for layer in layers for pool in pools if pool != "embed" or layer == last]
    return names + ([f"L{layer}.tokens" for layer in layers] if tokens else [])


@torch.inference_mode()
def _forward(backbone: Backbone, x: torch.Tensor, layers: tuple[int, ...], pools: tuple[str, ...],
             amp: torch.dtype | None, tokens: str | None = None) -> dict[str, np.ndarray]:
    """One batch: ``L{layer}.{pool}`` float32 ``[B, D]`` through ``backbone.pool`` (``embed`` only for
    the last block), and with ``tokens`` the patch tokens ``L{layer}.tokens`` ``[B, N, C]`` in that dtype."""
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    last = backbone.spec.depth - 1
    res = {}
    with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
        out = backbone.forward_tokens(x, layers)
        if "embed" in pools and last in layers:  # a head (projection, attention pool): runs under autocast
            res[f"L{last}.embed"] = backbone.pool(out, last, "embed").float().cpu().numpy()
    for layer in layers:  # cls / mean: pooled outside autocast, as ever (cached bf16 entries stay reproducible)
        for pool in pools:
            if pool != "embed":
                res[f"L{layer}.{pool}"] = backbone.pool(out, layer, pool).float().cpu().numpy()
    if tokens:
        h, w = out.grid
        for layer in layers:
            t = out.patch_tokens(layer)
            if t.shape[1] != h * w:
                raise ConfigError(f"{backbone.name} returns {t.shape[1]} patch tokens for a {h}x{w} patch grid, "
                                  "so it has no patch-token view; use view='pooled'.")
            res[f"L{layer}.tokens"] = t.float().to(getattr(torch, tokens)).cpu().numpy()
    return res
