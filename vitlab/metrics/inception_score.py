"""Inception Score (Salimans et al. 2016) from class probabilities.

As dgm-eval's ``dgm_eval/metrics/inception_score.py::calculate_score`` (a
refactor of sbarratt/inception-score-pytorch). Given ``p(y|x_i)`` for ``N``
samples (rows of ``probs``, ``[N, C]``), the rows are shuffled with
``np.random.RandomState(seed).permutation(N)`` (dgm-eval: ``seed = 2020``), cut
into ``splits`` consecutive parts of ``N // splits`` rows (the remainder is
dropped), and for each part ``P``

    p(y)   = mean_{i in P} p(y|x_i)
    IS_P   = exp( mean_{i in P} KL( p(y|x_i) || p(y) ) ),
    KL(a || b) = sum_c a_c log(a_c / b_c)   (natural log; 0 log 0 = 0)

The result is the mean and the population std (``ddof = 0``) of the ``IS_P``.
Like ``scipy.stats.entropy`` in dgm-eval, each row and ``p(y)`` are renormalised
to sum to 1 before the KL. Computed in float64.

Example:
    >>> import numpy as np
    >>> probs = np.eye(10)[np.arange(1000) % 10]   # confident and balanced
    >>> round(inception_score(probs, splits=1).mean, 6)  # = number of classes
    10.0
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import rel_entr

from vitlab.errors import DataError
from vitlab.metrics._validate import check_features, check_positive_int, warn_small_sample

__all__ = ["ISResult", "inception_score", "MIN_RECOMMENDED_SAMPLES"]

#: Below this many samples a SmallSampleWarning is emitted (IS is biased low for
#: small N; the standard protocol uses 50,000 samples and 10 splits).
MIN_RECOMMENDED_SAMPLES = 5000


@dataclass(frozen=True)
class ISResult:
    """Result of :func:`inception_score`.

    Attributes:
        mean: Mean IS over splits (dgm-eval ``inception score``).
        std: Population std over splits (dgm-eval ``inception std``).
        split_scores: ``[splits]`` per-split scores.
    """

    mean: float
    std: float
    split_scores: np.ndarray


def inception_score(
    probs: np.ndarray,
    *,
    splits: int = 10,
    shuffle: bool = True,
    seed: int = 2020,
) -> ISResult:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` over ``splits`` splits.

    Args:
        probs: ``[N, C]`` class probabilities (softmax outputs, rows sum to 1),
            e.g. ``C = 1000`` (or 1008 for the TF Inception graph).
        splits: Number of splits (standard: 10).
        shuffle: Permute rows before splitting (dgm-eval default ``True``).
        seed: ``np.random.RandomState`` seed of the permutation (dgm-eval: 2020).

    Returns:
        :class:`ISResult`.

    Raises:
        DataError: negative entries or rows not summing to 1 (logits passed?), NaN/inf,
            or fewer rows than ``splits``.
        ConfigError: ``splits < 1``.

    Warns:
        SmallSampleWarning: ``N < MIN_RECOMMENDED_SAMPLES``.

    Example:
        >>> probs = np.full((100, 4), 0.25)
        >>> inception_score(probs, splits=2).mean   # uninformative classifier
        1.0
    """
    splits = check_positive_int(splits, "splits")
    p = check_features(probs, "probs")
    n, c = p.shape
    if (p < 0).any():
        raise DataError(
            f"probs has {int((p < 0).any(axis=1).sum())} rows with negative entries: pass "
            "softmax probabilities, not logits (scipy.special.softmax(logits, axis=1))."
        )
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1.0) > 1e-3
    if bad.any():
        raise DataError(
            f"probs rows must sum to 1 but {int(bad.sum())} of {n} rows do not (e.g. row "
            f"{int(np.flatnonzero(bad)[0])} sums to {sums[bad][0]:.4g}): pass softmax "
            "probabilities, not logits."
        )
    if n < splits:
        raise DataError(
            f"probs has {n} rows but splits={splits}: each split needs at least one row; "
            "lower splits or pass more samples."
        )
    if n < MIN_RECOMMENDED_SAMPLES:
        warn_small_sample(
            f"Inception Score on {n} samples is biased low; the standard protocol uses 50000 "
            f"samples ({splits} splits of {50000 // splits}). Use at least {MIN_RECOMMENDED_SAMPLES}.",
        )
    if shuffle:
        p = p[np.random.RandomState(seed).permutation(n)]
    p = p / p.sum(axis=1, keepdims=True)
    size = n // splits
    scores = np.empty(splits, dtype=np.float64)
    for s in range(splits):
        part = p[s * size : (s + 1) * size]
        py = part.mean(axis=0)
        py = py / py.sum()
        kl = rel_entr(part, py[None, :]).sum(axis=1)
        scores[s] = np.exp(kl.mean())
    return ISResult(mean=float(scores.mean()), std=float(scores.std()), split_scores=scores)
