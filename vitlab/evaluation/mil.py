"""``vitlab.mil_eval``: :func:`vitlab.evaluate` with ``mil-<head>`` protocols (:mod:`vitlab.protocols.mil`).

Data flows as for every protocol: a bag source (``bags:<manifest>``, ``sample:fashion-mnist-bags``) →
the embedding store (each tile embedded once; a feature bag source skips the backbone) → the store's
``bags`` view (:mod:`vitlab.mil.data`) → the ``mil-<head>`` protocols (patient-grouped K folds, one head
per fold, out-of-fold probabilities) → the classification scorer with **patients** as bootstrap clusters
(AUROC, balanced accuracy, macro-F1 with 95% CIs) → paired tests between heads on the same folds
(:func:`vitlab.scorers.pair_results`: paired bootstrap, McNemar, DeLong for two classes; Holm) → an
``eval`` run record whose protocols are ``mil-<head>``, so ``vitlab report`` shows its leaderboard.

Example:
    >>> res = mil_eval("demo:fmnist-vit", "sample:fashion-mnist-bags", heads="abmil,mean")  # doctest: +SKIP
    >>> res.record.metrics["mil-abmil"]["auroc"]  # doctest: +SKIP
    {'value': 0.97, 'low': 0.94, 'high': 0.99, ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.errors import ConfigError
from vitlab.protocols.mil import HEADLINE, N_ATTENTION_EXAMPLES
from vitlab.record import RunRecord

__all__ = ["mil_eval", "MILResult", "N_ATTENTION_EXAMPLES"]


@dataclass
class MILResult:
    """The run record plus the in-memory results (for paired tests and inspection).

    Attributes:
        record: the ``eval`` :class:`~vitlab.record.RunRecord` (protocols ``mil-<head>``).
        results: ``mil-<head>`` → classification :class:`~vitlab.protocols.base.Result` of the pooled
            out-of-fold predictions (units: bag ids; groups: patients).
        attention: ``mil-<head>`` → per bag ``[n_i]`` attention from its out-of-fold model (``None`` for
            mean / max pooling).
        path: where the record was written.
    """

    record: RunRecord
    results: dict[str, Any]
    attention: dict[str, list[np.ndarray | None]]
    path: Path | None = None

    def metric(self, protocol: str, name: str | None = None) -> float:
        """A metric's value (default AUROC) of ``mil-<head>`` (or ``<head>``; ``mil-<head>@test`` for the
        held-out ensemble)."""
        label = protocol if protocol.startswith("mil-") else f"mil-{protocol}"
        return float(self.record.metrics[label][name or HEADLINE]["value"])


def mil_eval(backbone: Any, data: Any, *, heads: str | list[str] = "abmil,mean", folds: int = 5, seed: int = 0,
             n_resamples: int = 1000, epochs: int = 200, min_epochs: int = 50, patience: int = 20,
             lr: float = 2e-4, max_instances: int | None = None, head_cfg: dict[str, dict[str, Any]] | None = None,
             use_manifest_folds: bool = True, layer: int = -1, pool: str = "auto", pretrained: bool = True,
             device: str = "cpu",
             cache_dir: str | Path | None = None, out: str | Path | None = None, **embed_kwargs: Any) -> MILResult:
    """Train and score MIL heads on a bag source with patient-grouped K-fold cross-validation.

    Args:
        backbone: a name or :class:`~vitlab.backbones.base.Backbone` that embeds the instances (``None`` for a
            feature bag source, whose features are used as they are).
        data: ``bags:<manifest>``, ``sample:fashion-mnist-bags`` or a bag source object.
        heads: comma-separated heads (``mean``, ``max``, ``abmil``, ``transmil``, ``clam_sb``).
        folds: K of the patient-grouped stratified K-fold (when the manifest has no ``fold`` column, or
            ``use_manifest_folds=False``).
        seed: seeds the folds, the inner validation parts, the heads and the bootstrap.
        n_resamples: bootstrap resamples per CI (patients are the resampled unit).
        epochs, min_epochs, patience, lr, max_instances: the training recipe
            (:func:`vitlab.mil.train.fit_head`; CLAM's defaults).
        head_cfg: per-head keyword arguments, e.g. ``{"transmil": {"dim": 128}}``.
        layer, pool: which instance embedding (``pool="auto"``: ``cls`` when the backbone has a class
            token, else ``mean``), as in :func:`~vitlab.evaluation.evaluate`.
        out: directory for the run record.
        **embed_kwargs: to the embedding store (``batch_size``, ``num_workers``, ``progress``...).

    Returns:
        :class:`MILResult`.

    Raises:
        UnknownNameError: an unknown head. DataError: not a bag source, leaking folds, bad bags.
    """
    from vitlab.evaluation.run import evaluate
    from vitlab.mil.heads import HEADS
    from vitlab.protocols import parse_protocols
    from vitlab.protocols.mil import MIL

    names = [h.strip() for h in (heads.split(",") if isinstance(heads, str) else heads) if h.strip()]
    if not names:
        raise ConfigError("no MIL head given; choose from " + ", ".join(HEADS.names()) + ".")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {n_resamples}.")
    recipe = dict(folds=folds, epochs=epochs, min_epochs=min_epochs, patience=patience, lr=lr,
                  max_instances=max_instances, use_manifest_folds=use_manifest_folds)
    protos: list[MIL] = []
    for h in names:
        HEADS.entry(h)  # unknown head: one line with suggestions
        cls = parse_protocols(f"mil-{h}")[0].__class__
        protos.append(cls(**recipe, options=dict((head_cfg or {}).get(h) or {})))
    res = evaluate(backbone, data, protocols=protos, seed=seed, n_resamples=n_resamples, layers=layer, pool=pool,
                   pretrained=pretrained, device=device, cache_dir=cache_dir, out=out, **embed_kwargs)
    attention = {k: r.outputs["attention"] for k, r in res.results.items() if "attention" in r.outputs}
    return MILResult(res.record, res.results, attention, res.path)
