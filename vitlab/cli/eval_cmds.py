"""``vitlab eval``, ``compare``, ``report`` and ``quickstart``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from vitlab.cli.options import (BatchSize, CacheDir, Device, Json, Out, Overwrite, Pretrained, Quiet, Report, app,
                                n_resamples_option, out_option, seed_option)
from vitlab.cli.common import (check_outputs, console, device_arg, friendly_errors, note, num_workers_option,
                               parse_int_list, print_json, progress_setting)



def _split_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _show(records) -> None:
    from vitlab.report import leaderboard_table

    for table in leaderboard_table(records):
        console.print(table)


@app.command("eval")
@friendly_errors
def eval_cmd(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Alias or <source>:<model>."),
    data: str = typer.Option(..., "--data", "-d", help="Labelled data: folder:, csv:, idx:, sample:."),
    protocol: str = typer.Option("knn,linear,fewshot", "--protocol", "-p",
                                 help="Protocols with optional parameters, e.g. knn,linear:max_iter=2000,retrieval "
                                      "(vitlab ls lists them)."),
    layers: str = typer.Option("-1", help="Comma-separated block indices (negative from the end), e.g. -1 or "
                                          "-1,-4: one run per layer."),
    pool: str = typer.Option("auto", help="cls, mean, cls+mean or auto (cls when there is a class token)."),
    seed: int = seed_option(),
    test_fraction: float = typer.Option(0.2, help="Test fraction when the data has no split column."),
    n_resamples: int = n_resamples_option(),
    ordinal: bool = typer.Option(False, help="Labels are ordered (quadratic-weighted kappa)."),
    pretrained: bool = Pretrained,
    device: str = Device,
    batch_size: int = BatchSize,
    num_workers: Optional[int] = num_workers_option(),
    cache_dir: Optional[Path] = CacheDir,
    out: Optional[Path] = Out,
    json_out: bool = Json,
    quiet: bool = Quiet,
    exclude_leaked: bool = typer.Option(False, "--exclude-leaked",
                                        help="Also score without test items that have a near-copy in train (or a group "
                                             "in train): paired difference with CI against the full test set."),
    leak_threshold: str = typer.Option("auto", help="--exclude-leaked: cosine threshold in [-1, 1], or auto "
                                                    "(calibrated on augmented copies)."),
) -> None:
    """Evaluate one backbone with frozen-feature protocols; every metric gets a 95% CI.

    Example: [bold]vitlab eval --backbone demo:fmnist-vit --data sample:fashion-mnist --protocol knn,linear,fewshot --out runs/[/]

    Leakage: [bold]vitlab eval -b demo:fmnist-vit -d sample:fashion-mnist -p knn --exclude-leaked --leak-threshold 0.99[/]
    """
    import vitlab

    layer_list = parse_int_list(layers, "layers")
    check_outputs(dirs={"--out": out}, inputs=(data, backbone))
    res = vitlab.evaluate(backbone, data, protocols=protocol, layers=layer_list, pool=pool,
                          seed=seed, test_fraction=test_fraction, n_resamples=n_resamples, ordinal=ordinal,
                          pretrained=pretrained, device=device_arg(device), batch_size=batch_size,
                          num_workers=num_workers, cache_dir=cache_dir, out=out, progress=progress_setting(quiet),
                          exclude_leaked=exclude_leaked, leak_threshold=leak_threshold)
    if json_out:
        print_json(res.record.to_dict())
        return
    _show([res.record])
    if exclude_leaked:
        _leak_lines(res.record)
    if res.path:
        console.print(f"run record → {res.path}")


def _leak_lines(record) -> None:
    from vitlab.report.tables import fmt, fmt_p

    lk = record.details["leakage"]
    console.print(f"leaked test items: {lk['n_leaked']} of {lk['n_test']} (cosine to train ≥ {fmt(lk['threshold'], 4)}: "
                  f"{lk['n_near_duplicate']}; group in train: {lk['n_in_crossing_group']})", highlight=False)
    for name, d in record.details.items():
        eff = d.get("exclude_leaked") if isinstance(d, dict) else None
        if eff and "diff" in eff:
            console.print(f"  {name}: top-1 {fmt(eff['full']['value'])} → {fmt(eff['clean']['value'])} without them, "
                          f"Δ = {fmt(eff['diff'], signed=True)} [{fmt(eff['low'], signed=True)}, "
                          f"{fmt(eff['high'], signed=True)}], p = {fmt_p(eff['p_bootstrap'])}", highlight=False)


@app.command("compare")
@friendly_errors
def compare_cmd(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Comma-separated backbones (>= 2), e.g. demo:fmnist-vit,pixels."),
    data: str = typer.Option(..., "--data", "-d", help="One or more comma-separated labelled data sources."),
    protocol: str = typer.Option("knn,linear", "--protocol", "-p",
                                 help="Protocols with optional parameters, e.g. knn,retrieval (vitlab ls lists them)."),
    seed: int = seed_option(),
    test_fraction: float = typer.Option(0.2, help="Test fraction when the data has no split column."),
    n_resamples: int = n_resamples_option(),
    pretrained: bool = Pretrained,
    device: str = Device,
    batch_size: int = BatchSize,
    num_workers: Optional[int] = num_workers_option(),
    cache_dir: Optional[Path] = CacheDir,
    out: Optional[Path] = Out,
    json_out: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Compare backbones on the same splits: leaderboard with CIs and paired significance tests.

    Example: [bold]vitlab compare --backbone demo:fmnist-vit,pixels,timm:vit_tiny_patch16_224 --no-pretrained --data sample:fashion-mnist --out runs/[/]
    """
    import vitlab

    check_outputs(dirs={"--out": out}, inputs=(*_split_list(data), *_split_list(backbone)))
    res = vitlab.compare(_split_list(backbone), _split_list(data), protocols=protocol, seed=seed,
                         test_fraction=test_fraction, n_resamples=n_resamples, pretrained=pretrained,
                         device=device_arg(device), batch_size=batch_size, num_workers=num_workers, cache_dir=cache_dir, out=out, progress=progress_setting(quiet))
    if json_out:
        print_json(res.record.to_dict())
        return
    _show([r.record for r in res.runs.values()] + [res.record])
    _verdicts(res.record)
    if res.path:
        console.print(f"run records → {res.path.parent}")


