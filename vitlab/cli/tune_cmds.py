"""``vitlab tune``: adapt a backbone (linear, full, LoRA/DoRA, VPT, BitFit) with CIs, paired tests and costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from vitlab.cli.common import check_outputs, console, device_arg, friendly_errors, print_json, progress_setting
from vitlab.cli.options import (CacheDir, Device, Json, Out, Pretrained, Quiet, app, batch_size_option,
                                n_resamples_option, seed_option)


def _fmt_ci(m: dict[str, Any]) -> str:
    lo, hi = m.get("low"), m.get("high")
    rng = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return f"{m['value']:.3f}{rng}"


def tune_table(record: Any) -> Any:
    """A rich table of a ``tune`` record: top-1 with its interval, Δ vs linear per seed, and the costs."""
    from rich.table import Table

    d = record.details
    n_seeds = len(record.config.get("seeds", []))
    t = Table(title=f"{record.config['backbone']} on {record.config['data']} ({n_seeds} seed(s))")
    for col in ("method", "top-1 [95% CI]", "lr (per seed)", "Δ vs linear (per seed)", "vs frozen probe (per seed)",
                "trainable params", "train s", "images/s", "peak MB"):
        t.add_column(col, justify="left" if col.startswith(("method", "Δ")) else "right")

    def deltas(key: str, label: str) -> str:
        vs = d.get(key, {}).get(label, [])
        return "; ".join(f"{v['diff']:+.3f}{'*' if v['significant'] else ''}" for v in vs) or "–"

    def num(v: Any, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    def lrs(label: str) -> str:
        return ", ".join(f"{s['lr']:g}" for s in d.get("selection", {}).get(label, [])) or "–"

    def vs_probe(label: str) -> str:
        v = d.get("vs_probe_verdict", {}).get(label)
        return deltas("vs_probe", label) if v is None else f"{v['verdict'].upper()}: {deltas('vs_probe', label)}"

    for label, ms in record.metrics.items():
        c = d["cost"][label]
        t.add_row(label, _fmt_ci(ms["top1"]), lrs(label), deltas("vs_linear", label), vs_probe(label),
                  f"{c['trainable_params']:,}", num(c["train_s"], ".1f"), num(c.get("images_per_s"), ".0f"),
                  num(c.get("peak_memory_mb"), ".0f"))
    t.caption = ("top-1: mean over seeds with a t-interval (one seed: bootstrap CI). lr: chosen on the validation "
                 "part of train. * = Holm-adjusted paired bootstrap and McNemar both < 0.05. BEATS / LOSES: sign of "
                 "the mean Δ against probe = vitlab eval's frozen L-BFGS linear probe, same split.")
    return t


def _parse_grid(text: str) -> tuple[float, ...]:
    """``"0.3,1,3"`` → ``(0.3, 1.0, 3.0)`` (the recipe checks the values)."""
    from vitlab.errors import ConfigError

    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--lr-grid must be comma-separated numbers such as 0.3,1,3, got {text!r}.") from None


@app.command("tune")
@friendly_errors
def tune_cmd(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Backbone name or alias, e.g. demo:fmnist-vit."),
    data: str = typer.Option(..., "--data", "-d", help="Labelled data, e.g. sample:digits or folder:./imgs."),
    method: str = typer.Option("linear,lora,vpt,full", "--method", "-m",
                               help="Comma-separated methods: linear, full, lora, dora, vpt, bitfit; parameters as "
                                    "lora:r=8,targets=[qkv,mlp] or vpt:prompts=10,deep=false."),
    seeds: int = typer.Option(1, "--seeds", help="How many seeds (seed, seed+1, ...): each its own eval split."),
    seed: int = seed_option("First seed (seeds the split, the heads, the data order and the bootstrap)."),
    epochs: int = typer.Option(10, "--epochs", help="Most epochs (early stopping on a validation part of train)."),
    batch_size: int = batch_size_option("Images per step."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Base peak learning rate, the middle of --lr-grid "
                                                           "[default: per method, see docs]."),
    lr_grid: str = typer.Option("0.3,1,3", "--lr-grid",
                                help="Multipliers of the base learning rate tried on the validation part of train; "
                                     "the best validation top-1 is kept (never the test split). 1 = train once."),
    lp_init: bool = typer.Option(True, "--lp-init/--no-lp-init",
                                 help="LP-FT: start the head from the linear probe on the training part "
                                      "(--no-lp-init: a random head)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many steps (smoke tests)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of train held out for early stopping."),
    patience: int = typer.Option(3, "--patience", help="Epochs without a better validation top-1 before stopping."),
    augment: bool = typer.Option(False, "--augment/--no-augment",
                                 help="Random shifts (up to 1/8 of the side) while training; off by default (VTAB-1k "
                                      "as fine-tuned in VPT's code: resize and normalise only)."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 autocast on CUDA), fp32, bf16."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="As in vitlab eval (no split column)."),
    n_resamples: int = n_resamples_option(),
    pretrained: bool = Pretrained,
    device: str = Device,
    probe: bool = typer.Option(True, "--probe/--no-probe",
                               help="Also score vitlab eval's frozen linear probe on the same split and pair every "
                                    "method against it."),
    cache_dir: Optional[Path] = CacheDir,
    out: Optional[Path] = Out,
    json_out: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Adapt a backbone with several methods on eval's splits: top-1 with CIs, paired tests against linear and the
    frozen probe, trainable parameters, time and memory; each adapted model saved as a backbone
    (<out>/tune/<run>/<method>.vitlab). Default recipe: LP-FT (the head starts at the linear probe) and the
    learning rate chosen on the validation part of train from --lr-grid.

    Example: [bold]vitlab tune --backbone demo:fmnist-vit --data sample:digits --method linear,lora,vpt,full --seeds 2 --out runs/[/]
    then [bold]vitlab eval --backbone runs/tune/<run>/lora.vitlab --data sample:digits --protocol knn[/]
    """
    import vitlab

    check_outputs(dirs={"--out": out}, inputs=(data, backbone))
    grid = _parse_grid(lr_grid)
    res = vitlab.tune(backbone, data, methods=method, seeds=seeds, seed=seed, test_fraction=test_fraction,
                      n_resamples=n_resamples, pretrained=pretrained, device=device_arg(device), out=out, probe=probe, cache_dir=cache_dir,
                      progress=progress_setting(quiet), epochs=epochs, batch_size=batch_size, lr=lr,
                      max_steps=max_steps, val_fraction=val_fraction, patience=patience, augment=augment,
                      precision=precision, lr_grid=grid, lp_init=lp_init)
    if json_out:
        print_json(res.record.to_dict())
        return
    console.print(tune_table(res.record))
    for v in res.record.details.get("vs_probe_verdict", {}).values():
        if v["verdict"] != "beats":
            console.print(v["text"], style="bold", markup=False, highlight=False)  # CIs use brackets
    for label, path in res.artefacts.items():
        console.print(f"{label} → {path}")
    if res.path:
        console.print(f"run record → {res.path}")
