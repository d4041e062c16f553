"""Benchmark vitlab's adaptation methods (prints measured figures; never run as a test).

(a) ``cost``: per method on ``demo:fmnist-vit`` (28 x 28, patch 4, 6 blocks, C = 96) and ``sample:digits``:
    trainable parameters, seconds per training epoch, training images/s and peak memory, from one epoch of
    :func:`vitlab.tune` (the record's cost block), with each method's epoch time as a ratio of ``full``'s
    measured in the same run.
(b) ``vits``: the same on a random-init ViT-S/16 at 224 x 224 (``timm:vit_small_patch16_224``,
    ``pretrained=False``) on a subset of digits, a few steps per method: seconds per step and peak memory.
(c) ``transfer``: the digits transfer task for the Fashion-MNIST demo ViT: the frozen probes
    (``vitlab.evaluate``: knn, linear) against ``vitlab.tune`` (linear head, LoRA, VPT, full), same seeds and
    splits, top-1 with CIs, paired tests against the tuned linear head.

Usage:
    python bench/bench_tune.py cost --threads 1
    python bench/bench_tune.py vits --threads 1 --limit 128 --steps 3
    python bench/bench_tune.py transfer --threads 1 --seeds 2 --epochs 10 --out runs/bench_tune

Wall times are single runs on whatever CPU/GPU is free; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time

import torch

import vitlab


def _machine(device: str) -> str:
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else "none"
    return (f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
            f"thread(s), GPU {gpu}, {dt.date.today().isoformat()}")


def _cost_rows(rec, steps_key: bool = False) -> list[str]:
    cost = rec.details["cost"]
    ref = cost.get("full", {}).get("time_per_epoch_s")
    rows = []
    for m in rec.config["methods"]:
        c = cost[m]
        ps = c["per_seed"][0]
        per_step = ps["train_s"] / max(1, ps["steps"])
        ratio = f"{c['time_per_epoch_s'] / ref:.2f}x" if ref else "–"
        rows.append(f"| {m} | {c['trainable_params']:,} | {c['trainable_params'] / c['total_params'] * 100:.2f}% | "
                    f"{c['time_per_epoch_s']:.2f} | {per_step:.3f} | {ratio} | {c['images_per_s']:.0f} | "
                    f"{c['peak_memory_mb']:.0f} |")
    return rows


HEAD = ("| method | trainable params | % of all | s / epoch | s / step | epoch time vs full | train images/s | "
        "peak memory (MB) |\n|---|---|---|---|---|---|---|---|")


def bench_cost(args: argparse.Namespace) -> None:
    methods = "linear,full,lora,dora,lora:r=8,targets=[qkv,proj,mlp],vpt,vpt:prompts=10,deep=false,bitfit"
    res = vitlab.tune(args.backbone, args.data, methods=methods, seeds=1, epochs=1, n_resamples=100,
                      batch_size=args.batch_size, device=args.device, progress=False)
    print(f"## cost: {args.backbone} on {args.data}, 1 epoch, batch {args.batch_size} ({_machine(args.device)})")
    print(HEAD)
    print("\n".join(_cost_rows(res.record)))


def bench_vits(args: argparse.Namespace) -> None:
    bb = vitlab.load_backbone("timm:vit_small_patch16_224", pretrained=False)
    res = vitlab.tune(bb, f"{args.data}?limit={args.limit}", methods="linear,full,lora,vpt,bitfit", seeds=1,
                      epochs=1, max_steps=args.steps, batch_size=args.batch_size, val_fraction=0.2, n_resamples=50,
                      device=args.device, progress=False)
    print(f"## vits: random-init ViT-S/16 at 224, {args.limit} digits, {args.steps} steps of batch {args.batch_size} "
          f"({_machine(args.device)})")
    print(HEAD)
    print("\n".join(_cost_rows(res.record)))


def bench_transfer(args: argparse.Namespace) -> None:
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()
    probes = {s: vitlab.evaluate(args.backbone, args.data, protocols="knn,linear", seed=s, n_resamples=1000,
                                 out=args.out, progress=False) for s in seeds}
    t_probe = time.perf_counter() - t0
    res = vitlab.tune(args.backbone, args.data, methods="linear,lora,vpt,full", seeds=args.seeds,
                      epochs=args.epochs, batch_size=args.batch_size, device=args.device, out=args.out,
                      progress=False)
    rec = res.record
    print(f"## transfer: {args.backbone} on {args.data}, seeds {seeds}, up to {args.epochs} epochs "
          f"({_machine(args.device)}); frozen probes {t_probe:.0f} s")
    print("| method | top-1 mean [95% t-CI over seeds] | per seed: top-1 [95% bootstrap CI] | "
          "Δ vs tuned linear head per seed [95% CI] (Holm p boot / McNemar) | trainable params | train s / seed |")
    print("|---|---|---|---|---|---|")
    for p in ("knn", "linear"):
        vals = [probes[s].record.metrics[p]["top1"] for s in seeds]
        per = "; ".join(f"{v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" for v in vals)
        mean = sum(v["value"] for v in vals) / len(vals)
        print(f"| frozen probe: {p} (vitlab eval) | {mean:.3f} | {per} | – | – | – |")
    for m in rec.config["methods"]:
        t = rec.metrics[m]["top1"]
        per = "; ".join(f"{rec.details['per_seed'][str(s)][m]['metrics']['top1']['value']:.3f} "
                        f"[{rec.details['per_seed'][str(s)][m]['metrics']['top1']['low']:.3f}, "
                        f"{rec.details['per_seed'][str(s)][m]['metrics']['top1']['high']:.3f}]" for s in seeds)
        vs = "; ".join(f"{v['diff']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}] ({v['p_bootstrap']:.3g} / "
                       f"{v['p_mcnemar']:.3g})" for v in rec.details["vs_linear"].get(m, [])) or "–"
        ci = f" [{t['low']:.3f}, {t['high']:.3f}]" if t.get("low") is not None else ""
        c = rec.details["cost"][m]
        print(f"| tune: {m} | {t['value']:.3f}{ci} | {per} | {vs} | {c['trainable_params']:,} | {c['train_s']:.0f} |")
    # the frozen probes and the tuned models are scored on the same test images: the knn probe vs tuned methods
    print("\nSame test images (eval's split, per seed): " + ", ".join(
        f"seed {s}: {probes[s].test_ids == res.results[s]['linear'].units}" for s in seeds))
    if args.out:
        print(f"records and artefacts: {args.out} ({json.dumps({k: str(v) for k, v in res.artefacts.items()})})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("cost", "vits", "transfer"))
    ap.add_argument("--backbone", default="demo:fmnist-vit")
    ap.add_argument("--data", default="sample:digits")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {"cost": bench_cost, "vits": bench_vits, "transfer": bench_transfer}[args.part](args)


if __name__ == "__main__":
    main()
