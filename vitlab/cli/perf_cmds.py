"""``vitlab bench`` and ``vitlab tradeoff``: how much faster each accelerator is, and what it costs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich import box
from rich.table import Table

from vitlab.cli.options import (CacheDir, Device, Json, Out, Overwrite, Pretrained, Quiet, app, batch_size_option,
                                hidden_alias, n_resamples_option, seed_option)
from vitlab.cli.common import (check_outputs, console, deprecated, device_arg, friendly_errors, note,
                               num_workers_option, parse_int_list, print_json, progress_setting)
from vitlab.report.perf_figures import bench_rows, tradeoff_plot_uri
from vitlab.report.tables import fmt



class Dtype(str, Enum):
    """The timed precision (``--precision``; ``--dtype`` is its old, hidden spelling)."""
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


PrecisionOpt = typer.Option(Dtype.fp32, "--precision", help="Timed precision: fp32, or bf16/fp16 autocast.")
OldDtype = hidden_alias("--dtype")


def _f(x: Any, spec: str = ".3g") -> str:
    return "–" if x is None else format(x, spec)


def bench_table(rows: list[dict[str, Any]], title: str, baseline: str = "none") -> Table:
    """Rich table of :func:`vitlab.report.perf_figures.bench_rows` rows."""
    t = Table(title=title, title_justify="left", caption=f"median img/s; speed-up vs {escape(baseline)} from per-repeat paired "
              "ratios; latency at batch 1; FLOPs per image; min/max and params in --json.", caption_justify="left")
    # compact enough for an 80-column terminal; every field is in the run record (--json / --out)
    t.box, t.pad_edge, t.collapse_padding = box.SIMPLE_HEAD, False, True
    for c in ("variant", "img/s", "speed-up", "p50/p95 ms", "GFLOPs", "peak MB"):
        t.add_column(c, justify="left" if c == "variant" else "right", no_wrap=True)
    for r in rows:
        if r.get("error"):
            t.add_row(escape(r["variant"]), f"[red]failed: {escape(str(r['error']))}[/]", *[""] * 4)
            continue
        t.add_row(escape(r["variant"]), f"{r['images_per_s']:.1f}",
                  "–" if r["speedup"] is None else f"{r['speedup']:.2f}×",
                  f"{r['latency_p50_ms']:.0f}/{r['latency_p95_ms']:.0f}", _f(r["gflops"], ".3g"),
                  _f(r["peak_memory_mb"], ".0f"))
    return t


@app.command("bench")
@friendly_errors
def bench_cmd(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Alias or <source>:<model>."),
    accel: str = typer.Option("none", "--accel", "-a", help="Variants, e.g. none,tome:r=8,evit:keep=0.7,int8,w8a8 "
                                                          "('+' chains; none is added when missing; see vitlab ls)."),
    pretrained: bool = Pretrained,
    device: str = Device,
    precision: Dtype = PrecisionOpt,
    old_dtype: Optional[Dtype] = OldDtype,
    img_size: Optional[int] = typer.Option(None, help="Input size (timm: models are built at this size)."),
    batch_size: int = batch_size_option("Images per timed forward (throughput)."),
    compile: bool = typer.Option(False, "--compile", help="Time torch.compile'd forward passes."),
    warmup: int = typer.Option(3, help="Untimed forwards per variant first."),
    repeats: int = typer.Option(10, help="Timed iterations per variant (interleaved across variants)."),
    min_time: float = typer.Option(0.1, help="Each timed iteration lasts at least this many seconds."),
    latency_repeats: int = typer.Option(30, help="Batch-1 forwards per variant for latency p50/p95."),
    calib_data: Optional[str] = typer.Option(None, "--calib-data", help="Calibration images for PTQ variants "
                                                                      "(w8a8...), a data URI."),
    calib_images: int = typer.Option(32, "--calib-images", help="Images drawn (seeded) from --calib-data to "
                                                                "calibrate PTQ variants."),
    seed: int = seed_option("Seeds inputs, random weights and calibration draws."),
    out: Optional[Path] = Out,
    json_out: bool = Json,
) -> None:
    """Benchmark accelerator variants of one backbone: images/s, latency, memory, params, FLOPs.

    Variants are timed in one interleaved loop; speed-ups are against [bold]none[/] from the same run.

    Example: [bold]vitlab bench --backbone timm:vit_small_patch16_224 --no-pretrained --batch-size 32 --accel none,tome:r=8,tome:r=13,evit:keep=0.7,int8[/]
    """
    from vitlab.perf import bench

    dtype = deprecated("--dtype", "--precision", old_dtype, precision, Dtype.fp32)
    check_outputs(dirs={"--out": out}, inputs=(backbone, calib_data))
    res = bench(backbone, accel, calib=calib_data, calib_images=calib_images, pretrained=pretrained,
                batch_size=batch_size, img_size=img_size, device=device_arg(device), dtype=dtype.value, compile=compile, warmup=warmup, repeats=repeats, min_time=min_time,
                latency_repeats=latency_repeats, seed=seed, out=out)
    if json_out:
        print_json(res.record.to_dict())
        return
    c, m = res.record.config, res.record.details["machine"]
    title = (f"{c['backbone']} · {c['device']} {c['dtype']} · batch {c['batch_size']} · "
             f"{c['img_size'][0]}×{c['img_size'][1]}{' · compiled' if compile else ''}")
    console.print(bench_table(bench_rows(res.record), escape(title), res.baseline))
    note(f"[dim]{m.get('cpu_count')} CPUs, {m.get('torch_threads')} torch threads, load "
         f"{m.get('load_avg_1m', '?')}; rough figures on this machine, ratios from the same run.[/]")
    if res.path:
        console.print(f"run record → {res.path}")


def _ci(d: dict[str, Any] | None, key: str = "value", digits: int = 3) -> str:
    if not d or d.get(key) is None:
        return "–"
    lo = f" [{d['low']:.{digits}f}, {d['high']:.{digits}f}]" if d.get("low") is not None else ""
    return f"{d[key]:.{digits}f}{lo}"


def tradeoff_table(record: Any) -> Table:
    """Rich table of a ``"tradeoff"`` record."""
    head = record.config["headline"]
    t = Table(title=escape(f"{record.config['backbone']} on {record.config['dataset']} · {head}"), title_justify="left")
    # compact for an 80-column terminal; CIs of the accuracy itself and p-values are in the record / report
    t.box, t.pad_edge, t.collapse_padding = box.SIMPLE_HEAD, False, True
    for c in ("variant", "img/s", "speed", "FLOPs÷", "top-1", "Δ top-1 [95% CI]", "★"):
        t.add_column(c, justify="left" if c == "variant" else "right", no_wrap=True)
    for r in record.details["table"]:
        key = "exit" if r["kind"] == "early_exit" else head
        name = escape(r["variant"]) + (" (exit)" if r["kind"] == "early_exit" else "")
        if r.get("error"):
            t.add_row(name, f"[red]benchmark failed: {escape(str(r['error']))}[/]", *[""] * 5)
            continue
        d = (r.get("delta") or {}).get(key)
        sig = d is not None and (d["low"] > 0 or d["high"] < 0)
        delta = "–" if d is None else \
            f"{fmt(d['diff'], signed=True)} [{fmt(d['low'], signed=True)}, {fmt(d['high'], signed=True)}]"
        sp = r.get("speedup") or {}
        acc = (r.get("accuracy") or {}).get(key) or {}
        t.add_row(name, _f(r.get("images_per_s"), ".0f") + ("*" if r.get("images_per_s_derived") else ""),
                  "–" if sp.get("value") is None else f"{sp['value']:.2f}×", _f(r.get("flops_reduction"), ".2f"),
                  fmt(acc.get("value")), f"[red]{escape(delta)}[/]" if sig and d["diff"] < 0 else escape(delta),
                  "★" if r.get("pareto") else "")
    return t


@app.command("tradeoff")
@friendly_errors
def tradeoff_cmd(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Alias or <source>:<model>."),
    data: str = typer.Option(..., "--data", "-d", help="Labelled data: folder:, csv:, idx:, sample:."),
    accel: str = typer.Option("none,tome:r=8,evit:keep=0.7,int8", "--accel", "-a",
                              help="Variants; also early_exit or exit:threshold=0.9 (none is added when missing)."),
    protocol: str = typer.Option("knn", "--protocol", "-p", help="Classification protocols, e.g. knn or knn:ks=[10],linear (the first is the headline)."),
    layers: str = typer.Option("-1", help="Comma-separated block indices (negative from the end); the last is "
                                          "the one compared."),
    pool: str = typer.Option("auto", help="cls, mean, cls+mean or auto."),
    seed: int = seed_option("Seeds the split, protocols, bootstrap, calibration draw and inputs."),
    test_fraction: float = typer.Option(0.2, help="Test fraction when the data has no split column."),
    n_resamples: int = n_resamples_option("Bootstrap resamples per CI."),
    pretrained: bool = Pretrained,
    device: str = Device,
    precision: Dtype = PrecisionOpt,
    old_dtype: Optional[Dtype] = OldDtype,
    batch_size: int = batch_size_option("Images per timed forward."),
    repeats: int = typer.Option(7, help="Timed iterations per variant."),
    calib_images: int = typer.Option(32, "--calib-images", help="Images drawn (seeded) from the train split of "
                                                                "--data to calibrate PTQ variants."),
    num_workers: Optional[int] = num_workers_option("DataLoader workers for embedding [default: CPUs - 1, at most "
                                                    "8]; 0 = main process."),
    cache_dir: Optional[Path] = CacheDir,
    plot: Optional[Path] = typer.Option(None, help="Also write the Pareto plot as a PNG file."),
    overwrite: bool = Overwrite,
    out: Optional[Path] = Out,
    json_out: bool = Json,
    quiet: bool = Quiet,
) -> None:
    """Accuracy vs speed of accelerators: per variant speed-up, FLOPs, accuracy change with CIs, Pareto front.

    Example: [bold]vitlab tradeoff --backbone demo:fmnist-vit --data sample:fashion-mnist --protocol knn --accel none,tome:r=2,tome:r=4,evit:keep=0.7,int8,w6a6 --out runs/[/]
    """
    from vitlab.evaluation import check_eval_config
    from vitlab.perf import tradeoff

    dtype = deprecated("--dtype", "--precision", old_dtype, precision, Dtype.fp32)
    layer_list = parse_int_list(layers, "layers")
    check_eval_config(protocols=protocol, test_fraction=test_fraction, n_resamples=n_resamples, pool=pool)
    check_outputs(dirs={"--out": out}, files={"--plot": (plot, "png")}, inputs=(data, backbone), overwrite=overwrite)
    res = tradeoff(backbone, data, accel=accel, protocols=protocol, layers=layer_list[0] if len(layer_list) == 1
                   else layer_list, pool=pool, seed=seed, test_fraction=test_fraction, n_resamples=n_resamples,
                   pretrained=pretrained, device=device_arg(device), dtype=dtype.value, batch_size=batch_size, repeats=repeats,
                   calib_images=calib_images, num_workers=num_workers, cache_dir=cache_dir, out=out,
                   progress=progress_setting(quiet))
    if plot is not None:
        import base64

        from vitlab._io import atomic_write
        from vitlab.outputs import png_with_text

        atomic_write(plot, png_with_text(base64.b64decode(tradeoff_plot_uri(res.record).split(",", 1)[1])))
    if json_out:
        print_json(res.record.to_dict())
        return
    console.print(tradeoff_table(res.record))
    note("[dim]★ Pareto front (accuracy vs images/s). Red Δ: 95% CI below 0. * derived: baseline images/s × "
         "measured exit speed-up. Timings are rough figures on this machine.[/]")
    for label, ex in res.exits.items():
        p = ex.point
        console.print(f"{escape(label)}: threshold {p['threshold']:.2f} → accuracy {fmt(p['accuracy'], 4)} "
                      f"(last-layer head {fmt(ex.last_layer_accuracy, 4)}), measured speed-up {p['speedup']:.2f}×, "
                      f"mean exit layer {p['mean_exit_layer']:.2f}", highlight=False)
    if plot is not None:
        console.print(f"Pareto plot → {plot}")
    if res.paths:
        console.print(f"run records → {res.paths[-1].parent} ({len(res.paths)} files)")
