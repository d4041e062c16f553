"""Benchmark vitlab's adaptation methods (prints measured figures; never run as a test).

(a) ``cost``: per method on ``demo:fmnist-vit`` (28 x 28, patch 4, 6 blocks, C = 96) and ``sample:digits``:
    trainable parameters, seconds per training epoch, training images/s and peak memory, from one epoch of
    :func:`vitlab.tune` (the record's cost block), with each method's epoch time as a ratio of ``full``'s
    measured in the same run.
(b) ``vits``: the same on a random-init ViT-S/16 at 224 x 224 (``timm:vit_small_patch16_224``,
    ``pretrained=False``) on a subset of digits, a few steps per method: seconds per step and peak memory.
(c) ``transfer``: the digits transfer task for the Fashion-MNIST demo ViT: the frozen probes
    (``vitlab.evaluate`` knn; the tune record's frozen L-BFGS linear probe) against ``vitlab.tune`` (linear head,
    LoRA, VPT, full) under the default recipe (LP-FT, learning rate chosen on validation), same seeds and splits,
    top-1 with CIs, paired tests against the frozen probe, the verdict and the validation search.

Usage:
    python bench/bench_tune.py cost --threads 1
    python bench/bench_tune.py vits --threads 1 --limit 128 --steps 3
    python bench/bench_tune.py transfer --threads 1 --seeds 2 --epochs 10 --out runs/bench_tune
    python bench/bench_tune.py transfer --threads 1 --seeds 2 --no-lp-init --lr-grid 1 --augment  # the old recipe

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
    knn = {s: vitlab.evaluate(args.backbone, args.data, protocols="knn", seed=s, n_resamples=1000, out=args.out,
                              progress=False) for s in seeds}
    t_knn = time.perf_counter() - t0
    recipe = {} if args.lr_grid is None else {"lr_grid": tuple(float(v) for v in args.lr_grid.split(","))}
    if args.augment:
        recipe["augment"] = True
    res = vitlab.tune(args.backbone, args.data, methods=args.methods, seeds=args.seeds, epochs=args.epochs,
                      batch_size=args.batch_size, device=args.device, out=args.out, progress=False,
                      lp_init=not args.no_lp_init, **recipe)
    rec = res.record
    d = rec.details
    print(f"## transfer: {args.backbone} on {args.data}, seeds {seeds}, up to {args.epochs} epochs, head start "
          f"{'random' if args.no_lp_init else 'LP-FT'}, lr grid x{rec.config['recipe']['lr_grid']}, augment "
          f"{rec.config['recipe']['augment']} "
          f"({_machine(args.device)}); knn probe {t_knn:.0f} s")
    print("| method | top-1 mean [95% t-CI over seeds] | per seed: top-1 [95% bootstrap CI] | "
          "Δ vs frozen probe per seed [95% CI] (Holm p boot / McNemar) | verdict vs probe | lr chosen per seed "
          "(best epoch) | trainable params | train s / seed (kept run) | search s / seed |")
    print("|---|---|---|---|---|---|---|---|---|")
    vals = [knn[s].record.metrics["knn"]["top1"] for s in seeds]
    per = "; ".join(f"{v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" for v in vals)
    print(f"| frozen probe: knn (vitlab eval) | {sum(v['value'] for v in vals) / len(vals):.3f} | {per} | – | – | – | – "
          "| – | – |")

    def top1(m: str, s: int) -> str:
        t = d["per_seed"][str(s)][m]["metrics"]["top1"]
        return f"{t['value']:.3f} [{t['low']:.3f}, {t['high']:.3f}]"

    for m in ["probe", *rec.config["methods"]]:
        t = rec.metrics[m]["top1"]
        ci = f" [{t['low']:.3f}, {t['high']:.3f}]" if t.get("low") is not None else ""
        per = "; ".join(top1(m, s) for s in seeds)
        vs = "; ".join(f"{v['diff']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}] ({v['p_bootstrap']:.2g} / "
                       f"{v['p_mcnemar']:.2g})" for v in d["vs_probe"].get(m, [])) or "–"
        verdict = d.get("vs_probe_verdict", {}).get(m, {})
        word = f"{verdict['verdict']} ({verdict['significant_seeds']}/{verdict['n_seeds']} significant)" \
            if verdict else "–"
        c = d["cost"][m]
        if m == "probe":
            print(f"| frozen probe: linear (vitlab eval, L-BFGS, C swept) | {t['value']:.3f}{ci} | {per} | – | – | "
                  f"– | {c['trainable_params']:,} | {c['train_s']:.0f} | – |")
            continue
        lrs = "; ".join(f"{x['lr']:g} ({x['best_epoch']})" for x in d["selection"][m])
        search = sum(p.get("search_s", p["train_s"]) for p in c["per_seed"]) / len(c["per_seed"])
        print(f"| tune: {m} | {t['value']:.3f}{ci} | {per} | {vs} | {word} | {lrs} | {c['trainable_params']:,} | "
              f"{c['train_s']:.0f} | {search:.0f} |")
    print()
    for m, v in d.get("vs_probe_verdict", {}).items():
        print(f"* {v['text']}")
    print("\nValidation search (per method, seed: lr -> val top-1 / val loss / best epoch):")
    for m, sel in d["selection"].items():
        for x in sel:
            print(f"  {m} seed {x['seed']}: " + "; ".join(
                f"{c['lr']:g} -> {c['val_top1']:.3f} / {c['val_loss']:.3f} / {c['best_epoch']}" for c in x["candidates"])
                + (f"; LP start C {x['lp_init']['C']:.3g}" if x.get("lp_init") else ""))
    # the frozen probes and the tuned models are scored on the same test images
    print("\nSame test images (eval's split, per seed): " + ", ".join(
        f"seed {s}: {knn[s].test_ids == res.results[s][rec.config['methods'][0]].units}" for s in seeds))
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
    ap.add_argument("--methods", default="linear,lora,vpt,full")
    ap.add_argument("--lr-grid", default=None, help="transfer: multipliers (default: the recipe's)")
    ap.add_argument("--no-lp-init", action="store_true", help="transfer: random head (the recipe before LP-FT)")
    ap.add_argument("--augment", action="store_true", help="transfer: random shifts while training (off by default)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    {"cost": bench_cost, "vits": bench_vits, "transfer": bench_transfer}[args.part](args)


if __name__ == "__main__":
    main()
