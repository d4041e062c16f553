"""Benchmark: label issues on planted noise (issue 23 §3). Precision and recall of the flagged set, with 95%
t-intervals over seeds, for vitlab's cross-fitting (:func:`vitlab.curation.label_issues.find_label_issues`,
``linear`` and ``knn``) against cleanlab on scikit-learn's ``cross_val_predict`` probabilities
(``StandardScaler`` + ``LogisticRegression``, default C=1, lbfgs) over the SAME features and the same
folds' seed.

For each data set (real images, embedded once with ``--backbone`` through the embedding store), noise rate
and seed, ``round(rate * n)`` items get a label drawn uniformly from the other classes; "flagged" is
cleanlab's ``find_label_issues`` (``filter_by="prune_by_noise_rate"``) on each method's out-of-fold
probabilities; precision = planted among flagged / flagged, recall = planted among flagged / planted.
Intervals: Student-t over seeds (:func:`vitlab.stats.interval.t_interval`), clipped to [0, 1].

Example:
    python bench/bench_label_issues.py --data sample:fashion-mnist sample:digits --rates 0.02 0.05 0.1 --seeds 5

Prints one JSON line per run (stderr) and a Markdown table (stdout). Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def features(backbone: str, data: str, cache_dir: str | None):
    import vitlab

    bb = vitlab.load_backbone(backbone)
    emb = vitlab.EmbeddingStore(cache_dir).get_or_compute(bb, vitlab.load_source(data), layers=-1,
                                                          pool="cls" if bb.spec.has_cls_token else "mean",
                                                          num_workers=0, progress=False)
    return np.asarray(emb.get(), np.float32), np.asarray(emb.labels, np.int64)


def plant(y: np.ndarray, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with ``round(rate * n)`` items moved to a uniformly drawn other class, and those items."""
    rng = np.random.default_rng(1000 + seed)
    k = int(y.max()) + 1
    idx = rng.choice(len(y), int(round(rate * len(y))), replace=False)
    noisy = y.copy()
    noisy[idx] = (y[idx] + rng.integers(1, k, len(idx))) % k
    return noisy, idx


def sklearn_reference(X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    P = cross_val_predict(model, X, y, method="predict_proba",
                          cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    return np.flatnonzero(find_label_issues(labels=y, pred_probs=P, n_jobs=1))


def one(X: np.ndarray, y_noisy: np.ndarray, planted: np.ndarray, method: str, folds: int, seed: int) -> dict:
    from vitlab.curation.label_issues import find_label_issues

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "sklearn-logreg":
            flagged = sklearn_reference(X, y_noisy, folds, seed)
        else:
            flagged = np.flatnonzero(find_label_issues(X, y_noisy, folds=folds, seed=seed, method=method).is_issue)
    dt = time.perf_counter() - t0
    hit = len(np.intersect1d(flagged, planted))
    return {"flagged": int(len(flagged)), "hit": hit, "planted": int(len(planted)),
            "precision": hit / len(flagged) if len(flagged) else float("nan"),
            "recall": hit / len(planted) if len(planted) else float("nan"), "seconds": round(dt, 2)}


def _clip(ci: tuple[float, float, float]) -> tuple[float, float, float]:
    """A Student-t interval over seeds of a proportion, clipped to [0, 1] (it still holds the mean)."""
    m, lo, hi = ci.value, ci.low, ci.high
    return m, (None if lo is None else max(0.0, lo)), (None if hi is None else min(1.0, hi))


def main() -> None:
    from vitlab.stats.interval import t_interval

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="demo:fmnist-vit")
    p.add_argument("--data", nargs="+", default=["sample:fashion-mnist", "sample:digits"])
    p.add_argument("--rates", type=float, nargs="+", default=[0.02, 0.05, 0.10])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--methods", nargs="+", default=["linear", "knn", "sklearn-logreg"])
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: no spin-waiting on a shared box)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for data in args.data:
        X, y = features(args.backbone, data, args.cache_dir)
        for rate in args.rates:
            for method in args.methods:
                runs = []
                for s in range(args.seeds):
                    y_noisy, planted = plant(y, rate, s)
                    r = one(X, y_noisy, planted, method, args.folds, s)
                    runs.append(r)
                    print(json.dumps({"data": data, "n": len(y), "rate": rate, "method": method, "seed": s, **r}),
                          file=sys.stderr, flush=True)
                pr = _clip(t_interval([r["precision"] for r in runs], bounds=(0.0, 1.0)))
                rc = _clip(t_interval([r["recall"] for r in runs], bounds=(0.0, 1.0)))
                rows.append({"data": data, "n": len(y), "rate": rate, "method": method, "precision": pr, "recall": rc,
                             "flagged": np.mean([r["flagged"] for r in runs]), "planted": runs[0]["planted"],
                             "seconds": np.mean([r["seconds"] for r in runs])})
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs (shared), python {platform.python_version()}, "
          f"{args.threads} torch thread(s); backbone {args.backbone}; {args.seeds} seeds, {args.folds} folds")
    print("| data (n) | noise | method | precision [95% CI] | recall [95% CI] | flagged (planted) | s per run |")
    print("|---|---:|---|---|---|---:|---:|")
    for r in rows:
        (pv, pl, ph), (rv, rl, rh) = r["precision"], r["recall"]
        print(f"| {r['data']} ({r['n']:,}) | {r['rate']:.0%} | {r['method']} | {pv:.3f} [{pl:.3f}, {ph:.3f}] | "
              f"{rv:.3f} [{rl:.3f}, {rh:.3f}] | {r['flagged']:.1f} ({r['planted']}) | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
