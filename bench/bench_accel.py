"""Benchmark: accelerators on random-init ViT-S/16 and ViT-B/16, and their accuracy cost on demo:fmnist-vit.

Part 1 (speed): for each backbone (random weights, no download) the variants none, tome r=8,
tome r=13, evit keep=0.7 and int8 are timed in ONE interleaved run by ``vitlab.perf.bench``;
every ratio is against ``none`` from that same run. Part 2 (accuracy): ``vitlab.perf.tradeoff``
on demo:fmnist-vit with the full Fashion-MNIST set (its own train/test split column: 60k/10k),
kNN and linear probe, accuracy change vs none as a paired bootstrap on the same 10,000 test
images, plus early exit on measured layer times. Prints Markdown.

Example:
    python bench/bench_accel.py                 # full run (tens of minutes on 2 CPU cores)
    python bench/bench_accel.py --quick --threads 1   # smoke run: ViT-S only, 1,000 + 1,000 images
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import torch

import vitlab.perf as perf
from vitlab.report.perf_figures import bench_rows

FMNIST = "idx:/usr/share/datasets/fashion-mnist"


def _f(x, spec=".3g"):
    return "–" if x is None else format(x, spec)


def speed_table(backbone: str, args: argparse.Namespace) -> str:
    t0 = time.perf_counter()
    res = perf.bench(f"timm:{backbone}", args.accel, pretrained=False, batch_size=args.batch_size,
                     img_size=args.img_size, warmup=args.warmup, repeats=args.repeats, min_time=args.min_time,
                     latency_repeats=args.latency_repeats, seed=0)
    c = res.record.config
    lines = [f"\n### {backbone} (random init) · batch {c['batch_size']} · {c['img_size'][0]}×{c['img_size'][1]} · "
             f"{c['dtype']} · {c['repeats']} repeats · {time.perf_counter() - t0:.0f} s\n",
             "| variant | images/s [min, max] | speed-up vs none [min, max] | latency p50 / p95 ms (batch 1) | GFLOPs "
             "| FLOPs ÷ | params M | peak MB |", "|---|---|---|---|---|---|---|---|"]
    for r in bench_rows(res.record):
        if r["error"]:
            lines.append(f"| {r['variant']} | failed: {r['error']} | | | | | | |")
            continue
        lines.append(f"| {r['variant']} | {r['images_per_s']:.1f} [{r['images_per_s_min']:.1f}, "
                     f"{r['images_per_s_max']:.1f}] | {r['speedup']:.2f}× [{r['speedup_low']:.2f}, "
                     f"{r['speedup_high']:.2f}] | {r['latency_p50_ms']:.1f} / {r['latency_p95_ms']:.1f} | "
                     f"{r['gflops']:.2f} | {r['flops_reduction']:.2f} | {r['params_m']:.1f} | "
                     f"{_f(r['peak_memory_mb'], '.0f')} |")
    return "\n".join(lines)


def accuracy_table(args: argparse.Namespace) -> str:
    t0 = time.perf_counter()
    protocols = [p.strip() for p in args.protocols.split(",")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = perf.tradeoff("demo:fmnist-vit", args.data, accel=args.demo_accel, protocols=protocols,
                            n_resamples=args.n_resamples, cache_dir=args.cache_dir, batch_size=args.demo_batch_size,
                            warmup=args.warmup, repeats=args.repeats, min_time=args.min_time,
                            latency_repeats=args.latency_repeats, num_workers=0, progress=False)
    n = res.runs["none"].record.details["data"]
    head = "| variant | images/s | speed-up | FLOPs ÷ | " + " | ".join(
        f"{p} top-1 [95% CI] | Δ {p} [95% CI], p" for p in protocols) + " | feature cosine |"
    lines = [f"\n### demo:fmnist-vit on {args.data} ({n['n_train']} train / {n['n_test']} test) · "
             f"{time.perf_counter() - t0:.0f} s\n", head, "|" + "---|" * (5 + 2 * len(protocols))]
    for r in res.table():
        if r.get("error"):
            lines.append(f"| {r['variant']} | failed: {r['error']} |")
            continue
        exit_row = r["kind"] == "early_exit"
        cells = []
        for p in protocols:
            key = "exit" if exit_row else p
            a, d = (r["accuracy"].get(key) or {}), (r["delta"].get(key) or {})
            ci = f" [{a['low']:.4f}, {a['high']:.4f}]" if a.get("low") is not None else ""
            cells += [f"{a.get('value', float('nan')):.4f}{ci}" + (" (exit heads)" if exit_row else ""),
                      f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}], p={d['p_bootstrap']:.3g}" if d else "–"]
            if exit_row:
                cells += ["(same)", "(same)"] * (len(protocols) - 1)
                break
        sp = r["speedup"]
        spd = f"{sp['value']:.2f}×" + (f" [{sp['low']:.2f}, {sp['high']:.2f}]" if sp.get("low") is not None else "")
        lines.append(f"| {r['variant']}{' ★' if r.get('pareto') else ''} | {_f(r['images_per_s'], '.0f')}"
                     f"{'*' if r.get('images_per_s_derived') else ''} | {spd} | {_f(r['flops_reduction'], '.2f')} | "
                     + " | ".join(cells) + f" | {_f(r.get('feature_cosine'), '.4f')} |")
    for label, e in res.exits.items():
        pts = [f"{t:.2f}: acc {a:.4f}, {s:.2f}×" for t, a, s in
               zip(e.sweep["threshold"], e.sweep["accuracy"], e.sweep["speedup"]) if t >= 0.7]
        lines.append(f"\n{label}: last-layer head {e.last_layer_accuracy:.4f}; measured ms/image to each exit: "
                     + ", ".join(f"{1000 * t:.3f}" for t in e.cum_time_s) + "; sweep " + "; ".join(pts))
    lines.append("\n★ Pareto front (headline protocol vs images/s). * = none's images/s × measured exit speed-up. "
                 "Early-exit accuracy is its linear heads', Δ vs the last-layer head.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: ViT-S only, tiny batches, 1k+1k images")
    ap.add_argument("--backbones", default="vit_small_patch16_224,vit_base_patch16_224")
    ap.add_argument("--accel", default="none,tome:r=8,tome:r=13,evit:keep=0.7,int8")
    ap.add_argument("--demo-accel", default="none,tome:r=2,tome:r=4,evit:keep=0.7,int8,w8a8,early_exit")
    ap.add_argument("--data", default=FMNIST)
    ap.add_argument("--protocols", default="knn,linear")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--demo-batch-size", type=int, default=256)
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--latency-repeats", type=int, default=30)
    ap.add_argument("--n-resamples", type=int, default=1000)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-accuracy", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.backbones, args.batch_size, args.demo_batch_size = "vit_small_patch16_224", 4, 64
        args.warmup, args.repeats, args.min_time, args.latency_repeats = 1, 3, 0.0, 5
        args.data, args.n_resamples = f"{FMNIST}?limit=1000", 200
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"## Accelerators ({'QUICK smoke run, rough' if args.quick else 'full run'})\n")
    print(f"{time.strftime('%Y-%m-%d')} · {platform.machine()} {os.cpu_count()} CPUs · torch {torch.__version__} "
          f"({torch.get_num_threads()} threads) · load {os.getloadavg()[0]:.2f}")
    if not args.skip_speed:
        for b in args.backbones.split(","):
            print(speed_table(b.strip(), args), flush=True)
    if not args.skip_accuracy:
        print(accuracy_table(args), flush=True)


if __name__ == "__main__":
    main()
