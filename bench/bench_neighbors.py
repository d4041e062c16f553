"""Benchmark vitlab's one neighbour search against faiss, side by side in ONE process (prints ratios).

Part ``ratios`` (issue 21 §1): exact search, interleaved repeats, the same threads for everyone:

* (a) ``--queries`` x ``--gallery`` items, d = ``--dim``, top ``--k`` by cosine;
* (b) self-search of ``--self-n`` items, top ``--self-k`` other items (curation's question).

Each repeat times, in rotating order, ``vitlab.neighbors.search`` (exact, float32), faiss
``IndexFlatIP`` on L2-normalised rows (the self-search asks for k + 1 and drops each row itself),
and a plain blocked ``torch.mm`` + ``topk`` (no tie handling). Printed: the median time of each,
the median of the per-repeat ratios vitlab / faiss (<= 1.0: vitlab is at least as fast), the
agreement of the neighbour lists, and the GEMM rate each reaches as a fraction of this machine's
float32 GEMM rate (a plain ``torch.mm`` of the same shape, timed in the same repeats).

Part ``scale`` (issue 21 §3): retrieval (``--scale-queries`` queries against n items, top 10)
and curation (self-search of n items, top 16, then the pairs above 0.99) at each ``--scale-sizes``
n, exact and approximate (``search(backend="faiss")``: an IVF index with nlist / nprobe from n,
recall against exact search measured on sampled queries), each against faiss ``IndexFlatIP`` in
the same run, with time, peak memory (the process's RSS high-water mark; each case in its own
subprocess) and recall.

Data: synthetic, seeded, L2-normalised Gaussian mixture with realistic structure: ``--classes``
centres in a 32-d latent space mapped to d by a fixed random linear map, per-item latent noise, a
little isotropic noise in d, and 1% near-copies (cosine > 0.99) of other items.

Usage:
    python bench/bench_neighbors.py ratios                        # the two issue-21 cases (long)
    python bench/bench_neighbors.py ratios --queries 2000 --gallery 20000 --self-n 8000 --repeats 3
    python bench/bench_neighbors.py scale --scale-sizes 100000 1000000

On a machine shared with other jobs absolute times are noisy; the ratios are measured interleaved.
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

import numpy as np


def make_data(n: int, d: int, seed: int, classes: int = 1000, dup_frac: float = 0.01) -> np.ndarray:
    """``[n, d]`` float32, L2-normalised rows of a seeded Gaussian mixture with 1% near-copies."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, 32)).astype(np.float32)
    W = (rng.normal(size=(32, d)) / np.sqrt(32)).astype(np.float32)
    X = np.empty((n, d), np.float32)
    for i0 in range(0, n, 65536):
        i1 = min(n, i0 + 65536)
        z = centres[rng.integers(0, classes, i1 - i0)] + rng.normal(size=(i1 - i0, 32)).astype(np.float32)
        X[i0:i1] = z @ W + 0.1 * rng.normal(size=(i1 - i0, d)).astype(np.float32)
    n_dup = int(dup_frac * n)
    perm = rng.permutation(n)
    orig, copy = perm[:n_dup], perm[n_dup:2 * n_dup]
    X[copy] = X[orig] + 0.02 * np.linalg.norm(X[orig], axis=1, keepdims=True) / np.sqrt(d) * \
        rng.normal(size=(n_dup, d)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def _set_threads(threads: int) -> None:
    import faiss
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    threadpool_limits(limits=threads)


def faiss_flat(q: np.ndarray, g: np.ndarray, k: int, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """faiss ``IndexFlatIP`` on L2-normalised rows; the self-search asks for k + 1 and drops the row itself."""
    import faiss

    q = q.copy()
    g = g.copy()
    faiss.normalize_L2(q)
    faiss.normalize_L2(g)
    index = faiss.IndexFlatIP(g.shape[1])
    index.add(g)
    s, i = index.search(q, k + int(exclude_self))
    if exclude_self:
        keep = i != np.arange(len(q))[:, None]
        keep[keep.sum(1) > k, -1] = False  # a row not found among its own k + 1: drop the last
        s, i = s[keep].reshape(len(q), k), i[keep].reshape(len(q), k)
    return s, i


def torch_topk(q: np.ndarray, g: np.ndarray, k: int, exclude_self: bool = False, block: int = 2048):
    """Plain blocked ``mm`` + ``topk`` (no tie handling): the floor a torch implementation can reach."""
    import torch

    qt = torch.nn.functional.normalize(torch.from_numpy(q), dim=1)
    gt = torch.nn.functional.normalize(torch.from_numpy(g), dim=1)
    out_s, out_i = [], []
    for i0 in range(0, len(q), block):
        t = qt[i0:i0 + block] @ gt.T
        if exclude_self:
            r = torch.arange(i0, min(i0 + block, len(q)))
            t[r - i0, r] = float("-inf")
        s, i = torch.topk(t, k, dim=1)
        out_s.append(s)
        out_i.append(i)
    return torch.cat(out_s).numpy(), torch.cat(out_i).numpy()


def gemm(q: np.ndarray, g: np.ndarray, block: int = 2048) -> None:
    """The GEMM work alone (same flops as one exact search), results discarded: the machine's rate."""
    import torch

    qt, gt = torch.from_numpy(q), torch.from_numpy(g)
    buf = torch.empty(block, len(g))
    for i0 in range(0, len(q), block):
        a = qt[i0:i0 + block]
        torch.mm(a, gt.T, out=buf[: len(a)])


def ratios(args: argparse.Namespace) -> dict:
    from vitlab.neighbors import search

    _set_threads(args.threads)
    cases = [("a", f"{args.queries:,} queries x {args.gallery:,} gallery, d {args.dim}, k {args.k}",
              make_data(args.queries, args.dim, 1), make_data(args.gallery, args.dim, 2), args.k, False),
             ("b", f"self-search {args.self_n:,} items, d {args.dim}, k {args.self_k}",
              None, make_data(args.self_n, args.dim, 3), args.self_k, True)]
    out = {}
    for name, title, q, g, k, self_ in cases:
        q = g if q is None else q
        methods = {
            "vitlab": lambda q=q, g=g, k=k, s=self_: (lambda r: (r.scores, r.indices))(
                search(q, g, k, metric="cosine", exclude_self=s)),
            "faiss": lambda q=q, g=g, k=k, s=self_: faiss_flat(q, g, k, s),
            "torch": lambda q=q, g=g, k=k, s=self_: torch_topk(q, g, k, s),
            "gemm": lambda q=q, g=g: gemm(q, g),
        }
        times: dict[str, list[float]] = {m: [] for m in methods}
        results = {}
        names = list(methods)
        methods["vitlab"]()  # warm-up (first call pays one-off costs)
        for rep in range(args.repeats):
            for m in names[rep % len(names):] + names[: rep % len(names)]:  # rotate the order
                t0 = time.perf_counter()
                res = methods[m]()
                times[m].append(time.perf_counter() - t0)
                if m != "gemm":
                    results[m] = res
        flops = 2.0 * len(q) * len(g) * q.shape[1]
        med = {m: float(np.median(t)) for m, t in times.items()}
        ratio = [a / b for a, b in zip(times["vitlab"], times["faiss"])]
        vi, fi = results["vitlab"][1], results["faiss"][1]
        same_sets = float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(vi, fi)]))
        out[name] = {"case": title, "median_s": med, "ratio_vitlab_over_faiss_per_repeat": ratio,
                     "ratio_vitlab_over_faiss": float(np.median(ratio)),
                     "ratio_torch_over_faiss": float(np.median([a / b for a, b in zip(times["torch"], times["faiss"])])),
                     "gemm_gflops": flops / med["gemm"] / 1e9,
                     "fraction_of_gemm_rate": {m: med["gemm"] / med[m] for m in ("vitlab", "faiss", "torch")},
                     "same_neighbours_as_faiss": same_sets,
                     "identical_order_as_faiss": float(np.mean(vi == fi))}
        print(f"({name}) {title}: " + ", ".join(f"{m} {t:.2f} s" for m, t in med.items())
              + f"; vitlab / faiss = {out[name]['ratio_vitlab_over_faiss']:.3f} (per repeat "
              + ", ".join(f"{r:.3f}" for r in ratio) + ")"
              + f"; GEMM {out[name]['gemm_gflops']:.0f} GFLOP/s, vitlab at "
              + f"{out[name]['fraction_of_gemm_rate']['vitlab']:.0%}, faiss at "
              + f"{out[name]['fraction_of_gemm_rate']['faiss']:.0%} of it; same neighbour sets {same_sets:.4f}",
              flush=True)
    return out


