"""``vitlab ls``, ``vitlab embed`` and ``vitlab cache ls|clear``. Each parses options, calls one public function and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from vitlab.cli.options import CacheDir, OnError, Pool, Precision, Pretrained, app, cache_app
from vitlab.cli.common import (Quiet, at_least, check_outputs, console, friendly_errors, num_workers_option,
                               parse_int_list, print_json, progress_setting)

@app.command("ls")
@friendly_errors
def ls_cmd() -> None:
    """List backbone aliases, backbone sources and data-source kinds.

    Example: [bold]vitlab ls[/]
    """
    from vitlab.backbones import ALIASES, SOURCES
    from vitlab.data import list_kinds

    t = Table(title="Backbone aliases", title_justify="left")
    t.add_column("alias", style="cyan")
    t.add_column("full name")
    for alias, full in ALIASES.items():
        t.add_row(alias, full)
    console.print(t)
    t = Table(title="Backbone sources", title_justify="left")
    t.add_column("prefix", style="cyan")
    t.add_column("usage")
    for e in SOURCES:
        t.add_row(f"{e.name}:", e.help)
    console.print(t)
    from vitlab.accel import ACCELERATORS

    t = Table(title="Accelerators (--accel; chain with +)", title_justify="left")
    t.add_column("name", style="cyan")
    t.add_column("usage")
    for e in ACCELERATORS:
        t.add_row(e.name, e.help)
    console.print(t)
    import dataclasses

    from vitlab.protocols import PROTOCOLS, parse_protocols

    parse_protocols("knn")  # registers the built-in protocols
    t = Table(title="Protocols (--protocol; name:key=value to set parameters)", title_justify="left")
    t.add_column("name", style="cyan")
    t.add_column("task")
    t.add_column("usage")
    t.add_column("parameters [defaults]")
    for e in PROTOCOLS:
        cls = PROTOCOLS.get(e.name)
        params = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cls.default_config()).items())
        t.add_row(e.name, cls.task, e.help, params)
    console.print(t)
    t = Table(title="Data-source kinds", title_justify="left")
    t.add_column("kind", style="cyan")
    t.add_column("usage")
    for kind, usage in list_kinds().items():
        t.add_row(f"{kind}:", usage)
    console.print(t)


@app.command("embed")
@friendly_errors
def embed_cmd(
    backbone: str = typer.Option(..., "--backbone", "-b", help="Alias or <source>:<model>, e.g. dinov2-s, demo:fmnist-vit."),
    data: str = typer.Option(..., "--data", "-d", help="<kind>:<path>, e.g. folder:./my_images, sample:fashion-mnist."),
    layers: str = typer.Option("-1", help="Comma-separated block indices, negative from the end, e.g. -1,-4."),
    pool: Pool = typer.Option(Pool.cls, help="Pooling reported in the summary (cls and mean are always stored)."),
    pretrained: bool = Pretrained,
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N, mps or auto."),
    batch_size: int = typer.Option(64, help="Images per forward pass."),
    num_workers: Optional[int] = num_workers_option(),
    precision: Precision = typer.Option(Precision.auto, help="auto = bf16 autocast on CUDA, fp32 on CPU."),
    on_error: OnError = typer.Option(OnError.raise_, help="raise on a bad image, or skip it (skips are listed)."),
    cache_dir: Optional[Path] = CacheDir,
    export: Optional[Path] = typer.Option(None, help="Also write the embeddings to an .npz (features, labels, ids)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    verify: bool = typer.Option(False, help="Re-check checksums of cached arrays before reuse."),
    accel: Optional[str] = typer.Option(None, help="Accelerator applied to a copy of the backbone, e.g. tome:r=8, "
                                                   "evit:keep=0.7, int8, w8a8, tome:r=8+int8 (see vitlab ls)."),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", callback=at_least(1),
                                             help="rows per resumable shard [default: adaptive]"),
    view: str = typer.Option("pooled", "--view", help="pooled (vectors per layer), or tokens: also the patch "
                                                      "tokens [n, N, C] of each layer (a separate cache entry)."),
    token_dtype: str = typer.Option("float32", "--token-dtype", help="Storage of --view tokens: float32 or float16 "
                                                                     "(half the size)."),
    engine: str = typer.Option("local", "--engine", help="local (one DataLoader, one device) or ray: a Ray Data "
                                                         "actor pool, one actor per GPU or CPU actors; same cache "
                                                         "entry, same arrays (needs vitlab's ray extra)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Existing Ray cluster for --engine ray "
                                                                           "(auto, ray://head:10001); default: a "
                                                                           "local instance."),
    decoder: Optional[str] = typer.Option(None, "--decoder", help="Data path: pil (reference), tensor (resize as "
                                                                   "uint8 tensor), pil-draft / tensor-draft (JPEG "
                                                                   "draft-mode downscaling): faster, within a stated "
                                                                   "tolerance; its own cache entry."),
    quiet: bool = Quiet,
) -> None:
    """Compute (or fetch from the cache) embeddings of a data source.

    Example: [bold]vitlab embed --backbone demo:fmnist-vit --data sample:fashion-mnist --layers -1,-4 --pool cls+mean[/]

    The output says whether the data path (decode + resize) or the forward pass limits; large JPEGs:
    [bold]vitlab embed -b dinov2-s -d folder:./photos --decoder tensor-draft[/]

    Patch tokens: [bold]vitlab embed -b dinov2-s -d folder:./imgs --view tokens --token-dtype float16[/]

    On a Ray cluster: [bold]vitlab embed -b dinov2-b -d folder:/shared/imgs --engine ray --ray-address auto[/]
    """
    import numpy as np

    import vitlab

    layer_list = parse_int_list(layers, "layers")
    check_outputs(files={"--export": export})
    extra = {} if shard_size is None else {"shard_size": shard_size}  # only when given: the store's default is adaptive
    if view != "pooled" or token_dtype != "float32":  # only when given (the store checks the values)
        extra.update(view=view, token_dtype=token_dtype)
    if engine != "local" or ray_address is not None:  # only when given (the store checks the values)
        extra.update(engine=engine, ray_address=ray_address)
    if decoder is not None:
        extra["decoder"] = decoder
    emb = vitlab.embed(backbone, data, cache_dir=cache_dir, layers=layer_list, pool=pool.value,
                       pretrained=pretrained, device=device, batch_size=batch_size, num_workers=num_workers,
                       precision=None if precision is Precision.auto else precision.value,
                       on_error=on_error.value, progress=progress_setting(quiet), verify=verify, accel=accel, **extra)
    summary = emb.summary()
    if export is not None:
        arrays = {f"L{layer}_{pool.value.replace('+', '_')}": emb.get(layer, pool.value) for layer in emb.layers}
        if emb.view == "tokens":
            arrays.update({f"L{layer}_tokens": emb.tokens(layer) for layer in emb.layers})
        np.savez(export, **arrays, labels=emb.labels if emb.labels is not None else np.array([]),
                 ids=np.array(emb.ids), classes=np.array(emb.classes))
        summary["export"] = str(export)
    if json_out:
        print_json(summary)
        return
    s = summary["stats"]
    where = "[green]from cache[/]" if emb.from_cache else "[yellow]computed[/]"
    console.print(f"{where}  {summary['backbone']} on {summary['source']['kind']} "
                  f"({len(emb)} images) → {emb.path}")
    for layer in emb.layers:
        console.print(f"  layer {layer}: {pool.value} {list(emb.get(layer, pool.value).shape)}")
        if emb.view == "tokens":
            console.print(f"  layer {layer}: tokens {list(emb.tokens(layer).shape)} {emb.token_dtype} (grid "
                          f"{emb.grid[0]}x{emb.grid[1]}, {emb.num_prefix_tokens} prefix token(s) stripped)")
    if s:
        console.print(f"  {s['images_per_s']:.1f} img/s on {s['device']}, peak memory {s['peak_memory_mb']:.0f} MB "
                      f"({s['memory_kind']})")
        if "data_seconds" in s:
            console.print(f"  data path {s['data_seconds']:.2f} s, forward {s['forward_seconds']:.2f} s"
                          f"{_limit(s)}", highlight=False)
    if emb.skipped:
        console.print(f"[yellow]  skipped {len(emb.skipped)} image(s):[/]")
        for item in emb.skipped:
            console.print(f"    {item['id']}: {item['reason']}", highlight=False)
    if export is not None:
        console.print(f"  exported to {export}")


def _limit(stats: dict) -> str:
    """Which of data path and forward pass limits a run (the larger one)."""
    data, fwd = stats.get("data_seconds", 0.0), stats.get("forward_seconds", 0.0)
    if data <= 0 or fwd <= 0:
        return ""
    return " (the data path limits: more --num-workers)" if data > fwd else " (the forward pass limits)"


@cache_app.command("ls")
@friendly_errors
def cache_ls(cache_dir: Optional[Path] = CacheDir,
             json_out: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List cached embedding sets.

    Example: [bold]vitlab cache ls[/]
    """
    from vitlab.store import EmbeddingStore

    store = EmbeddingStore(cache_dir)
    rows = store.entries()
    if json_out:
        print_json(rows)
        return
    t = Table(title=f"Embedding cache at {store.root}", title_justify="left")
    for c in ("digest", "backbone", "source", "n", "layers", "MB", "status"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["digest"][:12], r["backbone"], r["source"], str(r["n"]), str(r["layers"]),
                  f"{r['bytes'] / 1e6:.1f}", "complete" if r["complete"] else "[yellow]partial (resumable)[/]")
    console.print(t)


