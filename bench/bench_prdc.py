"""Benchmark: blocked PRDC (+ realism) wall time and peak memory at 10k and 50k x 1024.

Each configuration runs in its own subprocess so that the peak resident set
size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is per configuration. The
worker reports

* RSS after importing torch/numpy and generating the float32 inputs
  (``rss_data``; "base RSS" below),
* peak RSS over the whole run (``peak_rss``), and their difference (the
  working memory of PRDC: float64 copies of the features + tiles + radii),
* wall time of ``prdc(real, fake, nearest_k=5, realism=True)``.

For scale: the unblocked ``prdc`` package / dgm-eval would materialise three
``n x n`` distance matrices (float32 output; sklearn works in float64 chunks
internally) -- at n = 50k that is 3 x 10 GB = 30 GB.

Usage:
    python bench/bench_prdc.py [--sizes 10000 50000] [--dim 1024] [--dtypes float64]

Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(n: int, d: int, dtype: str, block: int) -> None:
    sys.path.insert(0, os.path.join(HERE, ".."))
    import warnings

    import numpy as np
    import torch

    from vitlab.metrics.prdc import prdc

    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    real = rng.standard_normal((n, d), dtype=np.float32)
    fake = rng.standard_normal((n, d), dtype=np.float32) + np.float32(0.01)
    rss_data = _rss_mib()
    t0 = time.perf_counter()
    res = prdc(real, fake, nearest_k=5, realism=True, dtype=dtype, block_size=block)
    wall = time.perf_counter() - t0
    peak = _rss_mib()
    print(json.dumps({
        "n": n, "d": d, "dtype": dtype, "block": block, "wall_s": wall,
        "rss_data_mib": rss_data, "peak_rss_mib": peak,
        "precision": res.precision, "recall": res.recall, "density": res.density,
        "coverage": res.coverage, "realism_median": float(np.median(res.realism)),
        "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg()[0],
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000])
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--dtypes", nargs="+", default=["float64"])
    ap.add_argument("--block", type=int, default=2048)
    ap.add_argument("--worker", nargs=4, metavar=("N", "D", "DTYPE", "BLOCK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        n, d, dtype, block = args.worker
        worker(int(n), int(d), dtype, int(block))
        return

    print(f"cpus={os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}")
    print(f"{'n':>7} {'d':>5} {'dtype':>8} {'wall[s]':>9} {'base RSS':>10} {'peak RSS':>10} "
          f"{'PRDC extra':>11} {'full n^2 f32 x3':>16}  precision recall density coverage")
    for dtype in args.dtypes:
        for n in args.sizes:
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--worker", str(n), str(args.dim), dtype,
                 str(args.block)],
                capture_output=True, text=True, check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            naive_gib = 3 * n * n * 4 / 2**30
            print(f"{r['n']:>7} {r['d']:>5} {r['dtype']:>8} {r['wall_s']:>9.1f} "
                  f"{r['rss_data_mib'] / 1024:>8.2f}Gi {r['peak_rss_mib'] / 1024:>8.2f}Gi "
                  f"{(r['peak_rss_mib'] - r['rss_data_mib']) / 1024:>9.2f}Gi {naive_gib:>14.1f}Gi  "
                  f"{r['precision']:.4f} {r['recall']:.4f} {r['density']:.4f} {r['coverage']:.4f}"
                  f"   (torch threads {r['torch_threads']}, load {r['load_avg']:.1f})", flush=True)


if __name__ == "__main__":
    main()
