"""The one pairing function: paired tests between results scored on the same units, Holm within a family.

Every verb that compares systems calls :func:`pair_results`: ``eval`` (protocols of one run), ``compare``
(backbones per protocol), ``mil`` (heads), ``tune`` (methods against the frozen probe), ``tradeoff``
(variants against the baseline). The task's scorer (:mod:`vitlab.scorers`) picks the test: for
classification the paired bootstrap of the top-1 difference, McNemar's test on per-item correctness and,
for two classes, DeLong's test on AUROC; for retrieval a per-query paired bootstrap; for segmentation an
image-level paired bootstrap of mIoU. Every p-value of a family (the pairs tested together, per task) is
Holm-adjusted (``<key>_holm``), DeLong's included.

Example:
    >>> import numpy as np
    >>> from vitlab.protocols.base import Result
    >>> y = np.arange(200) % 2
    >>> good, bad = np.eye(2)[y] * 0.8 + 0.1, np.eye(2)[(y + (np.arange(200) % 3 == 0)) % 2] * 0.8 + 0.1
    >>> units = [str(i) for i in range(200)]
    >>> rows = pair_results({"a": Result("classification", units, {"y": y, "proba": good}),
    ...                      "b": Result("classification", units, {"y": y, "proba": bad})}, n_resamples=200, seed=0)
    >>> r = rows[0]; (r["a"], r["b"], round(r["diff"], 3), r["significant"], sorted(k for k in r if k.endswith("_holm")))
    ('a', 'b', 0.335, True, ['p_bootstrap_holm', 'p_delong_holm', 'p_mcnemar_holm'])
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from vitlab.errors import ConfigError
from vitlab.protocols.base import Result
from vitlab.scorers.base import scorer_for
from vitlab.stats.paired import holm

__all__ = ["pair_results", "against", "ALPHA"]

#: The family-wise error rate every verb tests at.
ALPHA = 0.05


def pair_results(results: Mapping[str, Result], *, n_resamples: int, seed: int, alpha: float = ALPHA,
                 pairs: Sequence[tuple[str, str]] | None = None, reference: str | None = None
                 ) -> list[dict[str, Any]]:
    """Paired tests between results on the same units, Holm-adjusted within each task's family.

    Args:
        results: label → :class:`~vitlab.protocols.base.Result` (protocols, backbones, heads, methods...).
        n_resamples, seed: the paired bootstrap (the same draws for both sides of a pair).
        alpha: the family-wise level of ``significant``.
        pairs: the ``(a, b)`` pairs to test; every one must share units (else :class:`ConfigError`).
            Default: every pair, in the order of ``results``, of results with the same task and the same
            units (pairs that do not share units are not comparable and are left out).
        reference: test only ``(label, reference)`` for every other label (``diff = label - reference``).

    Returns:
        One row per tested pair: ``{"a", "b", "metric", "diff", "low", "high", "p_<test>"...,
        "p_<test>_holm"..., "significant", "rule"}`` (``diff = a - b``); tasks without paired units
        (few-shot episodes) give no rows.

    Raises:
        ConfigError: an unknown label, a pair of different tasks or units, or a reference that is unknown.
    """
    labels = list(results)
    if reference is not None:
        if reference not in results:
            raise ConfigError(f"reference {reference!r} is not among the results ({', '.join(labels)}).")
        pairs = [(k, reference) for k in labels if k != reference]
    explicit = pairs is not None
    if pairs is None:
        pairs = [(a, b) for a, b in itertools.combinations(labels, 2)
                 if results[a].task == results[b].task and results[a].units == results[b].units]
    for a, b in pairs:
        for k in (a, b):
            if k not in results:
                raise ConfigError(f"cannot pair {k!r}: no such result ({', '.join(labels)}).")
    families: dict[str, list[dict[str, Any]]] = {}
    for a, b in pairs:
        scorer = scorer_for(results[a].task)
        if not scorer.p_keys:
            if explicit and results[a].task != results[b].task:
                raise ConfigError(f"cannot pair a {results[a].task} result with a {results[b].task} result.")
            continue
        test = scorer.paired(results[a], results[b], n_resamples=n_resamples, seed=seed)
        if test is not None:
            families.setdefault(results[a].task, []).append({"a": a, "b": b, **test})
    out: list[dict[str, Any]] = []
    for task, rows in families.items():
        scorer = scorer_for(task)
        for key in _p_keys(rows):
            present = [r for r in rows if key in r]
            for r, adj in zip(present, holm([r[key] for r in present])):
                r[f"{key}_holm"] = adj
        for r in rows:
            r["significant"] = scorer.significant(r, alpha)
            r["rule"] = scorer.significance_rule
        out += rows
    return out


def _p_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Every p-value key of a family's rows (``p_bootstrap``, ``p_mcnemar``, ``p_delong``...), in order seen."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k.startswith("p_") and not k.endswith("_holm") and k not in keys]
    return keys


def against(rows: list[dict[str, Any]], reference: str) -> dict[str, list[dict[str, Any]]]:
    """Per label, its rows of :func:`pair_results` against ``reference``, turned to read ``label - reference``.

    Rows may carry extra keys (``seed``), which are kept; Holm-adjusted p-values are reported as the p-values.

    Example:
        >>> row = {"seed": 0, "a": "linear", "b": "lora", "diff": -0.1, "low": -0.2, "high": -0.01,
        ...        "p_bootstrap_holm": 0.01, "p_mcnemar_holm": 0.02, "significant": True}
        >>> against([row], "linear")["lora"][0]["diff"], against([row], "linear")["lora"][0]["low"]
        (0.1, 0.01)
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for p in rows:
        if reference not in (p["a"], p["b"]):
            continue
        other = p["b"] if p["a"] == reference else p["a"]
        sign = 1.0 if p["b"] == reference else -1.0
        lo, hi = sorted((sign * p["low"], sign * p["high"]))
        out.setdefault(other, []).append({
            **({"seed": p["seed"]} if "seed" in p else {}), "diff": sign * p["diff"], "low": lo, "high": hi,
            "p_bootstrap": p.get("p_bootstrap_holm"), "p_mcnemar": p.get("p_mcnemar_holm"),
            "significant": bool(p.get("significant"))})
    return out
