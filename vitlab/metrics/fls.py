"""Feature Likelihood Score (FLS) and FLS-POG (Jiralerspong et al. 2023), as dgm-eval.

Reproduces dgm-eval's ``dgm_eval/metrics/fls.py`` (from marcojira/fls):

1. All four sets are standardised with the mean and (unbiased, ``ddof=1``) std
   of their concatenation ``[train; baseline; test; gen]``.
2. A KDE with one isotropic Gaussian per kernel point ``y_j`` (``M`` points,
   dimension ``D``) and per-point log-bandwidth ``s_j`` (``s_j = log sigma_j^2``)
   gives log-likelihood terms

       e_ij = -0.5 ||x_i - y_j||^2 / exp(s_j) - (D/2) s_j + log(1/M)

   (the ``-(D/2) log 2 pi`` constant is omitted, as in dgm-eval; it cancels).
   ``NLL(X) = mean_i -logsumexp_j e_ij``.
3. ``s`` is fitted by minimising ``NLL(train)`` with Adam (lr 0.5, 100 steps,
   lr x0.1 after step 50, ``s`` initialised to 0 and clamped to ``[-100, 20]``
   after every step).
4. ``FLS = 100 exp(-2 (NLL_gen(test) - NLL_baseline(test)) / D)`` where
   ``NLL_gen(test)`` uses the KDE on the generated set and ``NLL_baseline(test)``
   the KDE on the baseline set (held-out training data), each with its own fit.
5. FLS-POG ("percentage of overfit Gaussians", dgm-eval ``fls_overfit``): with the
   generated KDE and ``S = min(|test|, |train|)``, for each generated point ``j``
   ``delta_j = logsumexp_{i<S} e(train_i, j) - logsumexp_{i<S} e(test_i, j)``;
   ``POG = 100 mean_j 1[delta_j > 0] - 50``.

Quirks kept: the baseline set enters FLS-POG only through the standardisation
in step 1; dgm-eval's run script first subsamples (see :func:`split_fls_sets`).

Implementation: the ``[N, M]`` squared-distance cache needed by the 100 optimiser
steps is held once (``cache_dtype``, float32 by default as dgm-eval; 400 MB at
10k x 10k), and every step evaluates the loss and its gradient in row chunks
in float64 (the gradient of a mean over rows is the sum of chunk gradients), so
no ``[N, M]`` autograd intermediates are kept. Evaluation on the test set is
fully blocked. dgm-eval runs on CUDA in float32; here ``device=None`` is the CPU.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> tr, base, te, gen = (rng.standard_normal((200, 4)) for _ in range(4))
    >>> res = fls_scores(tr, base, te, gen)
    >>> 50 < res.fls < 150 and -50 <= res.fls_pog <= 50
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vitlab.errors import DataError
from vitlab.metrics._validate import check_features, check_positive_int, check_same_dim
from vitlab.neighbors import iter_blocks, sq_dist_tile

__all__ = ["FLSResult", "fls_scores", "fls_score", "fls_pog", "split_fls_sets", "fit_log_bandwidths"]


@dataclass(frozen=True)
class FLSResult:
    """Result of :func:`fls_scores`.

    Attributes:
        fls: FLS (dgm-eval ``fls``); 100 = as good as held-out training data.
        fls_pog: FLS-POG in ``[-50, 50]`` (dgm-eval ``fls_overfit``); > 0 suggests overfitting.
        gen_nll: ``NLL_gen(test)``.
        baseline_nll: ``NLL_baseline(test)``.
    """

    fls: float
    fls_pog: float
    gen_nll: float
    baseline_nll: float


def split_fls_sets(
    train: np.ndarray, test: np.ndarray, gen: np.ndarray, *, reduced_n: int = 10_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """dgm-eval's FLS subsampling: returns ``(train, baseline, test, gen)``.

    ``r = min(reduced_n, len(train) // 2, len(test), len(gen))``; ``test`` and ``gen``
    are subsampled to ``r`` rows, ``train`` to ``2 r`` rows whose first half is the
    training set and second half the baseline (all without replacement, drawn in
    that order from ``np.random.default_rng(seed)``; dgm-eval is unseeded).

    Example:
        >>> x = np.zeros((10, 2))
        >>> [a.shape[0] for a in split_fls_sets(x, x, x, reduced_n=3)]
        [3, 3, 3, 3]
    """
    reduced_n = check_positive_int(reduced_n, "reduced_n")
    r = min(reduced_n, len(train) // 2, len(test), len(gen))
    if r < 1:
        raise DataError(
            f"FLS needs at least 2 train, 1 test and 1 gen rows but got {len(train)}, "
            f"{len(test)} and {len(gen)}."
        )
    rng = np.random.default_rng(seed)
    test = np.asarray(test)[rng.choice(len(test), r, replace=False)]
    gen = np.asarray(gen)[rng.choice(len(gen), r, replace=False)]
    train = np.asarray(train)[rng.choice(len(train), 2 * r, replace=False)]
    return train[:r], train[r:], test, gen


def _standardise(sets: list[np.ndarray], device: Any) -> list[torch.Tensor]:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    tens = [torch.as_tensor(s, dtype=torch.float64).to(dev) for s in sets]
    allf = torch.cat(tens, dim=0)
    mean, std = allf.mean(dim=0), allf.std(dim=0)
    const = int((std == 0).sum().item())
    if const:
        raise DataError(
            f"{const} feature dims are constant across train/baseline/test/gen: FLS divides by "
            "their std (dgm-eval would return NaN). Drop them, e.g. x[:, x.std(0) > 0]."
        )
    return [(t - mean) / std for t in tens]


def _exponent(d2: torch.Tensor, log_s: torch.Tensor, dim: int) -> torch.Tensor:
    m = d2.shape[1]
    return (-0.5 * d2) / torch.exp(log_s) - (dim / 2) * log_s + math.log(1.0 / m)


def fit_log_bandwidths(
    x_data: torch.Tensor,
    x_kernel: torch.Tensor,
    *,
    steps: int = 100,
    lr: float = 0.5,
    init: float = 0.0,
    chunk: int = 1024,
    cache_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Fit per-kernel log-bandwidths ``s`` minimising ``NLL(x_data)`` (dgm-eval ``optimize_sigmas``).

    Adam(lr), ``MultiStepLR(milestones=[50], gamma=0.1)``, ``steps`` steps, clamp
    to ``[-100, 20]`` after each step.

    Args:
        x_data: ``[N, D]`` standardised data tensor.
        x_kernel: ``[M, D]`` standardised kernel points.
        steps: Optimiser steps (100).
        lr: Adam learning rate (0.5).
        init: Initial value of every ``s_j`` (dgm-eval's FLS uses 0).
        chunk: Rows per loss/gradient chunk.
        cache_dtype: dtype of the ``[N, M]`` squared-distance cache.

    Returns:
        ``[M]`` float64 tensor ``s`` (``s_j = log sigma_j^2``).

    Example:
        >>> x = torch.randn(50, 3, dtype=torch.float64)
        >>> fit_log_bandwidths(x, x + 0.5, steps=5).shape
        torch.Size([50])
    """
    n, dim = x_data.shape
    with torch.no_grad():
        d_sq, k_sq = (x_data * x_data).sum(1), (x_kernel * x_kernel).sum(1)
        cache = torch.empty((n, x_kernel.shape[0]), dtype=cache_dtype, device=x_data.device)
        for i0, i1 in iter_blocks(n, chunk):
            cache[i0:i1] = sq_dist_tile(x_data[i0:i1], x_kernel, d_sq[i0:i1], k_sq).to(cache_dtype)
    log_s = torch.full((x_kernel.shape[0],), float(init), dtype=torch.float64,
                       device=x_data.device, requires_grad=True)
    optim = torch.optim.Adam([log_s], lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(optim, milestones=[50], gamma=0.1)
    for _ in range(steps):
        optim.zero_grad()
        for i0, i1 in iter_blocks(n, chunk):
            e = _exponent(cache[i0:i1].to(torch.float64), log_s, dim)
            (-(torch.logsumexp(e, dim=1)).sum() / n).backward()
        optim.step()
        sched.step()
        with torch.no_grad():
            log_s.clamp_(-100, 20)
    return log_s.detach()


def _mean_nll(x: torch.Tensor, kernel: torch.Tensor, log_s: torch.Tensor, chunk: int) -> float:
    dim = kernel.shape[1]
    x_sq, k_sq = (x * x).sum(1), (kernel * kernel).sum(1)
    total = 0.0
    for i0, i1 in iter_blocks(x.shape[0], chunk):
        e = _exponent(sq_dist_tile(x[i0:i1], kernel, x_sq[i0:i1], k_sq), log_s, dim)
        total += float(-(torch.logsumexp(e, dim=1)).sum().item())
    return total / x.shape[0]


def _column_lse(x: torch.Tensor, kernel: torch.Tensor, log_s: torch.Tensor, chunk: int) -> torch.Tensor:
    """``logsumexp_i e(x_i, y_j)`` for every kernel point ``j`` (running, blocked over ``i``)."""
    dim = kernel.shape[1]
    x_sq, k_sq = (x * x).sum(1), (kernel * kernel).sum(1)
    acc = torch.full((kernel.shape[0],), float("-inf"), dtype=torch.float64, device=x.device)
    for i0, i1 in iter_blocks(x.shape[0], chunk):
        e = _exponent(sq_dist_tile(x[i0:i1], kernel, x_sq[i0:i1], k_sq), log_s, dim)
        acc = torch.logaddexp(acc, torch.logsumexp(e, dim=0))
    return acc


def fls_scores(
    train: np.ndarray,
    baseline: np.ndarray,
    test: np.ndarray,
    gen: np.ndarray,
    *,
    steps: int = 100,
    chunk: int = 1024,
    cache_dtype: str = "float32",
    device: Any = None,
) -> FLSResult:
    """FLS and FLS-POG with one shared fit of the generated KDE (see module docstring).

    Args:
        train: ``[N, D]`` training features (the KDE fitting data).
        baseline: ``[B, D]`` held-out training features (baseline KDE points).
        test: ``[T, D]`` test features (evaluation data).
        gen: ``[M, D]`` generated features (KDE points).
        steps: Optimiser steps (dgm-eval: 100).
        chunk: Row chunk for blocked computations.
        cache_dtype: ``"float32"`` (dgm-eval's precision, default) or ``"float64"``.
        device: torch device (``None`` = CPU).

    Returns:
        :class:`FLSResult`.

    Raises:
        DataError: invalid/mismatched features or constant feature dims.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> sets = [rng.standard_normal((100, 3)) for _ in range(4)]
        >>> isinstance(fls_scores(*sets, steps=10).fls, float)
        True
    """
    return _run(train, baseline, test, gen, steps, chunk, cache_dtype, device, need_fls=True)


def _run(train: Any, baseline: Any, test: Any, gen: Any, steps: int, chunk: int,
         cache_dtype: str, device: Any, need_fls: bool) -> FLSResult:
    names = ("train", "baseline", "test", "gen")
    arrs = [check_features(a, nm) for a, nm in zip((train, baseline, test, gen), names)]
    for a, nm in zip(arrs[1:], names[1:]):
        check_same_dim(arrs[0], a, "train", nm)
    steps = check_positive_int(steps, "steps")
    chunk = check_positive_int(chunk, "chunk")
    cdt = torch.float64 if cache_dtype == "float64" else torch.float32
    with torch.no_grad():
        tr, base, te, ge = _standardise(arrs, device)
    dim = tr.shape[1]
    gen_s = fit_log_bandwidths(tr, ge, steps=steps, chunk=chunk, cache_dtype=cdt)
    score = gen_nll = base_nll = float("nan")
    if need_fls:
        base_s = fit_log_bandwidths(tr, base, steps=steps, chunk=chunk, cache_dtype=cdt)
    with torch.no_grad():
        if need_fls:
            gen_nll = _mean_nll(te, ge, gen_s, chunk)
            base_nll = _mean_nll(te, base, base_s, chunk)
            score = math.e ** (-2.0 * (gen_nll - base_nll) / dim) * 100.0
        size = min(te.shape[0], tr.shape[0])
        diff = _column_lse(tr[:size], ge, gen_s, chunk) - _column_lse(te[:size], ge, gen_s, chunk)
        pog = float((diff > 0).sum().item()) / diff.shape[0] * 100.0 - 50.0
    return FLSResult(fls=float(score), fls_pog=pog, gen_nll=gen_nll, baseline_nll=base_nll)


def fls_score(
    train: np.ndarray,
    baseline: np.ndarray,
    test: np.ndarray,
    gen: np.ndarray,
    *,
    steps: int = 100,
    chunk: int = 1024,
    cache_dtype: str = "float32",
    device: Any = None,
) -> float:
    """FLS only (dgm-eval ``compute_fls``); arguments as :func:`fls_scores`.

    Example:
        >>> rng = np.random.default_rng(2)
        >>> isinstance(fls_score(*[rng.standard_normal((60, 3)) for _ in range(4)], steps=5), float)
        True
    """
    return _run(train, baseline, test, gen, steps, chunk, cache_dtype, device, need_fls=True).fls


def fls_pog(
    train: np.ndarray,
    baseline: np.ndarray,
    test: np.ndarray,
    gen: np.ndarray,
    *,
    steps: int = 100,
    chunk: int = 1024,
    cache_dtype: str = "float32",
    device: Any = None,
) -> float:
    """FLS-POG only (dgm-eval ``compute_fls_overfit``); skips the baseline KDE fit.

    ``baseline`` still matters: it enters the joint standardisation (as in dgm-eval).
    Arguments as :func:`fls_scores`.

    Example:
        >>> rng = np.random.default_rng(3)
        >>> -50 <= fls_pog(*[rng.standard_normal((60, 3)) for _ in range(4)], steps=5) <= 50
        True
    """
    return _run(train, baseline, test, gen, steps, chunk, cache_dtype, device, need_fls=False).fls_pog
