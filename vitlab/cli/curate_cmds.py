"""``vitlab curate``: duplicates, leakage across the eval split and score filters on cached embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vitlab.cli.common import Quiet, check_outputs, console, friendly_errors, note, num_workers_option, print_json, \
    progress_setting
from vitlab.cli.options import BatchSize, CacheDir, Device, Json, Out, Overwrite, Pretrained, app


@app.command("curate")
@friendly_errors
def curate_cmd(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Alias or <source>:<model>."),
    data: str = typer.Option(..., "--data", "-d", help="Data: folder:, csv:, idx:, sample:."),
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="Remove duplicates (one kept per group) from the kept set."),
    threshold: str = typer.Option("auto", help="Semantic cosine threshold in [-1, 1], or auto (calibrated on "
                                               "augmented copies of your own images)."),
    edits: str = typer.Option("jpeg,crop,resize,flip", help="Edits that count as a duplicate when calibrating auto."),
    recall: float = typer.Option(0.99, help="auto: recall on the augmented copies the threshold keeps."),
    k: int = typer.Option(16, help="Neighbours searched per item."),
    backend: str = typer.Option("auto", help="auto (exact up to 200k items, then faiss with measured recall), exact, faiss."),
    leakage: Optional[bool] = typer.Option(None, "--leakage/--no-leakage",
                                           help="Check the eval split for leaked test items [default: when the data has "
                                                "a split column, labels or groups]."),
    test_fraction: float = typer.Option(0.2, help="Test fraction of the seeded split when the data has no split column."),
    target: Optional[str] = typer.Option(None, help="Target data source: keep items close to it (with --target-min)."),
    target_min: Optional[float] = typer.Option(None, help="Minimum cosine to the nearest target item."),
    prompts: bool = typer.Option(False, help="Image–text backbones: score each image against its class prompt."),
    prompt_min: Optional[float] = typer.Option(None, help="Minimum cosine to the own class prompt."),
    outlier_drop: float = typer.Option(0.0, help="Drop this fraction of items with the largest k-NN distance."),
    layers: int = typer.Option(-1, help="Block whose embedding is compared (negative from the end)."),
    pool: str = typer.Option("auto", help="cls, mean or auto."),
    write_manifest: Optional[Path] = typer.Option(None, "--write-manifest",
                                                  help="Write the kept items as a NEW csv: manifest (never overwritten)."),
    report: Optional[Path] = typer.Option(None, "--report", help="HTML report to write."),
    overwrite: bool = Overwrite,
    n_resamples: int = typer.Option(1000, help="Bootstrap resamples of the leakage effect."),
    seed: int = typer.Option(0, help="Seeds the split, the calibration sample and the bootstrap."),
    pretrained: bool = Pretrained,
    device: str = Device,
    batch_size: int = BatchSize,
    num_workers: Optional[int] = num_workers_option(),
    cache_dir: Optional[Path] = CacheDir,
    out: Optional[Path] = Out,
    json_out: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Find exact, perceptual and semantic duplicates, test items leaked from train, and filter by score.

    Example: [bold]vitlab curate --backbone demo:fmnist-vit --data folder:./imgs --threshold auto --report curate.html --write-manifest clean.csv[/]
    """
    import vitlab

    check_outputs(dirs={"--out": out}, files={"--report": (report, "html"), "--write-manifest": (write_manifest, "new")},
                  inputs=(data, backbone, target), overwrite=overwrite)
    res = vitlab.curate(backbone, data, dedup=dedup, threshold=threshold, edits=edits, recall=recall, k=k,
                        backend=backend, leakage=leakage, test_fraction=test_fraction, target=target,
                        target_min=target_min, prompts=prompts, prompt_min=prompt_min, outlier_drop=outlier_drop,
                        layers=layers, pool=pool, write_manifest=write_manifest, report=report,
                        n_resamples=n_resamples, seed=seed, pretrained=pretrained, device=device,
                        batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir, out=out,
                        progress=progress_setting(quiet))
    if json_out:
        print_json(res.record.to_dict())
        return
    _summary(res)


def _summary(res) -> None:  # noqa: ANN001 - CurateResult
    from vitlab.report.tables import fmt

    d = res.record.details
    console.print(f"semantic threshold {fmt(res.threshold, 4)}"
                  + (f" (auto: {d['calibration']['rule']}; recall {fmt(d['calibration']['recall'])}, "
                     f"{fmt(d['calibration']['fpr'])} of random pairs above)" if "calibration" in d else ""),
                  highlight=False)
    if "semantic" in d:
        s, ex, pp = d["semantic"], d["exact"], d["perceptual"]
        console.print(f"exact duplicates: {ex['n_duplicates']} in {ex['n_groups']} groups · perceptual pairs: "
                      f"{pp['n_pairs']} · semantic: {s['n_groups']} groups, {s['n_removed']} removed "
                      f"({fmt(s['fraction_removed'])}), search {s['backend']}"
                      + ("" if s["recall"] is None else f" (recall {fmt(s['recall'])} vs exact)"), highlight=False)
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
    console.print(f"kept {d['kept']['n']} of {d['data']['n']} items", highlight=False)
    for what, p in (("manifest", res.manifest), ("report", res.report), ("run record", res.path)):
        if p:
            note(f"{what} → {p}")
