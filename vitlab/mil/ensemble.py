"""The K fold models of a cross-validation as one ensemble on a held-out test set.

Phikon-v2 and eva report slide-level results of the mean of the K fold models' probabilities on an
external test set (Phikon-v2: +1.75 AUC over single fold models). :func:`evaluate_test` scores that
ensemble with the classification scorer (patient cluster bootstrap CIs) and measures its gain over
the average single fold model, with a paired patient bootstrap interval.

Example:
    >>> y = np.arange(40) % 2; probas = [np.eye(2)[y] * 0.9 + 0.05] * 3
    >>> ev = evaluate_test(probas, y, [f"s{i}" for i in range(40)], np.arange(40) // 2, n_resamples=50)
    >>> ev.metrics["auroc"]["value"], ev.gain["auroc"]["value"]
    (1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vitlab.errors import DataError
from vitlab.mil.folds import _as_groups, _as_labels

__all__ = ["ensemble_proba", "evaluate_test", "ensemble_gain", "TestEvaluation", "GAIN_METRICS"]

#: metrics whose ensemble-over-single-model gain is reported
GAIN_METRICS = ("auroc", "balanced_accuracy", "macro_f1")


def ensemble_proba(fold_probas: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the K fold models' probabilities on one held-out test set.

    The K models of a cross-validation are applied to the same external test bags and their
    probabilities averaged (as Phikon-v2 and eva report for slide-level tasks).

    Args:
        fold_probas: K arrays ``[n_test, C]``, the same bags in the same order.

    Returns:
        ``[n_test, C]``.

    Raises:
        DataError: no arrays, or arrays of different shapes.

    Example:
        >>> ensemble_proba([np.array([[0.25, 0.75]]), np.array([[0.75, 0.25]]), np.array([[0.5, 0.5]])]).tolist()
        [[0.5, 0.5]]
    """
    arrays = [np.asarray(p, dtype=np.float64) for p in fold_probas]
    if not arrays:
        raise DataError("ensemble_proba needs the probabilities of at least one fold model.")
    shape = arrays[0].shape
    if len(shape) != 2:
        raise DataError(f"fold probabilities must be [n_test, C], got shape {shape}.")
    for i, a in enumerate(arrays):
        if a.shape != shape:
            raise DataError(f"fold model {i} gave shape {a.shape}, fold model 0 {shape}; all must score "
                            "the same test bags and classes.")
    return np.mean(np.stack(arrays), axis=0)


@dataclass
class TestEvaluation:
    """What :func:`evaluate_test` returns.

    Attributes:
        result: the classification ``Result`` of the ensemble (``groups`` = patients).
        metrics: ``{name: Interval entry}`` from the classification scorer.
        extra: the scorer's extras (per-class recall, confusion matrix).
        proba: ``[n_test, C]`` the ensemble probabilities.
        single: per metric, the K single fold models' values on the test set.
        gain: per metric, the ensemble minus the mean single fold model, with a paired patient
            bootstrap interval (:func:`ensemble_gain`).
    """

    __test__ = False  # not a pytest class

    result: Any
    metrics: dict[str, dict[str, Any]]
    extra: dict[str, Any]
    proba: np.ndarray
    single: dict[str, list[float]] = field(default_factory=dict)
    gain: dict[str, dict[str, Any]] = field(default_factory=dict)


