"""Classification: top-1, top-5 (> 5 classes), balanced accuracy, macro-F1, AUROC, Cohen's kappa,
each with a seeded percentile-bootstrap CI over test images (whole groups when there are groups);
paired: bootstrap of the top-1 difference, McNemar on per-image correctness and, for two classes,
DeLong on AUROC.

Example:
    >>> import numpy as np
    >>> from vitlab.protocols.base import Result
    >>> y = np.arange(100) % 2; p = np.eye(2)[y]
    >>> m, _ = ClassificationScorer().score(Result("classification", [str(i) for i in range(100)],
    ...                                            {"y": y, "proba": p}), n_resamples=50, seed=0)
    >>> m["top1"]["value"], m["top1"]["low"]
    (1.0, 1.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitlab.metrics.classification import METRIC_FUNCTIONS, classification_metrics
from vitlab.protocols.base import Result
from vitlab.scorers.base import Scorer, check_paired, register_scorer
from vitlab.stats.bootstrap import bootstrap_ci
from vitlab.stats.paired import delong_test, mcnemar, paired_bootstrap

__all__ = ["ClassificationScorer", "scalar_metrics"]


def scalar_metrics(n_classes: int, ordinal: bool) -> list[str]:
    """The reported scalar metrics for ``n_classes`` classes."""
    names = ["top1"] + (["top5"] if n_classes > 5 else []) + ["balanced_accuracy", "macro_f1", "auroc"]
    return names + ["cohen_kappa_quadratic" if ordinal else "cohen_kappa"]


@register_scorer
class ClassificationScorer(Scorer):
    """Scorer of task ``classification`` (outputs ``y [m]``, ``proba [m, C]``; with ``members``, the list of
    ``[m, C]`` probabilities of the models whose mean ``proba`` is, also the ensemble's gain over the average
    member, :func:`vitlab.mil.ensemble.ensemble_gain`)."""

    task = "classification"
    headline = "top1"
    p_keys = ("p_bootstrap", "p_mcnemar")
    significance_rule = "Holm-adjusted paired bootstrap and McNemar both < alpha"

    def score(self, res: Result, *, n_resamples: int, seed: int, ordinal: bool = False, **_: Any
              ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        y, proba = res.outputs["y"], res.outputs["proba"]
        full = classification_metrics(y, proba, ordinal=ordinal)
        out = {name: bootstrap_ci(METRIC_FUNCTIONS[name], y, proba, n_resamples=n_resamples, seed=seed,
                                  groups=res.groups).to_entry()
               for name in scalar_metrics(proba.shape[1], ordinal)}
        extra = {"per_class_recall": full["per_class_recall"], "confusion_matrix": full["confusion_matrix"]}
        if "members" in res.outputs:  # an ensemble: its gain over the average member, paired (mil-<head>@test)
            from vitlab.mil.ensemble import ensemble_gain

            members = res.outputs["members"]
            single, gain = ensemble_gain(members, y, res.groups, n_resamples=n_resamples, seed=seed)
            extra["ensemble"] = {"n_models": len(members), "combine": "mean probability", "single_models": single,
                                 "gain": gain}
        return out, extra

    def paired(self, a: Result, b: Result, *, n_resamples: int, seed: int) -> dict[str, Any]:
        check_paired(a, b)
        y, pa, pb = a.outputs["y"], a.outputs["proba"], b.outputs["proba"]
        boot = paired_bootstrap(METRIC_FUNCTIONS["top1"], y, pa, pb, n_resamples=n_resamples, seed=seed,
                                groups=a.groups)
        mc = mcnemar(pa.argmax(1) == y, pb.argmax(1) == y)
        out = {"metric": "top1", "diff": boot.diff, "low": boot.low, "high": boot.high,
               "p_bootstrap": boot.p_value, "mcnemar_stat": mc.statistic, "p_mcnemar": mc.p_value}
        if pa.shape[1] == 2:
            dl = delong_test(y, pa[:, 1], pb[:, 1])
            out.update({"delong_z": dl.statistic, "p_delong": dl.p_value})
        return out
