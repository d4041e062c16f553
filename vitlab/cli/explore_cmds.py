"""``vitlab explore``: one self-contained HTML page to look at the embedding space of a data source."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vitlab.cli.common import (check_outputs, console, deprecated, device_arg, friendly_errors, note,
                               num_workers_option, print_json, progress_setting)
from vitlab.cli.options import (BatchSize, CacheDir, Device, Json, Pretrained, Quiet, app, hidden_alias,
                                n_resamples_option, seed_option)


@app.command("explore")
@friendly_errors
def explore_cmd(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Alias or <source>:<model>."),
    data: str = typer.Option(..., "--data", "-d", help="Data: folder:, csv:, idx:, sample:."),
    page: Optional[Path] = typer.Option(None, "--output", "-o", help="The HTML page FILE to write (a NEW file; never "
                                                                      "overwritten). Required. (-o names the "
                                                                      "product, as in report and gen-stats.)"),
    layout: str = typer.Option("umap", "--layout", help="umap (needs pip install 'vitlab[explore]'), pca (instant) "
                                                        "or tsne."),
    neighbors: int = typer.Option(15, "--neighbors", help="UMAP's n_neighbors."),
    min_dist: float = typer.Option(0.1, "--min-dist", help="UMAP's min_dist."),
    perplexity: float = typer.Option(30.0, "--perplexity", help="t-SNE's perplexity."),
    metric: str = typer.Option("cosine", "--metric", help="Layout metric: cosine or euclidean."),
    fit_sample: int = typer.Option(20_000, "--fit-sample", help="Fit the layout on at most this many items (a seeded "
                                                                "sample) and place the rest into it."),
    k: int = typer.Option(8, "--k", help="Nearest neighbours listed when an item is clicked."),
    probe: str = typer.Option("auto", "--probe", help="Probe whose test predictions colour the map: linear, knn, "
                                                      "none, or auto (linear when the data has labels)."),
    label_issues: bool = typer.Option(False, "--label-issues", help="Colour by label-issue score (cleanlab on "
                                                                     "out-of-fold probabilities)."),
    folds: int = typer.Option(5, "--folds", help="--label-issues: K of the cross-fitting."),
    duplicates: Optional[Path] = typer.Option(None, "--duplicates", help="A curate run record of this data: colour "
                                                                         "its duplicate groups."),
    max_thumbs: int = typer.Option(10_000, "--max-thumbs", help="Embed thumbnails for up to this many items (a "
                                                                "seeded sample beyond it; every point is drawn)."),
    thumb_size: int = typer.Option(64, "--thumb-size", help="Longest side of a thumbnail in pixels."),
    layer: int = typer.Option(-1, "--layer", help="Block whose embedding is mapped (negative from the end)."),
    old_layers: Optional[int] = hidden_alias("--layers"),
    pool: str = typer.Option("auto", help="cls, mean, cls+mean or auto."),
    seed: int = seed_option("Seeds the layout, the split (as vitlab eval --seed) and the probe."),
    test_fraction: float = typer.Option(0.2, help="Test fraction of the split when the data has no split column."),
    n_resamples: int = n_resamples_option("Bootstrap resamples of the probe's CI."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the JSON run record (vitlab report shows it as "
                                                         "a section); not the page (that is -o/--output)."),
    old_records: Optional[Path] = hidden_alias("--records"),
    pretrained: bool = Pretrained,
    device: str = Device,
    batch_size: int = BatchSize,
    num_workers: Optional[int] = num_workers_option(),
    cache_dir: Optional[Path] = CacheDir,
    json_out: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Write an interactive map of the embeddings: one HTML file that opens offline in any browser.

    Points coloured by label, split, predicted class, correct/wrong, duplicate group or label-issue score;
    hover for the thumbnail, click for the nearest neighbours; filter by class, find by id, export a selection
    as a csv: manifest.

    The page goes to -o/--output FILE; the run record to --out DIR (vitlab report shows it as a section).

    Example: [bold]vitlab explore --backbone demo:fmnist-vit --data sample:fashion-mnist -o explore.html[/]
    """
    import vitlab
    from vitlab.errors import ConfigError
    from vitlab.report.explore_page import write_explore_page

    out = deprecated("--records", "--out", old_records, out, None)
    layer = deprecated("--layers", "--layer", old_layers, layer, -1)
    check_outputs(dirs={"--out": out}, files={"--output": (None, "html")}, out_flag="--out")
    if page is None:
        raise ConfigError("explore needs -o/--output FILE: the HTML page to write (e.g. -o explore.html); "
                          "--out is the folder for the run record.")

    res = vitlab.explore(backbone, data, page=page, layout=layout, n_neighbors=neighbors, min_dist=min_dist,
                         perplexity=perplexity, metric=metric, fit_sample=fit_sample, k=k,
                         probe=None if probe == "none" else probe, test_fraction=test_fraction, seed=seed,
                         label_issues=label_issues, folds=folds, duplicates=duplicates, max_thumbs=max_thumbs,
                         thumb_size=thumb_size, layers=layer, pool=pool, n_resamples=n_resamples,
                         pretrained=pretrained, device=device_arg(device), batch_size=batch_size,
                         num_workers=num_workers, cache_dir=cache_dir, out=out, progress=progress_setting(quiet))
    info = write_explore_page(res)
    path = res.save()
    if json_out:
        print_json(res.record.to_dict())
        return
    lay = res.record.details["layout"]
    console.print(f"{info['n_points']:,} points, {lay['method']} layout"
                  + (" (from cache)" if lay.get("from_cache") else f" in {lay['fit_s'] + lay['transform_s']:.1f} s")
                  + f", {info['n_thumbnails']:,} thumbnails, {info['bytes'] / 1e6:.1f} MB", highlight=False)
    note(f"page → {info['path']}")
    if path:
        note(f"run record → {path}")