def _scale_case(kind: str, n: int, method: str, args: argparse.Namespace) -> dict:
    """One scale case, run in this (child) process: time, peak RSS, recall."""
    from vitlab.neighbors import recall_at_k, search

    _set_threads(args.threads)
    g = make_data(n, args.dim, 10)
    q = make_data(args.scale_queries, args.dim, 11) if kind == "retrieval" else g
    k = 10 if kind == "retrieval" else 16
    self_ = kind == "curation"
    t0 = time.perf_counter()
    if method == "faiss-flat":
        s, i = faiss_flat(q, g, k, self_)
        extra = {}
    else:
        r = search(q, g, k, metric="cosine", exclude_self=self_,
                   backend="faiss" if method == "vitlab-approx" else "exact", seed=0)
        s, i = r.scores, r.indices
        extra = {"index": r.index, "recall_recorded": r.recall, "recall_queries": r.recall_queries}
    dt = time.perf_counter() - t0
    out = {"kind": kind, "n": n, "method": method, "seconds": dt, **extra}
    if self_:
        t1 = time.perf_counter()
        rows = np.repeat(np.arange(len(q)), k)
        above = s.ravel() > args.pair_threshold
        a, b = rows[above], i.ravel()[above]
        pairs = np.unique(np.sort(np.stack([a, b], 1), axis=1), axis=0)
        out.update(pairs=int(len(pairs)), pairs_s=time.perf_counter() - t1, seconds=dt + time.perf_counter() - t1)
    if method == "vitlab-approx" and args.check_recall:  # recall on sampled queries against vitlab's exact search, measured here too (not trusted blindly)
        rng = np.random.default_rng(1)
        sample = np.sort(rng.choice(len(q), size=min(len(q), 500), replace=False))
        if self_:
            ex = search(q[sample], g, k + 1, metric="cosine")
            ei = np.array([[j for j in row if j != sample[r]][:k] for r, row in enumerate(ex.indices)])
        else:
            ei = search(q[sample], g, k, metric="cosine").indices
        out["recall_checked"] = float(recall_at_k(i[sample], ei))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def scale(args: argparse.Namespace) -> list[dict]:
    """Every (kind, n, method) in its own subprocess (peak memory per case), printed as it finishes."""
    rows = []
    for n in args.scale_sizes:
        for kind in ("retrieval", "curation"):
            methods = ["vitlab-exact", "faiss-flat", "vitlab-approx"]
            if kind == "curation" and n > args.max_exact_self:
                methods = ["vitlab-approx"]  # n^2 exact work: hours on 2 cores (the reason is printed)
                print(f"curation n={n:,}: exact self-search skipped ({n:,}^2 x {args.dim} x 2 = "
                      f"{2.0 * n * n * args.dim:.1e} flop); approximate only", flush=True)
            for method in methods:
                cmd = [sys.executable, __file__, "_case", "--kind", kind, "--n", str(n), "--method", method,
                       "--threads", str(args.threads), "--dim", str(args.dim), "--scale-queries",
                       str(args.scale_queries), "--pair-threshold", str(args.pair_threshold)]
                if args.check_recall:
                    cmd.append("--check-recall")
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{kind} n={n:,} {method}: failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", choices=["ratios", "scale", "_case"])
    ap.add_argument("--scale-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--scale-queries", type=int, default=1000)
    ap.add_argument("--max-exact-self", type=int, default=100_000)
    ap.add_argument("--pair-threshold", type=float, default=0.99)
    ap.add_argument("--check-recall", action="store_true")
    ap.add_argument("--kind", choices=["retrieval", "curation"])
    ap.add_argument("--n", type=int)
    ap.add_argument("--method", choices=["vitlab-exact", "faiss-flat", "vitlab-approx"])
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--gallery", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--self-n", type=int, default=30_000)
    ap.add_argument("--self-k", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.part == "_case":
        print(json.dumps(_scale_case(args.kind, args.n, args.method, args)))
        return
    print(f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; {args.threads} threads for torch, faiss and BLAS", flush=True)
    if args.part == "ratios":
        print(json.dumps(ratios(args)))
    else:
        scale(args)


if __name__ == "__main__":
    main()
