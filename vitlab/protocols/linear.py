"""Linear probe: L2-regularised logistic regression fitted with torch L-BFGS.

(Over 400 lines for now: the float32 path keeps torch.optim.LBFGS bit-identical while float64 goes through
:mod:`vitlab.protocols._lbfgs`; the C sweep and refit serve both. Next step: move the float32 fit beside it.)

The objective is exactly scikit-learn's ``LogisticRegression(C=C)`` (lbfgs)::

    C * sum_i logloss_i + 0.5 * ||W||^2        (intercept not penalised)

multinomial (softmax) for ``C >= 3`` classes and binomial (sigmoid) for two
classes, as sklearn does, so coefficients and probabilities agree with sklearn
at the same ``C``. It is minimised in the equivalent scaled form
``mean_i logloss_i + ||W||^2 / (2 C n)``, and ``tol`` bounds the largest
absolute gradient entry of that form (sklearn's ``gtol``).

Written in torch instead of calling sklearn because (a) gradients are computed
in closed form with one matmul pair per evaluation, (b) it runs on GPU, and (c)
a sweep over a grid of ``C`` warm-starts each fit from the previous solution
without re-validating/copying the data; ``bench/bench_probes.py`` measures it
against sklearn. float64 fits use the preconditioned L-BFGS of
:mod:`vitlab.protocols._lbfgs` (same optimum and stopping rules as scikit-learn,
several times fewer iterations; the sweep starts each C from the path
extrapolated in log C); float32 fits use ``torch.optim.LBFGS``.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 5)); y = (X[:, 0] > 0).astype(int)
    >>> probe = LinearProbe(Cs=[0.01, 1.0], seed=0).fit(X, y)
    >>> probe.predict(X[:3]).shape, probe.predict_proba(X[:3]).shape
    ((3,), (3, 2))
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from vitlab.data.splits import holdout
from vitlab.errors import ConfigError, DataError
from vitlab.protocols._lbfgs import Problem, Whitening, minimize

__all__ = ["fit_logistic", "LinearProbe", "check_labels", "DEFAULT_CS", "FitInfo", "ConvergenceWarning",
           "convergence_summary"]

DEFAULT_CS = np.logspace(-6, 5, 45)
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def check_labels(
    X: np.ndarray, y: np.ndarray, num_classes: int | None = None, *, what: str = "train"
) -> int:
    """Validate ``X [n, d]`` / ``y [n]`` and return the number of classes.

    Every class ``0..num_classes-1`` must have at least one sample in ``y``.

    Raises:
        DataError: shapes, dtypes, non-finite values, or a class without samples.

    Example:
        >>> check_labels(np.zeros((3, 2)), np.array([0, 1, 1]))
        2
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or X.shape[0] == 0:
        raise DataError(
            f"{what} features must be a non-empty 2-D array [n, d]; got shape {X.shape}. "
            "Pool embeddings to one vector per sample."
        )
    if y.shape != (X.shape[0],):
        raise DataError(
            f"{what} labels have shape {y.shape} but features have {X.shape[0]} rows. "
            "Pass one integer label per sample."
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataError(
            f"{what} labels must be integer class ids 0..C-1 (got dtype {y.dtype}, "
            f"min {y.min()}). Encode them with np.unique(y, return_inverse=True)."
        )
    if not np.isfinite(X).all():
        raise DataError(f"{what} features contain NaN or inf. Re-extract or drop those samples.")
    n_cls = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.max() >= n_cls:
        raise ConfigError(
            f"num_classes={n_cls} but {what} labels contain class {int(y.max())}. "
            f"Use num_classes >= {int(y.max()) + 1}."
        )
    counts = np.bincount(y, minlength=n_cls)
    missing = np.flatnonzero(counts == 0)
    if missing.size:
        raise DataError(
            f"class(es) {missing[:10].tolist()} have no {what} samples (of {n_cls} classes), "
            "so a classifier cannot learn them. Add samples of those classes to the "
            "training split, or relabel to drop them."
        )
    if n_cls < 2:
        raise DataError(
            f"only one class (0) in the {what} labels; a classifier needs at least 2. "
            "Check the label column of the dataset."
        )
    return n_cls


@dataclass(frozen=True)
class FitInfo:
    """How one L-BFGS fit stopped.

    Attributes:
        C: inverse regularisation strength of the fit.
        n_iter: L-BFGS iterations run.
        stop: ``"gradient"`` (``max |grad| <= tol``), ``"no_progress"`` (loss and step changes
            below the solver's change tolerance: no further progress at this precision, which
            scipy's L-BFGS-B, and so scikit-learn, also counts as converged), ``"max_iter"``
            or ``"max_eval"`` (stopped at a cap: not converged).
        grad_max: ``max |grad|`` of the mean-scaled objective at the returned solution.
        converged: ``stop`` is ``"gradient"`` or ``"no_progress"``.
    """

    C: float
    n_iter: int
    stop: str
    grad_max: float

    @property
    def converged(self) -> bool:
        return self.stop in ("gradient", "no_progress")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "converged": self.converged}


