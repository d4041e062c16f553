"""``vitlab curate``: duplicates, leakage across the eval split and score filters on cached embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from vitlab.cli.common import (check_outputs, console, deprecated, device_arg, friendly_errors, note,
                               num_workers_option, print_json, progress_setting)
from vitlab.cli.options import (BatchSize, CacheDir, Device, Json, Out, Overwrite, Pretrained, Quiet, Report, app,
                                hidden_alias, n_resamples_option, seed_option)


@app.command("curate")
@friendly_errors
def curate_cmd(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Alias or <source>:<model>."),
    data: str = typer.Option(..., "--data", "-d", help="Data: folder:, csv:, idx:, sample:."),
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="Remove duplicates (one kept per group) from the kept set."),
    threshold: str = typer.Option("auto", help="Semantic cosine threshold in [-1, 1], or auto (calibrated on "
                                               "augmented copies of your own images against random pairs)."),
    edits: Optional[str] = typer.Option(None, help="auto: edits that count as a duplicate [default: "
                                                   "jpeg,crop,resize,flip]."),
    recall: Optional[float] = typer.Option(None, help="auto: recall every edit must reach [default: 0.99]."),
    max_fpr: Optional[float] = typer.Option(None, "--max-fpr", help="auto: most random pairs allowed above the "
                                                                     "threshold [default: 0.001]."),
    k: int = typer.Option(16, help="Neighbours searched per item first (widened where more are above the threshold)."),
    max_neighbours: Optional[int] = typer.Option(None, "--max-neighbours",
                                                 help="Most partners searched per item [default: 1024]; items "
                                                      "reaching it are warned about and recorded."),
    perceptual_distance: Optional[int] = typer.Option(None, "--perceptual-distance",
                                                      help="Largest pHash Hamming distance (of 64 bits) of a "
                                                           "perceptual pair [default: 4]."),
    backend: str = typer.Option("auto", help="auto (exact up to 200k items, then faiss with measured recall), exact, faiss."),
    leakage: Optional[bool] = typer.Option(None, "--leakage/--no-leakage",
                                           help="Check the eval split for leaked test items [default: when the data has "
                                                "a split column, labels or groups]."),
    test_fraction: float = typer.Option(0.2, help="Test fraction of the seeded split when the data has no split column."),
    label_issues: bool = typer.Option(False, "--label-issues", help="Flag probably wrong labels (cleanlab on "
                                                                    "out-of-fold probabilities of a probe)."),
    folds: Optional[int] = typer.Option(None, help="--label-issues: K of the K-fold cross-fitting [default: 5]."),
    label_method: Optional[str] = typer.Option(None, "--label-method",
                                               help="--label-issues: the probe, linear or knn [default: linear]."),
    target: Optional[str] = typer.Option(None, help="Target data source: keep items close to it (with --target-min)."),
    target_min: Optional[float] = typer.Option(None, help="Minimum cosine to the nearest target item (needs --target)."),
    prompts: bool = typer.Option(False, help="Image–text backbones: score each image against its class prompt."),
    prompt_min: Optional[float] = typer.Option(None, help="Minimum cosine to the own class prompt (needs --prompts)."),
    outlier_drop: float = typer.Option(0.0, help="Drop this fraction of items with the largest k-NN distance."),
    layer: int = typer.Option(-1, "--layer", help="Block whose embedding is compared (negative from the end)."),
    old_layers: Optional[int] = hidden_alias("--layers"),
    pool: str = typer.Option("auto", help="cls, mean or auto."),
    write_manifest: Optional[Path] = typer.Option(None, "--write-manifest",
                                                  help="Write the kept items as a NEW csv: manifest (never overwritten); "
                                                       "with --label-issues, with issue and suggested_label columns."),
    max_removed: Optional[float] = typer.Option(None, "--max-removed",
                                                help="--write-manifest: largest fraction of items it may drop "
                                                     "[default: 0.2]."),
    report: Optional[Path] = Report,
    overwrite: bool = Overwrite,
    n_resamples: int = n_resamples_option("Bootstrap resamples of the leakage effect."),
    seed: int = seed_option("Seeds the split, the calibration sample, the folds and the bootstrap."),
    pretrained: bool = Pretrained,
    device: str = Device,
    batch_size: int = BatchSize,
    num_workers: Optional[int] = num_workers_option(),
    cache_dir: Optional[Path] = CacheDir,
    out: Optional[Path] = Out,
    json_out: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Find exact, perceptual and semantic duplicates, test items leaked from train, probably wrong labels, and filter by score.

    Example: [bold]vitlab curate --backbone demo:fmnist-vit --data folder:./imgs --threshold auto --report curate.html --write-manifest clean.csv[/]
    """
    import vitlab

    layer = deprecated("--layers", "--layer", old_layers, layer, -1)
    check_outputs(dirs={"--out": out}, files={"--report": (report, "html"), "--write-manifest": (write_manifest, "new")},
                  inputs=(data, backbone, target), overwrite=overwrite)
    res = vitlab.curate(backbone, data, dedup=dedup, threshold=threshold, edits=edits, recall=recall, max_fpr=max_fpr,
                        k=k, max_neighbours=max_neighbours, perceptual_distance=perceptual_distance, backend=backend,
                        leakage=leakage, test_fraction=test_fraction, label_issues=label_issues, folds=folds,
                        label_method=label_method, target=target, target_min=target_min, prompts=prompts,
                        prompt_min=prompt_min, outlier_drop=outlier_drop, layers=layer, pool=pool,
                        write_manifest=write_manifest, max_removed=max_removed, n_resamples=n_resamples, seed=seed,
                        pretrained=pretrained, device=device_arg(device), batch_size=batch_size, num_workers=num_workers,
                        cache_dir=cache_dir, out=out, progress=progress_setting(quiet))
    html = None
    if report is not None:
        from vitlab.report import render_html

        html = render_html([res.record], report)
    if json_out:
        print_json(res.record.to_dict())
    else:
        _summary(res)
    for what, p in (("manifest", res.manifest), ("report", html), ("run record", res.path)):
        if p:
            note(f"{what} → {p}")


