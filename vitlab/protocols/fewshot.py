"""Few-shot evaluation on frozen embeddings: SimpleShot (CL2N) and a logistic-regression probe.

Each episode draws ``n`` training samples per class (seeded) and evaluates on
the full test set. Both classifiers see the same support set in an episode.
Features are "CL2N"-transformed (Wang et al. 2019, SimpleShot): the mean of
*all* training features (the pool the shots are drawn from, playing the role of
SimpleShot's base-class mean) is subtracted, then each vector is
L2-normalised.

- ``"simpleshot"``: nearest class mean (prototype = mean of the support
  features of the class, computed on CL2N features) by Euclidean distance.
- ``"linear"``: :func:`vitlab.protocols.linear.fit_logistic` on the CL2N
  support features with a fixed ``C`` (no validation split: at 1 shot there is
  nothing to hold out).

Accuracies per episode are summarised by their mean and a 95% Student-t
interval ``mean ± t_{0.975, n-1} · sd / sqrt(n)`` (sd with ddof=1).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> mu = rng.normal(size=(3, 8)) * 3
    >>> ytr, yte = np.repeat(np.arange(3), 20), np.repeat(np.arange(3), 10)
    >>> xtr, xte = mu[ytr] + rng.normal(size=(60, 8)), mu[yte] + rng.normal(size=(30, 8))
    >>> res = fewshot_eval(xtr, ytr, xte, yte, shots=(1, 5), episodes=3)
    >>> sorted(res.results["simpleshot"])
    [1, 5]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.protocols.linear import check_labels, convergence_summary, fit_logistic
from vitlab.stats.interval import t_interval

__all__ = ["FewShotResult", "ShotResult", "fewshot_eval", "cl2n", "sample_episode", "CLASSIFIERS"]

CLASSIFIERS = ("simpleshot", "linear")


@dataclass(frozen=True)
class ShotResult:
    """Accuracies of one (classifier, shot) over episodes.

    Attributes:
        accuracies: per-episode test accuracy, length ``episodes``.
        mean: mean accuracy.
        low, high: 95% t-interval of the mean (NaN with a single episode).
    """

    accuracies: tuple[float, ...]
    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class FewShotResult:
    """``results[classifier][shot] -> ShotResult``; plus the settings used."""

    results: dict[str, dict[int, ShotResult]]
    episodes: int
    seed: int
    linear_C: float
    classifiers: tuple[str, ...] = field(default=CLASSIFIERS)
    linear_convergence: dict[str, Any] | None = None  # {all_converged, n_fits, n_not_converged, max_iter}

    def to_dict(self) -> dict[str, dict[str, dict[str, float | list[float]]]]:
        """JSON-friendly ``{classifier: {str(shot): {mean, low, high, accuracies}}}``."""
        return {
            clf: {
                str(s): {"mean": r.mean, "low": r.low, "high": r.high, "accuracies": list(r.accuracies)}
                for s, r in per.items()
            }
            for clf, per in self.results.items()
        }


def _shot(accuracies: list[float]) -> ShotResult:
    """One (classifier, shot): the mean accuracy and its t-interval (:func:`vitlab.stats.interval.t_interval`)."""
    ci = t_interval(accuracies)
    nan = float("nan")
    return ShotResult(tuple(accuracies), ci.value, nan if ci.low is None else ci.low, nan if ci.high is None else ci.high)


def cl2n(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Centre by ``mean [d]`` and L2-normalise rows of ``x [n, d]`` (float64).

    Example:
        >>> cl2n(np.array([[3.0, 4.0]]), np.zeros(2))
        array([[0.6, 0.8]])
    """
    z = np.asarray(x, dtype=np.float64) - mean
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def sample_episode(y: np.ndarray, shot: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``shot`` samples per class (class order), drawn without replacement.

    Example:
        >>> sample_episode(np.array([0, 0, 1, 1]), 1, 2, np.random.default_rng(0)).shape
        (2,)
    """
    return np.concatenate(
        [rng.choice(np.flatnonzero(y == c), size=shot, replace=False) for c in range(n_classes)]
    )


def _simpleshot(support: np.ndarray, sy: np.ndarray, query: np.ndarray, n_cls: int) -> np.ndarray:
    protos = np.stack([support[sy == c].mean(axis=0) for c in range(n_cls)])
    # argmin ||q - p||^2 = argmax (2 q.p - ||p||^2); avoids an [n, C, d] tensor.
    return (2 * query @ protos.T - (protos**2).sum(axis=1)).argmax(axis=1)


def fewshot_eval(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    shots: Sequence[int] = (1, 2, 4, 8, 16),
    episodes: int = 10,
    seed: int = 0,
    classifiers: Sequence[str] = CLASSIFIERS,
    linear_C: float = 1.0,
    linear_max_iter: int = 200,
) -> FewShotResult:
    """Few-shot accuracy of SimpleShot and/or a linear probe over seeded episodes.

    Episode ``e`` at ``shot`` uses ``np.random.default_rng((seed, shot, e))``, so
    a (shot, episode) draws the same support set whatever other shots are run.

    Args:
        train_x: ``[n_train, d]`` pool the support sets are drawn from.
        train_y: ``[n_train]`` labels ``0..C-1``; every class must be present.
        test_x: ``[n_test, d]`` query features.
        test_y: ``[n_test]`` query labels in ``0..C-1``.
        shots: Samples per class per episode.
        episodes: Episodes per shot (>= 1; >= 2 for an interval).
        seed: Base seed.
        classifiers: Subset of ``("simpleshot", "linear")``.
        linear_C: Fixed inverse regularisation of the linear classifier.
        linear_max_iter: L-BFGS iteration cap of the linear classifier.

    Returns:
        :class:`FewShotResult`.

    Raises:
        ConfigError: a shot larger than the smallest class, ``episodes < 1``,
            unknown classifier, bad ``linear_C``.
        DataError: invalid arrays, mismatched dims, test labels outside the train classes.

    Example:
        >>> x = np.array([[1.0, 0], [0.9, 0.1], [0, 1.0], [0.1, 0.9]]); y = np.array([0, 0, 1, 1])
        >>> fewshot_eval(x, y, x, y, shots=(1,), episodes=2).results["simpleshot"][1].mean
        1.0
    """
    if episodes < 1:
        raise ConfigError(f"episodes={episodes} must be >= 1 (>= 2 for a confidence interval), e.g. 10.")
    classifiers = tuple(classifiers)
    bad = [c for c in classifiers if c not in CLASSIFIERS]
    if bad or not classifiers:
        raise ConfigError(
            f"unknown few-shot classifier(s) {bad or classifiers!r}. Use a subset of {CLASSIFIERS}."
        )
    if not (np.isfinite(linear_C) and linear_C > 0):
        raise ConfigError(f"linear_C={linear_C} must be a finite positive number, e.g. 1.0.")
    n_cls = check_labels(train_x, train_y, what="train")
    train_y, test_y = np.asarray(train_y, dtype=np.int64), np.asarray(test_y)
    test_x = np.asarray(test_x)
    if test_x.ndim != 2 or test_x.shape[1] != np.shape(train_x)[1] or test_y.shape != (test_x.shape[0],):
        raise DataError(
            f"test_x {test_x.shape} / test_y {test_y.shape} do not match train features "
            f"d={np.shape(train_x)[1]}. Embed both splits with the same backbone; one label per row."
        )
    if test_y.size == 0 or test_y.min() < 0 or test_y.max() >= n_cls:
        raise DataError(
            f"test labels must lie in 0..{n_cls - 1} (the classes seen in train); got range "
            f"[{test_y.min() if test_y.size else '-'}, {test_y.max() if test_y.size else '-'}]."
        )
    counts = np.bincount(train_y, minlength=n_cls)
    smallest = int(np.argmin(counts))
    shots = tuple(int(s) for s in shots)
    for s in shots:
        if s < 1 or s > counts[smallest]:
            raise ConfigError(
                f"{s}-shot needs {s} training samples per class, but class {smallest} has only "
                f"{counts[smallest]}. Use shots <= {counts[smallest]}."
            )
    mean = np.asarray(train_x, dtype=np.float64).mean(axis=0)
    xtr, xte = cl2n(train_x, mean), cl2n(test_x, mean)

    accs: dict[str, dict[int, list[float]]] = {c: {s: [] for s in shots} for c in classifiers}
    fits = []
    for s in shots:
        for e in range(episodes):
            idx = sample_episode(train_y, s, n_cls, np.random.default_rng((seed, s, e)))
            sx, sy = xtr[idx], train_y[idx]
            if "simpleshot" in classifiers:
                pred = _simpleshot(sx, sy, xte, n_cls)
                accs["simpleshot"][s].append(float((pred == test_y).mean()))
            if "linear" in classifiers:
                W, b, info = fit_logistic(sx, sy, linear_C, num_classes=n_cls, max_iter=linear_max_iter,
                                          return_info=True)
                fits.append(info)
                pred = (xte @ W + b).argmax(axis=1)
                accs["linear"][s].append(float((pred == test_y).mean()))
    results = {
        c: {s: _shot(a) for s, a in per.items()} for c, per in accs.items()
    }
    conv = None
    if fits:
        summary = convergence_summary(fits, "few-shot linear classifier")  # warns if any fit hit the cap
        conv = {"all_converged": summary["all_converged"], "n_fits": len(fits),
                "n_not_converged": len(summary["not_converged_C"]), "max_iter": linear_max_iter}
    return FewShotResult(results=results, episodes=episodes, seed=seed, linear_C=linear_C,
                         classifiers=classifiers, linear_convergence=conv)
