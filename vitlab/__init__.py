"""vitlab: a workbench for Vision Transformer foundation models.

Example:
    >>> import vitlab
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> src = vitlab.load_source("sample:digits?limit=64")
    >>> emb = vitlab.embed(bb, src, layers=[-1, -4], pool="cls+mean", progress=False)
    >>> emb.get().shape
    (64, 192)
"""

from vitlab._version import __version__  # noqa: E402,F401

from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from vitlab.backbones import Backbone, load_backbone  # noqa: E402
from vitlab.data import DataSource, load_source  # noqa: E402
from vitlab.errors import VitlabError  # noqa: E402
from vitlab.store import Embeddings, EmbeddingStore  # noqa: E402


def embed(backbone: Backbone | str, source: DataSource | str, *, cache_dir: str | Path | None = None,
          accel: str | None = None, **kwargs: Any) -> Embeddings:
    """Embed a data source with a backbone through the cache (computing only what is missing).

    Args:
        backbone: a :class:`Backbone` or a name such as ``"dinov2-s"`` or ``"demo:fmnist-vit"``.
        source: a :class:`DataSource` or a URI such as ``"folder:./my_images"``.
        cache_dir: cache root (default ``$VITLAB_CACHE_DIR`` or the user cache dir).
        accel: an accelerator spec such as ``"tome:r=8"`` or ``"tome:r=8+int8"`` applied to a copy of
            the backbone first (PTQ variants calibrate on 32 images of ``source``); part of the cache key.
        **kwargs: see :meth:`EmbeddingStore.get_or_compute` (``layers``, ``pool``, ``batch_size``,
            ``num_workers``, ``device``, ``precision``, ``on_error``, ``progress``, ``verify``,
            ``shard_size`` (``None``: shards of up to 4,096 rows written at least every ~30 s),
            ``view`` (``"tokens"``: also store the patch tokens ``[n, N, C]`` of each layer, read with
            ``emb.tokens(layer)``; a separate cache entry), ``token_dtype`` (``"float32"`` or
            ``"float16"``, half the size)...).

    Example:
        >>> import vitlab
        >>> emb = vitlab.embed("demo:fmnist-vit", "sample:digits?limit=64", progress=False)
        >>> emb.labels[:3]
        array([0, 1, 2])
        >>> tok = vitlab.embed("demo:fmnist-vit", "sample:digits?limit=64", view="tokens", token_dtype="float16")
        >>> tok.tokens().shape, tok.grid
        ((64, 49, 96), (7, 7))
    """
    from vitlab._io import cache_root, use_cache_root

    if accel and accel != "none":
        from vitlab.accel import apply_accel

        with use_cache_root(cache_root(cache_dir)):  # the caches of loading (specs/, wds-index/) follow cache_dir
            source = load_source(source)
            if isinstance(backbone, str):
                backbone = load_backbone(backbone, pretrained=kwargs.pop("pretrained", True),
                                         device=kwargs.get("device") or "cpu")
        backbone = apply_accel(backbone, accel, calib=source)
    return EmbeddingStore(cache_dir).get_or_compute(backbone, source, **kwargs)


_LAZY = {"evaluate": "vitlab.evaluation", "compare": "vitlab.comparison", "gen_eval": "vitlab.generative",
         "gen_stats": "vitlab.generative", "bench": "vitlab.perf", "benchmark": "vitlab.perf",
         "tradeoff": "vitlab.perf", "mil_eval": "vitlab.evaluation",
         "inspect_model": "vitlab.inspect.api", "robust": "vitlab.inspect.robust", "curate": "vitlab.curation",
         "tune": "vitlab.tuning.evaluate", "pretrain": "vitlab.pretraining.run",
         "distill": "vitlab.pretraining.distillation", "explore": "vitlab.exploration"}


def __getattr__(name: str) -> Any:
    """The heavier entry points load on first use, so ``import vitlab`` (and a cache hit from the CLI) stays
    light: scikit-learn, SciPy and matplotlib are imported only by what needs them."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vitlab' has no attribute {name!r}")


__all__ = ["evaluate", "compare", "mil_eval", "inspect_model", "robust", "curate", "explore", "tune", "pretrain", "distill", "gen_eval", "gen_stats", "bench", "benchmark", "tradeoff", "__version__", "load_backbone", "load_source", "embed", "Backbone", "DataSource", "Embeddings",
           "EmbeddingStore", "VitlabError"]
