"""Benchmark: semantic near-duplicate search (every item's k nearest other items by cosine) at 1e5 (and
1e6 when given) items x 384 dims: vitlab's exact blocked search vs faiss HNSW (with measured recall) vs
a dense N x N similarity matrix (imagededup's approach) where it fits in memory.

Synthetic, structured, seeded float32 features: ``--classes`` centres in a ``--latent``-dimensional
space mapped to ``--dim`` by a fixed random linear map, plus noise; 1% of the items are then replaced by
near copies of other items (cosine > 0.99), the duplicates to find.

Each (method, n) runs in its own subprocess so its peak RSS (``resource.getrusage`` high-water mark,
minus the RSS after the data was made) is its own. Reported per run:

* exact: ``vitlab.curation.semantic.neighbour_table(X, k, backend="exact")`` (``vitlab.neighbors.search``
  blocked, float32, block 2048): time, added peak RSS, pairs >= ``--threshold``, injected pairs found;
* faiss: the same with ``backend="faiss"`` (HNSW M=32, efConstruction=80, efSearch=max(64, 4k)),
  build + search time (plus the exact search of the 1,000 recall queries, as curate runs it), added peak
  RSS, recall@k against exact on 1,000 sampled queries (measured inside
  ``neighbour_table``), injected pairs found;
* dense: ``S = Xn @ Xn.T`` (numpy float32, N x N) then ``argpartition`` per row: only up to ``--dense-max`` items.

Example:
    python bench/bench_curate.py --sizes 20000 100000 --dense-sizes 10000 20000
    python bench/bench_curate.py --sizes 1000000 --methods faiss      # 1e6: faiss only on a 2-core box

Prints one JSON line per run and a Markdown table. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_data(n: int, d: int, latent: int, classes: int, noise: float, dup_frac: float, seed: int):
    """``[n, d]`` float32 features and the ``(original, copy)`` rows of the injected near duplicates."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, latent)).astype(np.float32)
    W = (rng.normal(size=(latent, d)) / np.sqrt(latent)).astype(np.float32)
    X = np.empty((n, d), np.float32)
    for i0 in range(0, n, 65536):
        i1 = min(n, i0 + 65536)
        z = centres[rng.integers(0, classes, i1 - i0)] + noise * rng.normal(size=(i1 - i0, latent)).astype(np.float32)
        X[i0:i1] = z @ W + 0.05 * rng.normal(size=(i1 - i0, d)).astype(np.float32)
    n_dup = int(dup_frac * n)
    perm = rng.permutation(n)
    orig, copy = perm[:n_dup], perm[n_dup:2 * n_dup]
    scale = np.linalg.norm(X[orig], axis=1, keepdims=True)
    X[copy] = X[orig] + 0.02 * scale / np.sqrt(d) * rng.normal(size=(n_dup, d)).astype(np.float32)
    return X, list(zip(orig.tolist(), copy.tolist()))


def _found(pairs, injected) -> int:
    got = {(min(a, b), max(a, b)) for a, b, *_ in pairs}
    return sum((min(a, b), max(a, b)) in got for a, b in injected)


def one(method: str, n: int, args) -> dict:
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    X, injected = make_data(n, args.dim, args.latent, args.classes, args.noise, 0.01, args.seed)
    import torch

    from vitlab.curation.semantic import neighbour_table

    torch.set_num_threads(os.cpu_count() or 1)
    base = _rss_mib()
    t0 = time.perf_counter()
    out = {"method": method, "n": n, "dim": args.dim, "k": args.k}
    if method in ("exact", "faiss"):
        t = neighbour_table(X, k=args.k, backend=method, seed=args.seed)
        out["seconds"] = time.perf_counter() - t0
        pairs = t.pairs(args.threshold)
        out.update(recall_at_k=t.recall, recall_queries=t.recall_queries)
    else:
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        S = Xn @ Xn.T
        np.fill_diagonal(S, -np.inf)
        idx = np.argpartition(-S, args.k, axis=1)[:, :args.k]
        sc = np.take_along_axis(S, idx, 1)
        out["seconds"] = time.perf_counter() - t0
        r, c = np.nonzero(sc >= args.threshold)
        pairs = [(int(i), int(idx[i, j])) for i, j in zip(r, c)]
    out["added_peak_rss_mib"] = round(_rss_mib() - base, 1)
    out["pairs_above_threshold"] = len({(min(a, b), max(a, b)) for a, b, *_ in pairs})
    out["injected"] = len(injected)
    out["injected_found"] = _found(pairs, injected)
    out["seconds"] = round(out["seconds"], 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    p.add_argument("--dense-sizes", type=int, nargs="*", default=[10_000, 20_000])
    p.add_argument("--methods", nargs="+", default=["exact", "faiss"])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--noise", type=float, default=0.5)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--threshold", type=float, default=0.99)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args)))
        return
    runs = [(m, n) for n in args.sizes for m in args.methods] + [("dense", n) for n in args.dense_sizes]
    runs += [("exact", n) for n in args.dense_sizes if "exact" in args.methods and n not in args.sizes]
    rows = []
    passthrough = [f"--{k}={v}" for k, v in (("dim", args.dim), ("latent", args.latent), ("classes", args.classes),
                                             ("noise", args.noise), ("k", args.k), ("threshold", args.threshold),
                                             ("seed", args.seed))]
    for m, n in runs:
        proc = subprocess.run([sys.executable, __file__, "--one", m, str(n), *passthrough], capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{m} n={n} failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row) if args.json else f"{m} n={n}: {row}", file=sys.stderr, flush=True)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print("| method | n | seconds | added peak RSS (MiB) | recall@k vs exact | pairs >= t | injected found |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r["n"], r["method"])):
        rec = "–" if r.get("recall_at_k") is None else f"{r['recall_at_k']:.4f} ({r['recall_queries']} q)"
        print(f"| {r['method']} | {r['n']:,} | {r['seconds']} | {r['added_peak_rss_mib']} | {rec} | "
              f"{r['pairs_above_threshold']:,} | {r['injected_found']:,} / {r['injected']:,} |")


if __name__ == "__main__":
    main()
