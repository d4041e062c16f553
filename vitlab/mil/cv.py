"""Patient-grouped cross-validation of multiple-instance (MIL) heads: splits that cannot leak,
out-of-fold pooling, and the K-fold ensemble on a held-out test set.

A bag (slide) carries one label; a patient may own several bags. Bags of one patient are
correlated (same tissue, same staining batch, same disease), so

* every split is **patient-disjoint**: :func:`patient_folds` draws stratified K folds grouped by
  patient, :func:`check_folds` refuses a manifest's own folds when a patient crosses folds, and
  :func:`inner_validation` takes the early-stopping validation part of a training fold by
  whole patients;
* every interval resamples **whole patients**: :meth:`CVResult.to_result` and
  :func:`evaluate_test` build a :class:`~vitlab.protocols.base.Result` with ``groups=patients``,
  so the classification scorer (:mod:`vitlab.scorers.classification`) reports cluster-bootstrap
  CIs (``method == "cluster-percentile"``) and its paired tests (paired bootstrap, McNemar,
  DeLong) compare two heads or backbones run on the same folds unchanged.

The headline of a cross-validation is the metric of the pooled **out-of-fold** probabilities
(each bag predicted once, by the model that did not see it) with its patient bootstrap CI.
:meth:`CVResult.per_fold` adds the per-fold values with a t-interval over folds, a common but
optimistic summary: fold values share training data and are not independent.

Pure numpy / scikit-learn; the model is whatever ``fit_predict`` callable you pass.

Example:
    >>> import numpy as np
    >>> y = np.array([0, 1] * 20); patients = np.repeat(np.arange(20), 2)
    >>> fold = patient_folds(y, patients, k=4, seed=0)
    >>> cv = cross_validate(len(y), y, patients, fold,
    ...                     lambda tr, va, te, f: np.eye(2)[y[te]] * 0.8 + 0.1)
    >>> bool(np.all(cv.proba.argmax(1) == y)), cv.n_folds
    (True, 4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.mil.folds import _as_groups, _as_labels, check_folds, inner_validation, patient_folds  # noqa: F401

__all__ = [
    "patient_folds",
    "check_folds",
    "inner_validation",
    "cross_validate",
    "CVResult",
]

FitPredict = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]
"""``fit_predict(train_idx, val_idx, test_idx, fold) -> proba_test [len(test_idx), C]``."""


@dataclass
class CVResult:
    """Outcome of :func:`cross_validate`.

    Attributes:
        labels: ``[n_bags]`` int class indices.
        proba: ``[n_bags, C]`` pooled out-of-fold probabilities (row ``i`` from the model of fold
            ``folds[i]``, which did not see bag ``i``).
        folds: ``[n_bags]`` fold index per bag.
        fold_test: per fold, the ``test_idx`` passed to ``fit_predict``.
        fold_proba: per fold, the ``[len(test_idx), C]`` probabilities it returned.
        fold_val: per fold, the validation indices passed to ``fit_predict``.
        patients: ``[n_bags]`` patient ids, or ``None``.
    """

    labels: np.ndarray
    proba: np.ndarray
    folds: np.ndarray
    fold_test: list[np.ndarray] = field(default_factory=list)
    fold_proba: list[np.ndarray] = field(default_factory=list)
    fold_val: list[np.ndarray] = field(default_factory=list)
    patients: np.ndarray | None = None

    @property
    def n_folds(self) -> int:
        return len(self.fold_test)

    def to_result(self, bag_ids: Sequence[Any], patients: Sequence[Any] | np.ndarray | None) -> Any:
        """The pooled out-of-fold predictions as a classification :class:`~vitlab.protocols.base.Result`.

        Units are the bag ids, outputs ``{"y", "proba"}``, ``groups`` the patients (``None``: bag
        bootstrap), so ``scorer_for("classification").score(...)`` gives patient-level cluster
        bootstrap CIs, and ``.paired(...)`` compares two results on the same bags and folds.

        Args:
            bag_ids: ``[n_bags]`` bag ids (two results pair only when these are identical).
            patients: ``[n_bags]`` patient ids (normally :attr:`patients`), or ``None``.

        Example:
            >>> cv = CVResult(np.array([0, 1]), np.eye(2), np.array([0, 1]))
            >>> r = cv.to_result(["s1", "s2"], ["p1", "p2"])
            >>> r.task, r.units, r.groups.tolist()
            ('classification', ['s1', 's2'], ['p1', 'p2'])
        """
        from vitlab.protocols.base import Result

        n = self.labels.shape[0]
        units = [str(b) for b in bag_ids]
        if len(units) != n:
            raise DataError(f"bag_ids has {len(units)} entries but the cross-validation has {n} bags.")
        g = _as_groups(patients, n)
        details = {"cv": {"n_folds": self.n_folds, "pooled": "out-of-fold",
                          "fold": np.asarray(self.folds).tolist()}}
        return Result("classification", units, {"y": self.labels, "proba": self.proba}, groups=g,
                      details=details)

    def per_fold(self, metric_names: Sequence[str] = ("auroc", "balanced_accuracy", "macro_f1"),
                 level: float = 0.95) -> dict[str, dict[str, Any]]:
        """Each metric on each fold's test bags, their mean and a t-interval over folds.

        ``{name: {"folds": [K values], "value", "sd", "low", "high", "n_folds", "method"}}``; a fold
        where the metric is undefined (e.g. AUROC with one class in the fold) is ``nan`` and left
        out of the summary (``n_folds`` counts the folds used).

        Caveat: the K fold values are **not independent** (their training sets overlap by
        ``(K-2)/(K-1)``), so the t-interval ``mean -/+ t(K-1) sd / sqrt(K)`` understates the
        uncertainty and is for description only; report the pooled out-of-fold metric with its
        patient bootstrap CI (:meth:`to_result` + the classification scorer) as the headline.

        Example:
            >>> y = np.array([0, 1] * 6); fold = np.repeat([0, 1, 2], 4)
            >>> cv = cross_validate(12, y, None, fold, lambda tr, va, te, f: np.eye(2)[y[te]])
            >>> cv.per_fold(["top1"])["top1"]["value"]
            1.0
        """
        from vitlab.metrics.classification import METRIC_FUNCTIONS
        from vitlab.stats.interval import t_interval

        if not 0.0 < level < 1.0:
            raise ConfigError(f"level={level} must be in (0, 1), e.g. 0.95 for a 95% interval.")
        out: dict[str, dict[str, Any]] = {}
        for name in metric_names:
            if name not in METRIC_FUNCTIONS:
                raise ConfigError(f"unknown metric {name!r}; choose from {', '.join(METRIC_FUNCTIONS)}.")
            fn = METRIC_FUNCTIONS[name]
            vals = []
            for te, p in zip(self.fold_test, self.fold_proba):
                try:
                    vals.append(float(fn(self.labels[te], p)))
                except ValueError:
                    vals.append(float("nan"))
            ok = np.asarray(vals)[~np.isnan(vals)]
            ci = t_interval(vals, level=level,
                            method="t-interval over folds (folds not independent; descriptive)")
            out[name] = ci.to_entry(folds=vals, sd=float(ok.std(ddof=1)) if ok.size > 1 else float("nan"),
                                    n_folds=int(ok.size))
        return out


def cross_validate(n_bags: int, labels: np.ndarray, patients: Sequence[Any] | np.ndarray | None,
                   folds: np.ndarray, fit_predict: FitPredict, *, val_fraction: float = 0.2,
                   seed: int = 0, bag_ids: Sequence[Any] | None = None) -> CVResult:
    """Run a K-fold cross-validation of any model and pool its out-of-fold probabilities.

    For each fold ``f``: ``test_idx`` = bags with ``folds == f``; the other bags are split by
    :func:`inner_validation` (``val_fraction`` of them, whole patients, seed ``seed + f``) into
    ``train_idx`` and ``val_idx`` (for early stopping); ``val_fraction=0`` passes all of them as
    ``train_idx`` and an empty ``val_idx``. ``fit_predict(train_idx, val_idx, test_idx, f)`` fits
    a fresh model and returns ``[len(test_idx), C]`` probabilities of the test bags. The folds
    are first checked with :func:`check_folds` (no patient leak, no empty fold, every class in
    every training part).

    Args:
        n_bags: number of bags.
        labels: ``[n_bags]`` int class indices.
        patients: ``[n_bags]`` patient ids, or ``None``.
        folds: ``[n_bags]`` fold per bag (:func:`patient_folds`, or the manifest's).
        fit_predict: the model, see above; indices are sorted int arrays into the bags.
        val_fraction: fraction of each training part held out for validation, in [0, 1).
        seed: seed of the inner validation splits.
        bag_ids: bag ids, only for error messages.

    Returns:
        :class:`CVResult`; every bag is predicted exactly once.

    Raises:
        DataError: bad folds, or ``fit_predict`` returned the wrong shape or non-finite values.

    Example:
        >>> y = np.array([0, 1] * 4); fold = np.array([0, 0, 1, 1, 0, 0, 1, 1])
        >>> cv = cross_validate(8, y, None, fold, lambda tr, va, te, f: np.full((len(te), 2), f / 2),
        ...                     val_fraction=0)
        >>> cv.proba[:, 0].tolist()
        [0.0, 0.0, 0.5, 0.5, 0.0, 0.0, 0.5, 0.5]
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction={val_fraction} must be in [0, 1), e.g. 0.2 (0: no validation part).")
    y = _as_labels(labels, int(n_bags))
    g = _as_groups(patients, int(n_bags))
    f = np.asarray(folds)
    if f.shape != (int(n_bags),):
        raise DataError(f"folds has shape {f.shape}, expected ({n_bags},): one fold index per bag.")
    check_folds(f, g, bag_ids, labels=y)
    f = f.astype(np.int64)
    n_folds = int(f.max()) + 1
    all_idx = np.arange(int(n_bags))
    proba: np.ndarray | None = None
    fold_test, fold_proba, fold_val = [], [], []
    for i in range(n_folds):
        test_idx = all_idx[f == i]
        rest = all_idx[f != i]
        if val_fraction > 0:
            train_idx, val_idx = inner_validation(rest, y, g, val_fraction, seed + i)
        else:
            train_idx, val_idx = rest, np.empty(0, dtype=np.int64)
        p = np.asarray(fit_predict(train_idx, val_idx, test_idx, i), dtype=np.float64)
        if p.ndim != 2 or p.shape[0] != test_idx.size:
            raise DataError(f"fit_predict of fold {i} returned shape {p.shape}; expected "
                            f"[{test_idx.size}, C]: one probability row per test bag, in test_idx order.")
        if p.shape[1] <= int(y.max()) or p.shape[1] < 2:
            raise DataError(f"fit_predict of fold {i} returned {p.shape[1]} columns but labels go up to "
                            f"{int(y.max())}; return one column per class.")
        if proba is None:
            proba = np.full((int(n_bags), p.shape[1]), np.nan)
        elif p.shape[1] != proba.shape[1]:
            raise DataError(f"fit_predict of fold {i} returned {p.shape[1]} columns, earlier folds "
                            f"{proba.shape[1]}; every fold must score the same classes.")
        if not np.all(np.isfinite(p)):
            raise DataError(f"fit_predict of fold {i} returned non-finite probabilities (NaN or inf).")
        proba[test_idx] = p
        fold_test.append(test_idx)
        fold_proba.append(p)
        fold_val.append(val_idx)
    assert proba is not None and not np.isnan(proba).any()
    return CVResult(y, proba, f, fold_test, fold_proba, fold_val, g)
