"""Benchmark: is seg-linear under-fitted? vitlab's dense probes against a scikit-learn reference head (issue 20 §3).

Data: ``sample:fashion-mnist-mosaic`` (1,000 56x56 mosaics with per-pixel masks; the seeded 800 / 200 split
of ``vitlab.evaluate``). For each backbone (default ``demo:fmnist-vit`` and its random-init copy
``random:demo:fmnist-vit``), one ``vitlab.evaluate`` run in a fresh temporary cache with

- ``seg-linear`` (per-pixel loss, the default), ``seg-linear:loss=patch`` (majority label per patch),
  ``seg-linear-ms`` (last four layers, per-pixel loss) and ``seg-knn``;
- for each seg-linear protocol (and seg-linear-ms with ``--reference-ms``) a **reference head**, scored as the companion ``<protocol>+sklearn``: plain
  full-batch ``sklearn.linear_model.LogisticRegression(solver="lbfgs")`` (multinomial, the default for
  more than two classes) at the C vitlab chose, on exactly vitlab's training samples
  (``LinearSegProbe.pixel_samples`` / ``patch_samples``: the same sampled pixels' bilinearly upsampled
  features, or the same patches with their majority labels), standardised like vitlab's probe
  (``StandardScaler``: the probe standardises with training mean / std), ``max_iter`` high
  (``--max-iter``, default 20,000) and ``tol`` 1e-8; predicted like vitlab's (patch logits upsampled
  bilinearly to each mask, argmax) and scored by the same scorer (mIoU, seeded bootstrap CI over test
  images).

For each linear protocol it reports the chosen C, whether it sits at an edge of the grid, vitlab's
convergence at the chosen C (the refit's stop reason and largest gradient entry), the reference's
iterations, both solutions' objective ``mean logloss + ||W||^2 / (2 C n)`` on the same standardised
samples (float64), and the fraction of test pixels where vitlab's and the reference's predictions agree.
``--oracle-Cs`` also fits the reference at other values of C and prints their *test* mIoU (a diagnostic
of C's range, never a selection rule). Paired bootstrap tests: every pair of protocols within a backbone
(from the run record), and each protocol between the two backbones (same test images).

Example:
    python bench/bench_seg_reference.py
    python bench/bench_seg_reference.py --backbones demo:fmnist-vit --protocols seg-linear --n-resamples 200

Prints Markdown tables (and the raw JSON with ``--json``). Uses ``--threads`` torch threads (default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from typing import Any

import numpy as np

DATA = "sample:fashion-mnist-mosaic"


def objective(X: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, C: float) -> float:
    """``mean_i logloss_i + ||W||^2 / (2 C n)`` (scikit-learn's scaled objective) in float64; ``W [K, d]``."""
    Z = X @ W.T.astype(np.float64) + b.astype(np.float64)
    zmax = Z.max(1, keepdims=True)
    lse = np.log(np.exp(Z - zmax).sum(1)) + zmax[:, 0]
    return float((lse - Z[np.arange(len(y)), y]).mean() + (W.astype(np.float64) ** 2).sum() / (2 * C * len(y)))


def with_reference(base: type, max_iter: int, oracle_Cs: tuple[float, ...]) -> type:
    """A subclass of a seg-linear protocol whose result carries the scikit-learn reference as ``+sklearn``."""

    class WithReference(base):
        def _fit_probe(self, train, **kw):  # keep the probe _run fits, to compare with it
            self.probe_ = super()._fit_probe(train, **kw)
            return self.probe_

        def _run(self, train, test, *, seed, n_classes, device="cpu"):
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.linear_model import LogisticRegression
            from sklearn.preprocessing import StandardScaler

            from vitlab.protocols.base import Result
            from vitlab.protocols.dense import patch_labels, scores_to_label_maps

            res = super()._run(train, test, seed=seed, n_classes=n_classes, device=device)
            probe, cfg = self.probe_, self.config
            ignore, _, sizes = self._inputs(train, test, n_classes, patch_labels=False)
            if cfg.loss == "pixel":
                X, y, _ = probe.pixel_samples(train.tokens, list(train.masks), train.grid)
            else:
                X, y, _ = probe.patch_samples(train.tokens, patch_labels(list(train.masks), train.grid, n_classes,
                                                                         ignore))
            scaler = StandardScaler().fit(X.astype(np.float64))
            Xs = scaler.transform(X.astype(np.float64))
            np.testing.assert_allclose(scaler.mean_, probe.probe_.mean_, rtol=1e-6, atol=1e-6)  # same samples
            tok = np.asarray(test.tokens)
            Xt = scaler.transform(tok.reshape(-1, tok.shape[2]).astype(np.float64))
            vit_pred = probe.predict(test.tokens, test.grid, sizes)

            def fit(C: float) -> tuple[Any, bool, float]:
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("error", ConvergenceWarning)
                    try:
                        lr = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=1e-8).fit(Xs, y)
                        ok = True
                    except ConvergenceWarning:
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        lr = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=1e-8).fit(Xs, y)
                        ok = False
                return lr, ok, time.perf_counter() - t0

            def predict(lr: Any) -> list[np.ndarray]:
                scores = lr.decision_function(Xt).reshape(tok.shape[0], tok.shape[1], -1)
                return scores_to_label_maps(scores, test.grid, sizes, classes=lr.classes_)

            C = probe.probe_.C_
            lr, ok, secs = fit(C)
            ref_pred = predict(lr)
            yc = np.searchsorted(probe.classes_, y)
            same = sum(int((a == b).sum()) for a, b in zip(vit_pred, ref_pred))
            total = sum(int(a.size) for a in vit_pred)
            f_vit = objective(Xs, yc, probe.probe_.coef_, probe.probe_.intercept_, C)
            f_ref = objective(Xs, yc, lr.coef_, lr.intercept_, C)
            grid = np.sort(np.asarray(cfg.Cs, dtype=float))
            refit = probe.probe_.fit_info_[-1]
            details = {"C": C, "C_at_grid_edge": "low" if C == grid[0] else "high" if C == grid[-1] else "no",
                       "Cs_swept": probe.probe_.Cs_.tolist(), "n_samples": int(len(y)), "n_features": int(X.shape[1]),
                       "vitlab_refit": refit.to_dict(), "vitlab_all_converged": bool(all(f.converged for f in
                                                                                         probe.probe_.fit_info_)),
                       "sklearn_n_iter": int(np.max(lr.n_iter_)), "sklearn_converged": ok, "sklearn_fit_s": secs,
                       "objective_vitlab": f_vit, "objective_sklearn": f_ref,
                       "objective_rel_gap": (f_vit - f_ref) / abs(f_ref),
                       "pixel_agreement": same / total, "n_test_pixels": total}
            oracle = {}
            for c in oracle_Cs:
                lr_c, ok_c, _ = fit(float(c))
                part = self._result(test, predict(lr_c), n_classes, ignore, {}, {})
                from vitlab.metrics.segmentation import seg_metrics

                oracle[f"{c:.3g}"] = {"test_miou": float(seg_metrics(part.outputs["confusion"].sum(0))["miou"]),
                                      "converged": ok_c}
            if oracle:
                details["oracle_test_miou_by_C"] = oracle
            ref: Result = self._result(test, ref_pred, n_classes, ignore, {"C": C, "solver": "sklearn lbfgs"},
                                       details)
            res.companions["+sklearn"] = ref
            return res

    WithReference.__name__ = base.__name__ + "WithReference"
    return WithReference


