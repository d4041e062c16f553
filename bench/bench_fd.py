"""Benchmark: vitlab's eigen-based Fréchet distance vs the scipy.linalg.sqrtm formulation.

The reference is pytorch-fid's / dgm-eval's ``compute_FD_with_stats``:
``covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)`` (with the eps retry and the
imaginary-part check). Both sides get the same precomputed ``(mu, sigma)``, so
the timings compare only the distance computation; the time to compute the
statistics (identical for both) is printed separately.

Features are synthetic correlated Gaussians with a decaying spectrum (like
real embeddings): ``X = Z diag(s) Q`` with ``s_i ~ i^-0.5``.

Usage:
    python bench/bench_fd.py [--dims 1024 2048] [--n 10000] [--repeats 3] [--threads 1]

``--threads N`` caps BLAS/LAPACK (threadpoolctl) and torch intra-op threads for
*both* methods (0 = leave the defaults). On an oversubscribed machine
multi-threaded LAPACK eigen/Schur solvers can slow down by 10-50x (threads
spin-wait for descheduled siblings), so compare like with like.

Timings are wall-clock medians; on a shared machine they are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import warnings

import numpy as np
import torch
from scipy import linalg
from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vitlab.metrics.fd import frechet_distance_from_stats, gaussian_stats  # noqa: E402


def sqrtm_fd(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
             eps: float = 1e-6) -> float:
    """pytorch-fid / dgm-eval ``compute_FD_with_stats``."""
    diff = mu1 - mu2
    with warnings.catch_warnings():  # scipy >= 1.16 deprecates disp=
        warnings.simplefilter("ignore", DeprecationWarning)
        covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def make_features(rng: np.random.Generator, n: int, d: int, shift: float) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.arange(1, d + 1, dtype=np.float64) ** -0.5
    return ((rng.standard_normal((n, d)) * s) @ q + shift).astype(np.float32)


def timed(fn, repeats: int) -> tuple[float, float, list[float]]:
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return float(value), statistics.median(times), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--n", type=int, default=10000, help="samples per set")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS/LAPACK + torch threads for both methods (0 = library defaults)")
    args = ap.parse_args()
    if args.threads > 0:
        threadpool_limits(limits=args.threads)
        torch.set_num_threads(args.threads)

    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"cpus={os.cpu_count()}, --threads={args.threads} (torch threads={torch.get_num_threads()}), "
          f"load average at start {os.getloadavg()[0]:.2f}")
    print(f"n = {args.n} per set, repeats = {args.repeats} (median reported)\n")
    rng = np.random.default_rng(0)
    for d in args.dims:
        real = make_features(rng, args.n, d, 0.0)
        fake = make_features(rng, args.n, d, 0.05)
        t0 = time.perf_counter()
        mu1, s1 = gaussian_stats(real)
        mu2, s2 = gaussian_stats(fake)
        t_stats = time.perf_counter() - t0

        fd_ref, t_ref, all_ref = timed(lambda: sqrtm_fd(mu1, s1, mu2, s2), args.repeats)
        fd_th, t_th, all_th = timed(lambda: frechet_distance_from_stats(mu1, s1, mu2, s2), args.repeats)
        print(f"d = {d}  (statistics of both sets: {t_stats:.2f} s, not included below)")
        print(f"  scipy sqrtm(S1 @ S2) FD : {fd_ref:.10g}   median {t_ref:8.3f} s   runs {[round(t, 3) for t in all_ref]}")
        print(f"  vitlab eigh (torch)  FD : {fd_th:.10g}   median {t_th:8.3f} s   runs {[round(t, 3) for t in all_th]}")
        print(f"  load average now {os.getloadavg()[0]:.2f}")
        print(f"  speed-up: {t_ref / t_th:6.1f}x   relative difference |FD_fast - FD_sqrtm| / FD_sqrtm: "
              f"{abs(fd_th - fd_ref) / abs(fd_ref):.2e}\n")


if __name__ == "__main__":
    main()
