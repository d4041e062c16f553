"""``vitlab pretrain`` and ``vitlab distill``: continued self-supervised pretraining and distillation on the user's
images, with monitoring, a collapse guard, resumable checkpoints and the paired verdict against the start."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from vitlab.cli.common import check_outputs, console, device_arg, friendly_errors, print_json, progress_setting
from vitlab.cli.options import (CacheDir, Device, Json, Pretrained, Quiet, app, batch_size_option, n_resamples_option,
                                out_option, seed_option)

RunsOut = out_option("Folder for the record, the artefact (<out>/<verb>/<run>/model.vitlab) and checkpoints.",
                     default=Path("runs"))


def _ci(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "–"
    lo, hi = m.get("low"), m.get("high")
    return f"{m['value']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def verdict_table(record: Any) -> Any:
    """A rich table of the verdict of a ``pretrain`` / ``distill`` record: top-1 of each model with its CI and the
    paired difference with the Holm-adjusted bootstrap and McNemar p-values."""
    from rich.table import Table

    d = record.details
    t = Table(title=f"{record.kind}: {record.config.get('backbone') or record.config.get('student')} on "
                    f"{record.config.get('monitor')} (test part, as vitlab eval --seed {record.config.get('seed')})")
    for col in ("protocol", "model", "top-1 [95% CI]", "Δ top-1 vs it [95% CI]", "p (bootstrap, Holm)",
                "p (McNemar, Holm)", "significant"):
        t.add_column(col, justify="left" if col in ("protocol", "model") else "right")
    for proto, rows in d.get("verdict", {}).items():
        first = rows[0]["a"] if rows else None
        if first:
            t.add_row(proto, first, _ci(record.metrics.get(first, {}).get(proto, {}).get("top1")), "", "", "", "")
        for r in rows:
            t.add_row("", f"vs {r['b']}", _ci(record.metrics.get(r["b"], {}).get(proto, {}).get("top1")),
                      f"{r['diff']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}]", f"{r.get('p_bootstrap_holm', 1):.3g}",
                      f"{r.get('p_mcnemar_holm', 1):.3g}", "yes" if r.get("significant") else "no")
    t.caption = ("Δ = first model − the other, paired on the same test images; significant: Holm-adjusted paired "
                 "bootstrap and McNemar both < 0.05.")
    return t


def _report(res: Any, json_out: bool) -> None:
    d = res.record.details
    if d.get("stop"):
        console.print(f"[yellow]{d['stop']['message']}[/]", highlight=False, soft_wrap=True)
    if json_out:
        print_json(res.record.to_dict())
        return
    if d.get("verdict"):
        console.print(verdict_table(res.record))
    for label, s in d.get("speedup", {}).items():
        v = s["speedup"]
        console.print(f"speed-up over {label}: {v['value']:.2f}x" + (f" [{v['low']:.2f}, {v['high']:.2f}]"
                                                                       if v.get("low") is not None else ""))
    if res.artefact:
        console.print(f"artefact ({d['selected']}, step {d['selected_step']}) → {res.artefact}")
    if res.path:
        console.print(f"run record → {res.path}")


def _recipe(epochs: int, max_steps: Optional[int], batch_size: int, lr: Optional[float], head_lr: float,
            layer_decay: Optional[float], head_warmup: Optional[str], monitor_every: Optional[int],
            monitor_protocol: str, collapse_guard: bool, precision: str, checkpoint_minutes: float,
            val_fraction: float) -> dict[str, Any]:
    from vitlab._spec import parse_value

    hw = None if head_warmup is None else parse_value(head_warmup)
    return {"epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr, "head_lr": head_lr,
            "layer_decay": layer_decay, "head_warmup": hw, "monitor_every": monitor_every,
            "monitor_protocols": monitor_protocol, "collapse_guard": collapse_guard, "precision": precision,
            "checkpoint_minutes": checkpoint_minutes, "val_fraction": val_fraction}


Epochs = typer.Option(10, "--epochs", help="Passes over the training images.")
MaxSteps = typer.Option(None, "--max-steps", help="Stop after this many steps (smoke tests, budgets).")
Batch = batch_size_option("Images per step over all processes.")
Lr = typer.Option(None, "--lr", help="Backbone peak lr [default: 5e-5; 5e-4 for a random-init student].")
HeadLr = typer.Option(5e-4, "--head-lr", help="Peak lr of the new heads / adaptors.")
LayerDecay = typer.Option(None, "--layer-decay", help="Layer-wise lr decay [default: 0.9; 1.0 random-init].")
HeadWarmup = typer.Option(None, "--head-warmup", help="Steps with the backbone frozen while the new heads train: a "
                                                      "fraction (0.2) or a step count (100) [default: 0.2; 0 random].")
MonitorEvery = typer.Option(None, "--monitor-every", help="Steps between monitoring points [default: ~8 per run].")
MonitorProto = typer.Option("knn", "--monitor-protocol", help="Protocols scored while training: knn or knn,linear.")
VerdictProto = typer.Option("knn,linear", "--verdict-protocol", help="Protocols of the final verdict (vitlab eval).")
Guard = typer.Option(True, "--collapse-guard/--no-collapse-guard",
                     help="Stop when the monitored top-1 falls below the base's by more than its interval.")
Precision = typer.Option("auto", "--precision", help="auto (bf16 autocast on CUDA), fp32, bf16.")
CkptMin = typer.Option(5.0, "--checkpoint-minutes", help="Minutes between checkpoints (and one at the end).")
Nproc = typer.Option(1, "--nproc", help="Data-parallel processes (gloo on CPU, NCCL on CUDA).")
Seed = seed_option("Seeds the views, heads, data order and the monitor's split (as vitlab eval).")
TestFraction = typer.Option(0.2, "--test-fraction", help="As in vitlab eval (monitor data without a split column).")
Resamples = n_resamples_option("Bootstrap resamples per CI and paired test.")
ValFraction = typer.Option(0.1, "--val-fraction", help="Share of the monitor data's training part scored while "
                                                        "training (its test part is kept for the verdict).")
Monitor = typer.Option(None, "--monitor", help="Labelled data for monitoring and the verdict, e.g. csv:labels.csv.")


@app.command("pretrain")
@friendly_errors
def pretrain_cmd(
    backbone: str = typer.Option(..., "--backbone", "-b", help="The starting backbone, e.g. dinov2-s, demo:fmnist-vit."),
    data: str = typer.Option(..., "--data", "-d", help="Unlabelled training images, e.g. folder:./slides."),
    monitor: Optional[str] = Monitor,
    method: str = typer.Option("dino", "--method", "-m", help="dino, dinov2 or mae, with parameters as dino:n_local=6."),
    epochs: int = Epochs, max_steps: Optional[int] = MaxSteps, batch_size: int = Batch, lr: Optional[float] = Lr,
    head_lr: float = HeadLr, layer_decay: Optional[float] = LayerDecay, head_warmup: Optional[str] = HeadWarmup,
    monitor_every: Optional[int] = MonitorEvery, monitor_protocol: str = MonitorProto,
    verdict_protocol: str = VerdictProto, collapse_guard: bool = Guard, precision: str = Precision,
    val_fraction: float = ValFraction,
    checkpoint_minutes: float = CkptMin, nproc: int = Nproc, seed: int = Seed, test_fraction: float = TestFraction,
    n_resamples: int = Resamples, pretrained: bool = Pretrained, device: str = Device,
    cache_dir: Optional[Path] = CacheDir, out: Path = RunsOut, json_out: bool = Json, quiet: bool = Quiet,
) -> None:
    """Continue self-supervised pretraining (DINO, DINOv2, MAE) of a backbone on your images, monitored with kNN
    (CIs, feature health, collapse guard), resumable, judged against the base with vitlab eval's paired tests.

    Example: [bold]vitlab pretrain --backbone demo:fmnist-vit --data sample:digits --monitor sample:digits --method dino --epochs 3[/]
    then [bold]vitlab eval --backbone runs/pretrain/<run>/model.vitlab --data sample:digits --protocol knn,linear[/]
    """
    from vitlab.pretraining import pretrain

    check_outputs(dirs={"--out": out})
    res = pretrain(backbone, data, monitor=monitor, method=method, seed=seed, test_fraction=test_fraction,
                   n_resamples=n_resamples, verdict_protocols=verdict_protocol, nproc=nproc,
                   device=device_arg(device), out=out, cache_dir=cache_dir, progress=progress_setting(quiet), pretrained=pretrained,
                   **_recipe(epochs, max_steps, batch_size, lr, head_lr, layer_decay, head_warmup, monitor_every,
                             monitor_protocol, collapse_guard, precision, checkpoint_minutes, val_fraction))
    _report(res, json_out)


@app.command("distill")
@friendly_errors
def distill_cmd(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher backbone(s), comma-separated: A,B."),
    student: str = typer.Option(..., "--student", "-s", help="Student: random:<name> or any backbone spec."),
    student_kwargs: Optional[str] = typer.Option(None, "--student-kwargs",
                                                 help="Student loader options, e.g. depth=3,embed_dim=64,num_heads=2."),
    data: str = typer.Option(..., "--data", "-d", help="Unlabelled training images."),
    monitor: Optional[str] = Monitor,
    epochs: int = Epochs, max_steps: Optional[int] = MaxSteps, batch_size: int = Batch, lr: Optional[float] = Lr,
    head_lr: float = HeadLr, layer_decay: Optional[float] = LayerDecay, head_warmup: Optional[str] = HeadWarmup,
    monitor_every: Optional[int] = MonitorEvery, monitor_protocol: str = MonitorProto,
    verdict_protocol: str = VerdictProto, collapse_guard: bool = Guard, precision: str = Precision,
    val_fraction: float = ValFraction,
    checkpoint_minutes: float = CkptMin, nproc: int = Nproc, seed: int = Seed, test_fraction: float = TestFraction,
    n_resamples: int = Resamples, speed: bool = typer.Option(True, "--speed/--no-speed",
                                                               help="Measure the student's speed-up (vitlab bench)."),
    device: str = Device, cache_dir: Optional[Path] = CacheDir, out: Path = RunsOut, json_out: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Distil one or more teachers into a student on unlabelled images (CLS and patch features through adaptors),
    monitored like pretrain; the student is judged against the teacher and its start, with its speed-up.

    Example: [bold]vitlab distill --teacher demo:fmnist-vit --student random:demo:fmnist-vit --student-kwargs depth=3 --data idx:/usr/share/datasets/fashion-mnist?split=train --monitor sample:fashion-mnist --max-steps 300[/]
    """
    from vitlab._spec import parse_value, split_top
    from vitlab.errors import ConfigError
    from vitlab.pretraining import distill

    kwargs: dict[str, Any] = {}
    for piece in filter(None, split_top(student_kwargs or "", ",", "--student-kwargs")):
        k, eq, v = piece.partition("=")
        if not eq or not k.strip():
            raise ConfigError(f"--student-kwargs takes key=value pairs such as depth=3,embed_dim=64; got {piece!r}.")
        val = parse_value(v)
        kwargs[k.strip()] = tuple(val) if isinstance(val, list) else val
    check_outputs(dirs={"--out": out})
    res = distill(teacher, student, data, monitor=monitor, seed=seed, test_fraction=test_fraction,
                  n_resamples=n_resamples, verdict_protocols=verdict_protocol, nproc=nproc,
                  device=device_arg(device), out=out, cache_dir=cache_dir, progress=progress_setting(quiet), student_kwargs=kwargs or None, speed=speed,
                  **_recipe(epochs, max_steps, batch_size, lr, head_lr, layer_decay, head_warmup, monitor_every,
                            monitor_protocol, collapse_guard, precision, checkpoint_minutes, val_fraction))
    _report(res, json_out)
