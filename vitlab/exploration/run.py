"""``vitlab.explore``: everything the embedding explorer page shows, computed on the cached embeddings.

Data flows one way: source → backbone → store (the cached embeddings) → the map
(:mod:`vitlab.exploration.layout`, cached by :mod:`vitlab.exploration.cache`), each item's nearest neighbours
(:func:`vitlab.neighbors.search`), the eval split and a probe's predictions (:func:`vitlab.evaluation.evaluate`,
so the split and the probe are exactly those of ``vitlab eval --seed s``), duplicate groups (a ``curate`` run
record), label issues (:mod:`vitlab.exploration.issues`) → :class:`ExploreResult` (a run record and the page's
:class:`ExploreData`). The page itself is rendered by :func:`vitlab.report.explore_page.write_explore_page`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.exploration.cache import load_or_compute_layout
from vitlab.exploration.issues import check_label_issues, label_issue_columns
from vitlab.exploration.layout import DEFAULT_FIT_SAMPLE, Layout, LayoutConfig, check_layout_dependencies
from vitlab.record import RunRecord, start_record
from vitlab.outputs import check_output_dir, check_output_file

__all__ = ["explore", "ExploreResult", "ExploreData", "DEFAULT_K", "DEFAULT_MAX_THUMBS", "DEFAULT_THUMB_SIZE",
           "MAP_SAMPLE", "check_new_page"]

#: Nearest neighbours listed when an item is clicked.
DEFAULT_K = 8
#: Items whose thumbnails are embedded in the page; beyond it a seeded sample of this many has thumbnails and
#: every point is still drawn (page sizes: BENCHMARKS.md).
DEFAULT_MAX_THUMBS = 10_000
#: Longest side of an embedded thumbnail in pixels (smaller images are embedded at their own size).
DEFAULT_THUMB_SIZE = 64
#: Points of the map kept in the run record (a seeded sample) for the report's static overview.
MAP_SAMPLE = 3000


@dataclass
class ExploreData:
    """What the page draws, one entry per embedded item (row order of the embeddings).

    Attributes:
        ids: ``[n]`` item ids. index: ``[n]`` source rows. source: the data source (thumbnails).
        classes: class names. labels: ``[n]`` int (``-1``: none) or ``None`` (unlabelled data).
        split: ``[n]`` split names of the eval split, or ``None``.
        xy: ``[n, 2]`` map coordinates. nn_idx, nn_sim: ``[n, k]`` nearest other items and their cosine
            similarities (``vitlab.neighbors.search``), best first.
        pred: ``[n]`` predicted class of test items (``-1`` for train items) or ``None`` (no probe).
        dup: ``[n]`` duplicate-group number (``-1``: in none) or ``None``; dup_kinds: each group's kind
            (``semantic`` or ``exact``).
        issues: label-issue columns (:func:`vitlab.exploration.issues.issue_columns`) or ``None``.
        paths: ``[n]`` absolute image paths (file-backed sources), else ``None``.
        groups: ``[n]`` group ids or ``None``.
    """

    ids: list[str]
    index: np.ndarray
    source: Any
    classes: list[str]
    labels: np.ndarray | None
    split: np.ndarray | None
    xy: np.ndarray
    nn_idx: np.ndarray
    nn_sim: np.ndarray
    pred: np.ndarray | None = None
    dup: np.ndarray | None = None
    dup_kinds: list[str] | None = None
    issues: dict[str, np.ndarray] | None = None
    paths: list[str] | None = None
    groups: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ExploreResult:
    """A finished explore run.

    Attributes:
        record: the ``explore`` run record (not yet saved: :meth:`save`, after the page is written, so the
            record says what the page holds).
        data: the page's :class:`ExploreData`.
        layout: the :class:`~vitlab.exploration.layout.Layout`.
        page: the page path asked for (checked before any work) or ``None``. out: the records folder or ``None``.
        max_thumbs, thumb_size: the page's thumbnail budget.
    """

    record: RunRecord
    data: ExploreData
    layout: Layout
    page: Path | None = None
    out: Path | None = None
    max_thumbs: int = DEFAULT_MAX_THUMBS
    thumb_size: int = DEFAULT_THUMB_SIZE
    path: Path | None = field(default=None)

    def save(self) -> Path | None:
        """Write the run record into ``out`` (when given); returns its path."""
        if self.out is not None:
            self.path = self.record.save(self.out)
        return self.path


def check_new_page(path: str | Path | None, what: str = "-o") -> None:
    """Refuse, before any work, a page path that exists (never overwritten) or cannot be written.

    Example:
        >>> check_new_page(".")
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: -o .: is a folder, not a file. Pass a new file name, e.g. explore.html.
    """
    if path is None:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{what} {p}: is a folder, not a file. Pass a new file name, e.g. explore.html.")
    if p.exists() or p.is_symlink():
        raise ConfigError(f"{what} {p}: the file already exists and is not overwritten. Choose a new name or delete "
                          "it first.")
    check_output_file(p, what)


def _check(k: int, max_thumbs: int, thumb_size: int, n_resamples: int, test_fraction: float,
           page: Any, out: Any, duplicates: Any) -> dict[str, Any] | None:
    from vitlab.data.splits import check_fractions

    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k (neighbours listed per item) must be an integer >= 1, got {k!r}; e.g. {DEFAULT_K}.")
    if isinstance(max_thumbs, bool) or not isinstance(max_thumbs, (int, np.integer)) or max_thumbs < 0:
        raise ConfigError(f"max_thumbs must be an integer >= 0 (0: no thumbnails), got {max_thumbs!r}.")
    if isinstance(thumb_size, bool) or not isinstance(thumb_size, (int, np.integer)) or not 8 <= thumb_size <= 256:
        raise ConfigError(f"thumb_size must be an integer in [8, 256] pixels, got {thumb_size!r}; e.g. 64.")
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1 (1000+ recommended), got {n_resamples}.")
    check_fractions(test_fraction)
    check_new_page(page)
    check_output_dir(out, "--out")
    return None if duplicates is None else _read_duplicates(duplicates)


def _read_duplicates(path: Any) -> dict[str, Any]:
    """The duplicate groups of a ``curate`` run record: ``{"groups": [[ids], ...], "kinds": [...], ...}``."""
    from vitlab.errors import VitlabError

    p = Path(path).expanduser()
    try:
        rec = RunRecord.load(p)
    except VitlabError as err:
        raise DataError(f"--duplicates {p}: {err}".replace(f"{p}: {p}: ", f"{p}: ")) from None
    if rec.kind != "curate":
        raise DataError(f"--duplicates {p}: a {rec.kind!r} run record, not a curate one. Pass the record written by "
                        "`vitlab curate ... --out DIR`.")
    groups, kinds = [], []
    for g in (rec.details.get("semantic") or {}).get("groups") or []:
        members = g.get("members") if isinstance(g, dict) else None
        if members:
            groups.append([str(m) for m in members])
            kinds.append("semantic")
    for g in (rec.details.get("exact") or {}).get("groups") or []:
        if isinstance(g, list) and g:
            groups.append([str(m) for m in g])
            kinds.append("exact")
    fp = rec.fingerprints.get("data") if isinstance(rec.fingerprints.get("data"), dict) else {}
    return {"path": str(p), "run_id": rec.run_id, "groups": groups, "kinds": kinds,
            "data_fingerprint": fp.get("fingerprint"),
            "n_semantic": (rec.details.get("semantic") or {}).get("n_groups"),
            "n_exact": (rec.details.get("exact") or {}).get("n_groups")}


def _duplicate_column(dups: dict[str, Any], source: Any, ids: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    if dups["data_fingerprint"] is not None and dups["data_fingerprint"] != source.fingerprint:
        raise DataError(f"--duplicates {dups['path']}: that curate run saw other data than {source.uri} (the data "
                        "fingerprints differ). Run vitlab curate on this data again.")
    where = {s: i for i, s in enumerate(ids)}
    col = np.full(len(ids), -1, np.int64)
    listed = 0
    for gi, members in enumerate(dups["groups"]):
        rows = [where[m] for m in members if m in where]
        listed += len(members)
        free = [r for r in rows if col[r] < 0]  # an item in a semantic and an exact group keeps the first
        if len(free) >= 2:
            col[free] = gi
    summary = {k: dups[k] for k in ("path", "run_id", "n_semantic", "n_exact")}
    summary.update(n_groups_listed=len(dups["groups"]), n_items=int((col >= 0).sum()),
                   note="a curate record lists its largest groups only (up to 200 of each kind)")
    return col, summary


def _probe(protocol: str, backbone: Any, source: Any, emb: Any, split: np.ndarray, *, seed: int, test_fraction: float,
           layers: Any, pool: str, n_resamples: int, cache_dir: Path, device: str | None,
           embed_kwargs: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any], dict[str, Any]]:
    """Predictions on the test items of eval's split, from :func:`vitlab.evaluation.evaluate` itself."""
    from vitlab.evaluation import evaluate

    ev = evaluate(backbone, source, protocols=protocol, seed=seed, test_fraction=test_fraction, layers=layers,
                  pool=pool, n_resamples=n_resamples, cache_dir=cache_dir, device=device, **embed_kwargs)
    label = next(iter(ev.results))
    proba = ev.results[label].outputs["proba"]
    where = {s: i for i, s in enumerate(emb.ids)}
    rows = np.asarray([where[str(s)] for s in ev.test_ids], np.int64)
    if not np.array_equal(np.sort(rows), np.flatnonzero(split == "test")):
        raise DataError("the probe's test items are not the explorer's test split; the embeddings changed during the "
                        "run. Run again.")
    pred = np.full(len(emb.ids), -1, np.int64)
    pred[rows] = np.asarray(proba).argmax(1)
    r = ev.record
    info = {"protocol": label, "eval_run_id": r.run_id, "split_origin": r.config.get("split_origin"),
            "n_train": int((split != "test").sum()), "n_test": int(len(rows)), "hparams": r.hparams.get(label, {}),
            "predicted": "test items only (a probe fitted on the train split of vitlab eval --seed s)"}
    metrics = {label: {m: r.metrics[label][m] for m in ("top1", "balanced_accuracy") if m in r.metrics[label]}}
    return pred, info, metrics