def run_backbone(bb: str, protocols: list[str], args: argparse.Namespace) -> tuple[Any, float]:
    import vitlab
    from vitlab.protocols.base import parse_protocols

    protos = []
    for spec in protocols:
        p = parse_protocols(spec)[0]
        if p.name.startswith("seg-linear") and (p.name == "seg-linear" or args.reference_ms):
            cls = with_reference(type(p), args.max_iter, tuple(args.oracle_Cs) if p.name == "seg-linear" else ())
            p = cls(p.config)
        protos.append(p)
    cache = tempfile.mkdtemp(prefix="vitlab-bench-segref-")
    try:
        t0 = time.perf_counter()
        res = vitlab.evaluate(bb, DATA, protocols=protos, cache_dir=cache, n_resamples=args.n_resamples,
                              progress=False)
        return res, time.perf_counter() - t0
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="demo:fmnist-vit,random:demo:fmnist-vit")
    ap.add_argument("--protocols", default="seg-linear;seg-linear:loss=patch;seg-linear-ms;seg-knn",
                    help="protocol specs separated by ';'")
    ap.add_argument("--n-resamples", type=int, default=1000)
    ap.add_argument("--max-iter", type=int, default=20_000, help="the reference's L-BFGS iteration cap")
    ap.add_argument("--oracle-Cs", type=float, nargs="*", default=[], help="extra reference fits (test mIoU)")
    ap.add_argument("--reference-ms", action="store_true", help="also fit the reference on seg-linear-ms")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from vitlab.scorers import pair_results

    torch.set_num_threads(args.threads)
    print(f"# {platform.machine()} {os.cpu_count()} CPUs, {args.threads} torch threads, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average at start {os.getloadavg()[0]:.2f}", flush=True)
    protocols = args.protocols.split(";")
    runs = {}
    for bb in args.backbones.split(","):
        res, wall = run_backbone(bb, protocols, args)
        runs[bb] = res
        rec = res.record
        print(f"# {bb}: {wall:.0f} s (shared machine); timings {json.dumps(_timings(rec))}", flush=True)
        if args.json:
            print(json.dumps({"backbone": bb, "metrics": rec.metrics, "hparams": rec.hparams,
                              "timings": _timings(rec),
                              "details": {k: {kk: vv for kk, vv in v.items()
                                              if kk not in ("examples", "confusion_matrix")}
                                          for k, v in rec.details.items() if isinstance(v, dict)}},
                             default=str), flush=True)
        print_backbone(bb, res)
    if len(runs) == 2:
        (a, ra), (b, rb) = runs.items()
        both = {f"{a} {k}": v for k, v in ra.results.items()} | {f"{b} {k}": v for k, v in rb.results.items()}
        pairs = [(f"{a} {k}", f"{b} {k}") for k in ra.results if k in rb.results]
        print("\n| between backbones: a | b | diff [95% CI] | p (Holm) |\n|---|---|---|---|")
        for p in pair_results(both, n_resamples=args.n_resamples, seed=0, pairs=pairs):
            print(f"| {p['a']} | {p['b']} | {p['diff']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}] "
                  f"| {p.get('p_bootstrap_holm', p.get('p_bootstrap')):.3g} |", flush=True)


