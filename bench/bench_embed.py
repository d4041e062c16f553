"""Benchmark: end-to-end ``embed`` (image files on disk → stored embeddings) vs pure forward throughput.

Measured in one run, as ratios against a baseline from the same run:
  * forward: the backbone alone on a preloaded batch (same batch size), images/s;
  * embed (cold): ``vitlab.embed`` on PNG files in a fresh cache: decode, preprocess,
    forward, shard writes, consolidation; images/s and its ratio to forward;
  * embed (cached): the same call again; its wall time as a fraction of the cold call.

Example:
    python bench/bench_embed.py --n 2000 --backbones demo:fmnist-vit,timm:vit_small_patch16_224
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import vitlab
from vitlab.data.idx_format import read_idx

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def write_pngs(root: Path, n: int) -> Path:
    x = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")[:n]
    y = read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")[:n]
    for i, (img, label) in enumerate(zip(x, y)):
        d = root / f"class{label}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:05d}.png")
    return root


@torch.inference_mode()
def forward_throughput(bb: vitlab.Backbone, batch_size: int, n: int) -> float:
    h, w = bb.spec.preprocessing.input_size
    x = torch.randn(batch_size, 3, h, w, device=bb.device)
    pools = ("cls", "mean")
    for _ in range(2):  # warm-up
        bb.forward_tokens(x, -1)
    steps = max(1, n // batch_size)
    if bb.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        out = bb.forward_tokens(x, -1)
        for p in pools:
            out.pooled(bb.spec.depth - 1, p).float().cpu()
    if bb.device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbones", default="demo:fmnist-vit,timm:vit_small_patch16_224")
    args = ap.parse_args()
    print(f"# {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"device={args.device}, n={args.n}, batch={args.batch_size}, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp:
        root = write_pngs(Path(tmp) / "imgs", args.n)
        print(f"| backbone | forward img/s | embed cold img/s | cold / forward | cold s | cached s | cached / cold |")
        print("|---|---|---|---|---|---|---|")
        for name in args.backbones.split(","):
            bb = vitlab.load_backbone(name, pretrained=name.startswith("demo:"), device=args.device)
            fwd = forward_throughput(bb, args.batch_size, min(args.n, 1024))
            cache = Path(tmp) / f"cache-{name.replace(':', '_')}"
            kw = dict(cache_dir=cache, batch_size=args.batch_size, num_workers=args.num_workers, progress=False)
            t0 = time.perf_counter()
            cold = vitlab.embed(bb, f"folder:{root}", **kw)
            t_cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            hot = vitlab.embed(bb, f"folder:{root}", **kw)
            t_hot = time.perf_counter() - t0
            assert hot.from_cache and not cold.from_cache
            e2e = args.n / t_cold
            print(f"| {name} | {fwd:,.0f} | {e2e:,.0f} | {e2e / fwd:.2f} | {t_cold:.2f} | {t_hot:.3f} | "
                  f"{t_hot / t_cold:.4f} |", flush=True)


if __name__ == "__main__":
    main()
