"""From per-seed scores to the ``tune`` record: the across-seed summary of each metric, the paired tests of
every method against a reference, the costs, and the record itself (:func:`tune_record`).

Example:
    >>> s = seed_summary([0.8, 0.9, 1.0])
    >>> round(s["value"], 3), round(s["low"], 3), round(s["high"], 3)
    (0.9, 0.652, 1.148)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vitlab.record import RunRecord
from vitlab.scorers.pairing import against  # noqa: F401  (the one home of 'method - reference' rows)

__all__ = ["seed_summary", "against", "verdict", "across_seeds", "method_costs", "probe_costs", "tune_record"]


def seed_summary(values: list[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of per-seed values with a Student-t interval (:func:`vitlab.stats.interval.t_interval`; ``None``
    bounds with one seed), as a record entry with the per-seed values.

    Example:
        >>> s = seed_summary([0.8, 0.9, 1.0])
        >>> round(s["value"], 3), round(s["low"], 3), round(s["high"], 3), round(s["sd"], 3)
        (0.9, 0.652, 1.148, 0.1)
    """
    from vitlab.stats.interval import t_interval

    v = np.asarray(values, dtype=np.float64)
    ci = t_interval(v, level=level, method="t-interval over seeds")
    return {"value": ci.value, "low": ci.low, "high": ci.high, "sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "n_seeds": int(v.size), "per_seed": v.tolist(), "level": level, "method": ci.method}


def _fmt_p(p: Any) -> str:
    return "–" if p is None else f"{p:.2g}"


def verdict(label: str, rows: list[dict[str, Any]], per_seed_cost: list[dict[str, Any]],
            reference: str = "the frozen probe", refit: bool = True) -> dict[str, Any]:
    """Say plainly whether ``label`` beats or loses to ``reference``, with the paired tests and, when fine-tuning
    never beat its LP-FT start on validation, why.

    ``rows``: :func:`against` rows of ``label`` (``label - reference`` per seed). The verdict follows the sign of
    the mean difference over seeds (``beats`` / ``loses`` / ``ties``); ``significant`` counts the seeds where
    the Holm-adjusted paired bootstrap and McNemar tests both reject in that direction.

    Example:
        >>> rows = [{"seed": 0, "diff": -0.03, "low": -0.05, "high": -0.01, "p_bootstrap": 0.004,
        ...          "p_mcnemar": 0.01, "significant": True}]
        >>> v = verdict("full", rows, [{"seed": 0, "best_epoch": 3}])
        >>> v["verdict"], v["significant_seeds"]
        ('loses', 1)
        >>> v["text"]
        'full loses to the frozen probe: Δ top-1 -0.030 (mean of 1 seed), significant on 1 of 1 (seed 0 -0.030 [-0.050, -0.010], Holm p 0.004 (bootstrap) / 0.01 (McNemar)).'

    """
    diffs = [float(r["diff"]) for r in rows]
    mean = float(np.mean(diffs)) if diffs else 0.0
    word = "beats" if mean > 0 else ("loses" if mean < 0 else "ties")
    sign = 1.0 if mean >= 0 else -1.0
    sig = [r for r in rows if r.get("significant") and sign * float(r["diff"]) > 0]
    tests = "; ".join(f"seed {r['seed']} {r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}], Holm p "
                      f"{_fmt_p(r.get('p_bootstrap'))} (bootstrap) / {_fmt_p(r.get('p_mcnemar'))} (McNemar)"
                      for r in rows)
    n = len(rows)
    phrase = {"beats": "beats", "loses": "loses to", "ties": "ties with"}[word]
    text = (f"{label} {phrase} {reference}: Δ top-1 {mean:+.3f} (mean of {n} seed{'s' if n != 1 else ''}), "
            f"significant on {len(sig)} of {n} ({tests}).")
    kept_start = [c["seed"] for c in per_seed_cost if c.get("best_epoch") == 0]
    why = None
    if word != "beats" and kept_start:
        where = f"On seed{'s' if len(kept_start) > 1 else ''} {', '.join(map(str, kept_start))} no fine-tuning epoch "
        why = where + ("beat the LP-FT start on validation, so the final model is that linear probe refitted on "
                       "train + validation with no fine-tuning step: the frozen probe's own procedure on the same "
                       "features (fine-tuning added nothing that validation could see)." if refit else
                       "beat the LP-FT start on validation, so the method kept that linear-probe head; it was fitted "
                       "on the training part only, while the frozen probe also fits on the validation part.")
        text += " " + why
    return {"verdict": word, "reference": reference, "mean_diff": mean, "n_seeds": n, "significant_seeds": len(sig),
            "kept_lp_start_seeds": kept_start, "why": why, "text": text}


def across_seeds(per_seed: dict[str, dict[str, Any]], label: str, seeds: list[int]) -> dict[str, Any]:
    """One method's metrics over seeds: the single seed's scorer entries (with ``n_seeds`` 1), else each
    metric's :func:`seed_summary`."""
    first = per_seed[str(seeds[0])][label]["metrics"]
    if len(seeds) == 1:
        return {k: {**v, "n_seeds": 1} for k, v in first.items()}
    return {k: seed_summary([per_seed[str(s)][label]["metrics"][k]["value"] for s in seeds]) for k in first}


def method_costs(cost: dict[str, Any]) -> dict[str, Any]:
    """A method's cost block with its means over seeds (``train_s``, ``time_per_epoch_s``, ``images_per_s``)
    and the largest peak memory, from ``cost["per_seed"]``."""
    ps = cost["per_seed"]
    return {**cost, "train_s": float(np.mean([p["train_s"] for p in ps])),
            "time_per_epoch_s": float(np.mean([p["train_s"] / max(1, p["epochs_run"]) for p in ps])),
            "peak_memory_mb": float(np.nanmax([p["peak_memory_mb"] for p in ps])),
            "images_per_s": float(np.mean([p["images_per_s"] or 0.0 for p in ps]))}


def probe_costs(cost: dict[str, Any]) -> dict[str, Any]:
    """The frozen probe's cost block (its head size and mean fit time; no epochs, throughput or memory)."""
    ps = cost["per_seed"]
    return {**cost, "trainable_params": int(ps[0]["head_params"]), "trainable_backbone_params": 0,
            "train_s": float(np.mean([p["train_s"] for p in ps])), "time_per_epoch_s": None,
            "images_per_s": None, "peak_memory_mb": None}


def tune_record(plan: Any, *, per_seed: dict[str, dict[str, Any]], pairs: list[dict[str, Any]],
                costs: dict[str, dict[str, Any]], probe_cost: dict[str, Any] | None,
                artefacts: dict[str, Any], t_bank: float, seed: int, seeds: int, probe_label: str) -> RunRecord:
    """The ``tune`` :class:`RunRecord` of a finished run (``plan`` a :class:`~vitlab.tuning.plan.RunPlan`)."""
    labels, seed_list, dev = plan.labels, plan.seeds, plan.device
    metrics_out: dict[str, Any] = {lab: across_seeds(per_seed, lab, seed_list) for lab in labels}
    costs = {lab: method_costs(costs[lab]) for lab in labels}
    if probe_cost is not None:
        metrics_out[probe_label] = across_seeds(per_seed, probe_label, seed_list)
        costs[probe_label] = probe_costs(probe_cost)
    vs_linear = against(pairs, "linear") if "linear" in labels else {}
    vs_probe = against(pairs, probe_label) if probe_cost is not None else {}
    verdicts = {lab: verdict(lab, vs_probe.get(lab, []), costs[lab]["per_seed"], refit=plan.recipe.refit)
                for lab in labels if lab in vs_probe}
    selection = {lab: [{"seed": c["seed"], "lr": c.get("lr", plan.lrs[lab]), "best_epoch": c.get("best_epoch"),
                        "candidates": c.get("lr_search", []), "lp_init": c.get("lp_init"),
                        "refit": None if not c.get("refit") else {k: v for k, v in c["refit"].items()
                                                                  if k != "history"}}
                       for c in costs[lab]["per_seed"]] for lab in labels}
    hparams = {m.label: {"lr": [sel["lr"] for sel in selection[m.label]], "lr_candidates": plan.lr_candidates[m.label],
                         "lp_init": plan.recipe.lp_init, **m.to_dict()} for m in plan.methods}
    return RunRecord(
        kind="tune", config=plan.config, fingerprints=plan.fingerprints, metrics=metrics_out, hparams=hparams,
        details={"per_seed": per_seed, "pairs": pairs, "vs_linear": vs_linear, "vs_probe": vs_probe,
                 "vs_probe_verdict": verdicts, "selection": selection, "cost": costs,
                 "artefacts": {k: str(v) for k, v in artefacts.items()},
                 "data": {"classes": list(plan.source.classes), "n": len(plan.source)},
                 "interval": "per seed: percentile bootstrap over test images; across seeds: mean with a Student-t "
                             "interval (seeds vary the split and the initialisation)",
                 "cost_note": "peak memory: " + ("CUDA max allocated above the start" if dev.type == "cuda" else
                                                 "process RSS above the start, sampled (approximate)")
                 + "; images/s: training images through a step per second of training time (linear: head steps "
                   "on features computed once)"},
        timings={"load_images_s": t_bank, **{f"{lab}_train_s": costs[lab]["train_s"] for lab in labels}},
        seeds={"first": int(seed), "n_seeds": int(seeds), "bootstrap": int(seed)})
