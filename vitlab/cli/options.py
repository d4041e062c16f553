"""The Typer application and the options every verb shares (one definition each, one default each).

The verb modules import from here and register their commands on :data:`app`; :mod:`vitlab.cli`
imports them all. Nothing here imports a verb module, so there is no import circle.

One name per concept, in every verb:

* ``-o/--out DIR``: the folder for run records (and a verb's artefacts) in every analysis verb;
* ``--report FILE``: a self-contained HTML report, in every verb that can write one;
* ``-o/--output FILE``: the one file a file-producing verb writes (``report``, ``gen-stats``,
  ``cache export``; ``explore``'s page is ``--output`` without ``-o``);
* ``--device`` (default ``auto``), ``--batch-size`` (default 64), ``--seed`` (0), ``--n-resamples``
  (1000), ``--json``, ``--quiet``, ``--pretrained/--no-pretrained``, ``--cache-dir``, ``--precision``;
* ``-b/--backbone``; ``-m`` only for ``--method``; ``--layer`` (one block) vs ``--layers`` (a list).

Old spellings stay as hidden options that print a one-line deprecation note on stderr
(:func:`vitlab.cli.common.deprecated`).

Example:
    >>> cache_app.info.help
    'Inspect, clear or export (Parquet) the cache (every namespace).'
    >>> Device.default, BatchSize.default, DEFAULT_SEED, DEFAULT_RESAMPLES
    ('auto', 64, 0, 1000)
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import typer

__all__ = ["app", "cache_app", "Pool", "OnError", "Precision", "CacheDir", "Out", "Json", "Pretrained", "Device",
           "BatchSize", "Overwrite", "Quiet", "Report", "DEFAULT_BATCH_SIZE", "DEFAULT_SEED", "DEFAULT_RESAMPLES",
           "batch_size_option", "seed_option", "n_resamples_option", "out_option", "json_option", "hidden_alias"]

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="vitlab: compare, evaluate and accelerate Vision Transformer backbones on your images.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect, clear or export (Parquet) the cache (every namespace).")
app.add_typer(cache_app, name="cache")

#: The one default of each shared option.
DEFAULT_DEVICE = "auto"
DEFAULT_BATCH_SIZE = 64
DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 1000


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
Pretrained = typer.Option(True, "--pretrained/--no-pretrained",
                          help="--no-pretrained: seeded random weights for hub backbones (timm:, hf:, open_clip:); "
                               "file: and demo: always load their weights (use random:<name> for a random copy).")
Device = typer.Option(DEFAULT_DEVICE, "--device", help="cpu, cuda, cuda:N, mps, or auto (cuda when available, "
                                                       "else cpu).")
Quiet = typer.Option(False, "--quiet", "-q", help="No progress bar, notes or warnings (results and errors still "
                                                  "show). Progress bars only appear when stderr is a terminal.")
Report = typer.Option(None, "--report", help="Also write a self-contained HTML report of this run to this FILE.")


def out_option(help: str = "Folder for the JSON run record(s) (created if missing; not a file: an HTML report is "
                           "--report FILE).", default: Any = None) -> Any:
    """``-o/--out DIR``: the folder for run records (``default`` None: no record written)."""
    return typer.Option(default, "--out", "-o", help=help)


def json_option(help: str = "Print the run record as one JSON document on stdout (notes stay on stderr).") -> Any:
    """``--json``: stdout holds exactly one JSON document."""
    return typer.Option(False, "--json", help=help)


def batch_size_option(help: str = "Images per forward pass when embedding.") -> Any:
    """``--batch-size`` with the one default (:data:`DEFAULT_BATCH_SIZE`); ``help`` says what a batch is here."""
    return typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", help=help)


def seed_option(help: str = "Seeds every random choice of the run (splits, protocols, bootstrap).") -> Any:
    """``--seed`` with the one default (:data:`DEFAULT_SEED`); ``help`` says what it seeds here."""
    return typer.Option(DEFAULT_SEED, "--seed", help=help)


def n_resamples_option(help: str = "Bootstrap resamples per confidence interval and paired test.") -> Any:
    """``--n-resamples`` with the one default (:data:`DEFAULT_RESAMPLES`). ``gen-eval`` alone defaults to
    each metric's own half-sample count (its option says so)."""
    return typer.Option(DEFAULT_RESAMPLES, "--n-resamples", help=help)


def hidden_alias(*names: str, default: Any = None) -> Any:
    """A deprecated spelling kept working but hidden from ``--help`` (see :func:`vitlab.cli.common.deprecated`)."""
    return typer.Option(default, *names, hidden=True)


Out = out_option()
Json = json_option()
BatchSize = batch_size_option()
