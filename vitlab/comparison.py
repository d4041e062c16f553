"""``vitlab.compare`` (this module is ``vitlab.comparison``): several backbones, the same splits, paired significance tests.

``mil-<head>`` protocols (:mod:`vitlab.protocols.mil`) on an image bag source run on the same
patient-grouped folds for every backbone and compare the pooled out-of-fold predictions (leaderboard on
AUROC, the protocols' headline).

For each dataset and protocol: a leaderboard on the task's headline metric (top-1,
recall@1, mIoU...) with CIs; for each pair of backbones the paired test of the
protocol's task (:mod:`vitlab.scorers`: for classification the paired-bootstrap
difference in top-1, McNemar's test and, for binary tasks, DeLong's test);
p-values are Holm-adjusted within each (dataset, protocol). Across >= 2 datasets:
Friedman's test on the ranks and the Nemenyi critical difference.
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
from vitlab.evaluation import EvalResult, check_eval_config, evaluate
from vitlab.record import RunRecord
from vitlab.scorers import ALPHA, pair_results, scorer_for
from vitlab.stats.ranks import friedman_test, mean_ranks, nemenyi_cd



@dataclass
class CompareResult:
    """All per-run results plus the comparison record."""

    record: RunRecord
    runs: dict[tuple[str, str], EvalResult] = field(default_factory=dict)
    path: Path | None = None

    def leaderboard(self, dataset: str, protocol: str) -> list[dict[str, Any]]:
        return self.record.details["leaderboards"][dataset][protocol]


def compare(backbones: list[str], data: str | list[str], *, protocols: str | list[Any] = "knn,linear",
            seed: int = 0, test_fraction: float = 0.2, n_resamples: int = 1000, pretrained: bool = True,
            device: str | None = None, cache_dir: str | Path | None = None, out: str | Path | None = None,
            **eval_kwargs: Any) -> CompareResult:
    """Evaluate every backbone on every dataset with identical splits, then test the differences.

    Args:
        backbones: names (``"demo:fmnist-vit"``, ``"pixels"``, ``"timm:vit_tiny_patch16_224"``).
        data: one or several data-source URIs.
        protocols: protocol specs or objects (as :func:`~vitlab.evaluation.evaluate`); each is paired with its
            task's test (``fewshot`` episodes are reported but not paired).
        out: directory for one eval record per (backbone, dataset) and one compare record.

    Example:
        >>> import vitlab
        >>> res = vitlab.compare(["demo:fmnist-vit", "pixels:8"], "sample:digits?limit=200", protocols="knn",
        ...                      n_resamples=20, progress=False)
        >>> [row["backbone"] for row in res.leaderboard("sample:digits?limit=200", "knn")]  # pixels win here
        ['pixels:8', 'demo:fmnist-vit']
    """
    if len(backbones) < 2:
        raise ConfigError(f"compare needs at least 2 backbones, got {len(backbones)}; use `vitlab eval` for one.")
    datasets = [data] if isinstance(data, str) else list(data)
    if not datasets:
        raise ConfigError("compare needs at least one data source, got none.")
    # validate before loading any backbone or embedding anything
    protocols = check_eval_config(protocols=protocols, test_fraction=test_fraction, n_resamples=n_resamples,
                                  device=device, out=out, **eval_kwargs)
    on_bags = protocols[0].view == "bags"
    runs: dict[tuple[str, str], EvalResult] = {}
    loaded = {}
    for name in backbones:
        bb = load_backbone(name, pretrained=pretrained, device=device or "cpu")
        if bb.name in loaded:
            raise ConfigError(f"{name!r} is the same backbone as another entry ({bb.name}); list each once.")
        loaded[bb.name] = bb
    backbones = list(loaded)  # canonical names from here on ("pixels" → "pixels:28")
    sources = {ds: load_source(ds) for ds in datasets}
    if on_bags:
        _check_bag_sources(sources)
    for ds, source in sources.items():
        # one split for every backbone; bag protocols' patient-grouped folds are seeded by labels and patients
        splits = None if on_bags else source.splits(seed=seed, test_fraction=test_fraction)
        for name, bb in loaded.items():
            runs[(ds, name)] = evaluate(bb, source, protocols=protocols, seed=seed, splits=splits,
                                        n_resamples=n_resamples, cache_dir=cache_dir, out=out, **eval_kwargs)
    first = next(iter(runs.values()))
    labels = first.record.config["protocols"]
    paired_protocols = [p for p in labels if scorer_for(first.results[p].task).p_keys]
    leaderboards: dict[str, dict[str, list[dict[str, Any]]]] = {}
    pairs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for ds in datasets:
        leaderboards[ds], pairs[ds] = {}, {}
        for proto in labels:
            scorer = scorer_for(first.results[proto].task)
            common = set.intersection(*(set(runs[(ds, name)].record.metrics[proto]) for name in backbones))
            preferred = first.record.config.get("headline")
            key = preferred if preferred in common else scorer.headline_for(common)
            rows = [{"backbone": name, "metric": key, **runs[(ds, name)].record.metrics[proto][key]}
                    for name in backbones]
            rows.sort(key=lambda r: -r["value"])
            leaderboards[ds][proto] = rows
        for proto in paired_protocols:
            tests = pair_results({name: runs[(ds, name)].results[proto] for name in backbones},
                                 pairs=list(itertools.combinations(backbones, 2)), n_resamples=n_resamples,
                                 seed=seed, alpha=ALPHA)
            pairs[ds][proto] = tests
            leader = leaderboards[ds][proto][0]["backbone"]
            for row in leaderboards[ds][proto][1:]:
                t = next(t for t in tests if {t["a"], t["b"]} == {leader, row["backbone"]})
                row["worse_than_leader"] = t["significant"]
    ranks = _rank_tests(datasets, backbones, paired_protocols, runs)
    record = RunRecord(
        kind="compare",
        config={"backbones": backbones, "datasets": datasets, "protocols": labels,
                "seed": seed, "test_fraction": test_fraction, "n_resamples": n_resamples, "alpha": ALPHA,
                "significance_rule": {p: scorer_for(first.results[p].task).significance_rule
                                      for p in paired_protocols}},
        fingerprints={f"{ds}|{name}": r.record.fingerprints for (ds, name), r in runs.items()},
        metrics={f"{ds}|{name}": r.record.metrics for (ds, name), r in runs.items()},
        details={"leaderboards": leaderboards, "pairwise": pairs, "ranks": ranks,
                 "eval_runs": {f"{ds}|{name}": r.record.run_id for (ds, name), r in runs.items()}},
        seeds={"split": seed, "bootstrap": seed})
    path = record.save(out) if out is not None else None
    return CompareResult(record, runs, path)


def _check_bag_sources(sources: dict[str, Any]) -> None:
    """Bag protocols compare backbones only on image bags (a feature bag source gives all the same features)."""
    from vitlab.data.bag_features import FeatureBagSource
    from vitlab.data.bag_table import BagInfo

    for ds, src in sources.items():
        if not isinstance(src, BagInfo):
            raise ConfigError(f"{ds} is not a bag source; mil-<head> protocols need bags:<manifest> (bag_id, label, "
                              "path columns) or sample:fashion-mnist-bags.")
        if isinstance(src, FeatureBagSource):
            raise ConfigError(f"{ds} holds precomputed features, so every backbone would see the same bags; compare "
                              "backbones on image bags (a 'path' column), or run `vitlab mil` on each feature manifest.")


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