def convergence_summary(fits: Sequence[FitInfo], what: str = "linear probe") -> dict[str, Any]:
    """Record-ready summary of several fits; warns (:class:`ConvergenceWarning`) if any hit a cap.

    Example:
        >>> s = convergence_summary([FitInfo(1.0, 12, "gradient", 1e-7)])
        >>> s["all_converged"], s["not_converged_C"]
        (True, [])
    """
    bad = [f for f in fits if not f.converged]
    if bad:
        cs = ", ".join(f"{f.C:.3g}" for f in bad)
        warnings.warn(f"{what}: L-BFGS stopped at its iteration cap without converging for C = {cs} "
                      f"({len(bad)} of {len(fits)} fits; largest |grad| {max(f.grad_max for f in bad):.2g}). "
                      "Raise the iteration cap (e.g. --protocol linear:max_iter=5000), or standardise the features.",
                      ConvergenceWarning, stacklevel=3)
    return {"all_converged": not bad, "not_converged_C": [f.C for f in bad],
            "fits": [f.to_dict() for f in fits]}


def _problem(X: torch.Tensor, y: torch.Tensor, n_cls: int, white: Whitening | None = None
             ) -> tuple[Problem, Whitening]:
    """The solver's view of ``X``, ``y`` (with a transposed copy of ``X``) and its preconditioner."""
    K = 1 if n_cls == 2 else n_cls
    if X.dtype != torch.float64:  # float32 runs torch.optim.LBFGS on X itself (_fit_torch_optim)
        return Problem(X, X, y, K), white
    return Problem(X, X.T.contiguous(), y, K), white or Whitening.of(X)


def _fit_torch_optim(
    X: torch.Tensor,
    y: torch.Tensor,
    n_cls: int,
    C: float,
    W0: torch.Tensor | None,
    b0: torch.Tensor | None,
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor, FitInfo]:
    """float32: ``torch.optim.LBFGS`` (strong Wolfe line search, history 20) on the scaled objective.

    Kept for float32, whose results it defines: the float64 solver of :mod:`vitlab.protocols._lbfgs`
    reaches the same float64 optimum faster, but in float32 its relative loss-change stop ends some
    fits earlier (probabilities moved by up to 2e-2 on the bundled sample's features).
    """
    n, d = X.shape
    K = 1 if n_cls == 2 else n_cls
    W = torch.zeros(d, K, dtype=X.dtype, device=X.device) if W0 is None else W0.clone()
    b = torch.zeros(K, dtype=X.dtype, device=X.device) if b0 is None else b0.clone()
    W.grad, b.grad = torch.zeros_like(W), torch.zeros_like(b)
    reg = 1.0 / (C * n)
    rows = torch.arange(n, device=X.device)
    yf = y.to(X.dtype).unsqueeze(1)
    # Stop on loss / step changes below this: sklearn's ftol (64 eps) in float64; in float32,
    # 64 eps (7.6e-6) stopped fits early (proba off by ~2e-3), 1e-9 gets ~1e-4.
    tol_change = 64 * torch.finfo(torch.float64).eps if X.dtype == torch.float64 else 1e-9
    max_eval = 2 * max_iter + 20
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_eval,
        tolerance_grad=tol,
        tolerance_change=tol_change,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        with torch.no_grad():
            Z = X @ W + b
            if K == 1:  # binomial: sum softplus(z) - y z
                loss = (torch.nn.functional.softplus(Z) - yf * Z).sum()
                # Padded to 2 columns: on a busy 2-core CPU a threaded matrix-vector
                # product cost ~20 ms per call here, a 2-column matmul ~0.01 ms.
                G = torch.cat([torch.sigmoid(Z) - yf, torch.zeros_like(Z)], dim=1)
            else:
                lse = torch.logsumexp(Z, dim=1)
                loss = (lse - Z[rows, y]).sum()
                G = torch.exp(Z - lse.unsqueeze(1))
                G[rows, y] -= 1.0
            G /= n
            W.grad.copy_((G.T @ X)[:K].T).add_(W, alpha=reg)
            b.grad.copy_(G.sum(0)[:K])
            return loss / n + 0.5 * reg * (W * W).sum()

    opt.step(closure)
    state = opt.state[opt._params[0]]
    n_iter, n_eval = int(state["n_iter"]), int(state["func_evals"])
    closure()  # the gradient at the returned point (the last line-search evaluation may be elsewhere)
    grad_max = float(max(W.grad.abs().max(), b.grad.abs().max()))
    if grad_max <= tol:
        stop = "gradient"
    elif n_iter >= max_iter:
        stop = "max_iter"
    elif n_eval >= max_eval:
        stop = "max_eval"
    else:
        stop = "no_progress"
    return W.detach(), b.detach(), FitInfo(float(C), n_iter, stop, grad_max)


