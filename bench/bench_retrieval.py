"""Benchmark: retrieval with the exact blocked search vs a faiss HNSW index, at 1e5 and 1e6 gallery rows.

Synthetic but structured features: ``--classes`` class centres in a ``--latent``-dimensional space,
each item its class centre plus within-class noise, mapped to ``--dim`` (384, ViT-S width) by a fixed
random linear map plus a little full-dimensional noise, float32, seeded. Real embeddings have a low
intrinsic dimension; isotropic 384-d Gaussians would not (every point nearly equidistant). A gallery
item is relevant to a query when it has the query's class, as in ``vitlab.protocols.retrieval``.
``--queries`` queries (1,000) come from the same distribution, drawn separately.

Each gallery size runs in its own subprocess (peak RSS per size). For each size it reports

* exact: ``vitlab.neighbors.search(query, gallery, k=10)`` (cosine, float32, default block 2048),
  median of ``--repeats`` timings, and the peak RSS it added over the data already loaded
  (``resource.getrusage`` high-water mark; beside it, the ``[m, n]`` float32 score matrix that an
  unblocked search would materialise);
* HNSW: faiss ``IndexHNSWFlat`` with vitlab's settings (``neighbors._faiss_search``: M = 32,
  efConstruction = 80, efSearch = max(64, 4k), cosine as inner product of L2-normalised rows),
  index build time (once) and query time (median of ``--repeats``) measured separately, and
  its recall@10 against the exact top-10 (``vitlab.neighbors.recall_at_k``);
* the retrieval task's recall@1 / recall@10 / precision@10 (``vitlab.metrics.retrieval``, the
  functions the ``retrieval`` protocol uses) from the exact and from the HNSW top-10, with the
  number of queries whose recall@1 differs;
* up to ``--vitlab-faiss-max`` rows, also ``search(..., backend="faiss")`` end to end (build + query
  in one call, as the protocol runs it).

If an exact search of all queries would take too long (``--exact-queries N`` for sizes above
``--exact-subset-from``), the exact side runs on the first N queries only, and recall and task
metrics are compared on those N (the table says so).

Example:
    python bench/bench_retrieval.py --sizes 100000 1000000 --queries 1000 --repeats 3
    python bench/bench_retrieval.py --sizes 20000 --queries 200 --repeats 1      # a quick version

Prints one JSON line per size (``--json``) and a Markdown table. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_data(n: int, m: int, d: int, latent: int, classes: int, noise: float, seed: int):
    """Gallery ``[n, d]`` and queries ``[m, d]`` float32 with labels; generated in chunks (no big temporaries)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, latent), dtype=np.float32)
    proj = rng.standard_normal((latent, d), dtype=np.float32) / np.float32(np.sqrt(latent))

    def draw(count: int, stream: int):
        r = np.random.default_rng([seed, stream])
        X = np.empty((count, d), np.float32)
        y = r.integers(0, classes, count)
        for s in range(0, count, 65536):
            e = min(s + 65536, count)
            z = centres[y[s:e]] + np.float32(noise) * r.standard_normal((e - s, latent), dtype=np.float32)
            X[s:e] = z @ proj + np.float32(0.1) * r.standard_normal((e - s, d), dtype=np.float32)
        return X, y

    G, gy = draw(n, 1)
    Q, qy = draw(m, 2)
    return G, gy, Q, qy


