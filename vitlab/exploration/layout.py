"""The 2-D map of an embedding set: UMAP (umap-learn), PCA (scikit-learn) or t-SNE (scikit-learn).

One pure entry point, :func:`compute_layout`, from ``X [n, d]`` and a frozen :class:`LayoutConfig` to a
:class:`Layout` (``xy [n, 2]``). Every method is seeded: the same inputs and config give the same map.

Large sets are fitted on a seeded sample of ``fit_sample`` rows (default :data:`DEFAULT_FIT_SAMPLE`) and the
other rows are *placed* into that map:

* ``umap``: ``UMAP.transform`` (umap-learn's own out-of-sample embedding);
* ``pca``: the fitted projection (exact: PCA is linear);
* ``tsne``: t-SNE has no out-of-sample map (scikit-learn's ``TSNE`` has no ``transform``), so each other row
  goes to the similarity-weighted mean position of its ``min(10, m)`` nearest fitted rows, found with
  :func:`vitlab.neighbors.search` (weights: cosine similarity clipped at 0, or ``1 / (1 + squared distance)``).

``metric="cosine"`` (the default: foundation-model embeddings are compared by angle everywhere else in
vitlab) is UMAP's and t-SNE's ``metric="cosine"``; PCA then projects the L2-normalised rows.

Example:
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (50, 8)), rng.normal(6, 1, (50, 8))])
    >>> lay = compute_layout(X, LayoutConfig(method="pca", metric="euclidean", fit_sample=60))
    >>> lay.xy.shape, len(lay.fit_rows), lay.info["transformed"]
    ((100, 2), 60, 40)
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError

__all__ = ["LayoutConfig", "Layout", "compute_layout", "check_layout_dependencies", "METHODS", "METRICS",
           "DEFAULT_FIT_SAMPLE", "TSNE_PLACE_K"]

METHODS = ("umap", "pca", "tsne")
METRICS = ("cosine", "euclidean")
#: Rows the layout is fitted on; a larger set is fitted on a seeded sample of this many rows and the rest is
#: placed into the map (UMAP on 20,000 rows and the transform of 80,000 more: BENCHMARKS.md).
DEFAULT_FIT_SAMPLE = 20_000
#: t-SNE: nearest fitted rows whose weighted mean places a row outside the fitted sample.
TSNE_PLACE_K = 10
_EXTRA = "pip install 'vitlab[explore]'"


@dataclass(frozen=True)
class LayoutConfig:
    """How the map is made (validated here; recorded in the run record and part of the cache key).

    Attributes:
        method: ``umap`` (default), ``pca`` (instant) or ``tsne``.
        n_neighbors, min_dist: UMAP's (15 and 0.1, umap-learn's defaults).
        perplexity: t-SNE's (30, scikit-learn's default).
        metric: ``cosine`` or ``euclidean``.
        fit_sample: the most rows a layout is fitted on (the rest are placed into it).
        seed: seeds UMAP / t-SNE / randomized PCA and the fit sample.

    Example:
        >>> LayoutConfig(method="umap", n_neighbors=1)
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: UMAP's n_neighbors must be an integer >= 2, got 1; e.g. 15.
    """

    method: str = "umap"
    n_neighbors: int = 15
    min_dist: float = 0.1
    perplexity: float = 30.0
    metric: str = "cosine"
    fit_sample: int = DEFAULT_FIT_SAMPLE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown layout {self.method!r}; choose one of {', '.join(METHODS)}.")
        if self.metric not in METRICS:
            raise ConfigError(f"unknown layout metric {self.metric!r}; choose one of {', '.join(METRICS)}.")
        if isinstance(self.n_neighbors, bool) or not isinstance(self.n_neighbors, (int, np.integer)) \
                or self.n_neighbors < 2:
            raise ConfigError(f"UMAP's n_neighbors must be an integer >= 2, got {self.n_neighbors!r}; e.g. 15.")
        if not 0.0 <= float(self.min_dist) <= 1.0:
            raise ConfigError(f"UMAP's min_dist must be in [0, 1], got {self.min_dist!r}; e.g. 0.1.")
        if not float(self.perplexity) > 0:
            raise ConfigError(f"t-SNE's perplexity must be > 0, got {self.perplexity!r}; e.g. 30.")
        if isinstance(self.fit_sample, bool) or not isinstance(self.fit_sample, (int, np.integer)) \
                or self.fit_sample < 3:
            raise ConfigError(f"fit_sample must be an integer >= 3, got {self.fit_sample!r}; e.g. "
                              f"{DEFAULT_FIT_SAMPLE}.")
        if self.method == "umap" and self.fit_sample <= self.n_neighbors:
            raise ConfigError(f"fit_sample={self.fit_sample} must be larger than UMAP's n_neighbors="
                              f"{self.n_neighbors}.")

    def params(self) -> dict[str, Any]:
        """The settings that shape this method's map (the others are left out of records and cache keys).

        Example:
            >>> LayoutConfig(method="pca").params()
            {'method': 'pca', 'metric': 'cosine', 'fit_sample': 20000, 'seed': 0}
        """
        d = asdict(self)
        drop = {"umap": ("perplexity",), "pca": ("n_neighbors", "min_dist", "perplexity"),
                "tsne": ("n_neighbors", "min_dist")}[self.method]
        return {k: v for k, v in d.items() if k not in drop}

    def check_size(self, n: int, what: str = "the data") -> None:
        """Refuse data too small for this method, before any work (one line naming the fix).

        Example:
            >>> LayoutConfig().check_size(10, "sample:x")
            Traceback (most recent call last):
            ...
            vitlab.errors.DataError: sample:x has 10 items, fewer than UMAP needs (more than n_neighbors=15). Pass --neighbors 9 or less, or --layout pca.
        """
        if n < 3:
            raise DataError(f"{what} has {n} item(s); a 2-D map needs at least 3.")
        if self.method == "umap" and n <= self.n_neighbors:
            raise DataError(f"{what} has {n} items, fewer than UMAP needs (more than n_neighbors="
                            f"{self.n_neighbors}). Pass --neighbors {max(2, n - 1)} or less, or --layout pca.")
        if self.method == "tsne" and min(n, self.fit_sample) <= self.perplexity:
            raise DataError(f"{what} has {min(n, self.fit_sample)} items to fit, not more than t-SNE's perplexity="
                            f"{self.perplexity:g}. Pass --perplexity {max(1, min(n, self.fit_sample) // 3)}, or "
                            "--layout pca.")


@dataclass
class Layout:
    """A 2-D map of ``n`` rows.

    Attributes:
        xy: ``[n, 2]`` float32 coordinates (the method's own units).
        fit_rows: ``[m]`` int64 rows the method was fitted on (sorted; all rows when ``n <= fit_sample``).
        config: the :class:`LayoutConfig`.
        info: ``method``, ``n``, ``fitted``, ``transformed``, ``library`` and its version, ``fit_s``,
            ``transform_s``, ``placement`` (how rows outside the fit sample were placed), ``from_cache``.
    """

    xy: np.ndarray
    fit_rows: np.ndarray
    config: LayoutConfig
    info: dict[str, Any] = field(default_factory=dict)


def _library(method: str) -> tuple[str, str]:
    """``(distribution, module)`` that computes ``method``."""
    return ("umap-learn", "umap") if method == "umap" else ("scikit-learn", "sklearn")


def check_layout_dependencies(method: str) -> None:
    """Refuse, before any work, a method whose library is not installed (one line naming the extra).

    Example:
        >>> check_layout_dependencies("pca")
    """
    dist, module = _library(method)
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"--layout {method} needs {dist}, which is not installed: {_EXTRA} (or use --layout pca).")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def fit_sample_rows(n: int, fit_sample: int, seed: int) -> np.ndarray:
    """The rows a layout is fitted on: all ``n`` when ``n <= fit_sample``, else a seeded sample, sorted.

    Example:
        >>> fit_sample_rows(5, 10, 0).tolist(), len(fit_sample_rows(100, 10, 0))
        ([0, 1, 2, 3, 4], 10)
    """
    if n <= fit_sample:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, fit_sample, replace=False)).astype(np.int64)


def _prepare(X: np.ndarray, metric: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise DataError(f"a layout needs one vector per item [n, d]; got shape {X.shape}.")
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X).all(1)).sum())
        raise DataError(f"{bad} embedding row(s) hold NaN or inf; re-embed them (check --precision) or drop them.")
    if metric == "cosine":  # the map of directions: UMAP / t-SNE use cosine; PCA projects unit vectors
        X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(X)


def _umap(Xf: np.ndarray, cfg: LayoutConfig) -> Any:
    import warnings

    import umap  # noqa: PLC0415 - optional (vitlab[explore])

    reducer = umap.UMAP(n_neighbors=int(cfg.n_neighbors), min_dist=float(cfg.min_dist), metric=cfg.metric,
                        n_components=2, random_state=int(cfg.seed), transform_seed=int(cfg.seed))
    with warnings.catch_warnings():  # "n_jobs overridden by setting random_state": seeded means single-threaded
        warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
        return reducer.fit_transform(Xf), reducer.transform


def _pca(Xf: np.ndarray, cfg: LayoutConfig) -> Any:
    from sklearn.decomposition import PCA

    k = min(2, Xf.shape[1], Xf.shape[0])
    pca = PCA(n_components=k, svd_solver="full", random_state=int(cfg.seed)).fit(Xf)

    def project(Z: np.ndarray) -> np.ndarray:
        out = np.zeros((len(Z), 2), np.float64)
        out[:, :k] = pca.transform(Z)
        return out

    return project(Xf), project


def _tsne(Xf: np.ndarray, cfg: LayoutConfig) -> Any:
    from sklearn.manifold import TSNE

    from vitlab.neighbors import search

    Y = TSNE(n_components=2, perplexity=float(cfg.perplexity), metric=cfg.metric, init="pca",
             random_state=int(cfg.seed)).fit_transform(Xf)

    def place(Z: np.ndarray) -> np.ndarray:
        nn = search(Z, Xf, min(TSNE_PLACE_K, len(Xf)), metric="cosine" if cfg.metric == "cosine" else "l2")
        w = np.clip(nn.scores, 0.0, None) + 1e-6 if cfg.metric == "cosine" else 1.0 / (1.0 + nn.scores)
        return (w[:, :, None] * Y[nn.indices]).sum(1) / w.sum(1, keepdims=True)

    return Y, place


_FITTERS = {"umap": _umap, "pca": _pca, "tsne": _tsne}
_PLACEMENT = {"umap": "UMAP.transform", "pca": "PCA projection",
              "tsne": f"similarity-weighted mean of the {TSNE_PLACE_K} nearest fitted rows"}


def compute_layout(X: np.ndarray, config: LayoutConfig | None = None) -> Layout:
    """The 2-D map of ``X [n, d]``: fitted on at most ``config.fit_sample`` rows, the rest placed into it.

    Args:
        X: ``[n, d]`` embeddings (row order kept: ``xy[i]`` is row ``i``).
        config: the method and its settings (default: UMAP, cosine, seed 0).

    Returns:
        :class:`Layout` with ``xy [n, 2]`` float32.

    Raises:
        ConfigError: the method's library is missing (names the extra).
        DataError: too few rows for the method, or non-finite rows.

    Example:
        >>> X = np.random.default_rng(0).normal(size=(30, 4))
        >>> compute_layout(X, LayoutConfig(method="pca")).xy.dtype
        dtype('float32')
    """
    cfg = config or LayoutConfig()
    check_layout_dependencies(cfg.method)
    Xf = _prepare(X, cfg.metric)
    n = len(Xf)
    cfg.check_size(n)
    rows = fit_sample_rows(n, int(cfg.fit_sample), int(cfg.seed))
    t0 = time.perf_counter()
    Y, place = _FITTERS[cfg.method](Xf[rows], cfg)
    fit_s = time.perf_counter() - t0
    xy = np.empty((n, 2), np.float64)
    xy[rows] = Y
    rest = np.setdiff1d(np.arange(n), rows)
    t0 = time.perf_counter()
    if len(rest):
        xy[rest] = place(Xf[rest])
    transform_s = time.perf_counter() - t0
    if not np.isfinite(xy).all():
        raise DataError(f"the {cfg.method} layout produced non-finite coordinates; try --layout pca.")
    dist = _library(cfg.method)[0]
    info = {"method": cfg.method, "n": int(n), "fitted": int(len(rows)), "transformed": int(len(rest)),
            "placement": _PLACEMENT[cfg.method] if len(rest) else None, "library": dist, "version": _version(dist),
            "fit_s": round(fit_s, 3), "transform_s": round(transform_s, 3), "from_cache": False}
    return Layout(xy.astype(np.float32), rows, cfg, info)