def _fit_torch(
    data: tuple[Problem, Whitening],
    C: float,
    W0: torch.Tensor | None,
    b0: torch.Tensor | None,
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor, FitInfo]:
    """Minimise the scaled objective. ``W [d, K]``, ``b [K]`` with K=1 (binary) or C.

    float64: :func:`vitlab.protocols._lbfgs.minimize` (preconditioned L-BFGS, scikit-learn's stopping rules);
    float32: :func:`_fit_torch_optim`.
    """
    prob, white = data
    X = prob.X
    if white is None or X.dtype != torch.float64:
        return _fit_torch_optim(X, prob.y, 2 if prob.K == 1 else prob.K, C, W0, b0, max_iter, tol)
    d, K = X.shape[1], prob.K
    W = torch.zeros(d, K, dtype=X.dtype, device=X.device) if W0 is None else W0
    b = torch.zeros(K, dtype=X.dtype, device=X.device) if b0 is None else b0
    tol_change = 64 * torch.finfo(torch.float64).eps  # a relative loss decrease below this stops: sklearn's ftol
    W, b, n_iter, _, stop, grad_max = minimize(prob, 1.0 / (C * prob.n), W, b, white, max_iter, tol, tol_change,
                                              2 * max_iter + 20)
    return W, b, FitInfo(float(C), n_iter, stop, grad_max)


def _to_symmetric(W: torch.Tensor, b: torch.Tensor, n_cls: int) -> tuple[np.ndarray, np.ndarray]:
    """Express a fit as ``W [d, C]``, ``b [C]`` whose softmax gives the class probabilities."""
    W, b = W.cpu().numpy(), b.cpu().numpy()
    if n_cls == 2:  # sigmoid(z) == softmax([-z/2, z/2])[1]
        return np.concatenate([-W / 2, W / 2], 1), np.concatenate([-b / 2, b / 2])
    return W, b - b.mean()  # intercepts are defined up to a constant; centre them


def _from_symmetric(W: np.ndarray, b: np.ndarray, n_cls: int) -> tuple[np.ndarray, np.ndarray]:
    W, b = np.asarray(W), np.asarray(b)
    if n_cls == 2:
        return W[:, 1:] - W[:, :1], b[1:] - b[:1]
    return W, b


