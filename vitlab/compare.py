"""``vitlab.compare``: several backbones, the same splits, paired significance tests.

For each dataset and protocol: a leaderboard with CIs; for each pair of backbones
the paired-bootstrap difference in top-1 (CI, p), McNemar's test on per-sample
correctness and, for binary tasks, DeLong's test on AUROC; p-values are
Holm-adjusted within each (dataset, protocol). Across >= 2 datasets: Friedman's
test on the ranks and the Nemenyi critical difference.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.backbones import load_backbone
from vitlab.data import load_source
from vitlab.errors import ConfigError
from vitlab.evaluate import EvalResult, check_eval_config, evaluate
from vitlab.metrics.classification import METRIC_FUNCTIONS
from vitlab.report.record import RunRecord
from vitlab.stats.paired import delong_test, mcnemar, paired_bootstrap
from vitlab.stats.ranks import friedman_test, mean_ranks, nemenyi_cd

ALPHA = 0.05


def holm(p_values: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given).

    Example:
        >>> [round(p, 3) for p in holm([0.01, 0.04, 0.03])]
        [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = np.argsort(p_values)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adj[i] = running
    return adj.tolist()


def pairwise_tests(a: EvalResult, b: EvalResult, protocol: str, *, n_resamples: int, seed: int) -> dict[str, Any]:
    """Paired bootstrap (top-1), McNemar and (binary) DeLong between two results on the same test set."""
    if a.test_ids != b.test_ids:
        raise ConfigError("the two runs were scored on different test samples; compare needs identical splits "
                          "(did one backbone skip images the other embedded?).")
    y, pa, pb = a.y_test, a.proba[protocol], b.proba[protocol]
    boot = paired_bootstrap(METRIC_FUNCTIONS["top1"], y, pa, pb, n_resamples=n_resamples, seed=seed,
                            groups=a.groups_test)
    mc = mcnemar(pa.argmax(1) == y, pb.argmax(1) == y)
    out = {"a": a.record.config["backbone"], "b": b.record.config["backbone"], "metric": "top1",
           "diff": boot.diff, "low": boot.low, "high": boot.high, "p_bootstrap": boot.p_value,
           "mcnemar_stat": mc.statistic, "p_mcnemar": mc.p_value}
    if pa.shape[1] == 2:
        dl = delong_test(y, pa[:, 1], pb[:, 1])
        out.update({"delong_z": dl.statistic, "p_delong": dl.p_value})
    return out


@dataclass
class CompareResult:
    """All per-run results plus the comparison record."""

    record: RunRecord
    runs: dict[tuple[str, str], EvalResult] = field(default_factory=dict)
    path: Path | None = None

    def leaderboard(self, dataset: str, protocol: str) -> list[dict[str, Any]]:
        return self.record.details["leaderboards"][dataset][protocol]


def compare(backbones: list[str], data: str | list[str], *, protocols: str | list[str] = "knn,linear",
            seed: int = 0, test_fraction: float = 0.2, n_resamples: int = 1000, pretrained: bool = True,
            device: str | None = None, cache_dir: str | Path | None = None, out: str | Path | None = None,
            **eval_kwargs: Any) -> CompareResult:
    """Evaluate every backbone on every dataset with identical splits, then test the differences.

    Args:
        backbones: names (``"demo:fmnist-vit"``, ``"pixels"``, ``"timm:vit_tiny_patch16_224"``).
        data: one or several data-source URIs.
        protocols: protocols with per-sample predictions (``knn``, ``linear``); ``fewshot`` is reported but not paired.
        out: directory for one eval record per (backbone, dataset) and one compare record.

    Example:
        >>> res = vitlab.compare(["demo:fmnist-vit", "pixels"], "sample:fashion-mnist")  # doctest: +SKIP
        >>> res.leaderboard("sample:fashion-mnist", "knn")[0]["backbone"]  # doctest: +SKIP
        'demo:fmnist-vit'
    """
    if len(backbones) < 2:
        raise ConfigError(f"compare needs at least 2 backbones, got {len(backbones)}; use `vitlab eval` for one.")
    datasets = [data] if isinstance(data, str) else list(data)
    if not datasets:
        raise ConfigError("compare needs at least one data source, got none.")
    # validate before loading any backbone or embedding anything
    check_eval_config(protocols=protocols, test_fraction=test_fraction, n_resamples=n_resamples, device=device,
                      out=out, **eval_kwargs)
    runs: dict[tuple[str, str], EvalResult] = {}
    loaded = {}
    for name in backbones:
        bb = load_backbone(name, pretrained=pretrained, device=device or "cpu")
        if bb.name in loaded:
            raise ConfigError(f"{name!r} is the same backbone as another entry ({bb.name}); list each once.")
        loaded[bb.name] = bb
    backbones = list(loaded)  # canonical names from here on ("pixels" → "pixels:28")
    for ds in datasets:
        source = load_source(ds)
        splits = source.splits(seed=seed, test_fraction=test_fraction)  # one split for every backbone
        for name, bb in loaded.items():
            runs[(ds, name)] = evaluate(bb, source, protocols=protocols, seed=seed, splits=splits,
                                        n_resamples=n_resamples, cache_dir=cache_dir, out=out, **eval_kwargs)
    first = next(iter(runs.values()))
    paired_protocols = [p for p in first.record.config["protocols"] if p in first.proba]
    leaderboards: dict[str, dict[str, list[dict[str, Any]]]] = {}
    pairs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for ds in datasets:
        leaderboards[ds], pairs[ds] = {}, {}
        for proto in first.record.config["protocols"]:
            key = _headline_metric([runs[(ds, name)].record.metrics[proto] for name in backbones])
            rows = [{"backbone": name, "metric": key, **runs[(ds, name)].record.metrics[proto][key]}
                    for name in backbones]
            rows.sort(key=lambda r: -r["value"])
            leaderboards[ds][proto] = rows
        for proto in paired_protocols:
            tests = [pairwise_tests(runs[(ds, a)], runs[(ds, b)], proto, n_resamples=n_resamples, seed=seed)
                     for a, b in itertools.combinations(backbones, 2)]
            for key in ("p_bootstrap", "p_mcnemar", "p_delong"):
                if tests and key in tests[0]:
                    for t, adj in zip(tests, holm([t[key] for t in tests])):
                        t[f"{key}_holm"] = adj
            for t in tests:
                t["significant"] = bool(t["p_bootstrap_holm"] < ALPHA and t["p_mcnemar_holm"] < ALPHA)
            pairs[ds][proto] = tests
            leader = leaderboards[ds][proto][0]["backbone"]
            for row in leaderboards[ds][proto][1:]:
                t = next(t for t in tests if {t["a"], t["b"]} == {leader, row["backbone"]})
                row["worse_than_leader"] = t["significant"]
    ranks = _rank_tests(datasets, backbones, paired_protocols, runs)
    record = RunRecord(
        kind="compare",
        config={"backbones": backbones, "datasets": datasets, "protocols": first.record.config["protocols"],
                "seed": seed, "test_fraction": test_fraction, "n_resamples": n_resamples, "alpha": ALPHA,
                "significance_rule": "Holm-adjusted paired bootstrap and McNemar both < alpha"},
        fingerprints={f"{ds}|{name}": r.record.fingerprints for (ds, name), r in runs.items()},
        metrics={f"{ds}|{name}": r.record.metrics for (ds, name), r in runs.items()},
        details={"leaderboards": leaderboards, "pairwise": pairs, "ranks": ranks,
                 "eval_runs": {f"{ds}|{name}": r.record.run_id for (ds, name), r in runs.items()}},
        seeds={"split": seed, "bootstrap": seed})
    path = record.save(out) if out is not None else None
    return CompareResult(record, runs, path)


def _headline_metric(per_backbone: list[dict[str, Any]]) -> str:
    """``top1`` when present; for few-shot, SimpleShot at the largest shot every backbone ran."""
    common = set.intersection(*(set(m) for m in per_backbone))
    if "top1" in common:
        return "top1"
    shots = sorted(common, key=lambda k: (k.startswith("simpleshot"), int(k.rsplit("_", 1)[1].rstrip("shot") or 0)))
    return shots[-1]


def _rank_tests(datasets: list[str], backbones: list[str], protocols: list[str],
                runs: dict[tuple[str, str], EvalResult]) -> dict[str, Any]:
    """Friedman test and Nemenyi CD per protocol, when there are >= 2 datasets and >= 3 backbones."""
    out: dict[str, Any] = {}
    for proto in protocols:
        scores = np.array([[runs[(ds, b)].metric(proto) for b in backbones] for ds in datasets])
        entry: dict[str, Any] = {"scores": scores.tolist(), "mean_ranks": dict(zip(backbones,
                                                                                  mean_ranks(scores).tolist()))}
        if len(datasets) >= 2 and len(backbones) >= 3:
            stat, p = friedman_test(scores)
            entry.update({"friedman_stat": stat, "friedman_p": p,
                          "nemenyi_cd": nemenyi_cd(len(backbones), len(datasets), ALPHA)})
        else:
            entry["note"] = "Friedman/Nemenyi need >= 2 datasets and >= 3 backbones."
        out[proto] = entry
    return out
