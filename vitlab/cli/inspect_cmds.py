"""``vitlab inspect`` (maps, PCA, artefact tokens, sanity checks) and ``vitlab robust`` (corruptions, attacks)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import List, Optional

import typer

from vitlab.cli.common import check_outputs, console, device_arg, friendly_errors, note, parse_int_list, print_json
from vitlab.cli.options import (CacheDir, Device, Json, Out, Overwrite, Pretrained, Quiet, Report, app,
                                n_resamples_option, seed_option)
from vitlab.errors import ConfigError


def parse_eps(text: str) -> list[float]:
    """``"0,1/255,0.03"`` → floats (fractions allowed); one clear line on a bad value.

    Example:
        >>> parse_eps("0, 8/255")
        [0.0, 0.03137254901960784]
    """
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            out.append(float(Fraction(part)))
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"--eps: {part!r} is not a number; write budgets in pixel units, e.g. 0,2/255,8/255.") \
                from None
    return out


@app.command("inspect")
@friendly_errors
def inspect_cmd(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Backbone name or alias (demo:fmnist-vit, dinov2-s)."),
    data: str = typer.Option(..., "--data", "-d", help="Images: sample:fashion-mnist, photos:all, folder:./imgs."),
    maps: str = typer.Option("attention,rollout,pca", "--maps",
                             help="Comma-separated: attention, rollout, grad-rollout, gradcam, pca ('' for none)."),
    artefacts: bool = typer.Option(False, "--artefacts", help="Token-norm histograms and high-norm artefact tokens."),
    n_images: int = typer.Option(8, "--n-images", help="Images to inspect (a seeded subset)."),
    layer: int = typer.Option(-1, help="Block whose tokens Grad-CAM and PCA use (negative from the end)."),
    pca: Optional[Path] = typer.Option(None, "--pca", help="Saved PCA (.npz) to reuse; fitted and saved there if "
                                                           "missing [default: the cache's pca namespace]."),
    sanity: bool = typer.Option(True, "--sanity/--no-sanity", help="Model-randomisation test, deletion/insertion."),
    z_thresh: float = typer.Option(6.0, help="Robust z-score above which a patch token is a high-norm outlier."),
    seed: int = seed_option("Seeds the image subset, the probe and the bootstrap."),
    n_resamples: int = n_resamples_option("Bootstrap resamples per CI (images resampled)."),
    pretrained: bool = Pretrained,
    device: str = Device,
    out: Optional[Path] = Out,
    report: Optional[Path] = Report,
    cache_dir: Optional[Path] = CacheDir,
    overwrite: bool = Overwrite,
    json_out: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """What the backbone looks at (attention, rollout, Grad-CAM, PCA maps) and where its artefact tokens are.

    Example: [bold]vitlab inspect --backbone demo:fmnist-vit --data sample:fashion-mnist --artefacts --json[/]
    """
    import vitlab

    reuse = pca is not None and pca.exists()  # a saved PCA is an input; a missing one is written
    check_outputs(dirs={"--out": out}, files={"--report": (report, "html"), "--pca": (None if reuse else pca, "pca")},
                  inputs=(data, backbone, pca if reuse else None), overwrite=overwrite)
    res = vitlab.inspect_model(backbone, data, maps=maps, artefacts=artefacts, n_images=n_images, layer=layer,
                               pca_path=pca, sanity=sanity, z_thresh=z_thresh, seed=seed, n_resamples=n_resamples,
                               pretrained=pretrained, device=device_arg(device), out=out,
                               log=None if quiet else (lambda s: note(s)))
    html = None
    if report is not None:
        from vitlab.report import render_html

        html = render_html([res.record], report, title=f"vitlab inspect: {res.record.config['backbone']}")
    if json_out:
        print_json(res.record.to_dict())
        return
    from vitlab.report.tables import fmt

    m, d = res.record.metrics, res.record.details
    console.print(f"{res.record.config['backbone']}: {len(d.get('images', []))} images, grid "
                  f"{d['layout']['grid'][0]}x{d['layout']['grid'][1]}, maps {', '.join(res.record.config['maps']) or '-'}")
    for k in ("randomisation_spearman", "deletion_auc", "insertion_auc"):
        if k in m:
            console.print(f"  {k}: {fmt(m[k]['value'])} [{fmt(m[k]['low'])}, {fmt(m[k]['high'])}]")
    if "artefacts" in m:
        console.print(f"  high-norm tokens: {m['artefacts']['n_outliers']}, first at layer "
                      f"{m['artefacts']['first_outlier_layer']}")
    if res.path:
        console.print(f"run record → {res.path}")
    if html:
        console.print(f"report → {html}")


@app.command("robust")
@friendly_errors
def robust_cmd(
    backbone: List[str] = typer.Option(..., "--backbone", "-b", help="Backbone(s); repeat or comma-separate to compare."),
    data: str = typer.Option(..., "--data", "-d", help="Labelled images: sample:fashion-mnist, folder:./imgs."),
    corrupt: str = typer.Option("patch-drop,patch-shuffle,patch-noise", "--corrupt",
                                help="Comma-separated: patch-drop, patch-shuffle, patch-noise, patch-mean ('' for none)."),
    counts: Optional[str] = typer.Option(None, "--counts", help="Patches corrupted per image, e.g. 0,1,4,8 "
                                                                 "[default: 0, 1, N/8, N/4, N/2]."),
    grid: str = typer.Option("both", "--grid", help="aligned, misaligned or both (cells on / off the patch grid)."),
    attack: str = typer.Option("pgd-patch,feature", "--attack", help="Comma-separated: pgd-patch, feature ('' for none)."),
    eps: str = typer.Option("0,1/255,2/255,4/255,8/255", "--eps", help="L-inf budgets in pixel units ([0, 1])."),
    steps: int = typer.Option(10, help="PGD steps."),
    patch_side: int = typer.Option(2, help="Side of the attacked patch, in grid cells."),
    n_train: int = typer.Option(500, help="Clean training images for the probes."),
    n_test: int = typer.Option(200, help="Test images corrupted."),
    n_attack: int = typer.Option(64, help="Test images attacked."),
    seed: int = seed_option("Seeds subsets, corruptions, attacks and the bootstrap."),
    n_resamples: int = n_resamples_option("Bootstrap resamples per CI."),
    pretrained: bool = Pretrained,
    device: str = Device,
    out: Optional[Path] = Out,
    report: Optional[Path] = Report,
    overwrite: bool = Overwrite,
    json_out: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Accuracy under patch corruptions and attacks, scored with frozen kNN and linear probes (95% CIs).

    Example: [bold]vitlab robust -b demo:fmnist-vit -d sample:fashion-mnist --corrupt patch-drop,patch-shuffle --attack pgd-patch,feature --out runs/[/]
    """
    import vitlab

    if grid not in ("aligned", "misaligned", "both"):
        raise ConfigError(f"--grid {grid!r}: choose aligned, misaligned or both.")
    names = [n.strip() for b in backbone for n in b.split(",") if n.strip()]
    check_outputs(dirs={"--out": out}, files={"--report": (report, "html")}, inputs=(data, *names),
                  overwrite=overwrite)
    aligned = {"aligned": (True,), "misaligned": (False,), "both": (True, False)}[grid]
    res = vitlab.robust(names, data, corrupt_kinds=corrupt, counts=parse_int_list(counts, "counts") if counts else None,
                        aligned=aligned, attack=attack, eps=parse_eps(eps), steps=steps, patch_side=patch_side,
                        n_train=n_train, n_test=n_test, n_attack=n_attack, seed=seed, n_resamples=n_resamples,
                        pretrained=pretrained, device=device_arg(device), out=out, log=None if quiet else (lambda s: note(s)))
    if report is not None:
        from vitlab.report import render_html

        report = render_html([res.record], report, title="vitlab robust")
    if json_out:
        print_json(res.record.to_dict())
        return
    _print_robust(res.record)
    if res.path:
        console.print(f"run record → {res.path}")
    if report is not None:
        console.print(f"report → {report}")


def _print_robust(rec: object) -> None:
    from rich.table import Table

    from vitlab.report.tables import fmt

    for bb, m in rec.metrics.items():  # type: ignore[attr-defined]
        t = Table(title=f"{bb}: top-1 [95% CI] (linear / kNN)")
        for col in ("condition", "patches / ε", "linear", "kNN", "attack success"):
            t.add_column(col)
        ci = lambda v: f"{fmt(v['value'])} [{fmt(v['low'])}, {fmt(v['high'])}]"  # noqa: E731
        t.add_row("clean", "0", ci(m["clean"]["linear"]), ci(m["clean"]["knn"]), "")
        for key, cur in m.items():
            if "|" in key:
                for i, c in enumerate(cur["counts"]):
                    t.add_row(key, str(c), ci(cur["linear"][i]), ci(cur["knn"][i]), "")
        att = m.get("attacks") or {}
        for a in ("pgd-patch", "feature"):
            if a in att:
                for i, e in enumerate(att["eps"]):
                    t.add_row(a, f"{e * 255:.3g}/255", ci(att[a]["linear"][i]), ci(att[a]["knn"][i]),
                              fmt(att[a]["success"][i]))
        console.print(t)