@cache_app.command("clear")
@friendly_errors
def cache_clear(digest: Optional[str] = typer.Argument(None, help="Digest prefix; omit to clear everything."),
                cache_dir: Optional[Path] = CacheDir,
                yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> None:
    """Delete cached embeddings (one entry by digest prefix, or all).

    Example: [bold]vitlab cache clear 3fa2c1 --yes[/]
    """
    from vitlab.store import EmbeddingStore

    store = EmbeddingStore(cache_dir)
    if not yes and not typer.confirm(f"Delete {'entry ' + digest if digest else 'all entries'} under {store.root}?"):
        raise typer.Exit(1)
    res = store.clear_entries(digest)
    console.print(f"removed {res['removed']} entr(ies)")
    if res["in_use"]:
        console.print(f"[yellow]kept {len(res['in_use'])} entr(ies) in use by a running embed:[/] "
                      f"{', '.join(res['in_use'])}. Run the clear again when it has finished.")


@cache_app.command("export")
@friendly_errors
def cache_export(
    digest: Optional[str] = typer.Argument(None, help="Digest (prefix) of a cached set, from `vitlab cache ls`; "
                                                      "or give --backbone and --data."),
    out: Path = typer.Option(..., "--out", "-o", help="x.parquet (one file) or a folder (part-00000.parquet...)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Backbone of the cached set."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data source of the cached set."),
    layers: str = typer.Option("-1", help="The layers the set was embedded with (as given to embed)."),
    layer: Optional[int] = typer.Option(None, help="Layer to export (default: the last of --layers)."),
    pool: Pool = typer.Option(Pool.cls, help="Pooling to export (cls+mean: both, concatenated)."),
    precision: Precision = typer.Option(Precision.auto, help="The precision the set was embedded with."),
    rows_per_file: Optional[int] = typer.Option(None, "--rows-per-file", callback=at_least(1),
                                                help="Rows per part file (--out is then a folder)."),
    compute: bool = typer.Option(False, "--compute", help="Embed the set first if it is not cached (as vitlab embed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    pretrained: bool = Pretrained,
    device: Optional[str] = typer.Option(None, help="Device for --compute (default: cpu)."),
    cache_dir: Optional[Path] = CacheDir,
    json_out: bool = typer.Option(False, "--json", help="Print the export summary as JSON on stdout."),
    quiet: bool = Quiet,
) -> None:
    """Export a cached embedding set to Parquet (id, label, class, embedding as fixed-size list<float32>).

    Nothing is recomputed: a set that is not cached is an error naming the embed command, unless --compute.

    Example: [bold]vitlab cache export -b demo:fmnist-vit -d sample:fashion-mnist --out fmnist.parquet[/]

    By digest, in parts: [bold]vitlab cache export 3fa2c1 --out emb/ --rows-per-file 1000000[/]
    """
    from vitlab.store.export import export_parquet

    info = export_parquet(out, digest=digest, backbone=backbone, data=data, cache_dir=cache_dir,
                          layers=parse_int_list(layers, "layers"), layer=layer, pool=pool.value,
                          precision=None if precision is Precision.auto else precision.value, compute=compute,
                          pretrained=pretrained, device=device, overwrite=overwrite, rows_per_file=rows_per_file,
                          progress=progress_setting(quiet))
    if json_out:
        print_json(info)
        return
    console.print(f"{'[green]from cache[/]' if info['from_cache'] else '[yellow]computed[/]'}  {info['rows']:,} rows x "
                  f"{info['dim']} (layer {info['layer']}, {info['pool']}) → {info['path']} "
                  f"({len(info['files'])} file(s), {info['bytes'] / 1e6:.1f} MB)", highlight=False)
