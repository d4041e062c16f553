"""The Typer application and the options every verb shares (one definition each).

The verb modules (``core_cmds``, ``eval_cmds``, ``gen_cmds``, ``perf_cmds``) import from here and
register their commands on :data:`app`; :mod:`vitlab.cli` imports them all. Nothing here imports a
verb module, so there is no import circle.

Example:
    >>> cache_app.info.help
    'Inspect, clear or export (Parquet) the cache (every namespace).'
"""

from __future__ import annotations

from enum import Enum

import typer

__all__ = ["app", "cache_app", "Pool", "OnError", "Precision", "CacheDir", "Out", "Json", "Pretrained", "Device",
           "BatchSize", "Overwrite"]

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="vitlab: compare, evaluate and accelerate Vision Transformer backbones on your images.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect, clear or export (Parquet) the cache (every namespace).")
app.add_typer(cache_app, name="cache")


class Pool(str, Enum):
    cls = "cls"
    mean = "mean"
    cls_mean = "cls+mean"


class OnError(str, Enum):
    raise_ = "raise"
    skip = "skip"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


CacheDir = typer.Option(None, "--cache-dir", help="Cache root of every cache (embeddings, text, specs, wds indexes, "
                                                  "PCA fits, tune resume) [default: $VITLAB_CACHE_DIR or "
                                                  "~/.cache/vitlab].")
Overwrite = typer.Option(False, "--overwrite", help="Replace existing output files that are not this command's own "
                                                    "earlier output (inputs are never replaced).")
Out = typer.Option(None, "--out", "-o", help="Directory for JSON run records.")
Json = typer.Option(False, "--json", help="Print the run record(s) as JSON on stdout.")
Pretrained = typer.Option(True, "--pretrained/--no-pretrained",
                          help="--no-pretrained: seeded random weights for hub backbones (timm:, hf:, open_clip:); "
                               "file: and demo: always load their weights (use random:<name> for a random copy).")
Device = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N.")
BatchSize = typer.Option(64, "--batch-size", help="Images per forward pass when embedding.")
