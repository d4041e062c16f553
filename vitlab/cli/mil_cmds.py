"""``vitlab mil``: multiple-instance learning heads on bags of cached embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vitlab.cli.common import (check_outputs, console, device_arg, friendly_errors, num_workers_option, print_json,
                               progress_setting)
from vitlab.cli.options import (BatchSize, CacheDir, Device, Json, Out, Pretrained, Quiet, app, n_resamples_option,
                                seed_option)


@app.command("mil")
@friendly_errors
def mil_cmd(
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b",
                                           help="Embeds the instance images (not needed for feature bags)."),
    data: str = typer.Option(..., "--data", "-d", help="bags:<manifest> or sample:fashion-mnist-bags."),
    head: str = typer.Option("abmil,mean", "--head", help="Comma-separated heads: mean, max, abmil, transmil, clam_sb."),
    folds: int = typer.Option(5, help="K of the patient-grouped stratified K-fold (a manifest fold column wins)."),
    seed: int = seed_option("Seeds folds, heads and bootstrap."),
    n_resamples: int = n_resamples_option("Bootstrap resamples per CI (patients resampled)."),
    epochs: int = typer.Option(200, help="Most epochs per fold (early stopping on a patient-disjoint validation part)."),
    lr: float = typer.Option(2e-4, help="AdamW learning rate (CLAM's recipe)."),
    max_instances: Optional[int] = typer.Option(None, help="Subsample larger bags to this size while training."),
    layer: int = typer.Option(-1, help="Block whose instance embedding is used (-1 = last)."),
    pool: str = typer.Option("auto", help="cls, mean or auto (cls when there is a class token)."),
    pretrained: bool = Pretrained,
    device: str = Device,
    batch_size: int = BatchSize,
    num_workers: Optional[int] = num_workers_option(),
    cache_dir: Optional[Path] = CacheDir,
    out: Optional[Path] = Out,
    json_out: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Train MIL heads on bags with patient-grouped K-fold; bag-level AUROC etc. with patient-bootstrap CIs.

    Bags whose manifest split is 'test' are held out: the K fold models score them as one ensemble
    (protocols mil-<head>@test). To compare backbones: vitlab compare --protocol mil-abmil.

    Example: [bold]vitlab mil --backbone demo:fmnist-vit --data sample:fashion-mnist-bags --head abmil,mean --json[/]
    """
    import vitlab
    from vitlab.data import load_source
    from vitlab.data.bag_features import FeatureBagSource
    from vitlab.errors import ConfigError

    check_outputs(dirs={"--out": out}, inputs=(data, backbone))
    source = load_source(data)  # cheap (the manifest and file checks), and read once
    if isinstance(source, FeatureBagSource) and backbone is not None:
        raise ConfigError(f"--backbone {backbone}: {source.uri} holds precomputed features (a 'features' column), "
                          "so no backbone embeds them; drop --backbone, or list instance images in a 'path' column "
                          "to embed them with it.")
    res = vitlab.mil_eval(backbone, source, heads=head, folds=folds, seed=seed, n_resamples=n_resamples,
                          epochs=epochs, lr=lr, max_instances=max_instances, layer=layer, pool=pool, pretrained=pretrained,
                          device=device_arg(device),
                          cache_dir=cache_dir, out=out, batch_size=batch_size, num_workers=num_workers,
                          progress=progress_setting(quiet))
    if json_out:
        print_json(res.record.to_dict())
        return
    from vitlab.report import leaderboard_table

    for table in leaderboard_table([res.record]):
        console.print(table)
    for label, d in res.record.details.items():
        if isinstance(d, dict) and d.get("instance_auroc_of_attention") is not None:
            console.print(f"{label}: attention ranks key instances with AUROC {d['instance_auroc_of_attention']:.3f}")
        gain = (d.get("ensemble") or {}).get("gain", {}).get("auroc") if isinstance(d, dict) else None
        if gain:
            console.print(f"{label}: the {d['ensemble']['n_models']} fold models as one ensemble: AUROC "
                          f"{gain['ensemble']:.3f}, {gain['value']:+.3f} [{gain['low']:+.3f}, {gain['high']:+.3f}] over "
                          f"the average single fold model ({gain['mean_single']:.3f})")
    if res.path:
        console.print(f"run record → {res.path}")
