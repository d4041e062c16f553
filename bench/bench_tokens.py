"""Benchmark: patch-token storage (``view="tokens"``) per image, float32 vs float16, and its time.

For one backbone (default: a random-init ViT-S/16 at 224, 196 patch tokens x 384), embeds a
handful of PNG images (bundled Fashion-MNIST samples, upscaled to 224 px) three times, each in
a fresh cache: ``view="pooled"`` (the baseline), ``view="tokens"`` float32 and float16. Reports
per image: bytes of the patch-token array (``L{last}.tokens.npy``), bytes of the whole cache
entry, and wall / forward milliseconds of the cold ``vitlab.embed`` call (the variants run
round-robin ``--repeats`` times; the best and the median are reported, since a shared machine
only ever adds time).

Example:
    python bench/bench_tokens.py --n 16 --threads 2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import vitlab
from vitlab.data.sample import SampleSource


def write_pngs(root: Path, n: int, size: int) -> Path:
    images = SampleSource("fashion-mnist").images
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(images[i]).convert("RGB").resize((size, size), Image.BILINEAR).save(root / f"{i:04d}.png")
    return root


def entry_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(bb: vitlab.Backbone, folder: Path, n: int, batch_size: int, **view) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        emb = vitlab.embed(bb, f"folder:{folder}", cache_dir=cache, batch_size=batch_size, num_workers=0,
                           progress=False, **view)
        wall = time.perf_counter() - t0
        last = emb.layers[-1]
        tok = emb.path / f"L{last}.tokens.npy"
        return {"view": view.get("view", "pooled") + (f" {view['token_dtype']}" if "token_dtype" in view else ""),
                "shape": list(emb.tokens().shape) if emb.view == "tokens" else list(emb.get().shape),
                "token_bytes": tok.stat().st_size / n if tok.exists() else 0.0,
                "entry_bytes": entry_bytes(emb.path) / n, "wall_ms": 1000 * wall / n,
                "forward_ms": 1000 * emb.stats["forward_seconds"] / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="random:timm:vit_small_patch16_224")
    ap.add_argument("--n", type=int, default=16, help="images")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--repeats", type=int, default=3, help="cold runs of each variant (round-robin)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bb = vitlab.load_backbone(args.backbone, pretrained=False)
    h, w = bb.spec.preprocessing.input_size
    print(f"{bb.name}: {h}x{w}, grid {bb.spec.grid_size}, dim {bb.spec.embed_dim}, "
          f"{bb.spec.num_prefix_tokens} prefix token(s); {args.n} images, batch {args.batch_size}, "
          f"{args.threads} torch threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_pngs(Path(tmp) / "imgs", args.n, max(h, w))
        with torch.inference_mode():  # warm-up, so the first variant is not charged for it
            bb.forward_tokens(torch.zeros(2, 3, h, w))
        variants = [{}, {"view": "tokens", "token_dtype": "float32"}, {"view": "tokens", "token_dtype": "float16"}]
        runs = [[] for _ in variants]
        for _ in range(args.repeats):
            for i, v in enumerate(variants):
                runs[i].append(run(bb, folder, args.n, args.batch_size, **v))
    rows = []
    print("| view | array shape | patch tokens KiB/image | cache entry KiB/image | wall ms/image best (median) "
          "| forward ms/image best (median) |")
    print("|---|---|---|---|---|---|")
    for rs in runs:
        r, wall, fwd = rs[0], [x["wall_ms"] for x in rs], [x["forward_ms"] for x in rs]
        rows.append(r)
        print(f"| {r['view']} | {r['shape']} | {r['token_bytes'] / 1024:.1f} | {r['entry_bytes'] / 1024:.1f} "
              f"| {min(wall):.0f} ({statistics.median(wall):.0f}) | {min(fwd):.0f} ({statistics.median(fwd):.0f}) |")
    f32, f16 = rows[1], rows[2]
    print(f"float16 / float32 patch-token bytes: {f16['token_bytes'] / f32['token_bytes']:.4f}; "
          f"entry: {f16['entry_bytes'] / f32['entry_bytes']:.4f}")


if __name__ == "__main__":
    main()
