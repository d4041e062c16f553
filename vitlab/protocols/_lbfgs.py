"""The L-BFGS solver behind :mod:`vitlab.protocols.linear` (private): L2-regularised logistic regression.

Minimises scikit-learn's mean-scaled objective ``mean_i logloss_i + reg/2 ||W||^2`` (``reg = 1 / (C n)``,
intercept not penalised; softmax for ``K >= 2`` columns, sigmoid for one) and stops on the same rules as
scikit-learn's lbfgs (scipy's L-BFGS-B): ``max |grad| <= tol`` of that objective in the ORIGINAL coordinates
(``W``, ``b``), or a relative loss decrease ``<= tol_change`` (scipy's ``ftol``).

Written here rather than with ``torch.optim.LBFGS`` because it is measurably faster on the probe's problems
(``bench/bench_probes.py``):

- **Preconditioned coordinates.** It iterates on ``V``, ``c`` with ``W = A V`` and ``b = c - mu . W``, where
  ``mu`` is the feature mean and ``A = U diag((lam + delta)^-1/2)`` whitens the centred features (``U``, ``lam``:
  eigenvectors / eigenvalues of their covariance; ``delta`` keeps ``A`` bounded for flat directions). This is a
  change of variables of the same strictly convex objective, so the minimiser is the same, but the logits
  ``X W + b = (X - mu) A V + c`` see centred, unit-variance features: the intercept no longer fights the
  weights and the curvature is far better conditioned, so L-BFGS needs several times fewer iterations.
  No extra copy of ``X``: every evaluation still runs on the original features.
- **One fused evaluation** (logits, loss and gradient in one pass, the gradient GEMM on a transposed copy
  of ``X``, which the CPU BLAS runs faster than ``G.T @ X``) and the compact L-BFGS matrix (Byrd, Nocedal &
  Schnabel 1994): a few small matrix products per iteration instead of a Python loop over the history.
- **A backtracking Armijo line search** with cubic interpolation: on a strictly convex objective every step
  gives ``s . y > 0``, so the Wolfe curvature test adds evaluations without changing the limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

#: L-BFGS memory (scikit-learn / scipy: 10).
HISTORY = 10
#: Armijo sufficient-decrease constant.
_C1 = 1e-4
#: Step reductions tried before a line search gives up.
_MAX_BACKTRACK = 30


@dataclass
class Problem:
    """Data of one fit: ``X [n, d]``, ``XT [d, n]`` (the same, transposed and contiguous), labels, classes."""

    X: torch.Tensor
    XT: torch.Tensor
    y: torch.Tensor
    K: int  # 1: binomial (sigmoid), >= 2: multinomial

    def __post_init__(self) -> None:
        n = self.X.shape[0]
        self.n = n
        if self.K == 1:
            self.yf = self.y.to(self.X.dtype).unsqueeze(1)
        else:
            self.flat = torch.arange(n, device=self.X.device) * self.K + self.y


#: Rows used to estimate the feature covariance of the preconditioner (any estimate gives a valid one).
COV_ROWS = 20000
#: Typical softmax curvature p (1 - p) that sets how much the preconditioner whitens at a given C (measured).
KAPPA = 0.1


@dataclass
class Whitening:
    """Mean ``mu [d]`` and covariance eigen-decomposition ``lam [d]``, ``U [d, d]`` of the features."""

    mu: torch.Tensor
    lam: torch.Tensor
    U: torch.Tensor

    @classmethod
    def of(cls, X: torch.Tensor) -> Whitening:
        """Estimated from (at most :data:`COV_ROWS` evenly spaced rows of) ``X [n, d]``.

        Example:
            >>> w = Whitening.of(torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]], dtype=torch.float64))
            >>> w.mu.tolist(), [round(v, 6) for v in w.lam.tolist()]
            ([2.0, 1.0], [0.0, 2.666667])
        """
        Xs = X[:: max(1, X.shape[0] // COV_ROWS)]
        mu = Xs.mean(0)
        Xc = Xs - mu
        lam, U = torch.linalg.eigh(Xc.T @ Xc / Xs.shape[0])
        return cls(mu, lam.clamp_min(0), U)

    def maps(self, reg: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, A^-1)`` with ``A = U diag((lam + reg / KAPPA)^-1/2)``.

        With strong regularisation (small C) the penalty dominates the curvature and ``A`` is close to a
        multiple of a rotation; with weak regularisation it whitens the features.
        """
        s = (self.lam + reg / KAPPA).rsqrt()
        return self.U * s, self.U.T / s.unsqueeze(1)


