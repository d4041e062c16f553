"""The generative metrics of ``gen_eval``: names, what each needs, defaults (dgm-eval's) and uncertainty.

The math lives in :mod:`vitlab.metrics`; this module only picks inputs, settings and
uncertainty and turns results into run-record entries ``{"value", "low", "high", ...}``
(intervals through :meth:`vitlab.stats.interval.Interval.to_entry`).

| metric | needs | uncertainty |
|---|---|---|
| ``fd`` (FID on Inception) | real (or stats), fake | half-sample 95% CI of ``E[FD_n]`` (100 half-samples) |
| ``fd_debiased`` (with ``fd``) | real, fake | FD minus its estimated O(1/n) bias, own 95% CI |
| ``fd_inf`` | real, fake | fitted slope only (no CI) |
| ``kd`` (KID on Inception) | real, fake | 95% CI from its subsets (delete-d jackknife); std over subsets kept |
| ``prdc`` → precision, recall, density, coverage | real, fake | half-sample 95% CIs (default 50) |
| ``realism`` | real, fake | median, per-sample extremes in details |
| ``is`` | the ``inception`` encoder | mean ± std over 10 splits (not a CI) |
| ``vendi`` (+ ``vendi_per_class`` with labelled fakes) | fake | half-sample 95% CI (default 100) |
| ``sw`` | real, fake | none |
| ``authpct`` | train, fake | none |
| ``ct``, ``ct_modified`` | train, test, fake | none |
| ``ct_test`` | test, fake | none |
| ``fls``, ``fls_pog`` | train, test, fake | none |

Intervals (methods, sources and simulated coverage: :mod:`vitlab.metrics.gen_intervals` for FD,
PRDC and Vendi, :mod:`vitlab.metrics.kd` for KD) are ``value ± z·se``, so each contains its value.
FD, PRDC and Vendi depend on the sample size; their interval covers the metric's expected value at
this n. ``fd_debiased`` and KD (unbiased by construction) estimate the population value.

Settings follow dgm-eval: ``nearest_k = 5``; PRDC, realism and FLS first subsample to
``reduced_n = 10000`` rows (seeded here, unseeded there); KD 100 subsets of 1000;
FD-infinity 15 points; IS 10 splits shuffled with seed 2020; C_T 3 cells after PCA to 64.
The default metric set is dgm-eval's default list minus what needs train/test data:
``fd, fd_inf, kd, prdc, vendi, sw`` (+ ``is`` with the ``inception`` encoder).

Example:
    >>> parse_metrics("fid,prdc,kid", inception=False)
    ['fd', 'kd', 'prdc']
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, UnknownNameError
from vitlab.metrics import fd as fd_mod
from vitlab.metrics._validate import SmallSampleWarning, canonical_order, warn_small_sample
from vitlab.metrics.gen_intervals import halfsample_fd, halfsample_prdc, halfsample_vendi
from vitlab.metrics.fls import fls_scores, split_fls_sets
from vitlab.metrics.inception_score import inception_score
from vitlab.metrics.kd import kernel_distance
from vitlab.metrics.memorization import authenticity_pct, ct_score, ct_score_modified, ct_score_test
from vitlab.metrics.prdc import prdc, realism_score
from vitlab.metrics.sliced_wasserstein import sliced_wasserstein_approx
from vitlab.metrics.vendi import per_class_vendi_scores, vendi_score
from vitlab.stats.interval import Interval

METRIC_ORDER = ("fd", "fd_inf", "kd", "prdc", "realism", "is", "vendi", "sw", "authpct", "ct", "ct_modified",
                "ct_test", "fls", "fls_pog")
DEFAULT_METRICS = ("fd", "fd_inf", "kd", "prdc", "vendi", "sw")
NEEDS: dict[str, tuple[str, ...]] = {
    "fd": ("real_or_stats",), "fd_inf": ("real",), "kd": ("real",), "prdc": ("real",), "realism": ("real",),
    "is": ("inception",), "vendi": (), "sw": ("real",), "authpct": ("train",), "ct": ("train", "test"),
    "ct_modified": ("train", "test"), "ct_test": ("test",), "fls": ("train", "test"), "fls_pog": ("train", "test"),
}
ALIASES = {"fid": "fd", "fd-infinity": "fd_inf", "fd_infinity": "fd_inf", "fd-inf": "fd_inf", "kid": "kd",
           "sw_approx": "sw", "sliced_wasserstein": "sw", "fls_overfit": "fls_pog", "fls-pog": "fls_pog",
           "inception_score": "is", "precision": "prdc", "recall": "prdc", "density": "prdc", "coverage": "prdc",
           "ct-test": "ct_test", "ct-modified": "ct_modified", "ct_mem": "ct_modified", "ct_mode": "ct_test"}
#: Default random half-samples per metric (see :mod:`vitlab.metrics.gen_intervals` for the CPU cost; a PRDC
#: half-sample costs about a quarter of a full pass). KD uses them only when its subsets exceed half a set.
DEFAULT_RESAMPLES = {"fd": 100, "prdc": 50, "vendi": 100, "kd": 100}


@dataclass(frozen=True)
class GenEvalConfig:
    """Metric settings (defaults: dgm-eval's), validated at construction.

    Args:
        nearest_k: k of the PRDC / realism k-NN balls.
        reduced_n: PRDC, realism and FLS subsample each set to at most this many rows.
        kd_subsets, kd_subset_size: KD repetitions and subset size.
        fd_inf_points: FD-infinity subset sizes.
        is_splits, is_seed: Inception Score splits and shuffle seed.
        ct_cells, ct_pca_dim: C_T KMeans cells and PCA dimension.
        fls_steps: FLS bandwidth-fit optimiser steps.
        n_resamples: random half-samples for every CI; ``None`` = FD 100, PRDC 50, Vendi 100 (KD 100, only
            when its subsets exceed half a set); ``0`` = no CIs.
        level: confidence level of the CIs.
        min_samples: below this many rows a metric without its own check gets a small-sample note.
        gallery_size, grid_size: closest generated/training pairs and image-grid ids kept in the record.
    """

    nearest_k: int = 5
    reduced_n: int = 10_000
    kd_subsets: int = 100
    kd_subset_size: int = 1000
    fd_inf_points: int = 15
    is_splits: int = 10
    is_seed: int = 2020
    ct_cells: int = 3
    ct_pca_dim: int = 64
    fls_steps: int = 100
    n_resamples: int | None = None
    level: float = 0.95
    min_samples: int = 1000
    gallery_size: int = 12
    grid_size: int = 16

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "level":
                if not 0 < float(v) < 1:
                    raise ConfigError(f"level must be in (0, 1), e.g. 0.95, got {v!r}.")
            elif f.name == "n_resamples":
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0 or v == 1):
                    raise ConfigError(f"n_resamples must be 0 (no CIs) or an integer >= 2 (a spread needs two "
                                      f"half-samples), or None, got {v!r}.")
            elif isinstance(v, bool) or not isinstance(v, int) or v < (0 if f.name == "is_seed" else 1):
                raise ConfigError(f"{f.name} must be {'>= 0' if f.name == 'is_seed' else 'a positive integer'}, "
                                  f"got {v!r}.")

    def resamples(self, metric: str) -> int:
        """Half-samples used for ``metric`` (``fd``, ``prdc``, ``vendi``, ``kd``)."""
        return DEFAULT_RESAMPLES[metric] if self.n_resamples is None else self.n_resamples


def parse_metrics(spec: str | list[str] | tuple[str, ...] | None, *, inception: bool) -> list[str]:
    """``"default"``, ``"all"`` or comma-separated names (dgm-eval spellings accepted) → canonical names.

    ``all`` is every metric (``is`` only with the inception encoder); unknown names get suggestions.

    Example:
        >>> parse_metrics("all", inception=False)[:4]
        ['fd', 'fd_inf', 'kd', 'prdc']
    """
    items = [spec] if spec is None or isinstance(spec, str) else list(spec)
    names: set[str] = set()
    for item in items:
        for raw in ("default" if item is None else str(item)).split(","):
            name = raw.strip().lower()
            if not name:
                continue
            if name == "default":
                names.update(DEFAULT_METRICS + (("is",) if inception else ()))
            elif name == "all":
                names.update(m for m in METRIC_ORDER if m != "is" or inception)
            else:
                name = ALIASES.get(name, name.replace("-", "_"))
                if name not in NEEDS:
                    raise UnknownNameError("generative metric", raw.strip(), [*METRIC_ORDER, "default", "all"],
                                           f"Choose from: {', '.join(METRIC_ORDER)}, default, all.")
                names.add(name)
    if not names:
        raise ConfigError("no metrics requested; pass e.g. --metrics fd,kd,prdc (or default, all).")
    return [m for m in METRIC_ORDER if m in names]


@dataclass
class MetricInputs:
    """Feature arrays for one evaluation (``[n, d]`` each; ``None`` when not given)."""

    fake: np.ndarray
    fake_ids: list[str]
    real: np.ndarray | None = None
    real_stats: tuple[np.ndarray, np.ndarray] | None = None
    train: np.ndarray | None = None
    test: np.ndarray | None = None
    fake_labels: np.ndarray | None = None
    fake_classes: list[str] = field(default_factory=list)
    class_probs: Callable[[np.ndarray], np.ndarray] | None = None
    device: Any = None


def _point(value: float, **extra: Any) -> dict[str, Any]:
    """A metric reported without an interval (its ``note`` / ``uncertainty`` says why or what instead)."""
    return Interval.point(value, "point estimate (no interval)").to_entry(**extra)


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return x if x.shape[0] <= n else x[np.sort(rng.choice(x.shape[0], n, replace=False))]


def _no_ci(sizes: dict[str, int], minimum: int) -> str | None:
    """Why no half-sample CI is possible (a half of some set has < ``minimum`` rows), else ``None``."""
    small = [f"{k} {n}" for k, n in sizes.items() if n // 2 < minimum]
    return (f"no CI: half-samples need at least {2 * minimum} rows per set ({', '.join(small)})"
            if small else None)


def _few(name: str, n: int, cfg: GenEvalConfig) -> None:
    if n < cfg.min_samples:
        warn_small_sample(f"{name} on {n} samples (< {cfg.min_samples}) is noisy; dgm-eval evaluates 10000-50000 "
                          "samples. Treat the value as indicative.", stacklevel=2)


def _m_fd(inp: MetricInputs, cfg: GenEvalConfig, seed: int) -> tuple[dict, dict]:
    if inp.real is None:
        mu_r, sigma_r = inp.real_stats  # type: ignore[misc]
        mu_f, sigma_f = fd_mod.gaussian_stats(inp.fake)
        if inp.fake.shape[0] <= inp.fake.shape[1]:
            warn_small_sample(f"FD with {inp.fake.shape[0]} fake samples in d = {inp.fake.shape[1]} dims: the "
                              f"covariance is rank-deficient. Use at least {inp.fake.shape[1] + 1} samples.")
        value = fd_mod.frechet_distance_from_stats(mu_r, sigma_r, mu_f, sigma_f, device=inp.device)
        return {"fd": _point(value, note="no CI: the reference file holds only mean/covariance "
                                         "(gen-stats --save-features keeps the features)")}, {}
    b = cfg.resamples("fd")
    why = _no_ci({"real": inp.real.shape[0], "fake": inp.fake.shape[0]}, 2)
    if b == 0 or why:
        value = fd_mod.frechet_distance(inp.real, inp.fake, device=inp.device)
        return {"fd": _point(value, **({"note": why} if why and b else {}))}, {}
    ci = halfsample_fd(inp.real, inp.fake, n_resamples=b, level=cfg.level, seed=seed, device=inp.device)
    assert ci.debiased is not None
    deb = ci.debiased.to_entry(bias=ci.bias, estimator="fd - bias (2·fd − mean of half-sample FDs); estimates "
                                                       "the population FD, can be < 0")
    return {"fd": ci.to_entry(bias=ci.bias, caveat="FD is biased upwards in finite samples: the interval covers "
                                                   "the expected FD at these sample sizes; see fd_debiased"),
            "fd_debiased": deb}, {}


def _m_fd_inf(inp: MetricInputs, cfg: GenEvalConfig, seed: int) -> tuple[dict, dict]:
    r = fd_mod.fd_infinity(inp.real, inp.fake, num_points=cfg.fd_inf_points, seed=seed, device=inp.device)
    return ({"fd_inf": _point(r.value, slope=r.slope)},
            {"fd_inf": {"ns": r.ns.tolist(), "fds": r.fds.tolist()}})


def _m_kd(inp: MetricInputs, cfg: GenEvalConfig, seed: int) -> tuple[dict, dict]:
    b = cfg.resamples("kd")
    r = kernel_distance(inp.real, inp.fake, n_subsets=cfg.kd_subsets, subset_size=cfg.kd_subset_size, seed=seed,
                        level=cfg.level, n_resamples=b)
    info = dict(std=r.std, n_subsets=cfg.kd_subsets, subset_size=r.subset_size, unbiased=True)
    if b == 0 or r.interval is None:
        return {"kd": _point(r.value, **info, uncertainty="mean ± std over subsets (not a CI)")}, {}
    return {"kd": r.interval.to_entry(**info)}, {}


def _m_prdc(inp: MetricInputs, cfg: GenEvalConfig, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    real, fake = _subsample(inp.real, cfg.reduced_n, rng), _subsample(inp.fake, cfg.reduced_n, rng)
    b = cfg.resamples("prdc")
    why = _no_ci({"real": real.shape[0], "fake": fake.shape[0]}, cfg.nearest_k + 1)
    if b == 0 or why:
        r = prdc(real, fake, nearest_k=cfg.nearest_k, device=inp.device)
        return {k: _point(getattr(r, k), nearest_k=cfg.nearest_k, **({"note": why} if why and b else {}))
                for k in ("precision", "recall", "density", "coverage")}, {}
    cis = halfsample_prdc(real, fake, nearest_k=cfg.nearest_k, n_resamples=b, level=cfg.level, seed=seed,
                          device=inp.device)
    return {k: v.to_entry(nearest_k=cfg.nearest_k) for k, v in cis.items()}, {}


def _m_realism(inp: MetricInputs, cfg: GenEvalConfig, seed: int) -> tuple[dict, dict]:
    real = _subsample(inp.real, cfg.reduced_n, np.random.default_rng(seed))
    s = realism_score(real, inp.fake, nearest_k=cfg.nearest_k, device=inp.device)
    order = np.argsort(-s, kind="stable")
    k = min(cfg.gallery_size, len(s))
    pick = lambda idx: [{"id": inp.fake_ids[i], "score": float(s[i])} for i in idx]  # noqa: E731
    finite = s[np.isfinite(s)]
    return ({"realism": _point(float(np.median(s)), statistic="median over fake samples",
                               mean_finite=float(finite.mean()) if finite.size else None,
                               frac_ge_1=float((s >= 1).mean()))},
            {"realism": {"most_realistic": pick(order[:k]), "least_realistic": pick(order[::-1][:k])}})


def _m_is(inp: MetricInputs, cfg: GenEvalConfig, seed: int) -> tuple[dict, dict]:
    r = inception_score(inp.class_probs(inp.fake), splits=cfg.is_splits, seed=cfg.is_seed)  # type: ignore[misc]
    return {"is": _point(r.mean, std=r.std, splits=cfg.is_splits, uncertainty="mean ± std over splits")}, {}


def _m_vendi(inp: MetricInputs, cfg: GenEvalConfig, seed: int) -> tuple[dict, dict]:
    _few("Vendi score", inp.fake.shape[0], cfg)
    b = cfg.resamples("vendi")
    why = _no_ci({"fake": inp.fake.shape[0]}, 2)
    out = {"vendi": _point(vendi_score(inp.fake), **({"note": why} if why and b else {})) if b == 0 or why else
           halfsample_vendi(inp.fake, n_resamples=b, level=cfg.level, seed=seed).to_entry()}
    details: dict[str, Any] = {}
    if inp.fake_labels is not None and len(np.unique(inp.fake_labels)) > 1:
        per = per_class_vendi_scores(inp.fake, inp.fake_labels)
        names = {int(k): (inp.fake_classes[int(k)] if int(k) < len(inp.fake_classes) else str(k)) for k in per}
        out["vendi_per_class"] = _point(float(np.mean(list(per.values()))), statistic="mean over classes",
                                        n_classes=len(per))
        details["vendi_per_class"] = {names[int(k)]: float(v) for k, v in per.items()}
    return out, details


def _m_sw(inp: MetricInputs, cfg: GenEvalConfig, seed: int) -> tuple[dict, dict]:
    _few("Sliced Wasserstein", min(inp.real.shape[0], inp.fake.shape[0]), cfg)  # type: ignore[union-attr]
    return {"sw": _point(sliced_wasserstein_approx(inp.real, inp.fake))}, {}


def _m_authpct(inp: MetricInputs, cfg: GenEvalConfig, seed: int) -> tuple[dict, dict]:
    _few("AuthPct", min(inp.train.shape[0], inp.fake.shape[0]), cfg)  # type: ignore[union-attr]
    return {"authpct": _point(authenticity_pct(inp.train, inp.fake, device=inp.device))}, {}


def _ct(fn: Callable[..., float], key: str) -> Callable[..., tuple[dict, dict]]:
    def run(inp: MetricInputs, cfg: GenEvalConfig, seed: int) -> tuple[dict, dict]:
        _few(key, min(inp.test.shape[0], inp.fake.shape[0]), cfg)  # type: ignore[union-attr]
        train = inp.train if inp.train is not None else inp.test
        return {key: _point(fn(train, inp.test, inp.fake, n_cells=cfg.ct_cells, pca_dim=cfg.ct_pca_dim,
                               seed=seed))}, {}
    return run


def _m_fls(inp: MetricInputs, cfg: GenEvalConfig, seed: int, want: tuple[str, ...]) -> tuple[dict, dict]:
    tr, base, te, ge = split_fls_sets(inp.train, inp.test, inp.fake, reduced_n=cfg.reduced_n, seed=seed)
    _few("FLS", tr.shape[0], cfg)
    r = fls_scores(tr, base, te, ge, steps=cfg.fls_steps, device=inp.device)
    out = {"fls": _point(r.fls, gen_nll=r.gen_nll, baseline_nll=r.baseline_nll), "fls_pog": _point(r.fls_pog)}
    return {k: v for k, v in out.items() if k in want}, {"fls": {"n_per_set": int(tr.shape[0])}}


RUNNERS: dict[str, Callable[..., tuple[dict, dict]]] = {
    "fd": _m_fd, "fd_inf": _m_fd_inf, "kd": _m_kd, "prdc": _m_prdc, "realism": _m_realism, "is": _m_is,
    "vendi": _m_vendi, "sw": _m_sw, "authpct": _m_authpct, "ct": _ct(ct_score, "ct"),
    "ct_modified": _ct(ct_score_modified, "ct_modified"), "ct_test": _ct(ct_score_test, "ct_test"),
}


def canonical_inputs(inp: MetricInputs) -> MetricInputs:
    """``inp`` with the rows of every set in :func:`~vitlab.metrics._validate.canonical_order` (the fake set's ids
    and labels moved with its rows), so no metric depends on the order the rows came in."""
    def perm(x: np.ndarray | None) -> np.ndarray | None:
        return None if x is None else canonical_order(x)

    of = perm(inp.fake)
    return dataclasses.replace(
        inp, fake=inp.fake[of], fake_ids=[inp.fake_ids[i] for i in of],
        fake_labels=None if inp.fake_labels is None else np.asarray(inp.fake_labels)[of],
        **{k: None if getattr(inp, k) is None else getattr(inp, k)[perm(getattr(inp, k))]
           for k in ("real", "train", "test")})


def compute_metrics(names: list[str], inp: MetricInputs, cfg: GenEvalConfig, seed: int
                    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, float], list[dict[str, str]]]:
    """Run each metric; collect entries, details, timings and small-sample notes.

    Every :class:`~vitlab.metrics.SmallSampleWarning` raised while computing a metric becomes a
    note ``{"metric", "message"}`` (also attached to the metric's entries) and is re-emitted.

    Returns:
        ``(metrics, details, timings, notes)``.
    """
    inp = canonical_inputs(inp)
    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {}
    timings: dict[str, float] = {}
    notes: list[dict[str, str]] = []
    fls_done = False
    for name in names:
        if name in ("fls", "fls_pog"):
            if fls_done:
                continue
            fls_done = True
            want = tuple(m for m in ("fls", "fls_pog") if m in names)
            run: Callable[..., tuple[dict, dict]] = lambda i, c, s, w=want: _m_fls(i, c, s, w)  # noqa: E731
        else:
            run = RUNNERS[name]
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SmallSampleWarning)
            entries, det = run(inp, cfg, seed)
        timings[f"{name}_s"] = round(time.perf_counter() - t0, 4)
        msgs = []
        for w in caught:
            if issubclass(w.category, SmallSampleWarning):
                if str(w.message) not in msgs:
                    msgs.append(str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        for msg in msgs:
            notes.append({"metric": name, "message": msg})
            warnings.warn(f"{name}: {msg}", SmallSampleWarning, stacklevel=2)
        for key, entry in entries.items():
            if msgs:
                entry["small_sample"] = msgs
            metrics[key] = entry
        details.update(det)
    return metrics, details, timings, notes
