"""``vitlab ls``, ``vitlab embed`` and ``vitlab cache ls|clear``. Each parses options, calls one public function and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from vitlab.cli.options import (BatchSize, CacheDir, Device, OnError, Overwrite, Pool, Precision, Pretrained, Quiet,
                                app, cache_app, hidden_alias, json_option)
from vitlab.cli.common import (at_least, check_outputs, console, deprecated, device_arg, friendly_errors,
                               num_workers_option, parse_int_list, print_json, progress_setting)

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
    device: str = Device,
    batch_size: int = BatchSize,
    num_workers: Optional[int] = num_workers_option(),
    precision: Precision = typer.Option(Precision.auto, help="auto = bf16 autocast on CUDA, fp32 on CPU."),
    on_error: OnError = typer.Option(OnError.raise_, help="raise on a bad image, or skip it (skips are listed)."),
    cache_dir: Optional[Path] = CacheDir,
    export: Optional[Path] = typer.Option(None, help="Also write the embeddings to an .npz file (features, labels, "
                                                     "ids); the name must end in .npz."),
    overwrite: bool = Overwrite,
    json_out: bool = json_option("Print the summary as one JSON document on stdout."),
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
    check_outputs(files={"--export": (export, "npz-export")}, inputs=(data, backbone), overwrite=overwrite)
    extra = {} if shard_size is None else {"shard_size": shard_size}  # only when given: the store's default is adaptive
    if view != "pooled" or token_dtype != "float32":  # only when given (the store checks the values)
        extra.update(view=view, token_dtype=token_dtype)
    if engine != "local" or ray_address is not None:  # only when given (the store checks the values)
        extra.update(engine=engine, ray_address=ray_address)
    if decoder is not None:
        extra["decoder"] = decoder
    emb = vitlab.embed(backbone, data, cache_dir=cache_dir, layers=layer_list, pool=pool.value,
                       pretrained=pretrained, device=device_arg(device), batch_size=batch_size, num_workers=num_workers,
                       precision=None if precision is Precision.auto else precision.value,
                       on_error=on_error.value, progress=progress_setting(quiet), verify=verify, accel=accel, **extra)
    summary = emb.summary()
    if export is not None:
        arrays = {f"L{layer}_{pool.value.replace('+', '_')}": emb.get(layer, pool.value) for layer in emb.layers}
        if emb.view == "tokens":
            arrays.update({f"L{layer}_tokens": emb.tokens(layer) for layer in emb.layers})
        from vitlab._io import atomic_path

        with atomic_path(export) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no suffix
            np.savez(f, **arrays, labels=emb.labels if emb.labels is not None else np.array([]),
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
             namespace: Optional[list[str]] = typer.Option(None, "--namespace", "-n",
                                                          help="Only these cache namespaces (repeatable): embeddings, "
                                                               "text, specs, wds-index, pca, tune-resume."),
             json_out: bool = json_option("Print the listing as one JSON document on stdout.")) -> None:
    """List what the cache holds: every namespace (embeddings, text embeddings, backbone specs, wds indexes,
    PCA fits, tune resume), and anything found there that is not vitlab's (left alone by cache clear).

    Example: [bold]vitlab cache ls[/]   ·   [bold]vitlab cache ls -n embeddings --json[/]
    """
    from vitlab._io import cache_root
    from vitlab.store.admin import cache_ls as ls

    root = cache_root(cache_dir)
    found = ls(root, namespace or None)
    if json_out:
        print_json({"root": str(root), "entries": [f.to_dict() for f in found if f.entry],
                    "left_alone": [f.to_dict() for f in found if not f.entry]})
        return
    t = Table(title=f"Cache at {root}", title_justify="left")
    for c in ("namespace", "entry", "what", "MB", "status"):
        t.add_column(c)
    for f in found:
        if f.entry:
            t.add_row(f.namespace, f.path.name[:24], escape(_what(f.namespace, f.info)), f"{f.bytes / 1e6:.1f}",
                      _status(f.info))
    console.print(t)
    _left_alone([f.to_dict() for f in found if not f.entry])


def _what(namespace: str, info: dict) -> str:
    if namespace == "embeddings":
        return f"{info.get('backbone')} on {info.get('source')} (n={info.get('n')}, layers {info.get('layers')})"
    return ", ".join(f"{k}={v}" for k, v in info.items() if k != "status")


def _status(info: dict) -> str:
    if info.get("complete") is False:
        return "[yellow]partial (resumable)[/]"
    return info.get("status", "complete")


def _left_alone(items: list[dict]) -> None:
    for x in items:
        console.print(f"[yellow]left alone:[/] {escape(x['path'])}: {escape(x['reason'])} (not a vitlab cache entry; "
                      "cache clear never touches it)", highlight=False, soft_wrap=True)


@cache_app.command("clear")
@friendly_errors
def cache_clear(digest: Optional[str] = typer.Argument(None, help="Entry name (digest) prefix; omit to clear "
                                                                  "everything."),
                cache_dir: Optional[Path] = CacheDir,
                namespace: Optional[list[str]] = typer.Option(None, "--namespace", "-n",
                                                             help="Only these cache namespaces (repeatable); "
                                                                  "default: all (see vitlab cache ls)."),
                yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
                json_out: bool = json_option("Print what was removed as one JSON document on stdout.")) -> None:
    """Delete cache entries (one by digest prefix, or all), in every namespace or those given with -n.

    Only vitlab's own entries are removed: real folders or files with the namespace's marker (key.json for
    embeddings); anything else under the cache dir, and every symbolic link, is listed and left alone.

    Example: [bold]vitlab cache clear 3fa2c1 --yes[/]   ·   [bold]vitlab cache clear -n text -n wds-index -y[/]
    """
    from vitlab._io import cache_root
    from vitlab.store.admin import cache_clear as clear, cache_ls as ls

    root = cache_root(cache_dir)
    found = [f for f in ls(root, namespace or None) if digest is None or f.path.name.startswith(digest)]
    n = sum(f.entry for f in found)
    what = f"{n} entr{'y' if n == 1 else 'ies'}" + (f" matching {digest}" if digest else "")
    if not yes and n and not typer.confirm(f"Delete {what} under {root}?"):
        raise typer.Exit(1)
    res = clear(root, namespace or None, digest) if n else {"removed": [], "in_use": [], "left_alone": [
        f.to_dict() for f in found]}
    if json_out:
        print_json(res)
        return
    by_ns: dict[str, int] = {}
    for f in found:
        if str(f.path) in res["removed"]:
            by_ns[f.namespace] = by_ns.get(f.namespace, 0) + 1
    console.print(f"removed {len(res['removed'])} entr(ies)"
                  + (f" ({', '.join(f'{k} {v}' for k, v in by_ns.items())})" if by_ns else ""), highlight=False)
    if res["in_use"]:
        console.print(f"[yellow]kept {len(res['in_use'])} entr(ies) in use by a running embed:[/] "
                      f"{', '.join(Path(p).name for p in res['in_use'])}. Run the clear again when it has finished.")
    _left_alone(res["left_alone"])


@cache_app.command("export")
@friendly_errors
def cache_export(
    digest: Optional[str] = typer.Argument(None, help="Digest (prefix) of a cached set, from `vitlab cache ls`; "
                                                      "or give --backbone and --data."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The output: x.parquet (one file), or a folder "
                                                                       "of part files with --rows-per-file "
                                                                       "(part-00000.parquet...). Required."),
    old_out: Optional[Path] = hidden_alias("--out"),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Backbone of the cached set."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data source of the cached set."),
    layers: str = typer.Option("-1", help="The layers the set was embedded with (as given to embed)."),
    layer: Optional[int] = typer.Option(None, help="Layer to export (default: the last of --layers)."),
    pool: Pool = typer.Option(Pool.cls, help="Pooling to export (cls+mean: both, concatenated)."),
    precision: Precision = typer.Option(Precision.auto, help="The precision the set was embedded with."),
    rows_per_file: Optional[int] = typer.Option(None, "--rows-per-file", callback=at_least(1),
                                                help="Rows per part file (--output is then a folder)."),
    compute: bool = typer.Option(False, "--compute", help="Embed the set first if it is not cached (as vitlab embed)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output."),
    pretrained: bool = Pretrained,
    device: str = typer.Option("auto", "--device", help="Device for --compute: cpu, cuda, cuda:N, mps, or auto "
                                                        "(cuda when available, else cpu)."),
    cache_dir: Optional[Path] = CacheDir,
    json_out: bool = json_option("Print the export summary as one JSON document on stdout."),
    quiet: bool = Quiet,
) -> None:
    """Export a cached embedding set to Parquet (id, label, class, embedding as fixed-size list<float32>).

    Nothing is recomputed: a set that is not cached is an error naming the embed command, unless --compute.

    Example: [bold]vitlab cache export -b demo:fmnist-vit -d sample:fashion-mnist -o fmnist.parquet[/]

    By digest, in parts: [bold]vitlab cache export 3fa2c1 --output emb/ --rows-per-file 1000000[/]
    """
    from vitlab.errors import ConfigError
    from vitlab.outputs import check_not_inputs, input_paths
    from vitlab.store.export import export_parquet

    output = deprecated("--out", "-o/--output", old_out, output, None)
    if output is None:
        raise ConfigError("cache export needs -o/--output: x.parquet (one file) or a folder with --rows-per-file.")
    check_not_inputs({"--output": output}, input_paths(data, backbone))
    info = export_parquet(output, digest=digest, backbone=backbone, data=data, cache_dir=cache_dir,
                          layers=parse_int_list(layers, "layers"), layer=layer, pool=pool.value,
                          precision=None if precision is Precision.auto else precision.value, compute=compute,
                          pretrained=pretrained, device=device_arg(device) if compute else None, overwrite=overwrite, rows_per_file=rows_per_file,
                          progress=progress_setting(quiet))
    if json_out:
        print_json(info)
        return
    console.print(f"{'[green]from cache[/]' if info['from_cache'] else '[yellow]computed[/]'}  {info['rows']:,} rows x "
                  f"{info['dim']} (layer {info['layer']}, {info['pool']}) → {info['path']} "
                  f"({len(info['files'])} file(s), {info['bytes'] / 1e6:.1f} MB)", highlight=False)