def _evaluate(p: Problem, W: torch.Tensor, b: torch.Tensor, reg: float
              ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """``(f, grad_W, grad_b)`` of the mean-scaled objective at ``W [d, K]``, ``b [K]``."""
    Z = torch.addmm(b, p.X, W)
    if p.K == 1:
        loss = float((torch.nn.functional.softplus(Z) - p.yf * Z).sum())
        G = torch.cat([torch.sigmoid(Z) - p.yf, torch.zeros_like(Z)], dim=1)  # 2 columns: a GEMM, not a GEMV
    else:
        lse = torch.logsumexp(Z, dim=1)
        loss = float(lse.sum() - Z.view(-1)[p.flat].sum())
        G = Z.sub_(lse.unsqueeze(1)).exp_()
        G.view(-1)[p.flat] -= 1.0
    G /= p.n
    gW = (p.XT @ G)[:, : p.K].add_(W, alpha=reg)
    gb = G.sum(0)[: p.K]
    return loss / p.n + 0.5 * reg * float((W * W).sum()), gW, gb


def minimize(p: Problem, reg: float, W0: torch.Tensor, b0: torch.Tensor, white: Whitening,
             max_iter: int, tol: float, tol_change: float, max_eval: int
             ) -> tuple[torch.Tensor, torch.Tensor, int, int, str, float]:
    """Minimise from ``(W0, b0)`` in the coordinates of ``white.maps(reg)``.

    Returns ``(W, b, n_iter, n_eval, stop, grad_max)`` with ``stop`` one of ``"gradient"``,
    ``"no_progress"`` (relative loss decrease ``<= tol_change``, or no decrease found along the
    search direction), ``"max_iter"``, ``"max_eval"``; ``grad_max`` is ``max |grad|`` at ``(W, b)``.
    """
    d, K = W0.shape
    A, Ainv = white.maps(reg)
    mu = white.mu
    muA = mu @ A  # [d]: b = c - muA . V

    def to_phi(W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        V = Ainv @ W
        return torch.cat([V, (b + mu @ W).unsqueeze(0)]).reshape(-1)

    def from_phi(phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        P = phi.view(d + 1, K)
        W = A @ P[:d]
        return W, P[d] - muA @ P[:d]

    def f_grad(phi: torch.Tensor) -> tuple[float, torch.Tensor, float, torch.Tensor, torch.Tensor]:
        W, b = from_phi(phi)
        f, gW, gb = _evaluate(p, W, b, reg)
        gmax = float(torch.maximum(gW.abs().max(), gb.abs().max()))
        gphi = torch.cat([A.T @ (gW - mu.unsqueeze(1) * gb), gb.unsqueeze(0)]).reshape(-1)
        return f, gphi, gmax, W, b

    phi = to_phi(W0, b0)
    f, g, gmax, W, b = f_grad(phi)
    n_eval, n_iter = 1, 0
    if gmax <= tol:
        return W, b, 0, n_eval, "gradient", gmax
    S = torch.empty(HISTORY, phi.numel(), dtype=phi.dtype, device=phi.device)
    Y = torch.empty_like(S)
    SY = np.zeros((HISTORY, HISTORY))  # SY[i, j] = s_i . y_j
    YY = np.zeros((HISTORY, HISTORY))
    m = 0  # pairs held; the newest is row m - 1
    gamma = 1.0
    stop = "max_iter"
    while n_iter < max_iter:
        n_iter += 1
        # search direction -H g (compact form: H = gamma I + [S gamma Y] M [S gamma Y]^T)
        if m == 0:
            dvec = -g
            t = min(1.0, 1.0 / float(g.abs().sum()))
        else:
            a = (S[:m] @ g).cpu().numpy()
            bb = (Y[:m] @ g).cpu().numpy()
            R = np.triu(SY[:m, :m])
            u = _solve_upper(R, a)
            p1 = _solve_upper(R.T, (np.diag(SY)[:m] * u + gamma * (YY[:m, :m] @ u)) - gamma * bb, lower=True)
            coef_s = torch.as_tensor(p1, dtype=g.dtype, device=g.device)
            coef_y = torch.as_tensor(-gamma * u, dtype=g.dtype, device=g.device)
            dvec = -(gamma * g + coef_s @ S[:m] + coef_y @ Y[:m])
            t = 1.0
        gtd = float(g @ dvec)
        if gtd > -tol_change:
            stop = "no_progress"
            break
        # backtracking Armijo line search with safeguarded cubic interpolation
        for _ in range(_MAX_BACKTRACK):
            phi_new = phi + t * dvec
            f_new, g_new, gmax_new, W_new, b_new = f_grad(phi_new)
            n_eval += 1
            if f_new <= f + _C1 * t * gtd or n_eval >= max_eval:
                break
            gtd_new = float(g_new @ dvec)
            t = t * _cubic_step(f, gtd, f_new, gtd_new, t)
        else:  # no decrease along a descent direction: round-off level (scipy: ABNORMAL_TERMINATION)
            stop = "no_progress"
            break
        s, yv = phi_new - phi, g_new - g
        sy = float(s @ yv)
        if sy > 1e-10 * float(yv @ yv):  # always on a strictly convex objective, barring round-off
            if m == HISTORY:
                S[:-1] = S[1:].clone()
                Y[:-1] = Y[1:].clone()
                SY[:-1, :-1], YY[:-1, :-1] = SY[1:, 1:], YY[1:, 1:]
                m -= 1
            S[m], Y[m] = s, yv
            SY[m, : m + 1] = (Y[: m + 1] @ s).cpu().numpy()
            SY[: m + 1, m] = (S[: m + 1] @ yv).cpu().numpy()
            col = (Y[: m + 1] @ yv).cpu().numpy()
            YY[m, : m + 1], YY[: m + 1, m] = col, col
            m += 1
            gamma = sy / float(yv @ yv)
        f_old, phi, g, f, gmax, W, b = f, phi_new, g_new, f_new, gmax_new, W_new, b_new
        if gmax <= tol:
            stop = "gradient"
            break
        if n_eval >= max_eval:
            stop = "max_eval"
            break
        if (f_old - f) <= tol_change * max(abs(f_old), abs(f), 1.0):
            stop = "no_progress"
            break
    return W, b, n_iter, n_eval, stop, gmax


def _solve_upper(R: np.ndarray, v: np.ndarray, lower: bool = False) -> np.ndarray:
    """Solve the triangular system ``R x = v`` (``R`` upper, or lower with ``lower``)."""
    import scipy.linalg

    return scipy.linalg.solve_triangular(R, v, lower=lower)


def _cubic_step(f0: float, g0: float, f1: float, g1: float, t: float) -> float:
    """Fraction of ``t`` at the minimiser of the cubic through ``(0, f0, g0)`` and ``(t, f1, g1)``, in [0.1, 0.5]."""
    d1 = g0 + g1 - 3 * (f1 - f0) / t
    disc = d1 * d1 - g0 * g1
    if disc >= 0 and math.isfinite(disc):
        d2 = math.sqrt(disc)
        denom = g1 - g0 + 2 * d2
        frac = 1 - (g1 + d2 - d1) / denom if denom else 0.5
    else:
        frac = 0.5
    if not math.isfinite(frac):
        frac = 0.5
    return min(max(frac, 0.1), 0.5)
