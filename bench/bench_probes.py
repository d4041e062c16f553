"""Benchmark vitlab's frozen-feature probes against scikit-learn (prints measured figures).

(a) Linear probe: the same C-grid sweep (same train / validation / test split,
    same tolerance and iteration cap, warm starts on both sides), pick the C with
    the best validation accuracy, refit on train + validation, score on test:
    ``vitlab.protocols.linear.LinearProbe`` (torch L-BFGS) vs
    ``sklearn.linear_model.LogisticRegression(solver="lbfgs", warm_start=True)``.
(b) kNN: ``vitlab.protocols.knn.knn_predict`` (uniform weights) vs
    ``KNeighborsClassifier(metric="cosine", algorithm="brute")`` at one k, plus the
    DINOv2 softmax-weighted kNN for all ks in one call.

Usage:
    python bench/bench_probes.py --synthetic
    python bench/bench_probes.py --features fmnist_dinov2_s.npz --threads 2

``--features`` is an ``.npz`` with arrays ``train_x, train_y, test_x, test_y``.
Wall times are single runs on whatever CPU/GPU is free; on a shared machine they
are noisy.
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


def bench_linear(d: dict[str, np.ndarray], Cs: np.ndarray, args: argparse.Namespace) -> None:
    X, y, Xte, yte = d["train_x"], d["train_y"], d["test_x"], d["test_y"]
    print(f"\n(a) linear probe: {len(Cs)} C values in [{Cs[0]:.0e}, {Cs[-1]:.0e}], "
          f"val_fraction={args.val_fraction}, tol={args.tol}, max_iter={args.max_iter}")
    rows = []
    # warm-up (first torch call pays one-off initialisation costs of ~1 s)
    LinearProbe(Cs=[1.0], device=args.device).fit(X[:200], np.arange(200) % 2)
    for dtype in args.dtypes.split(","):
        t0 = time.perf_counter()
        probe = LinearProbe(Cs=Cs, val_fraction=args.val_fraction, seed=args.seed, device=args.device,
                            max_iter=args.max_iter, tol=args.tol, dtype=dtype).fit(X, y)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter() - t0
        acc = float((probe.predict(Xte) == yte).mean())
        name = f"vitlab torch L-BFGS {dtype} ({args.device})"
        rows.append((name, t, probe.C_, probe.val_scores_.max(), acc))

    tr, va = holdout(y, None, args.val_fraction, args.seed)  # the split LinearProbe uses
    X64, Xte64 = X.astype(np.float64), Xte.astype(np.float64)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf = LogisticRegression(solver="lbfgs", tol=args.tol, max_iter=args.max_iter, warm_start=True)
        scores = []
        for C in Cs:
            clf.set_params(C=C).fit(X64[tr], y[tr])
            scores.append(float((clf.predict(X64[va]) == y[va]).mean()))
        best = int(np.argmax(scores))
        final = LogisticRegression(solver="lbfgs", C=Cs[best], tol=args.tol, max_iter=args.max_iter,
                                   warm_start=True)
        final.coef_, final.intercept_ = clf.coef_, clf.intercept_  # warm start, as LinearProbe does
        final.fit(X64, y)
    t_sk = time.perf_counter() - t0
    n_conv = sum(issubclass(w.category, ConvergenceWarning) for w in caught)
    acc_sk = float((final.predict(Xte64) == yte).mean())
    rows.append((f"sklearn LogisticRegression lbfgs float64 ({n_conv} ConvergenceWarnings)",
                 t_sk, Cs[best], max(scores), acc_sk))
    print(f"  {'method':<62} {'wall s':>8} {'best C':>9} {'val acc':>8} {'test acc':>9}")
    for name, t, C, v, a in rows:
        print(f"  {name:<62} {t:8.2f} {C:9.2e} {v:8.4f} {a:9.4f}")
    for name, t, *_ in rows[:-1]:
        print(f"  speed-up of {name.split(' (')[0]} over sklearn: {t_sk / t:.2f}x")


def bench_knn(d: dict[str, np.ndarray], ks: tuple[int, ...], k_cmp: int, args: argparse.Namespace) -> None:
    X, y, Xte, yte = d["train_x"], d["train_y"], d["test_x"], d["test_y"]
    print(f"\n(b) kNN, cosine: {X.shape[0]} train x {Xte.shape[0]} test")
    knn_predict(X[:300], y[:300], Xte[:10], ks=(5,), device=args.device)  # warm-up
    t0 = time.perf_counter()
    ours = knn_predict(X, y, Xte, ks=(k_cmp,), weighting="uniform", device=args.device)[k_cmp]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    sk = KNeighborsClassifier(n_neighbors=k_cmp, metric="cosine", algorithm="brute", weights="uniform")
    pred_sk = sk.fit(X, y).predict(Xte)
    t_sk = time.perf_counter() - t0
    t0 = time.perf_counter()
    soft = knn_predict(X, y, Xte, ks=ks, weighting="softmax", temperature=0.07, device=args.device)
    t_soft = time.perf_counter() - t0
    print(f"  {'method':<62} {'wall s':>8} {'test acc':>9}")
    for name, t, pred in [
        (f"vitlab knn uniform k={k_cmp} ({args.device})", t_ours, ours),
        (f"sklearn KNeighborsClassifier brute cosine k={k_cmp}", t_sk, pred_sk),
    ]:
        print(f"  {name:<62} {t:8.2f} {(pred == yte).mean():9.4f}")
    print(f"  speed-up over sklearn: {t_sk / t_ours:.2f}x; predictions identical on "
          f"{(ours == pred_sk).mean() * 100:.2f}% of test samples")
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