def _timings(rec: Any) -> dict[str, float]:
    return {k: v for k, v in rec.timings.items() if k.endswith("_s")}


def print_backbone(bb: str, res: Any) -> None:
    rec = res.record
    print("\n| backbone | probe | mIoU [95% CI] | pixel acc. | chosen | C at grid edge | vitlab refit stop "
          "(iters, max grad) | sklearn iters | objective gap (vitlab − sklearn) / sklearn | pixels agreeing |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for label in rec.metrics:
        m = rec.metrics[label]["miou"]
        acc = rec.metrics[label]["pixel_accuracy"]["value"]
        d = rec.details[label]
        hp = {k: (f"{v:.3g}" if isinstance(v, float) else v) for k, v in rec.hparams[label].items()
              if k not in ("layers", "loss", "solver", "val_metric")}
        row = f"| {bb} | {label} | {m['value']:.4f} [{m['low']:.4f}, {m['high']:.4f}] | {acc:.4f} | {hp} "
        if label.endswith("+sklearn"):
            r = d["vitlab_refit"]
            row += (f"| {d['C_at_grid_edge']} | {r['stop']} ({r['n_iter']}, {r['grad_max']:.1e}) "
                    f"| {d['sklearn_n_iter']}{'' if d['sklearn_converged'] else ' (cap)'} "
                    f"| {d['objective_rel_gap']:.2e} | {d['pixel_agreement']:.4f} |")
        else:
            row += "| | | | | |"
        print(row)
        for key in d:
            if key.startswith("val_") and key.endswith("_by_C"):
                print(f"|  | {label} {key} | {json.dumps({c: round(v, 4) for c, v in d[key].items()})} |||||||")
        if "convergence" in d and not d["convergence"]["all_converged"]:
            print(f"|  | {label} fits not converged at C | {d['convergence']['not_converged_C']} |||||||")
        if "oracle_test_miou_by_C" in d:
            print(f"|  | oracle: reference test mIoU by C | {d['oracle_test_miou_by_C']} |||||||")
    print(f"\nPaired bootstrap of the mIoU difference (a − b) on {bb}, Holm within the run:\n")
    print("| a | b | diff [95% CI] | p (Holm) |")
    print("|---|---|---|---|")
    for p in rec.details.get("protocol_pairs", []):
        print(f"| {p['a']} | {p['b']} | {p['diff']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}] "
              f"| {p.get('p_bootstrap_holm', p.get('p_bootstrap')):.3g} |", flush=True)

if __name__ == "__main__":
    main()
