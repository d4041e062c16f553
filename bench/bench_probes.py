"""Benchmark vitlab's frozen-feature probes against scikit-learn (prints measured figures).

(a) Linear probe: the same C-grid sweep (same train / validation / test split,
    same tolerance and iteration cap, warm starts on both sides), pick the C with
    the best validation accuracy, refit on train + validation starting from that C's
    solution (both sides), score on test:
    ``vitlab.protocols.linear.LinearProbe`` (torch L-BFGS) vs
    ``sklearn.linear_model.LogisticRegression(solver="lbfgs", warm_start=True)``.
(b) kNN: ``vitlab.protocols.knn.knn_predict`` (uniform weights) vs
    ``KNeighborsClassifier(metric="cosine", algorithm="brute")`` at one k, plus the
    DINOv2 softmax-weighted kNN for all ks in one call.

Both comparisons run INTERLEAVED in one process: each repeat times vitlab and scikit-learn once,
alternating which goes first, and the printed ``RATIO`` lines are the median of the per-repeat ratios
(sklearn time / vitlab time), so load from other processes affects both sides alike.

Usage:
    python bench/bench_probes.py --synthetic
    python bench/bench_probes.py --synthetic --skip linear --n-train 60000 --n-test 10000 --dim 384
    python bench/bench_probes.py --features fmnist_dinov2_s.npz --threads 2

``--features`` is an ``.npz`` with arrays ``train_x, train_y, test_x, test_y``.
Wall times are medians over ``--repeats`` on whatever CPU/GPU is free; on a shared machine
they are noisy, the interleaved ratios less so.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from vitlab.data.splits import holdout
from vitlab.protocols.knn import knn_predict
from vitlab.protocols.linear import LinearProbe


def synthetic(n_train: int, n_test: int, dim: int, classes: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded Gaussian-mixture stand-in for embeddings: class means in a 16-d subspace plus noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 16)))[0]  # [dim, 16]
    means = rng.normal(size=(classes, 16)) @ basis.T * 1.0  # [classes, dim]

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, n)
        x = means[y] + rng.normal(size=(n, dim)) * 1.3 + 0.5  # offset: features are not centred
        return x.astype(np.float32), y.astype(np.int64)

    (trx, try_), (tex, tey) = draw(n_train), draw(n_test)
    return {"train_x": trx, "train_y": try_, "test_x": tex, "test_y": tey}


def sklearn_sweep(X: np.ndarray, y: np.ndarray, Cs: np.ndarray, args: argparse.Namespace
                  ) -> tuple[LogisticRegression, float, float, int]:
    """scikit-learn's side of (a): the same sweep with warm starts, refit from the CHOSEN C's solution.

    Returns the refitted model, its C, the best validation accuracy and the number of ConvergenceWarnings.
    """
    tr, va = holdout(y, None, args.val_fraction, args.seed)  # the split LinearProbe uses
    X64 = X.astype(np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LogisticRegression(solver="lbfgs", tol=args.tol, max_iter=args.max_iter, warm_start=True)
        scores, sols = [], []
        for C in Cs:
            clf.set_params(C=C).fit(X64[tr], y[tr])
            scores.append(float((clf.predict(X64[va]) == y[va]).mean()))
            sols.append((clf.coef_.copy(), clf.intercept_.copy()))
        best = int(np.argmax(scores))
        final = LogisticRegression(solver="lbfgs", C=Cs[best], tol=args.tol, max_iter=args.max_iter,
                                   warm_start=True)
        final.coef_, final.intercept_ = sols[best]  # warm start from the chosen C's solution, as LinearProbe does
        final.fit(X64, y)
    n_conv = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    return final, float(Cs[best]), max(scores), n_conv


def bench_linear(d: dict[str, np.ndarray], Cs: np.ndarray, args: argparse.Namespace) -> None:
    """Interleaved: each repeat runs every vitlab dtype and scikit-learn once, alternating which goes first."""
    X, y, Xte, yte = d["train_x"], d["train_y"], d["test_x"], d["test_y"]
    print(f"\n(a) linear probe: {len(Cs)} C values in [{Cs[0]:.0e}, {Cs[-1]:.0e}], "
          f"val_fraction={args.val_fraction}, tol={args.tol}, max_iter={args.max_iter}, {args.repeats} repeat(s)")
    # warm-up (first torch call pays one-off initialisation costs of ~1 s)
    LinearProbe(Cs=[1.0], device=args.device).fit(X[:200], np.arange(200) % 2)
    dtypes = args.dtypes.split(",")
    times: dict[str, list[float]] = {k: [] for k in [*dtypes, "sklearn"]}
    results: dict[str, tuple] = {}

    def run_ours(dtype: str) -> None:
        t0 = time.perf_counter()
        probe = LinearProbe(Cs=Cs, val_fraction=args.val_fraction, seed=args.seed, device=args.device,
                            max_iter=args.max_iter, tol=args.tol, dtype=dtype).fit(X, y)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times[dtype].append(time.perf_counter() - t0)
        results[dtype] = (probe.C_, probe.val_scores_.max(), probe.predict(Xte), len(probe.convergence_["not_converged_C"]))

    def run_sk() -> None:
        t0 = time.perf_counter()
        final, C, v, n_conv = sklearn_sweep(X, y, Cs, args)
        times["sklearn"].append(time.perf_counter() - t0)
        results["sklearn"] = (C, v, final.predict(Xte.astype(np.float64)), n_conv)

    for rep in range(args.repeats):
        order = [*(lambda dt=dt: run_ours(dt) for dt in dtypes), run_sk]
        for fn in (order if rep % 2 == 0 else order[::-1]):
            fn()
    sk_pred = results["sklearn"][2]
    print(f"  {'method':<52} {'median s':>9} {'best C':>9} {'val acc':>8} {'test acc':>9} {'not conv':>8}")
    for key in [*dtypes, "sklearn"]:
        C, v, pred, nc = results[key]
        name = "sklearn LogisticRegression lbfgs float64" if key == "sklearn" else \
            f"vitlab torch L-BFGS {key} ({args.device})"
        print(f"  {name:<52} {np.median(times[key]):9.2f} {C:9.2e} {v:8.4f} {(pred == yte).mean():9.4f} {nc:8d}")
    for dt in dtypes:
        ratios = np.asarray(times["sklearn"]) / np.asarray(times[dt])
        same = (results[dt][2] == sk_pred).mean() * 100
        print(f"  RATIO linear {dt}: sklearn / vitlab = {np.median(ratios):.2f}x (median of {len(ratios)} "
              f"interleaved repeats: {', '.join(f'{r:.2f}' for r in ratios)}); same C as sklearn: "
              f"{results[dt][0] == results['sklearn'][0]}; test predictions identical to sklearn on {same:.2f}%")


def bench_knn(d: dict[str, np.ndarray], ks: tuple[int, ...], k_cmp: int, args: argparse.Namespace) -> None:
    """Interleaved: each repeat runs vitlab's kNN and scikit-learn's brute cosine kNN, alternating the order."""
    X, y, Xte, yte = d["train_x"], d["train_y"], d["test_x"], d["test_y"]
    print(f"\n(b) kNN, cosine: {X.shape[0]} train x {Xte.shape[0]} test, d {X.shape[1]}, {args.repeats} repeat(s)")
    knn_predict(X[:300], y[:300], Xte[:10], ks=(5,), device=args.device)  # warm-up
    t_ours: list[float] = []
    t_sk: list[float] = []
    out: dict[str, np.ndarray] = {}

    def ours() -> None:
        t0 = time.perf_counter()
        out["ours"] = knn_predict(X, y, Xte, ks=(k_cmp,), weighting="uniform", device=args.device)[k_cmp]
        t_ours.append(time.perf_counter() - t0)

    def sk() -> None:
        t0 = time.perf_counter()
        clf = KNeighborsClassifier(n_neighbors=k_cmp, metric="cosine", algorithm="brute", weights="uniform")
        out["sk"] = clf.fit(X, y).predict(Xte)
        t_sk.append(time.perf_counter() - t0)

    for rep in range(args.repeats):
        for fn in ((ours, sk) if rep % 2 == 0 else (sk, ours)):
            fn()
    t0 = time.perf_counter()
    soft = knn_predict(X, y, Xte, ks=ks, weighting="softmax", temperature=0.07, device=args.device)
    t_soft = time.perf_counter() - t0
    print(f"  {'method':<62} {'median s':>9} {'test acc':>9}")
    for name, t, pred in [
        (f"vitlab knn uniform k={k_cmp} ({args.device})", t_ours, out["ours"]),
        (f"sklearn KNeighborsClassifier brute cosine k={k_cmp}", t_sk, out["sk"]),
    ]:
        print(f"  {name:<62} {np.median(t):9.2f} {(pred == yte).mean():9.4f}")
    ratios = np.asarray(t_sk) / np.asarray(t_ours)
    print(f"  RATIO knn: sklearn / vitlab = {np.median(ratios):.2f}x (median of {len(ratios)} interleaved repeats: "
          f"{', '.join(f'{r:.2f}' for r in ratios)}); predictions identical on "
          f"{(out['ours'] == out['sk']).mean() * 100:.2f}% of test samples")
    accs = ", ".join(f"k={k}: {(soft[k] == yte).mean():.4f}" for k in ks)
    print(f"  vitlab knn softmax T=0.07, ks={ks} in one call: {t_soft:.2f} s; {accs}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--features", help=".npz with train_x, train_y, test_x, test_y")
    src.add_argument("--synthetic", action="store_true", help="seeded Gaussian-mixture stand-in")
    ap.add_argument("--n-train", type=int, default=20000)
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-cs", type=int, default=45, help="size of the C grid logspace(-6, 5, n)")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--dtypes", default="float64,float32", help="torch dtypes to time, comma-separated")
    ap.add_argument("--ks", default="10,20,100,200")
    ap.add_argument("--k-compare", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="limit torch and BLAS threads")
    ap.add_argument("--skip", choices=["linear", "knn"], default=None)
    ap.add_argument("--repeats", type=int, default=3,
                    help="interleaved repeats per side; the ratio printed is the median of per-repeat ratios")
    args = ap.parse_args()

    if args.synthetic:
        data = synthetic(args.n_train, args.n_test, args.dim, args.classes, args.seed)
        origin = f"synthetic (seed {args.seed})"
    else:
        with np.load(args.features) as z:
            data = {k: z[k] for k in ("train_x", "train_y", "test_x", "test_y")}
        origin = args.features
    data["train_y"] = data["train_y"].astype(np.int64)
    data["test_y"] = data["test_y"].astype(np.int64)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    print(f"data: {origin}; train {data['train_x'].shape}, test {data['test_x'].shape}, "
          f"{int(data['train_y'].max()) + 1} classes")
    print(f"host: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{threads} thread(s), device {args.device}")
    Cs = np.logspace(-6, 5, args.n_cs)
    with threadpool_limits(limits=threads):
        if args.skip != "linear":
            bench_linear(data, Cs, args)
        if args.skip != "knn":
            bench_knn(data, tuple(int(k) for k in args.ks.split(",")), args.k_compare, args)


if __name__ == "__main__":
    main()