def _map_sample(xy: np.ndarray, labels: np.ndarray | None, seed: int) -> dict[str, Any]:
    n = len(xy)
    rows = np.arange(n) if n <= MAP_SAMPLE else np.sort(np.random.default_rng(seed).choice(n, MAP_SAMPLE, False))
    return {"n": int(len(rows)), "of": int(n), "x": np.round(xy[rows, 0].astype(float), 4).tolist(),
            "y": np.round(xy[rows, 1].astype(float), 4).tolist(),
            "label": None if labels is None else labels[rows].astype(int).tolist()}


def explore(backbone: Any, data: Any, *, page: str | Path | None = None, layout: str = "umap",
            n_neighbors: int = 15, min_dist: float = 0.1, perplexity: float = 30.0, metric: str = "cosine",
            fit_sample: int = DEFAULT_FIT_SAMPLE, k: int = DEFAULT_K, probe: str | None = "auto",
            test_fraction: float = 0.2, seed: int = 0, label_issues: bool = False, folds: int = 5,
            label_method: str = "linear", duplicates: str | Path | None = None,
            max_thumbs: int = DEFAULT_MAX_THUMBS, thumb_size: int = DEFAULT_THUMB_SIZE, layers: int = -1,
            pool: str = "auto", n_resamples: int = 1000, pretrained: bool = True, device: str | None = None,
            cache_dir: str | Path | None = None, out: str | Path | None = None,
            **embed_kwargs: Any) -> ExploreResult:
    """Compute an interactive map of a data source's embeddings: layout, neighbours, predictions, issues.

    Args:
        backbone, data: objects or names (``"demo:fmnist-vit"``, ``"sample:fashion-mnist"``).
        page: the HTML page that will be written (checked now: it must not exist and must be writable).
        layout: ``umap`` (umap-learn, ``pip install 'vitlab[explore]'``), ``pca`` or ``tsne``.
        n_neighbors, min_dist: UMAP's. perplexity: t-SNE's. metric: ``cosine`` or ``euclidean``.
        fit_sample: the layout is fitted on at most this many rows (seeded sample) and the rest placed into it.
        k: nearest neighbours listed per item (cosine, :func:`vitlab.neighbors.search`).
        probe: classification protocol whose test predictions colour the map (``"auto"``: ``linear`` when
            the data has labels, none otherwise; ``None``: none): run by :func:`vitlab.evaluation.evaluate`
            on the split of ``vitlab eval --seed seed``.
        test_fraction, seed: the split (as ``vitlab eval``); ``seed`` also seeds the layout.
        label_issues: colour by label-issue score (:mod:`vitlab.exploration.issues`); folds, label_method: its
            cross-fitting.
        duplicates: a ``curate`` run record of the same data: its duplicate groups colour the map.
        max_thumbs, thumb_size: the page's thumbnail budget (see :data:`DEFAULT_MAX_THUMBS`).
        layers, pool: which embedding (``pool="auto"``: ``cls`` when the backbone has one, else ``mean``).
        n_resamples: bootstrap resamples of the probe's CI.
        out: folder for the run record (written by :meth:`ExploreResult.save`).
        **embed_kwargs: for the embedding store (``batch_size``, ``num_workers``, ``progress``...).

    Returns:
        :class:`ExploreResult`; write the page with :func:`vitlab.report.explore_page.write_explore_page`.

    Raises:
        ConfigError: bad options, an existing page path, umap-learn missing (names the extra), before any work.
        DataError: fewer items than UMAP's neighbours, no labels for ``probe``/``label_issues``, before any work.

    Example:
        >>> import vitlab
        >>> res = vitlab.explore("demo:fmnist-vit", "sample:digits?limit=200", layout="pca", page="explore.html",
        ...                      n_resamples=20, progress=False)
        >>> from vitlab.report.explore_page import write_explore_page
        >>> write_explore_page(res)["n_points"]
        200
    """
    from vitlab.backbones import load_backbone
    from vitlab.data import load_source
    from vitlab.neighbors import search
    from vitlab.protocols.base import parse_protocols
    from vitlab.store import EmbeddingStore

    cfg = LayoutConfig(method=layout, n_neighbors=n_neighbors, min_dist=min_dist, perplexity=perplexity,
                       metric=metric, fit_sample=fit_sample, seed=seed)
    check_layout_dependencies(cfg.method)
    dups = _check(k, max_thumbs, thumb_size, n_resamples, test_fraction, page, out, duplicates)
    if probe is not None and probe != "auto":
        proto = parse_protocols(probe)
        if len(proto) != 1 or proto[0].task != "classification":
            raise ConfigError(f"--probe must be one classification protocol (linear, knn), got {probe!r}.")
    source = load_source(data)
    n = len(source)
    cfg.check_size(n, source.uri)
    if k >= n:
        raise ConfigError(f"k={k} neighbours per item needs more than {k} items; {source.uri} has {n}. Pass --k "
                          f"{max(1, n - 1)} or less.")
    if probe == "auto":
        probe = "linear" if source.labels is not None else None
    elif probe is not None and source.labels is None:
        raise DataError(f"{source.uri} has no labels, needed by --probe {probe}: use labelled data (class "
                        "subfolders, or a label column), or --probe none.")
    if label_issues:
        check_label_issues(source.labels, what=source.uri, groups=source.groups, folds=folds, method=label_method,
                           classes=list(source.classes))
    if isinstance(backbone, str):
        backbone = load_backbone(backbone, pretrained=pretrained, device=device or "cpu")
    if pool == "auto":
        pool = "cls" if backbone.spec.has_cls_token else "mean"
    timings: dict[str, Any] = {}
    t0 = time.perf_counter()
    store = EmbeddingStore(cache_dir)
    emb = store.get_or_compute(backbone, source, layers=layers, pool=pool, device=device, **embed_kwargs)
    X = np.array(emb.get(), dtype=np.float32)  # a writable copy of the memory-mapped rows
    ids, index = [str(i) for i in emb.ids], np.asarray(emb.index, np.int64)
    timings["embed_s"] = round(time.perf_counter() - t0, 3)

    t0 = time.perf_counter()
    lay = load_or_compute_layout(store.root, X, cfg, embeddings=emb.digest, layer=emb.layers[-1], pool=pool)
    timings["layout_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    nn = search(X, X, int(k), metric="cosine", exclude_self=True)
    timings["neighbours_s"] = round(time.perf_counter() - t0, 3)

    labels = None if emb.labels is None else np.asarray(emb.labels, np.int64)
    has_split = labels is not None or emb.split_column is not None or emb.groups is not None
    split = emb.splits(seed=seed, test_fraction=test_fraction) if has_split else None
    details: dict[str, Any] = {"data": {"n": len(ids), "classes": list(emb.classes), "skipped": emb.skipped,
                                        "labelled": labels is not None}}
    metrics: dict[str, Any] = {}
    pred = None
    if probe is not None:
        t0 = time.perf_counter()
        pred, details["probe"], metrics = _probe(probe, backbone, source, emb, split, seed=seed,
                                                 test_fraction=test_fraction, layers=layers, pool=pool,
                                                 n_resamples=n_resamples, cache_dir=store.root, device=device,
                                                 embed_kwargs=embed_kwargs)
        timings["probe_s"] = round(time.perf_counter() - t0, 3)
    dup = None
    if dups is not None:
        dup, details["duplicates"] = _duplicate_column(dups, source, ids)
    issues = None
    if label_issues:
        t0 = time.perf_counter()
        groups = None if emb.groups is None else np.asarray(emb.groups)
        issues, details["label_issues"] = label_issue_columns(X, labels, groups=groups, folds=folds, seed=seed,
                                                              method=label_method)
        timings["label_issues_s"] = round(time.perf_counter() - t0, 3)
    files = getattr(source, "files", None)
    paths = [str(Path(files[int(r)]).resolve()) for r in index] if files is not None and len(files) == n else None
    data_ = ExploreData(ids=ids, index=index, source=source, classes=[str(c) for c in emb.classes], labels=labels,
                        split=split, xy=lay.xy, nn_idx=nn.indices, nn_sim=nn.scores.astype(np.float32), pred=pred,
                        dup=dup, dup_kinds=None if dups is None else list(dups["kinds"]), issues=issues, paths=paths,
                        groups=None if emb.groups is None else [str(g) for g in emb.groups])
    details["layout"] = {**lay.info, "params": cfg.params()}
    details["neighbours"] = {"k": int(k), "metric": "cosine", "search": "vitlab.neighbors.search (exact)"}
    details["map_sample"] = _map_sample(lay.xy, labels, seed)
    config = {"backbone": backbone.name, "data": source.uri, "layer": emb.layers[-1], "pool": pool,
              "layout": cfg.params(), "k": int(k), "probe": probe, "test_fraction": test_fraction, "seed": seed,
              "label_issues": bool(label_issues), "folds": folds if label_issues else None,
              "label_method": label_method if label_issues else None,
              "duplicates": None if dups is None else dups["path"], "max_thumbs": int(max_thumbs),
              "thumb_size": int(thumb_size), "n_resamples": n_resamples}
    record = start_record("explore", config, backbone=backbone, source=source, embeddings=emb.digest,
                          seeds={"layout": seed, "split": seed, "probe": seed})
    record.metrics, record.details = metrics, details
    record.timings = {**timings, "embeddings_from_cache": emb.from_cache}
    return ExploreResult(record, data_, lay, None if page is None else Path(page).expanduser(),
                         None if out is None else Path(out).expanduser(), int(max_thumbs), int(thumb_size))
