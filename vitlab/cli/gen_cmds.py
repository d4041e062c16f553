"""``vitlab gen-eval`` and ``vitlab gen-stats``: generative-model evaluation from the command line."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from vitlab.cli.options import (BatchSize, CacheDir, Device, Json, OnError, Out, Overwrite, Pretrained, Quiet, Report,
                                app, hidden_alias, json_option, seed_option)
from vitlab.cli.common import (check_outputs, console, deprecated, device_arg, friendly_errors, note,
                               num_workers_option, print_json, progress_setting)
from vitlab.errors import ConfigError


class Resize(str, Enum):
    default = "default"
    clean = "clean"


ResizeOpt = typer.Option(None, "--resize", help="default (the encoder's protocol) or clean (clean-fid's PIL bicubic "
                                                "resize on float32) [default: the --real-stats file's, else default].")


def _one(role: str, data: Optional[str], features: Optional[Path]) -> Any:
    """The set given by ``--<role>`` (images) or ``--<role>-features`` (file), or ``None``."""
    if data is not None and features is not None:
        raise ConfigError(f"pass either --{role} or --{role}-features, not both.")
    if features is not None:
        if features.suffix.lower() not in (".npy", ".npz"):
            raise ConfigError(f"--{role}-features takes a .npy file (one n x d array) or an .npz file (key "
                              f"'features'), got {str(features)!r}.")
        return str(features)
    return data


def _fmt(v: Any) -> str:
    from vitlab.report.tables import fmt_sig  # the report's formatter of generative metrics (4 significant digits)

    return fmt_sig(v)


def _show(record) -> None:
    enc = record.config.get("encoder") or {}
    ns = ", ".join(f"{k[2:]}={v}" for k, v in record.config.items() if k.startswith("n_") and k != "n_resamples"
                   and v is not None)
    t = Table(title=f"gen-eval · encoder {enc.get('encoder', 'precomputed features')}"
                    f"{' (resize ' + enc['resize'] + ')' if enc.get('resize') == 'clean' else ''} · {ns}",
              title_justify="left")
    for c in ("metric", "value", "95% CI / spread", "note"):
        t.add_column(c)
    for name, m in record.metrics.items():
        if m.get("low") is not None:
            spread = escape(f"[{_fmt(m['low'])}, {_fmt(m['high'])}] ({m.get('method', 'CI')}, {m['n_resamples']})")
        elif m.get("std") is not None:
            spread = f"± {_fmt(m['std'])} (std, {m.get('uncertainty', '').split(' over ')[-1]})"
        else:
            spread = ""
        t.add_row(name, _fmt(m["value"]), spread, "[yellow]small sample[/]" if m.get("small_sample") else "")
    console.print(t)
    for n in record.details.get("notes", []):
        note(f"[yellow]note[/] ({escape(n['metric'])}): {escape(n['message'])}", highlight=False)
    close = record.details.get("memorization", {}).get("closest", [])
    if close:
        c = close[0]
        console.print(f"closest generated sample to the training set: {escape(c['fake_id'])} ↔ "
                      f"{escape(c['train_id'])} "
                      f"(distance {c['distance']:.4g}); {len(close)} pairs in the record.", highlight=False)


@app.command("gen-eval")
@friendly_errors
def gen_eval_cmd(
    real: Optional[str] = typer.Option(None, "--real", help="Reference images: folder:, csv:, idx:, sample:."),
    fake: Optional[str] = typer.Option(None, "--fake", help="Generated images (class subfolders → per-class Vendi)."),
    train: Optional[str] = typer.Option(None, "--train", help="The generator's training images (authpct, ct, fls)."),
    test: Optional[str] = typer.Option(None, "--test", help="Held-out real images (ct, ct_test, fls)."),
    real_features: Optional[Path] = typer.Option(None, help="Precomputed real features (.npy n x d, or .npz)."),
    fake_features: Optional[Path] = typer.Option(None, help="Precomputed generated features (.npy / .npz)."),
    train_features: Optional[Path] = typer.Option(None, help="Precomputed training-set features."),
    test_features: Optional[Path] = typer.Option(None, help="Precomputed test-set features."),
    real_stats: Optional[Path] = typer.Option(None, help="Reference statistics from `vitlab gen-stats` (FD only "
                                                         "unless saved with --save-features)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="The feature encoder: dinov2-s/b/l/g, "
                                           "inception, clip-l14 or any backbone name [default: the --real-stats "
                                           "file's, else dinov2-l]."),
    old_encoder: Optional[str] = hidden_alias("--encoder", "-e"),
    resize: Optional[Resize] = ResizeOpt,
    metrics: str = typer.Option("default", "--metrics", help="default (fd,fd_inf,kd,prdc,vendi,sw[,is]), all, "
                                "or a list: fd,fd_inf,kd,prdc,realism,is,vendi,sw,authpct,ct,ct_modified,ct_test,"
                                "fls,fls_pog."),
    seed: int = seed_option("Seeds subsampling, half-samples and every randomised metric."),
    n_resamples: Optional[int] = typer.Option(None, "--n-resamples", help="Random half-samples per CI [default: each "
                                              "metric's own: FD 100, PRDC 50, Vendi 100, KD 100 if needed]; 0 = no "
                                              "CIs."),
    nearest_k: int = typer.Option(5, help="k of the PRDC / realism k-NN balls."),
    reduced_n: int = typer.Option(10_000, help="PRDC, realism and FLS use at most this many samples per set."),
    pretrained: bool = Pretrained,
    device: str = Device,
    batch_size: int = BatchSize,
    num_workers: Optional[int] = num_workers_option(),
    on_error: OnError = typer.Option(OnError.raise_, help="raise on a bad image, or skip it (skips are listed)."),
    cache_dir: Optional[Path] = CacheDir,
    out: Optional[Path] = Out,
    json_out: bool = Json,
    report: Optional[Path] = Report,
    overwrite: bool = Overwrite,
    quiet: bool = Quiet,
) -> None:
    """Evaluate generated images against real ones (FD, KD, PRDC, Vendi, ... with CIs) on cached features.

    Example: [bold]vitlab gen-eval --real folder:./imagenet_val --fake folder:./samples --metrics fd,kd,prdc --out runs/[/]
    """
    from dataclasses import replace

    from vitlab.generative import GenEvalConfig, gen_eval

    encoder = deprecated("--encoder", "-b/--backbone", old_encoder, backbone, None)
    check_outputs(dirs={"--out": out}, files={"--report": (report, "html")}, overwrite=overwrite,
                  inputs=(real, fake, train, test, real_features, fake_features, train_features, test_features,
                          real_stats, encoder))
    cfg = replace(GenEvalConfig(), nearest_k=nearest_k, reduced_n=reduced_n)
    res = gen_eval(_one("real", real, real_features), _one("fake", fake, fake_features),
                   train=_one("train", train, train_features), test=_one("test", test, test_features),
                   real_stats=real_stats, encoder=encoder, resize=resize.value if resize else None, metrics=metrics,
                   seed=seed, n_resamples=n_resamples, config=cfg, pretrained=pretrained,
                   device=device_arg(device), cache_dir=cache_dir, out=out, batch_size=batch_size,
                   num_workers=num_workers, on_error=on_error.value, progress=progress_setting(quiet))
    if report is not None:
        from vitlab.report import render_html

        render_html([res.record], report)
    if json_out:
        print_json(res.record.to_dict())
        return
    _show(res.record)
    if res.path:
        console.print(f"run record → {res.path}")
    if report is not None:
        console.print(f"report → {report}")


@app.command("gen-stats")
@friendly_errors
def gen_stats_cmd(
    data: str = typer.Option(..., "--data", "-d", help="Real images (folder:, csv:, idx:, sample:) or a .npy/.npz."),
    output: Path = typer.Option(..., "--output", "-o", help="The stats FILE to write, e.g. "
                                                            "imagenet_val.dinov2-l.stats."),
    backbone: str = typer.Option("dinov2-l", "--backbone", "-b", help="The feature encoder: dinov2-s/b/l/g, "
                                                                      "inception, clip-l14 or any backbone name."),
    old_encoder: Optional[str] = hidden_alias("--encoder", "-e"),
    resize: Optional[Resize] = ResizeOpt,
    save_features: bool = typer.Option(False, help="Also store the raw features (then gen-eval can compute every "
                                                   "metric from the file, not only FD)."),
    pretrained: bool = Pretrained,
    device: str = Device,
    batch_size: int = BatchSize,
    num_workers: Optional[int] = num_workers_option(),
    on_error: OnError = typer.Option(OnError.raise_, help="raise on a bad image, or skip it."),
    cache_dir: Optional[Path] = CacheDir,
    overwrite: bool = Overwrite,
    json_out: bool = json_option("Print the file's header as one JSON document on stdout."),
    quiet: bool = Quiet,
) -> None:
    """Write reference statistics (mean, covariance, encoder and data fingerprints) of a real set to one file.

    Example: [bold]vitlab gen-stats --data folder:./imagenet_val --backbone dinov2-l -o imagenet_val.dinov2-l.stats[/]
    """
    from vitlab.generative import gen_stats

    encoder = deprecated("--encoder", "-b/--backbone", old_encoder, backbone, "dinov2-l")

    if Path(data).suffix.lower() not in (".npy", ".npz") and ":" not in data:
        raise ConfigError(f"--data takes <kind>:<path> (e.g. folder:{data}) or a .npy/.npz feature file, got {data!r}.")
    check_outputs(files={"--output": (output, "stats")}, inputs=(data, encoder), overwrite=overwrite)
    stats = gen_stats(data, output, encoder=encoder, resize=resize.value if resize else None,
                      save_features=save_features, pretrained=pretrained, device=device_arg(device),
                      cache_dir=cache_dir, batch_size=batch_size, num_workers=num_workers, on_error=on_error.value,
                      progress=progress_setting(quiet))
    if json_out:
        print_json(stats.header)
        return
    enc = stats.encoder or {}
    console.print(f"reference statistics of {stats.n} samples ({stats.dim}-d, encoder "
                  f"{enc.get('encoder', 'precomputed features')}"
                  f"{', with features' if stats.features is not None else ''}) → {stats.path}", highlight=False)