def fit_logistic(
    X: np.ndarray,
    y: np.ndarray,
    C: float,
    *,
    num_classes: int | None = None,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    dtype: Literal["float64", "float32"] = "float64",
    device: str | torch.device = "cpu",
    return_info: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, FitInfo]:
    """Fit L2-regularised logistic regression, same objective as sklearn's ``C``.

    Args:
        X: ``[n, d]`` features (used as given, no standardisation).
        y: ``[n]`` integer labels ``0..C-1``; every class must occur.
        C: Inverse regularisation strength (> 0), as in sklearn.
        num_classes: Number of classes; defaults to ``max(y) + 1``.
        init: Optional warm start ``(W [d, C], b [C])``, e.g. a previous solution.
        max_iter: L-BFGS iteration cap.
        tol: Stop when ``max |grad|`` of the mean-scaled objective is ``<= tol``.
        dtype: ``"float64"`` (parity with sklearn) or ``"float32"`` (faster).
        device: torch device.
        return_info: also return the :class:`FitInfo` (and do not warn; the caller decides).

    Returns:
        ``(W [d, C], b [C])``; class probabilities are ``softmax(X @ W + b)``. For two
        classes the binomial solution ``w`` is returned as ``W = [-w/2, w/2]``. With
        ``return_info``, ``(W, b, FitInfo)``. Without it, a fit stopped at ``max_iter``
        warns with :class:`ConvergenceWarning` (as scikit-learn does).

    Raises:
        ConfigError: ``C <= 0``, ``max_iter < 1``, ``tol <= 0``, unknown dtype, bad ``init`` shape.
        DataError: invalid arrays or a class without samples.

    Example:
        >>> X = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
        >>> W, b = fit_logistic(X, y, C=1.0)
        >>> W.shape, b.shape
        ((1, 2), (2,))
    """
    n_cls = check_labels(X, y, num_classes)
    if not (np.isfinite(C) and C > 0):
        raise ConfigError(f"C={C} must be a finite positive number, e.g. C=1.0.")
    if max_iter < 1 or not tol > 0:
        raise ConfigError(f"max_iter={max_iter} must be >= 1 and tol={tol} > 0, e.g. tol=1e-6.")
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}. Use 'float64' or 'float32'.")
    tdt, dev = _DTYPES[dtype], torch.device(device)
    Xt = torch.as_tensor(np.asarray(X), dtype=tdt, device=dev)
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64), device=dev)
    W0 = b0 = None
    if init is not None:
        Wi, bi = init
        if np.shape(Wi) != (X.shape[1], n_cls) or np.shape(bi) != (n_cls,):
            raise ConfigError(
                f"init shapes W{np.shape(Wi)}, b{np.shape(bi)} do not match "
                f"W({X.shape[1]}, {n_cls}), b({n_cls},). Pass the output of a previous "
                "fit_logistic on the same features and classes."
            )
        Wi, bi = _from_symmetric(Wi, bi, n_cls)
        W0 = torch.as_tensor(Wi, dtype=tdt, device=dev)
        b0 = torch.as_tensor(bi, dtype=tdt, device=dev)
    W, b, info = _fit_torch(_problem(Xt, yt, n_cls), float(C), W0, b0, max_iter, tol)
    Ws, bs = _to_symmetric(W, b, n_cls)
    if return_info:
        return Ws, bs, info
    convergence_summary([info], "fit_logistic")
    return Ws, bs


VAL_METRICS = ("accuracy", "miou")


def _val_score(metric: str, y: torch.Tensor, pred: torch.Tensor, n_cls: int) -> float:
    """Validation accuracy, or the mean IoU of the validation confusion matrix (classes absent from both sides
    left out)."""
    if metric == "accuracy":
        return float((pred == y).double().mean())
    from vitlab.metrics.segmentation import seg_metrics

    cm = torch.bincount(y * n_cls + pred, minlength=n_cls * n_cls).reshape(n_cls, n_cls)
    return seg_metrics(cm.cpu().numpy())["miou"]


def _softmax(Z: np.ndarray) -> np.ndarray:
    Z = Z - Z.max(axis=1, keepdims=True)
    E = np.exp(Z)
    return E / E.sum(axis=1, keepdims=True)