def evaluate_test(fold_probas: Sequence[np.ndarray], labels: np.ndarray, bag_ids: Sequence[Any],
                  patients: Sequence[Any] | np.ndarray | None, *, n_resamples: int = 1000,
                  seed: int = 0) -> TestEvaluation:
    """Score the K-fold ensemble (:func:`ensemble_proba`) on a held-out test set.

    Uses the classification scorer with ``groups=patients`` (patient cluster bootstrap; with
    ``patients=None`` a bag bootstrap). The held-out patients must not appear in the
    cross-validation data; that is the caller's split.

    Args:
        fold_probas: K arrays ``[n_test, C]`` (each fold model on the test bags).
        labels: ``[n_test]`` int class indices.
        bag_ids: ``[n_test]`` bag ids.
        patients: ``[n_test]`` patient ids, or ``None``.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        :class:`TestEvaluation`.

    Example:
        >>> y = np.arange(40) % 2; probas = [np.eye(2)[y] * 0.9 + 0.05] * 3
        >>> ev = evaluate_test(probas, y, [f"s{i}" for i in range(40)], np.arange(40) // 2,
        ...                    n_resamples=50)
        >>> ev.metrics["auroc"]["value"], ev.metrics["auroc"]["method"]
        (1.0, 'cluster-percentile')
    """
    from vitlab.protocols.base import Result
    from vitlab.scorers import scorer_for

    proba = ensemble_proba(fold_probas)
    y = _as_labels(labels, proba.shape[0])
    units = [str(b) for b in bag_ids]
    if len(units) != y.shape[0]:
        raise DataError(f"bag_ids has {len(units)} entries but there are {y.shape[0]} test bags.")
    g = _as_groups(patients, y.shape[0])
    res = Result("classification", units, {"y": y, "proba": proba}, groups=g,
                 details={"ensemble": {"n_models": len(fold_probas), "combine": "mean probability"}})
    metrics, extra = scorer_for("classification").score(res, n_resamples=n_resamples, seed=seed)
    single, gain = ensemble_gain(fold_probas, y, g, n_resamples=n_resamples, seed=seed)
    return TestEvaluation(res, metrics, extra, proba, single, gain)


def ensemble_gain(fold_probas: Sequence[np.ndarray], labels: np.ndarray, patients: Sequence[Any] | np.ndarray | None,
                  *, metrics: Sequence[str] = GAIN_METRICS, n_resamples: int = 1000, level: float = 0.95,
                  seed: int = 0) -> tuple[dict[str, list[float]], dict[str, dict[str, Any]]]:
    """Each fold model's metric on the test set, and the ensemble's gain over their mean.

    The gain ``m(ensemble) - mean_k m(model_k)`` is resampled on the same patient bootstrap draws
    for the ensemble and every single model (paired), giving a percentile interval (widened to
    contain the estimate in the rare case it does not); a metric
    undefined on the test set (e.g. AUROC with one class) is left out.

    Args:
        fold_probas: K arrays ``[n_test, C]``.
        labels: ``[n_test]`` int class indices.
        patients: ``[n_test]`` patient ids (the resampled unit), or ``None`` (bags).
        metrics: names in :data:`vitlab.metrics.classification.METRIC_FUNCTIONS`.
        n_resamples, level, seed: the bootstrap (``level``: the interval's confidence).

    Returns:
        ``(single, gain)``: ``{metric: [K values]}`` and ``{metric: interval entry}`` (method
        ``"paired cluster-percentile"``; ``"paired percentile"`` without patients).

    Example:
        >>> y = np.array([0, 1] * 10); good = np.eye(2)[y] * 0.8 + 0.1; bad = np.eye(2)[1 - y] * 0.8 + 0.1
        >>> single, gain = ensemble_gain([good, good, bad], y, None, metrics=["top1"], n_resamples=20)
        >>> single["top1"], round(gain["top1"]["value"], 3)
        ([1.0, 1.0, 0.0], 0.333)
    """
    from vitlab.metrics.classification import METRIC_FUNCTIONS
    from vitlab.stats.bootstrap import Resampler, _safe, bootstrap_replicates
    from vitlab.stats.interval import percentile_interval

    arrays = [np.asarray(p, dtype=np.float64) for p in fold_probas]
    ens = ensemble_proba(arrays)
    y = _as_labels(labels, ens.shape[0])
    g = _as_groups(patients, y.shape[0])
    single: dict[str, list[float]] = {}
    gain: dict[str, dict[str, Any]] = {}
    for name in metrics:
        fn = METRIC_FUNCTIONS[name]
        values = [_safe(fn, y, a) for a in arrays]
        e = _safe(fn, y, ens)
        if np.isnan(e) or any(np.isnan(v) for v in values):
            continue
        single[name] = values
        reps = bootstrap_replicates(fn, y, [ens, *arrays], Resampler(y.shape[0], g, seed), n_resamples)
        d = reps[:, 0] - reps[:, 1:].mean(axis=1)
        d = d[~np.isnan(d)]
        value = e - float(np.mean(values))
        if d.size == 0:
            continue
        ci = percentile_interval(value, d, level=level, method="paired " + ("percentile" if g is None
                                                                             else "cluster-percentile"),
                                 n_resamples=n_resamples, n_skipped=n_resamples - int(d.size))
        gain[name] = ci.to_entry(mean_single=float(np.mean(values)), ensemble=e)
    return single, gain
