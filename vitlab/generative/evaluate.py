"""``gen_eval`` and ``gen_stats``: generative-model evaluation on cached encoder features.

Example:
    >>> res = gen_eval("sample:digits?limit=128", "sample:fashion-mnist-mosaic", encoder="demo:fmnist-vit",
    ...                metrics="fd,prdc", n_resamples=20, out="runs/", progress=False)  # the demo encoder: offline
    >>> fd = res.record.metrics["fd"]
    >>> fd["method"], fd["n_resamples"], fd["low"] <= fd["value"] <= fd["high"]
    ('half-sample', 20, True)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.backbones import Backbone, resolve_device
from vitlab.data import DataSource
from vitlab.errors import ConfigError
from vitlab.generative.encoders import DEFAULT_ENCODER, Encoder, load_encoder
from vitlab.generative.features import (FeatureSet, embed_cached, embed_source, feature_set, is_feature_file,
                                        load_feature_file)
from vitlab.generative.metrics import NEEDS, GenEvalConfig, MetricInputs, compute_metrics, parse_metrics
from vitlab.generative.stats_file import ReferenceStats, check_compatible, load_stats, require_features, save_stats
from vitlab.metrics._validate import check_same_dim
from vitlab.neighbors import search
from vitlab.record import RunRecord
from vitlab.store import EmbeddingStore

SetSpec = DataSource | str | Path | np.ndarray | None
ROLES = ("real", "fake", "train", "test")
MEMORIZATION = ("authpct", "ct", "ct_modified", "fls", "fls_pog")
_FLAGS = {"real": "--real <data>, --real-features FILE or --real-stats FILE",
          "train": "--train <data> or --train-features FILE (the generator's training images)",
          "test": "--test <data> or --test-features FILE (held-out real images)"}


@dataclass
class GenEvalResult:
    """A ``gen-eval`` run record plus the feature sets it used.

    Attributes:
        record: the :class:`RunRecord` (kind ``"gen-eval"``; also written to ``out`` when given).
        sets: role (``real``, ``fake``, ``train``, ``test``) → :class:`FeatureSet`.
        encoder: the :class:`Encoder`, or ``None`` when every set was precomputed.
        path: where the record was written.
    """

    record: RunRecord
    sets: dict[str, FeatureSet]
    encoder: Encoder | None
    path: Path | None = None

    def metric(self, name: str) -> float:
        """The value of one metric, e.g. ``res.metric("fd")``."""
        return float(self.record.metrics[name]["value"])

    @property
    def from_cache(self) -> dict[str, bool | None]:
        """Per set: whether its embeddings came from the cache (``None`` for precomputed features)."""
        return {role: fs.from_cache for role, fs in self.sets.items()}

    @property
    def notes(self) -> list[dict[str, str]]:
        """Small-sample and provenance notes (also in ``record.details["notes"]``)."""
        return list(self.record.details.get("notes", []))


def _is_image_set(spec: SetSpec) -> bool:
    return spec is not None and not isinstance(spec, np.ndarray) and not is_feature_file(spec)


def _has_inception(encoder: Any) -> bool:
    """Whether an encoder spec (name, Encoder or Backbone) is the FID Inception, before loading it."""
    if isinstance(encoder, Encoder):
        return encoder.supports_is
    if isinstance(encoder, str):
        return encoder.strip() == "inception" or encoder.strip().removeprefix("random:").startswith("inception:")
    return callable(getattr(encoder, "class_probs", None))


def _check_needs(names: list[str], given: dict[str, bool], stats: ReferenceStats | None,
                 enc_is: bool | None) -> None:
    """Clear errors, before any embedding, for metrics whose inputs are missing."""
    for role in ("real", "train", "test"):
        missing = [m for m in names if role in NEEDS[m] and not given[role]]
        if role == "real" and stats is not None:
            missing = [m for m in names if "real" in NEEDS[m]]
            if missing:
                require_features(stats, missing)
            continue
        if role == "real":
            missing += [m for m in names if "real_or_stats" in NEEDS[m] and not given["real"]]
        if missing:
            raise ConfigError(f"metric(s) {', '.join(missing)} need the {role} set: pass {_FLAGS[role]} "
                              f"(Python: {role}=...), or drop them from --metrics.")
    if "is" in names and not enc_is:
        raise ConfigError("metric 'is' (Inception Score) needs images of the generated samples embedded with "
                          "--backbone inception (it uses the FID Inception's classifier). Add --backbone inception "
                          "and --fake <data>, or drop 'is' from --metrics.")


def _resolve(spec: SetSpec, role: str, encoder: Encoder | None, store: EmbeddingStore | None,
             embed_kwargs: dict[str, Any]) -> FeatureSet:
    if isinstance(spec, np.ndarray):
        return feature_set(spec, role)
    if is_feature_file(spec):
        return load_feature_file(spec, role)  # type: ignore[arg-type]
    assert encoder is not None and store is not None
    return embed_source(encoder, spec, role, store, **embed_kwargs)  # type: ignore[arg-type]


def _check_dims(sets: dict[str, FeatureSet], stats: ReferenceStats | None) -> None:
    first = sets["fake"]
    for role, fs in sets.items():
        if role != "fake":
            check_same_dim(fs.X, first.X, role, "fake")
    if stats is not None and stats.dim != first.dim:
        raise ConfigError(f"{stats.path} holds {stats.dim}-d statistics but the fake features are {first.dim}-d: "
                          "both must come from the same encoder.")


def closest_pairs(train: FeatureSet, fake: FeatureSet, k: int, device: Any = None) -> list[dict[str, Any]]:
    """The ``k`` generated samples closest to any training sample (Euclidean, encoder space).

    Nearest training samples come from :func:`vitlab.neighbors.search` (``metric="l2"``, float64,
    ties to the smallest training index).

    Returns:
        ``[{"fake_id", "train_id", "distance"}]`` sorted by distance (nearest first).

    Example:
        >>> from vitlab.generative.features import feature_set
        >>> tr, fk = feature_set(np.array([[0.0], [5.0]]), "train"), feature_set(np.array([[4.0], [0.5]]), "fake")
        >>> [(p["fake_id"], p["train_id"], p["distance"]) for p in closest_pairs(tr, fk, k=2)]
        [('1', '0', 0.5), ('0', '1', 1.0)]
    """
    nb = search(fake.X, train.X, 1, metric="l2", dtype="float64", device=device)
    d, idx = np.sqrt(nb.scores[:, 0]), nb.indices[:, 0]
    order = np.argsort(d, kind="stable")[:k]
    return [{"fake_id": fake.ids[i], "train_id": train.ids[int(idx[i])], "distance": float(d[i])} for i in order]


def _grid_ids(fs: FeatureSet | None, k: int, rng: np.random.Generator) -> list[str]:
    if fs is None:
        return []
    pick = np.sort(rng.choice(len(fs), min(k, len(fs)), replace=False))
    return [fs.ids[i] for i in pick]


def gen_eval(real: SetSpec = None, fake: SetSpec = None, *, train: SetSpec = None, test: SetSpec = None,
             real_stats: str | Path | ReferenceStats | None = None,
             encoder: str | Encoder | Backbone | None = None, resize: str | None = None,
             metrics: str | list[str] = "default", seed: int = 0,
             n_resamples: int | None = None, config: GenEvalConfig | None = None, pretrained: bool = True,
             device: str | None = None, cache_dir: str | Path | None = None, out: str | Path | None = None,
             **embed_kwargs: Any) -> GenEvalResult:
    """Evaluate generated samples against real data with the metrics of dgm-eval, with uncertainty.

    Each set is images (a :class:`DataSource` or URI such as ``"folder:./samples"``, embedded
    through the cache), a ``.npy``/``.npz`` feature file, or an ``[n, d]`` array.

    Args:
        real: the reference set (``[n_r, d]`` features or images).
        fake: the generated samples (required).
        train, test: the generator's training set and held-out real images (memorisation metrics).
        real_stats: a ``gen-stats`` file used instead of ``real`` (FD only unless it holds features).
        encoder: ``dinov2-s/b/l/g``, ``inception``, ``clip-l14``, any backbone name or an :class:`Encoder`;
            default: the stats file's encoder, else ``dinov2-l``.
        resize: ``"default"`` or ``"clean"`` (clean-fid's resize); default: the stats file's, else default.
        metrics: ``"default"``, ``"all"`` or comma-separated names (see :mod:`vitlab.generative.metrics`).
        seed: seeds subsampling, half-samples, KD subsets, FD-infinity, C_T and FLS.
        n_resamples: random half-samples for every CI (default: FD 100, PRDC 50, Vendi 100, KD 100 when its
            subsets exceed half a set; 0 = no CIs). See :mod:`vitlab.metrics.gen_intervals`.
        config: other metric settings (:class:`GenEvalConfig`).
        pretrained: ``False`` = seeded random encoder weights (offline).
        device: encoder device (``cpu``, ``cuda``, ``auto``); CUDA also runs the metric math there.
        cache_dir: embedding cache root.
        out: directory for the JSON run record.
        **embed_kwargs: for the embedding store (``batch_size``, ``num_workers``, ``progress``, ``on_error``...);
            ``precision`` defaults to ``"fp32"`` even on CUDA (``"bf16"`` is faster but shifts FD).

    Returns:
        :class:`GenEvalResult`.

    Raises:
        ConfigError: missing inputs for a requested metric (naming the flag), incompatible reference stats.
        DataError: bad features (shape, dtype, NaN/inf, empty), mismatched dimensions.

    Example:
        >>> res = gen_eval("sample:digits?limit=128", "sample:digits?limit=64", encoder="demo:fmnist-vit",
        ...                metrics="fd,kd", n_resamples=20, progress=False)
        >>> sorted(res.record.metrics), res.metric("fd") > 0
        (['fd', 'fd_debiased', 'kd'], True)
        >>> res = gen_eval("folder:./real", "folder:./fake", encoder="inception", metrics="fd,kd,is")  # downloads the FID Inception weights  # doctest: +SKIP
        >>> res.metric("fd"), res.metric("fd_debiased"), res.record.metrics["kd"]["low"]  # doctest: +SKIP
    """
    if fake is None:
        raise ConfigError("pass the generated samples: --fake <data> or --fake-features FILE (Python: fake=...).")
    if real is not None and real_stats is not None:
        raise ConfigError("pass either --real/--real-features or --real-stats, not both.")
    cfg = config or GenEvalConfig()
    if n_resamples is not None:
        cfg = dataclasses.replace(cfg, n_resamples=n_resamples)
    stats = load_stats(real_stats) if isinstance(real_stats, (str, Path)) else real_stats
    specs = {"real": real, "fake": fake, "train": train, "test": test}
    need_encoder = any(_is_image_set(s) for s in specs.values())
    file_enc = (stats.encoder or {}) if stats is not None else {}
    enc_name = encoder if encoder is not None else file_enc.get("encoder", DEFAULT_ENCODER)
    enc_resize = resize if resize is not None else (file_enc.get("resize") if encoder is None else None)
    enc_is = _has_inception(enc_name) if need_encoder else None
    names = parse_metrics(metrics, inception=bool(enc_is))
    _check_needs(names, {r: s is not None for r, s in specs.items()}, stats, enc_is)
    enc = load_encoder(enc_name, resize=enc_resize, pretrained=pretrained, device=device, seed=seed) \
        if need_encoder else None
    if enc is not None and "is" in names and not enc.supports_is:
        raise ConfigError(f"metric 'is' needs --backbone inception; encoder {enc.name!r} has no Inception classifier.")
    if stats is not None and enc is not None:
        real_hint = (stats.data or {}).get("uri") or "<real images>"
        check_compatible(stats, enc.describe(), real_hint=real_hint)
    store = EmbeddingStore(cache_dir) if need_encoder else None
    embed_kwargs.setdefault("precision", "fp32")  # the metrics' protocols are fp32; bf16 autocast shifts FD
    sets = {role: _resolve(s, role, enc, store, embed_kwargs) for role, s in specs.items() if s is not None}
    if stats is not None and stats.features is not None:
        sets["real"] = feature_set(stats.features, "real", ids=stats.ids,
                                   origin={"kind": "stats", "path": str(stats.path)})
    _check_dims(sets, stats)
    dev = resolve_device(device) if device is not None else None
    metric_device = dev if dev is not None and dev.type == "cuda" else None
    fk = sets["fake"]
    inp = MetricInputs(fake=fk.X, fake_ids=fk.ids, real=sets["real"].X if "real" in sets else None,
                       real_stats=(stats.mu, stats.sigma) if stats is not None else None,
                       train=sets["train"].X if "train" in sets else None,
                       test=sets["test"].X if "test" in sets else None, fake_labels=fk.labels,
                       fake_classes=fk.classes, class_probs=enc.class_probs if enc is not None else None,
                       device=metric_device)
    values, details, timings, notes = compute_metrics(names, inp, cfg, seed)
    rng = np.random.default_rng(seed)
    memo = "train" in sets and any(m in MEMORIZATION for m in names)
    details["memorization"] = {
        "closest": closest_pairs(sets["train"], fk, cfg.gallery_size, metric_device) if memo else [],
        "distance": "euclidean in encoder space", "train_uri": sets["train"].origin.get("uri") if "train" in sets
        else None, "fake_uri": fk.origin.get("uri"),
        "grid": {"real": _grid_ids(sets.get("real"), cfg.grid_size, rng), "fake": _grid_ids(fk, cfg.grid_size, rng),
                 "real_uri": sets["real"].origin.get("uri") if "real" in sets else None,
                 "fake_uri": fk.origin.get("uri")}}
    if enc is None:
        notes.append({"metric": "*", "message": "all features were precomputed: vitlab could not check that they come "
                      "from the same encoder and preprocessing."})
    elif stats is not None and stats.encoder is None:
        notes.append({"metric": "*", "message": f"{stats.path} records no encoder (made from precomputed features): "
                      f"vitlab could not check that it matches encoder {enc.name!r}."})
    elif any(fs.origin.get("kind") in ("file", "array") for fs in sets.values()):
        notes.append({"metric": "*", "message": "some features were precomputed: vitlab could not check that they "
                      f"come from encoder {enc.name!r} with the same preprocessing."})
    details.update(notes=notes, skipped={r: fs.skipped for r, fs in sets.items() if fs.skipped})
    record = RunRecord(
        kind="gen-eval",
        config={"encoder": enc.describe() if enc else None, "metrics": names, "seed": seed,
                **{f"n_{r}": len(fs) for r, fs in sets.items()}, "n_real_stats": stats.n if stats else None,
                "dim": fk.dim, "n_resamples": {m: cfg.resamples(m) for m in ("fd", "prdc", "vendi", "kd")},
                "metric_config": dataclasses.asdict(cfg),
                "sets": {r: fs.origin.get("uri") or fs.origin.get("path") or fs.origin.get("kind")
                         for r, fs in sets.items()}, "real_stats": str(stats.path) if stats else None},
        fingerprints={"encoder": enc.backbone.fingerprint() if enc else None,
                      **{r: fs.origin for r, fs in sets.items()},
                      **({"real_stats": stats.fingerprint()} if stats else {})},
        metrics=values, details=details,
        timings={**{f"embed_{r}_s": round(fs.seconds, 4) for r, fs in sets.items()}, **timings,
                 "from_cache": {r: fs.from_cache for r, fs in sets.items()}},
        seeds={"metrics": seed, "halfsample": seed, "is_shuffle": cfg.is_seed, "encoder_init": seed})
    path = record.save(out) if out is not None else None
    return GenEvalResult(record, sets, enc, path)


def gen_stats(data: SetSpec, output: str | Path, *, encoder: str | Encoder | Backbone = DEFAULT_ENCODER,
              resize: str | None = None, save_features: bool = False, pretrained: bool = True,
              device: str | None = None, seed: int = 0, cache_dir: str | Path | None = None,
              **embed_kwargs: Any) -> ReferenceStats:
    """Write reference statistics (mean, covariance; optionally the features) of a real set to one file.

    For images (without ``save_features``) the mean and covariance are accumulated in float64 chunk by
    chunk over the embedding store's memory-mapped array (:mod:`vitlab.metrics.moments`), so a large set
    never needs its whole ``[n, d]`` matrix in memory.

    Args:
        data: images (URI or :class:`DataSource`, embedded through the cache), a feature file or an array.
        output: the stats file to write (any name, e.g. ``imagenet_val.dinov2-l.stats``).
        encoder, resize, pretrained, device, seed: the encoder (see :func:`gen_eval`).
        save_features: also store the raw features, so every real-set metric can use the file.
        cache_dir: embedding cache root.
        **embed_kwargs: for the embedding store.

    Returns:
        The :class:`ReferenceStats` written (``.path``).

    Example:
        >>> stats = gen_stats("sample:digits?limit=128", "digits.demo.stats", encoder="demo:fmnist-vit", progress=False)
        >>> stats.n, stats.mu.shape, stats.sigma.shape, stats.path.name
        (128, (96,), (96, 96), 'digits.demo.stats')
        >>> gen_stats("folder:./imagenet_val", "imagenet_val.dinov2-l.stats")  # downloads DINOv2-L weights  # doctest: +SKIP
    """
    if data is None:
        raise ConfigError("pass the real images: --data <data> (Python: data=...).")
    enc = load_encoder(encoder, resize=resize, pretrained=pretrained, device=device, seed=seed) \
        if _is_image_set(data) else None
    store = EmbeddingStore(cache_dir) if enc is not None else None
    embed_kwargs.setdefault("precision", "fp32")
    if enc is not None and store is not None and not save_features:
        # images: the moments are summed chunk by chunk over the store's memory-mapped array
        emb, origin = embed_cached(enc, data, store, **embed_kwargs)  # type: ignore[arg-type]
        return save_stats(output, emb.get(), encoder=enc.describe(), data=origin)
    fs = _resolve(data, "real", enc, store, embed_kwargs)
    return save_stats(output, fs.X, encoder=enc.describe() if enc else None, data=fs.origin,
                      save_features=save_features, ids=fs.ids)
