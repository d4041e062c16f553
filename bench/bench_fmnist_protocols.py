"""Benchmark: demo:fmnist-vit (and a pixels floor) under each protocol on the full Fashion-MNIST test set.

Embeds all 70,000 Fashion-MNIST images (train split: 60k, test split: 10k, from the
IDX files' own split) through the embedding store, runs kNN, linear probe and
few-shot via ``vitlab.evaluate``, and prints top-1 with 95% bootstrap CIs next to
the dataset's published baseline (RBF SVC on pixels, 89.7%, from the Fashion-MNIST
benchmark table). Also writes the features as ``--export`` .npz for
``bench/bench_probes.py``.

Example:
    python bench/bench_fmnist_protocols.py --export /tmp/fmnist_demo.npz
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

import vitlab

FMNIST = "idx:/usr/share/datasets/fashion-mnist"
PUBLISHED = {"SVC (RBF, C=10) on pixels, Fashion-MNIST benchmark": 0.897}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", default="demo:fmnist-vit,pixels")
    ap.add_argument("--protocols", default="knn,linear,fewshot")
    ap.add_argument("--n-resamples", type=int, default=1000)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--export", default=None, help="write demo features as .npz (train_x, train_y, test_x, test_y)")
    args = ap.parse_args()
    print(f"# {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print("| backbone | protocol | top-1 | 95% CI | chosen | embed s | protocol s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.backbones.split(","):
        t0 = time.perf_counter()
        res = vitlab.evaluate(name, FMNIST, protocols=args.protocols, n_resamples=args.n_resamples,
                              cache_dir=args.cache_dir, progress=False)
        rec = res.record
        for proto in rec.config["protocols"]:
            m = rec.metrics[proto]
            if "top1" in m:
                t = m["top1"]
                print(f"| {name} | {proto} | {t['value']:.4f} | [{t['low']:.4f}, {t['high']:.4f}] | "
                      f"{rec.hparams[proto]} | {rec.timings['embed_s']:.1f} | {rec.timings[f'{proto}_s']:.1f} |")
            else:
                for key, v in m.items():
                    print(f"| {name} | {proto} {key} | {v['value']:.4f} | [{v['low']:.4f}, {v['high']:.4f}] | "
                          f"10 episodes | | {rec.timings[f'{proto}_s']:.1f} |")
        print(f"<!-- {name}: total {time.perf_counter() - t0:.1f} s, embedding stats {rec.timings['embedding_stats']} -->")
        if args.export and name.startswith("demo"):
            emb = res.embeddings
            split = np.asarray(emb.split_column)
            X = np.asarray(emb.get(), dtype=np.float32)
            np.savez(args.export, train_x=X[split == "train"], train_y=emb.labels[split == "train"],
                     test_x=X[split == "test"], test_y=emb.labels[split == "test"])
    for what, acc in PUBLISHED.items():
        print(f"| published: {what} | | {acc:.3f} | | | | |")


if __name__ == "__main__":
    main()