def worker(args: argparse.Namespace, n: int) -> dict:
    sys.path.insert(0, os.path.join(HERE, ".."))
    import faiss
    import numpy as np
    import torch

    from vitlab.metrics.retrieval import retrieval_metrics
    from vitlab.neighbors import DEFAULT_BLOCK, recall_at_k, search

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    k = 10
    t0 = time.perf_counter()
    G, gy, Q, qy = make_data(n, args.queries, args.dim, args.latent, args.classes, args.noise, args.seed)
    gen_s = time.perf_counter() - t0
    n_rel = np.bincount(gy, minlength=args.classes)[qy]
    m_exact = args.queries
    if args.exact_queries and n >= args.exact_subset_from:
        m_exact = min(args.exact_queries, args.queries)
    rss_data = _maxrss_mib()

    # --- exact (first, so the RSS high-water mark above the data is the exact search's own) ---
    times, ex = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ex = search(Q[:m_exact], G, k, metric="cosine")
        times.append(time.perf_counter() - t0)
    rss_exact = _maxrss_mib()
    load_exact = os.getloadavg()[0]
    print(json.dumps({"partial": True, "n": n, "exact_queries": m_exact, "exact_s": statistics.median(times),
                      "exact_times": times, "exact_s_per_1000q": statistics.median(times) * 1000 / m_exact,
                      "rss_data_mib": rss_data, "rss_after_exact_mib": rss_exact,
                      "full_score_matrix_mib": m_exact * n * 4 / 2**20, "gen_s": gen_s,
                      "task_exact": None, "load_avg_after_exact": load_exact}), flush=True)
    hnsw_start = time.perf_counter()

    # --- faiss HNSW with vitlab's settings, build and query timed separately ---
    t0 = time.perf_counter()
    Gn = G / np.maximum(np.linalg.norm(G, axis=1, keepdims=True), 1e-12)
    Qn = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
    index = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 80
    index.add(np.ascontiguousarray(Gn, dtype=np.float32))
    build_s = time.perf_counter() - t0
    print(json.dumps({"hnsw_build_s": build_s}), file=sys.stderr, flush=True)
    index.hnsw.efSearch = max(64, 4 * k)
    qtimes, hi = [], None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        _, hi = index.search(np.ascontiguousarray(Qn, dtype=np.float32), k)
        qtimes.append(time.perf_counter() - t0)
    hi = hi.astype(np.int64)
    rss_hnsw = _maxrss_mib()
    del index, Gn

    vf = None
    if n <= args.vitlab_faiss_max:
        t0 = time.perf_counter()
        nb = search(Q, G, k, metric="cosine", backend="faiss")
        vf = {"total_s": time.perf_counter() - t0,
              "recall_at_10": recall_at_k(nb.indices[:m_exact], ex.indices)}

    proto = None
    if args.protocol_queries and n <= args.protocol_max:
        from vitlab.protocols.base import Split
        from vitlab.protocols.retrieval import Retrieval

        mq = min(args.protocol_queries, args.queries)
        t0 = time.perf_counter()
        res = Retrieval(ks=(1, 10), backend="exact").run(
            Split(G, gy, np.arange(n)), Split(Q[:mq], qy[:mq], np.arange(n, n + mq)),
            seed=args.seed, n_classes=args.classes)
        pq = res.outputs["per_query"]
        proto = {"queries": mq, "total_s": time.perf_counter() - t0,
                 "recall@1": float(np.mean(pq["recall@1"])), "map": float(np.mean(pq["map"])),
                 "recall@1_from_top10": float(np.mean(gy[ex.indices[:mq, 0]] == qy[:mq]))}

    def task(idx: np.ndarray, rows: slice) -> dict:
        rel = (gy[np.maximum(idx, 0)] == qy[rows, None]) & (idx >= 0)
        pq = retrieval_metrics(rel, n_rel[rows], (1, 10), full_ranking=False)
        return {key: float(np.mean(v)) for key, v in pq.items() if key in ("recall@1", "recall@10", "precision@10")}

    rows = slice(0, m_exact)
    rel1_ex = gy[ex.indices[:, 0]] == qy[rows]
    rel1_hn = gy[hi[rows, 0]] == qy[rows]
    return {
        "n": n, "d": args.dim, "queries": args.queries, "exact_queries": m_exact, "k": k,
        "block": DEFAULT_BLOCK, "gen_s": gen_s,
        "exact_s": statistics.median(times), "exact_times": times,
        "exact_s_per_1000q": statistics.median(times) * 1000 / m_exact,
        "hnsw_build_s": build_s, "hnsw_query_s": statistics.median(qtimes), "hnsw_query_times": qtimes,
        "hnsw_recall_at_10": recall_at_k(hi[rows], ex.indices),
        "hnsw_recall_at_1": float(np.mean(hi[rows, 0] == ex.indices[:, 0])),
        "task_exact": task(ex.indices, rows), "task_hnsw": task(hi[rows], rows),
        "task_hnsw_all_queries": task(hi, slice(0, args.queries)),
        "queries_recall1_differs": int((rel1_ex != rel1_hn).sum()),
        "rss_data_mib": rss_data, "rss_after_exact_mib": rss_exact, "rss_after_hnsw_mib": rss_hnsw,
        "full_score_matrix_mib": m_exact * n * 4 / 2**20,
        "vitlab_faiss": vf, "protocol_exact": proto, "torch_threads": torch.get_num_threads(),
        "load_avg_after_exact": load_exact, "load_avg_end": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="gallery rows")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--latent", type=int, default=32, help="intrinsic dimension of the features")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=1.0, help="within-class std in the latent space "
                    "(class centres have std 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of each search (median reported)")
    ap.add_argument("--threads", type=int, default=2, help="torch and faiss (OpenMP) threads")
    ap.add_argument("--exact-queries", type=int, default=0,
                    help="run the exact search on only this many queries for sizes >= --exact-subset-from (0: all)")
    ap.add_argument("--exact-subset-from", type=int, default=1_000_000)
    ap.add_argument("--vitlab-faiss-max", type=int, default=100_000,
                    help="also time search(backend='faiss') end to end up to this gallery size")
    ap.add_argument("--protocol-queries", type=int, default=100,
                    help="also run the retrieval protocol (exact full ranking, mAP) on this many queries (0: skip)")
    ap.add_argument("--protocol-max", type=int, default=100_000,
                    help="... for gallery sizes up to this (the protocol's exact_max_gallery)")
    ap.add_argument("--size-timeout", type=int, default=0,
                    help="stop a size's worker after this many seconds and report its exact figures only (0: no limit)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="also print each size's raw JSON")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args, args.worker)), flush=True)
        return

    import torch

    print(f"# {platform.machine()} {os.cpu_count()} CPUs, {args.threads} threads, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average at start {os.getloadavg()[0]:.2f}")
    print(f"# d={args.dim}, latent {args.latent}, {args.classes} classes, noise {args.noise}, {args.queries} queries, "
          f"k=10, cosine, {args.repeats} repeats, seed {args.seed}", flush=True)
    results, partial = [], []
    for n in args.sizes:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n)] + [
            a for a in sys.argv[1:] if a != "--json"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.size_timeout or None)
            stdout, timed_out = out.stdout, False
            if out.returncode:
                print(out.stderr, file=sys.stderr)
                raise SystemExit(f"size {n} failed")
        except subprocess.TimeoutExpired as e:
            stdout, timed_out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), True
        if not stdout.strip():
            print(f"# n={n}: stopped after {args.size_timeout} s, before the exact search finished", flush=True)
            continue
        r = json.loads(stdout.strip().splitlines()[-1])
        if timed_out:
            print(f"# n={n}: stopped after {args.size_timeout} s (HNSW build unfinished); exact figures only",
                  flush=True)
            print(json.dumps(r), flush=True)
            partial.append(r)
            continue
        results.append(r)
        if args.json:
            print(json.dumps(r), flush=True)
        else:
            print(f"# n={n}: done (exact {r['exact_s']:.2f} s, HNSW build {r['hnsw_build_s']:.1f} s)", flush=True)

    print("\n| gallery | exact top-10 s (queries) | exact s / 1k queries | HNSW build s | HNSW query s (1k) "
          "| HNSW query / exact | HNSW recall@10 vs exact | task R@1 exact / HNSW | task R@10 exact / HNSW "
          "| P@10 exact / HNSW | queries whose R@1 differs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        te, th = r["task_exact"], r["task_hnsw"]
        ratio = (r["hnsw_query_s"] * r["exact_queries"] / r["queries"]) / r["exact_s"]
        print(f"| {r['n']:,} | {r['exact_s']:.2f} ({r['exact_queries']:,}) | {r['exact_s_per_1000q']:.2f} "
              f"| {r['hnsw_build_s']:.1f} | {r['hnsw_query_s']:.3f} | {ratio:.4f} | {r['hnsw_recall_at_10']:.4f} "
              f"| {te['recall@1']:.4f} / {th['recall@1']:.4f} | {te['recall@10']:.4f} / {th['recall@10']:.4f} "
              f"| {te['precision@10']:.4f} / {th['precision@10']:.4f} | {r['queries_recall1_differs']} "
              f"of {r['exact_queries']:,} |")
    print("\n| gallery | data RSS | peak RSS after exact | exact extra RSS | [m, n] f32 score matrix "
          "| peak RSS after HNSW | vitlab search(backend='faiss') s (recall@10) |")
    print("|---|---|---|---|---|---|---|")
    for r in partial:
        print(f"| {r['n']:,} (HNSW unfinished) | {r['rss_data_mib'] / 1024:.2f} GiB "
              f"| {r['rss_after_exact_mib'] / 1024:.2f} GiB | {(r['rss_after_exact_mib'] - r['rss_data_mib']) / 1024:.2f} GiB "
              f"| {r['full_score_matrix_mib'] / 1024:.2f} GiB | – | – |")
    for r in results:
        vf = r["vitlab_faiss"]
        vfs = f"{vf['total_s']:.1f} ({vf['recall_at_10']:.4f})" if vf else "–"
        print(f"| {r['n']:,} | {r['rss_data_mib'] / 1024:.2f} GiB | {r['rss_after_exact_mib'] / 1024:.2f} GiB "
              f"| {(r['rss_after_exact_mib'] - r['rss_data_mib']) / 1024:.2f} GiB "
              f"| {r['full_score_matrix_mib'] / 1024:.2f} GiB | {r['rss_after_hnsw_mib'] / 1024:.2f} GiB | {vfs} |")
    for r in results:
        p = r["protocol_exact"]
        if p:
            print(f"\nretrieval protocol (exact full ranking), n={r['n']:,}, first {p['queries']} queries: "
                  f"{p['total_s']:.1f} s ({p['total_s'] * 1000 / p['queries']:.0f} s per 1k queries, vs "
                  f"{r['exact_s_per_1000q']:.2f} s for the top-10 search); recall@1 {p['recall@1']:.4f} "
                  f"(from the top-10 search: {p['recall@1_from_top10']:.4f}), mAP {p['map']:.4f}")


if __name__ == "__main__":
    main()