def _summary(res) -> None:  # noqa: ANN001 - CurateResult
    from vitlab.report.tables import fmt

    d = res.record.details
    console.print(f"semantic threshold {fmt(res.threshold, 4)}"
                  + (f" (auto: {d['calibration']['rule']}; recall by edit "
                     + ", ".join(f"{k} {fmt(v)}" for k, v in d['calibration']['recall_by_edit'].items())
                     + f"; {fmt(d['calibration']['fpr'])} of random pairs above)" if "calibration" in d else ""),
                  highlight=False)
    if "semantic" in d:
        s, ex, pp = d["semantic"], d["exact"], d["perceptual"]
        sem = ("semantic: skipped (the auto threshold does not separate copies from random pairs)" if s.get("skipped")
               else f"semantic: {s['n_groups']} groups, {s['n_removed']} removed ({fmt(s['fraction_removed'])}), "
                    f"search {s['backend']}" + ("" if s["recall"] is None else f" (recall {fmt(s['recall'])} vs exact)"))
        console.print(f"exact duplicates: {ex['n_duplicates']} in {ex['n_groups']} groups · perceptual pairs: "
                      f"{pp['n_pairs']} (≤ {pp['max_distance']} bits) · {sem}", highlight=False)
    lk = d.get("leakage")
    if lk:
        console.print(f"leakage ({lk['split_origin']}): {lk['n_leaked']} of {lk['n_test']} test items leaked "
                      f"({lk['n_near_duplicate']} near-duplicates of train, {lk['n_in_crossing_group']} in groups "
                      "crossing splits)", highlight=False)
        if "exact_cross_split" in lk:
            console.print(f"  across the split: {lk['exact_cross_split']['n_groups']} exact-duplicate groups, "
                          f"{lk['perceptual_cross_split']['n_pairs']} perceptual pairs", highlight=False)
        eff = lk.get("effect") or {}
        if "diff" in eff:
            console.print(f"  {eff['protocol']} top-1 {fmt(eff['full']['value'])} → {fmt(eff['clean']['value'])} "
                          f"without leaked items: Δ = {fmt(eff['diff'], signed=True)} "
                          f"[{fmt(eff['low'], signed=True)}, {fmt(eff['high'], signed=True)}]", highlight=False)
    li = d.get("label_issues")
    if li:
        console.print(f"label issues ({li['method']}, {li['folds']} folds{', grouped' if li['grouped'] else ''}): "
                      f"{li['n_issues']} of {li['n']} items flagged; out-of-fold accuracy {fmt(li['oof_accuracy'])}",
                      highlight=False)
        for it in li["items"][:10]:
            console.print(f"  {escape(str(it['id']))}: given {escape(str(it['given']))}, suggested "
                          f"{escape(str(it['suggested']))} (self-confidence {fmt(it['self_confidence'])})",
                          highlight=False)
    console.print(f"kept {d['kept']['n']} of {d['data']['n']} items", highlight=False)
