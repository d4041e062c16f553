"""Classification protocols on pooled embeddings: ``knn``, ``linear`` and ``fewshot``.

Each is a :class:`~vitlab.protocols.base.Protocol` with its own frozen config; the math
lives in :mod:`vitlab.protocols.knn`, :mod:`vitlab.protocols.linear` and
:mod:`vitlab.protocols.fewshot`. ``knn`` and ``linear`` return test-set class
probabilities (task ``classification``: top-1, AUROC... with bootstrap CIs, McNemar and
DeLong between backbones); ``fewshot`` returns per-episode summaries (task ``episodes``).

Example:
    >>> import numpy as np
    >>> from vitlab.protocols.base import Split
    >>> rng = np.random.default_rng(0); X = rng.normal(size=(60, 4)); y = (X[:, 0] > 0).astype(int)
    >>> tr, te = Split(X[:40], y[:40], np.arange(40)), Split(X[40:], y[40:], np.arange(40, 60))
    >>> res = KNN(ks=(5,)).run(tr, te, seed=0, n_classes=2)
    >>> res.task, res.outputs["proba"].shape, res.hparams["k"]
    ('classification', (20, 2), 5)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitlab.data.splits import holdout
from vitlab.errors import ConfigError
from vitlab.protocols.base import Protocol, Result, Split, check_finite, register_protocol
from vitlab.stats.interval import t_interval

__all__ = ["KNN", "KNNConfig", "Linear", "LinearConfig", "FewShot", "FewShotConfig", "DEFAULT_KS"]

DEFAULT_KS = (10, 20, 100, 200)


def _units(split: Split) -> list[str]:
    return [str(i) for i in split.ids] if split.ids is not None else [str(r) for r in split.rows]


def _check_val_fraction(v: float) -> None:
    if not 0 < v < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {v}; e.g. 0.2.")


@dataclass(frozen=True)
class KNNConfig:
    """``ks``: candidate k (``None``: DINOv2's 10, 20, 100, 200, minus any k above the training size),
    chosen on a validation split; ``temperature``: softmax temperature of the votes (DINOv2: 0.07)."""

    ks: tuple[int, ...] | None = None
    temperature: float = 0.07
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.ks is not None and (not self.ks or min(self.ks) < 1):
            raise ConfigError(f"knn: ks must be positive integers, got {self.ks}; e.g. ks=[10,20].")
        if not self.temperature > 0:
            raise ConfigError(f"knn: temperature must be > 0, got {self.temperature}; DINOv2 uses 0.07.")
        _check_val_fraction(self.val_fraction)


@register_protocol
class KNN(Protocol):
    """Weighted cosine kNN (DINOv2): k chosen on a validation split held out from train, then scored on test."""

    name = "knn"
    task = "classification"
    Config = KNNConfig
    help = "weighted cosine kNN (DINOv2), k chosen on validation"

    def _run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str = "cpu") -> Result:
        from vitlab.protocols.knn import knn_predict_proba

        check_finite(train, "train")
        check_finite(test, "test")
        cfg, n = self.config, len(train.y)
        ks = tuple(cfg.ks or DEFAULT_KS)
        too_big = [k for k in ks if k > n]
        if too_big and cfg.ks is not None:
            raise ConfigError(f"k={max(too_big)} is larger than the training set ({n} samples). "
                              f"Use k <= {n}, e.g. --protocol knn:ks=[10,20].")
        if too_big:  # defaults only: drop, warn and record
            ks = tuple(k for k in ks if k <= n) or (n,)
            warnings.warn(f"kNN: default k={too_big} exceed the {n} training samples; using k={list(ks)}.",
                          stacklevel=2)
        val_acc: dict[int, float] = {}
        if len(ks) > 1:
            tr, va = holdout(train.y, train.groups, cfg.val_fraction, seed)
            val_ks = [k for k in ks if k <= len(tr)] or [len(tr)]
            probs = knn_predict_proba(train.X[tr], train.y[tr], train.X[va], ks=val_ks,
                                      temperature=cfg.temperature, num_classes=n_classes, device=device)
            val_acc = {k: float((p.argmax(1) == train.y[va]).mean()) for k, p in probs.items()}
            best_k = max(val_acc, key=lambda k: (val_acc[k], -k))
        else:
            best_k = ks[0]
        probs = knn_predict_proba(train.X, train.y, test.X, ks=ks, temperature=cfg.temperature,
                                  num_classes=n_classes, device=device)
        test_acc = {str(k): float((p.argmax(1) == test.y).mean()) for k, p in probs.items()}
        return Result("classification", _units(test), {"y": test.y, "proba": probs[best_k]}, test.groups,
                      {"k": best_k, "temperature": cfg.temperature},
                      {"val_top1_by_k": {str(k): v for k, v in val_acc.items()}, "test_top1_by_k": test_acc,
                       "ks_dropped_too_few_samples": too_big})


@dataclass(frozen=True)
class LinearConfig:
    """``Cs``: explicit grid (``None``: coarse-to-fine search); ``dtype`` of L-BFGS (float32: 5.8x faster
    than float64 at equal test accuracy, BENCHMARKS.md); ``max_iter`` per fit (every fit of the default
    sweep converges on the bundled sample, tested); ``patience``: the coarse sweep stops after this many
    decades of C below the best (``None``: sweep all)."""

    Cs: tuple[float, ...] | None = None
    dtype: str = "float32"
    max_iter: int = 1000
    patience: int | None = 3
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.Cs is not None and (not self.Cs or not all(np.isfinite(c) and c > 0 for c in self.Cs)):
            raise ConfigError(f"linear: Cs must be positive numbers, got {self.Cs}; e.g. Cs=[0.1,1,10].")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"linear: dtype must be float32 or float64, got {self.dtype!r}.")
        if not isinstance(self.max_iter, int) or self.max_iter < 1:
            raise ConfigError(f"linear: max_iter must be >= 1, got {self.max_iter}.")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"linear: patience must be >= 1 or none, got {self.patience}.")
        _check_val_fraction(self.val_fraction)


@register_protocol
class Linear(Protocol):
    """L2 logistic regression, C chosen on a validation split (group-aware), refit on train + val.

    With ``Cs=None`` the search is coarse-to-fine, as in CLIP_benchmark: one C per decade over
    1e-6..1e5 (up to 12 fits, warm-started; the sweep stops once ``patience`` decades in a row score
    below the best), then 7 values spanning ±half a decade around the best: about 19 fits instead of
    DINOv2's 45 at the same resolution near the optimum. An explicit grid is swept whole.

    Every fit's convergence (iterations, why L-BFGS stopped, final gradient) is recorded in
    ``details["convergence"]``; a fit stopped at ``max_iter`` warns.
    """

    name = "linear"
    task = "classification"
    Config = LinearConfig
    help = "L2 logistic regression, C swept on validation"

    def fit_probe(self, train: Split, *, seed: int, n_classes: int, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
        """The probe :meth:`run` fits on ``train`` (same row order, C search and refit), without a test split:
        ``(LinearProbe, details)`` with ``coef_ [C, d]``, ``intercept_ [C]``, ``C_`` and the sweep and convergence
        details. ``vitlab tune`` starts its heads from it (LP-FT).

        Example:
            >>> rng = np.random.default_rng(0); X = rng.normal(size=(80, 3)); y = (X[:, 0] > 0).astype(int)
            >>> probe, info = Linear().fit_probe(Split(X, y, np.arange(80)), seed=0, n_classes=2)
            >>> probe.coef_.shape, sorted(info)
            ((2, 3), ['convergence', 'val_top1_by_C'])
        """
        from vitlab.protocols.base import _canonical, _take

        return self._fit(_take(train, _canonical(train)), seed=seed, n_classes=n_classes, device=device)

    def _fit(self, train: Split, *, seed: int, n_classes: int, device: str) -> tuple[Any, dict[str, Any]]:
        from vitlab.protocols.linear import ConvergenceWarning, LinearProbe, convergence_summary

        check_finite(train, "train")
        cfg = self.config
        common = dict(val_fraction=cfg.val_fraction, seed=seed, device=device, num_classes=n_classes,
                      dtype=cfg.dtype, max_iter=cfg.max_iter)
        sweep: dict[str, float] = {}
        fits = []
        with warnings.catch_warnings():  # one summary warning below, not one per stage
            warnings.simplefilter("ignore", ConvergenceWarning)
            if cfg.Cs is None:
                coarse = LinearProbe(Cs=10.0 ** np.arange(-6, 6), refit=False, patience=cfg.patience,
                                     **common).fit(train.X, train.y, train.groups)
                sweep.update({f"{c:.3g}": float(v) for c, v in zip(coarse.Cs_, coarse.val_scores_)})
                fits += coarse.fit_info_
                grid = coarse.C_ * 10.0 ** np.linspace(-0.5, 0.5, 7)
            else:
                grid = np.asarray(cfg.Cs, dtype=float)
            probe = LinearProbe(Cs=grid, **common).fit(train.X, train.y, groups=train.groups)
        fits += probe.fit_info_
        sweep.update({f"{c:.3g}": float(v) for c, v in zip(probe.Cs_, probe.val_scores_)})
        convergence = {**convergence_summary(fits, "linear probe"), "refit_converged": probe.converged_,
                       "max_iter": cfg.max_iter}
        return probe, {"val_top1_by_C": sweep, "convergence": convergence}

    def _run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str = "cpu") -> Result:
        check_finite(train, "train")
        check_finite(test, "test")
        probe, details = self._fit(train, seed=seed, n_classes=n_classes, device=device)
        return Result("classification", _units(test), {"y": test.y, "proba": probe.predict_proba(test.X)},
                      test.groups, {"C": probe.C_}, details)


@dataclass(frozen=True)
class FewShotConfig:
    """``shots`` per class, ``episodes`` per shot (seeded support sets), ``linear_C`` of the episode
    classifier; shots above the smallest training class are skipped (recorded)."""

    shots: tuple[int, ...] = (1, 2, 4, 8, 16)
    episodes: int = 10
    linear_C: float = 1.0

    def __post_init__(self) -> None:
        if not self.shots or min(self.shots) < 1:
            raise ConfigError(f"fewshot: shots must be positive integers, got {self.shots}.")
        if self.episodes < 1:
            raise ConfigError(f"fewshot: episodes must be >= 1, got {self.episodes}.")
        if not self.linear_C > 0:
            raise ConfigError(f"fewshot: linear_C must be > 0, got {self.linear_C}.")


@register_protocol
class FewShot(Protocol):
    """SimpleShot and linear over seeded n-shot episodes (mean and 95% t-interval over episodes)."""

    name = "fewshot"
    task = "episodes"
    Config = FewShotConfig
    help = "SimpleShot + linear, n-shot episodes"

    def _run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str = "cpu") -> Result:
        from vitlab.protocols.fewshot import fewshot_eval

        check_finite(train, "train")
        check_finite(test, "test")
        cfg = self.config
        smallest = int(np.bincount(train.y, minlength=n_classes).min())
        shots = [s for s in cfg.shots if s <= smallest]
        if not shots:
            raise ConfigError(f"n-shot {min(cfg.shots)} is larger than the smallest training class "
                              f"({smallest} samples). Use fewshot:shots=[1,2,...] up to {smallest}.")
        res = fewshot_eval(train.X, train.y, test.X, test.y, shots=shots, episodes=cfg.episodes, seed=seed,
                           linear_C=cfg.linear_C)
        method = f"t-interval over {cfg.episodes} episodes, clipped to [0, 1]"
        episodes = {f"{clf}_{shot}shot": t_interval(r.accuracies, method=method, bounds=(0.0, 1.0)).to_entry()
                    for clf, per in res.results.items() for shot, r in per.items()}
        dropped = sorted(set(cfg.shots) - set(shots))
        return Result("episodes", _units(test), {}, None,
                      {"shots": shots, "episodes": cfg.episodes, "linear_C": res.linear_C},
                      {"shots_skipped_too_few_samples": dropped, "convergence": res.linear_convergence},
                      episodes)