_P_NAMES = (("p_bootstrap_holm", "boot"), ("p_mcnemar_holm", "McNemar"), ("p_delong_holm", "DeLong"))


def _verdicts(record) -> None:
    from rich.markup import escape

    from vitlab.report.tables import fmt, fmt_p

    for ds, per in record.details["pairwise"].items():
        for proto, tests in per.items():
            for t in tests:
                sign = "better" if t["diff"] > 0 else "worse"
                verdict = (f"[green]significantly {sign}[/]" if t["significant"]
                           else "[yellow]not significantly different[/]")
                ci = escape(f"[{fmt(t.get('low'), signed=True)}, {fmt(t.get('high'), signed=True)}]")
                ps = ", ".join(f"p({name}, Holm) = {fmt_p(t[key])}" for key, name in _P_NAMES if t.get(key) is not None)
                console.print(f"{escape(ds)} · {escape(proto)}: {escape(str(t['a']))} vs {escape(str(t['b']))}: "
                              f"Δ{escape(str(t.get('metric', 'top1')))} = {fmt(t['diff'], signed=True)} {ci}, {ps} "
                              f"→ {verdict}", highlight=False)


@app.command("report")
@friendly_errors
def report_cmd(
    runs: Path = typer.Argument(..., help="Directory of run records (or one record)."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o", help="The HTML FILE to write."),
    markdown: Optional[Path] = typer.Option(None, help="Also write a Markdown summary to this FILE."),
    csv: Optional[Path] = typer.Option(None, help="Also write the metrics as CSV to this FILE."),
    overwrite: bool = Overwrite,
) -> None:
    """Render run records as one self-contained HTML report (plus optional Markdown / CSV).

    An output may not be a record being read, nor another output of this command; an existing file is
    replaced only when it is an earlier vitlab report of the same kind (or with --overwrite).

    Example: [bold]vitlab report runs/ -o report.html --markdown report.md --csv metrics.csv[/]
    """
    from vitlab._io import atomic_write
    from vitlab.report import load_records, render_html, to_csv, to_markdown

    check_outputs(files={"--output": (output, "html"), "--markdown": (markdown, "markdown"), "--csv": (csv, "csv")},
                  records=runs, overwrite=overwrite)
    records = load_records(runs)  # *.json files that are not run records are skipped with a warning
    _show(records)
    console.print(f"report → {render_html(records, output)}")
    if markdown:
        atomic_write(markdown, to_markdown(records))
        console.print(f"markdown → {markdown}")
    if csv:
        console.print(f"csv → {to_csv(records, csv)}")


@app.command("quickstart")
@friendly_errors
def quickstart_cmd(
    out: Path = out_option(default=Path("runs/quickstart")),
    report: Path = typer.Option(Path("report.html"), "--report", help="The HTML report FILE to write."),
    cache_dir: Optional[Path] = CacheDir,
    overwrite: bool = Overwrite,
    quiet: bool = Quiet,
) -> None:
    """Offline demo: pixels vs a random-init ViT vs the trained demo ViT on the bundled sample.

    Prints a leaderboard with 95% CIs and significance verdicts, writes run records and report.html.

    Example: [bold]vitlab quickstart[/]
    """
    import vitlab
    from vitlab.report import render_html

    backbones = ["demo:fmnist-vit", "random:demo:fmnist-vit", "pixels"]
    check_outputs(dirs={"--out": out}, files={"--report": (report, "html")}, overwrite=overwrite)
    note(f"[bold]vitlab quickstart[/]: {', '.join(backbones)} on sample:fashion-mnist (offline)")
    res = vitlab.compare(backbones, "sample:fashion-mnist", protocols="knn,linear", cache_dir=cache_dir, out=out,
                         num_workers=0, progress=progress_setting(quiet))
    records = [r.record for r in res.runs.values()] + [res.record]
    _show(records)
    _verdicts(res.record)
    console.print(f"run records → {out}\nreport → {render_html(records, report)}")