class LinearProbe:
    """Linear probe with C chosen on a held-out validation split, then refit on all data.

    ``fit`` holds out a stratified ``val_fraction`` of the training data
    (:func:`vitlab.data.splits.holdout`; group disjoint via ``StratifiedGroupKFold`` when
    ``groups`` are given; too little data is an error, not a silent unstratified split), fits
    :func:`fit_logistic` for every ``C`` in ascending order, warm-starting each
    fit from the previous solution, keeps the ``C`` with the best validation
    score (``val_metric``; ties: the smallest ``C``), and refits on train + validation.

    Args:
        Cs: Grid of inverse regularisation strengths.
        val_fraction: Fraction of training samples held out for choosing C.
        seed: Seed of the validation split.
        device: torch device.
        max_iter: L-BFGS iteration cap per fit.
        tol: Gradient tolerance (see :func:`fit_logistic`).
        dtype: ``"float64"`` or ``"float32"``.
        standardize: Standardise features with train mean/std first (off by
            default so results match sklearn on raw features).
        num_classes: Number of classes; every class must have training samples.
        refit: Refit on train + validation with the chosen C (default). ``False`` keeps the
            fit on the training part (used by the coarse stage of a coarse-to-fine search).
        patience: Stop the ascending sweep once this many consecutive values of C after the
            best all score below it on validation (``None``: sweep the whole grid). Larger C
            means weaker regularisation: once validation accuracy has fallen for several
            decades the probe is overfitting, and those fits are the slowest to converge.
        val_metric: what C is chosen by: ``"accuracy"`` (default) or ``"miou"`` (mean over classes of
            the intersection over union of the validation confusion matrix,
            :func:`vitlab.metrics.segmentation.seg_metrics`; what a segmentation probe is scored on:
            accuracy there is dominated by the background class and picks a C that under-fits the rest).

    With a single ``C`` no validation split is made (``val_scores_ = [nan]``).

    Attributes:
        Cs_: ``[n_Cs]`` sorted grid (the part swept, with ``patience``). val_scores_: ``[n_Cs]``
        validation score (``val_metric``). C_: chosen C. coef_: ``[C, d]``. intercept_: ``[C]``. n_iter_:
        iterations of the refit. converged_: whether the refit converged. fit_info_: one
        :class:`FitInfo` per fit (sweep, then refit). convergence_: record-ready summary from
        :func:`convergence_summary` (a :class:`ConvergenceWarning` is issued when a fit hit
        ``max_iter``).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(300, 4)); y = np.digitize(X[:, 0], [-0.5, 0.5])
        >>> LinearProbe(Cs=[0.1, 10.0]).fit(X, y).coef_.shape
        (3, 4)
    """

    def __init__(
        self,
        Cs: Sequence[float] | np.ndarray = DEFAULT_CS,
        *,
        val_fraction: float = 0.2,
        seed: int = 0,
        device: str | torch.device = "cpu",
        max_iter: int = 1000,
        tol: float = 1e-6,
        dtype: Literal["float64", "float32"] = "float64",
        standardize: bool = False,
        num_classes: int | None = None,
        refit: bool = True,
        patience: int | None = None,
        val_metric: Literal["accuracy", "miou"] = "accuracy",
    ) -> None:
        self.Cs = Cs
        self.val_metric = val_metric
        self.patience = patience
        self.val_fraction = val_fraction
        self.seed = seed
        self.device = device
        self.max_iter = max_iter
        self.tol = tol
        self.dtype = dtype
        self.standardize = standardize
        self.refit = refit
        self.num_classes = num_classes

    def _prep(self, X: np.ndarray) -> torch.Tensor:
        X = np.asarray(X, dtype=np.float64)
        if self.standardize:
            X = (X - self.mean_) / self.scale_
        return torch.as_tensor(X, dtype=_DTYPES[self.dtype], device=torch.device(self.device))

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> LinearProbe:
        """Choose C on a validation split and refit. ``X [n, d]``, ``y [n]``, ``groups [n]``."""
        Cs = np.sort(np.asarray(self.Cs, dtype=np.float64).ravel())
        if Cs.size == 0 or not (np.isfinite(Cs).all() and (Cs > 0).all()):
            raise ConfigError(
                f"Cs={self.Cs!r} must be a non-empty list of finite positive values, "
                "e.g. np.logspace(-6, 5, 45)."
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction} must be in (0, 1), e.g. 0.2.")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience={self.patience} must be >= 1 or None (sweep every C), e.g. 3.")
        if self.max_iter < 1:
            raise ConfigError(f"max_iter={self.max_iter} must be >= 1, e.g. 1000.")
        if self.val_metric not in VAL_METRICS:
            raise ConfigError(f"val_metric={self.val_metric!r}; choose one of {', '.join(VAL_METRICS)}.")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}. Use 'float64' or 'float32'.")
        n_cls = check_labels(X, y, self.num_classes)
        y = np.asarray(y, dtype=np.int64)
        X = np.asarray(X)
        self.mean_ = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        self.scale_ = np.where(std > 0, std, 1.0)
        Xt = self._prep(X)
        yt = torch.as_tensor(y, device=Xt.device)
        self.n_classes_ = n_cls
        self.Cs_ = Cs
        fits: list[FitInfo] = []
        if Cs.size == 1:
            self.val_scores_ = np.full(1, np.nan)
            best, W, b, white = 0, None, None, None
        else:
            tr, va = holdout(y, groups, self.val_fraction, self.seed)
            tr_t = torch.as_tensor(tr, device=Xt.device)
            va_t = torch.as_tensor(va, device=Xt.device)
            check_labels(X[tr], y[tr], n_cls, what="train part of the validation split")
            X_tr, y_tr, X_va, y_va = Xt[tr_t], yt[tr_t], Xt[va_t], yt[va_t]
            data = _problem(X_tr, y_tr, n_cls)
            white = data[1]  # the sweep's preconditioner serves the refit too
            scores, sols, W, b = [], [], None, None
            for j, C in enumerate(Cs):
                W0, b0 = W, b
                if j >= 2 and Xt.dtype == torch.float64:  # start from the path extrapolated linearly in log C
                    # (any start reaches the same optimum; float32 keeps its previous-solution start)
                    r = min(1.0, float(np.log(C / Cs[j - 1]) / np.log(Cs[j - 1] / Cs[j - 2])))
                    (Wp, bp) = sols[j - 2]
                    W0, b0 = W + r * (W - Wp), b + r * (b - bp)
                W, b, info = _fit_torch(data, float(C), W0, b0, self.max_iter, self.tol)
                fits.append(info)
                Z = X_va @ W + b
                pred = (Z[:, 0] > 0).long() if n_cls == 2 else Z.argmax(1)
                scores.append(_val_score(self.val_metric, y_va, pred, n_cls))
                sols.append((W, b))
                if self.patience is not None and len(scores) - 1 - int(np.argmax(scores)) >= self.patience \
                        and all(v < max(scores) for v in scores[-self.patience:]):
                    break  # the last `patience` values of C all scored below the best: stop the sweep
            self.Cs_ = Cs[: len(scores)]
            self.val_scores_ = np.asarray(scores)
            best = int(np.argmax(self.val_scores_))  # first max = smallest C
            W, b = sols[best]
        self.C_ = float(Cs[best])
        self.converged_ = True
        if self.refit or W is None:
            W, b, info = _fit_torch(_problem(Xt, yt, n_cls, white), self.C_, W, b, self.max_iter, self.tol)
            self.n_iter_, self.converged_ = info.n_iter, info.converged
            fits.append(info)
        else:
            self.n_iter_ = 0
        self.fit_info_ = fits
        self.convergence_ = convergence_summary(fits, "linear probe")
        self.convergence_["refit_converged"] = self.converged_
        Ws, bs = _to_symmetric(W, b, n_cls)
        self.coef_, self.intercept_ = Ws.T.copy(), bs
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits ``[n, C]`` (softmax of them = :meth:`predict_proba`)."""
        if not hasattr(self, "coef_"):
            raise ConfigError("LinearProbe is not fitted yet. Call .fit(X, y) first.")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.coef_.shape[1]:
            raise DataError(
                f"X has shape {X.shape} but the probe was fitted on d={self.coef_.shape[1]} "
                "features. Use embeddings from the same backbone and pooling."
            )
        X = np.asarray(X, dtype=np.float64)
        if self.standardize:
            X = (X - self.mean_) / self.scale_
        return X @ self.coef_.T.astype(np.float64) + self.intercept_.astype(np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n, C]`` float64."""
        return _softmax(self.decision_function(X))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted labels ``[n]`` int64."""
        return self.decision_function(X).argmax(axis=1).astype(np.int64)

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on ``X [n, d]``, ``y [n]``; errors if ``y`` has classes the probe never saw."""
        y = np.asarray(y)
        if y.size and (y.min() < 0 or y.max() >= self.n_classes_):
            raise DataError(
                f"labels contain class {int(y.max())} but the probe was trained on classes "
                f"0..{self.n_classes_ - 1}. Pass num_classes and include every class in the "
                "training split."
            )
        return float(np.mean(self.predict(X) == y))
