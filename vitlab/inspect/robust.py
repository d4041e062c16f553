"""``vitlab.robust``: accuracy under patch corruptions and attacks, scored with frozen probes, with CIs.

For each backbone: a linear probe (:class:`~vitlab.protocols.linear.LinearProbe`) and a kNN probe
(:func:`~vitlab.protocols.knn.knn_predict_proba`) are fitted on clean features of the training
split; the test images are then corrupted (:mod:`vitlab.inspect.corrupt`) at increasing numbers
of patches, aligned and misaligned with the grid, and both probes score the corrupted features:
top-1 with a percentile bootstrap CI over test images. Backbones are compared on the same test
images with paired bootstrap tests (Holm-adjusted within each corruption).

Attacks (:mod:`vitlab.inspect.attacks`) on the first ``n_attack`` test images:

* ``pgd-patch``: white-box PGD on backbone + linear head, restricted to a ``patch_side²`` patch
  mask. Success at ε = share of clean-correct images misclassified by *some* attack with budget
  ≤ ε (an adversary with budget ε may use any smaller one, so the curve is the union and never
  falls as ε grows; ``raw_success`` keeps each budget's own result).
* ``feature``: the backbone alone is attacked (cosine distance of pooled features); the examples
  are scored on the downstream heads (linear and kNN), the Downstream Transfer Attack setting.

Example:
    >>> res = robust_eval("demo:fmnist-vit", "sample:fashion-mnist", corrupt_kinds="patch-drop", attack=None,
    ...                   n_train=100, n_test=40, n_resamples=20)  # small subsets
    >>> clean = res.record.metrics["demo:fmnist-vit"]["clean"]["linear"]
    >>> clean["low"] <= clean["value"] <= clean["high"]
    True
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitlab.errors import ConfigError, DataError
from vitlab.inspect.attacks import check_eps, check_patch_side, feature_attack, patch_mask, pgd_patch
from vitlab.inspect.corrupt import cells, check_corruptions, corrupt
from vitlab.record import RunRecord
from vitlab.outputs import check_output_dir

__all__ = ["robust_eval", "robust", "RobustResult", "ATTACKS", "check_attacks", "check_counts"]

ATTACKS = ("pgd-patch", "feature")


@dataclass
class RobustResult:
    """The ``robust`` run record and where it was written."""

    record: RunRecord
    path: Path | None = None


def check_attacks(spec: str | list[str] | None) -> list[str]:
    """Parse ``"pgd-patch,feature"`` (empty / None = no attacks).

    Example:
        >>> check_attacks("feature")
        ['feature']
    """
    from vitlab.errors import UnknownNameError

    names = [s.strip() for s in ((spec or "").split(",") if isinstance(spec, str) or spec is None else spec)
             if s.strip()]
    for n in names:
        if n not in ATTACKS:
            raise UnknownNameError("attack", n, ATTACKS, "Pass e.g. --attack pgd-patch,feature.")
    return names


def _acc(y: np.ndarray, probs: np.ndarray, n_resamples: int, seed: int) -> dict[str, Any]:
    from vitlab.metrics.classification import top1
    from vitlab.stats.bootstrap import bootstrap_ci

    return bootstrap_ci(top1, y, probs, n_resamples=n_resamples, seed=seed).to_entry()


class _Probes:
    """The frozen probes of one backbone: linear head (torch, differentiable) and kNN."""

    def __init__(self, f_train: np.ndarray, y_train: np.ndarray, n_classes: int, k: int, seed: int) -> None:
        from vitlab.inspect.images import fit_probe_head

        self.head, _ = fit_probe_head(f_train, y_train, seed=seed, num_classes=n_classes)
        self.f_train, self.y_train, self.n_classes, self.k = f_train, y_train, n_classes, min(k, len(y_train))

    def probs(self, f: np.ndarray) -> dict[str, np.ndarray]:
        from vitlab.protocols.knn import knn_predict_proba

        with torch.no_grad():
            lin = torch.softmax(self.head(torch.as_tensor(f, dtype=torch.float32)), 1).double().numpy()
        knn = knn_predict_proba(self.f_train, self.y_train, f, ks=(self.k,), num_classes=self.n_classes)[self.k]
        return {"linear": lin, "knn": np.asarray(knn, dtype=np.float64)}


def check_counts(counts: list[int], hw: tuple[int, int], patch: tuple[int, int], aligned: tuple[bool, ...],
                 who: str = "") -> None:
    """Refuse a count of corrupted patches above the cells of a requested grid (one line, before any work).

    Example:
        >>> check_counts([0, 100], (28, 28), (4, 4), (True,), "demo:fmnist-vit")
        Traceback (most recent call last):
        vitlab.errors.ConfigError: --counts 100: demo:fmnist-vit's aligned grid has only 49 cells of 4x4 px (7x7); use counts up to 49.
    """
    for al in aligned:
        n = len(cells(hw, patch, al))
        over = [c for c in counts if c > n]
        if over:
            grid = f"{hw[0] // patch[0]}x{hw[1] // patch[1]}" if al else f"shifted by half a patch, {n} fit"
            raise ConfigError(f"--counts {','.join(map(str, over))}: {who + chr(39) + 's ' if who else 'the '}"
                              f"{'aligned' if al else 'misaligned'} grid has only {n} cells of {patch[0]}x{patch[1]} "
                              f"px ({grid}); use counts up to {n}.")


def _default_counts(n_cells: int) -> list[int]:
    return sorted({0, 1, max(n_cells // 8, 1), max(n_cells // 4, 1), max(n_cells // 2, 1)})


def robust_eval(backbones: Any, data: Any, *, corrupt_kinds: str | list[str] = "patch-drop,patch-shuffle,patch-noise",
                counts: list[int] | None = None, aligned: tuple[bool, ...] = (True, False),
                attack: str | list[str] | None = "pgd-patch,feature", eps: list[float] | None = None,
                steps: int = 10, patch_side: int = 2, n_train: int = 500, n_test: int = 200, n_attack: int = 64,
                k: int = 20, pool: str = "cls", layer: int = -1, sigma: float = 0.5, seed: int = 0,
                n_resamples: int = 1000, pretrained: bool = True, device: str = "cpu",
                out: str | Path | None = None, batch_size: int = 64, log: Any = None) -> RobustResult:
    """Accuracy under patch corruptions and attacks for one or more backbones, with CIs and paired tests.

    Args:
        backbones: a name, a :class:`~vitlab.backbones.base.Backbone`, or a list of them.
        data: a labelled source (``sample:fashion-mnist``, ``folder:./imgs``).
        corrupt_kinds: corruptions (:data:`~vitlab.inspect.corrupt.CORRUPTIONS`), comma-separated.
        counts: patches corrupted per image (default ``0, 1, N/8, N/4, N/2`` of the grid's N cells).
        aligned: run the corruptions on the patch grid (True), shifted by half a patch (False), or both.
        attack: ``pgd-patch``, ``feature`` (comma-separated), or None.
        eps: L∞ budgets in pixel units (default ``0, 1/255, 2/255, 4/255, 8/255``), each in [0, 1].
        steps, patch_side: PGD steps; side of the attacked patch in grid cells.
        n_train, n_test, n_attack: images used (seeded subsets of the source's train / test split).
        k: neighbours of the kNN probe. pool, layer: the features the probes use.
        out: folder for the ``robust`` run record.
        log: ``fn(str)`` for progress notes (the CLI passes a stderr printer).

    Returns:
        :class:`RobustResult`; ``record.metrics[backbone]`` holds ``clean`` and per-corruption curves.

    Example:
        >>> res = robust_eval("demo:fmnist-vit", "sample:fashion-mnist", corrupt_kinds="patch-noise", attack=None,
        ...                   aligned=(True,), n_train=100, n_test=40, n_resamples=20)
        >>> sorted(res.record.metrics["demo:fmnist-vit"])
        ['clean', 'patch-noise|aligned']
    """
    from vitlab.backbones import Backbone, load_backbone
    from vitlab.backbones.base import check_pool
    from vitlab.data import load_source
    from vitlab.inspect.images import embed_raw, load_raw, normalize

    kinds = check_corruptions(corrupt_kinds) if corrupt_kinds else []
    attacks = check_attacks(attack)
    eps_list = sorted(check_eps(eps if eps is not None else [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255]))
    if not aligned or any(not isinstance(a, bool) for a in aligned):
        raise ConfigError("aligned must be a non-empty tuple of booleans, e.g. (True, False).")
    if counts is not None and any(c < 0 for c in counts):
        raise ConfigError(f"counts {counts} must be >= 0 patches.")
    for name, v in (("n_train", n_train), ("n_test", n_test), ("steps", steps), ("k", k),
                    ("n_resamples", n_resamples), ("batch_size", batch_size)):
        if v < 1:
            raise ConfigError(f"{name}={v} must be >= 1.")
    if attacks and n_attack < 1:
        raise ConfigError(f"n_attack={n_attack} must be >= 1 with attacks ({', '.join(attacks)}); or pass no attack.")
    if not sigma >= 0:
        raise ConfigError(f"sigma={sigma} must be >= 0 (the patch-noise standard deviation).")
    check_output_dir(out, "--out")
    say = log or (lambda s: None)
    bbs = [b if isinstance(b, Backbone) else load_backbone(b, pretrained=pretrained, device=device)
           for b in (backbones if isinstance(backbones, (list, tuple)) else [backbones])]
    for bb in bbs:  # everything that depends on the backbone's grid is checked before any image is loaded
        check_pool(pool, bb.spec.has_cls_token)
        bb.resolve_layers(layer)
        hw = tuple(bb.spec.preprocessing.input_size)
        if kinds and counts is not None:
            check_counts(counts, hw, bb.spec.patch_size, aligned, bb.spec.name)
        if "pgd-patch" in attacks:
            check_patch_side(patch_side, hw, bb.spec.patch_size, bb.spec.name)
    src = load_source(data)
    if src.labels is None:
        raise DataError(f"{src.uri}: has no labels; robustness is scored with probes trained on labels. Use class "
                        "folders or a labelled sample such as sample:fashion-mnist.")
    split = src.splits(seed=seed)
    rng = np.random.default_rng(seed)
    tr, te = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    if len(tr) < 2 or len(te) < 1:
        raise DataError(f"{src.uri}: needs train and test images (got {len(tr)} train, {len(te)} test).")
    tr = np.sort(rng.choice(tr, min(n_train, len(tr)), replace=False))
    te = np.sort(rng.choice(te, min(n_test, len(te)), replace=False))
    y_tr, y_te = src.labels[tr], src.labels[te]
    n_cls = len(src.classes)
    t0 = time.perf_counter()
    metrics: dict[str, Any] = {}
    details: dict[str, Any] = {"test_ids": [src.ids[i] for i in te], "n_train": len(tr), "n_test": len(te)}
    keep: dict[str, dict[str, np.ndarray]] = {}  # backbone → condition → probs (for paired tests)
    for bb in bbs:
        name = bb.spec.name
        say(f"{name}: fitting probes on {len(tr)} clean training images")
        raw_tr, raw_te = load_raw(bb, src, tr), load_raw(bb, src, te)
        feats = lambda r: embed_raw(bb, r, pool=pool, layer=layer, batch_size=batch_size).numpy()  # noqa: E731
        probes = _Probes(feats(raw_tr), y_tr, n_cls, k, seed)
        m: dict[str, Any] = {"clean": {}}
        keep[name] = {}
        for p, pr in probes.probs(feats(raw_te)).items():
            m["clean"][p] = _acc(y_te, pr, n_resamples, seed)
            keep[name][f"clean|{p}"] = pr
        patch = bb.spec.patch_size
        for kind in kinds:
            for al in aligned:
                n_cells = len(cells(tuple(raw_te.shape[-2:]), patch, al))
                cs = list(counts) if counts is not None else _default_counts(n_cells)  # checked: all fit
                key = f"{kind}|{'aligned' if al else 'misaligned'}"
                say(f"{name}: {key} at {cs} patches")
                curve: dict[str, Any] = {"counts": cs, "n_cells": n_cells, "fraction": [c / n_cells for c in cs]}
                for c in cs:
                    pr_c = probes.probs(feats(corrupt(raw_te, kind, c, patch, aligned=al, seed=seed, sigma=sigma)))
                    for p, pr in pr_c.items():
                        curve.setdefault(p, []).append(_acc(y_te, pr, n_resamples, seed))
                        keep[name][f"{key}|{c}|{p}"] = pr
                m[key] = curve
        if attacks:
            m["attacks"] = _attacks(bb, probes, raw_te[:n_attack], y_te[:n_attack], attacks, eps_list, steps,
                                    patch_side, pool, layer, seed, n_resamples, normalize, say)
        metrics[name] = m
    details["paired"] = _paired(keep, y_te, n_resamples, seed) if len(bbs) > 1 else []
    config = {"backbones": [b.spec.name for b in bbs], "data": src.uri, "corrupt": kinds, "counts": counts,
              "aligned": list(aligned), "attack": attacks, "eps": eps_list, "steps": steps, "patch_side": patch_side,
              "n_train": n_train, "n_test": n_test, "n_attack": n_attack, "k": k, "pool": pool, "layer": layer,
              "sigma": sigma, "n_resamples": n_resamples}
    fps = {"backbones": {b.spec.name: b.fingerprint() for b in bbs}, "data": src.describe()}
    rec = RunRecord(kind="robust", config=config, metrics=metrics, fingerprints=fps, details=details,
                    timings={"total_s": time.perf_counter() - t0}, seeds={"seed": seed})
    return RobustResult(rec, rec.save(out) if out is not None else None)


def _attacks(bb: Any, probes: _Probes, raw: torch.Tensor, y: np.ndarray, attacks: list[str], eps_list: list[float],
             steps: int, side: int, pool: str, layer: int, seed: int, n_resamples: int, normalize: Any,
             say: Any) -> dict[str, Any]:
    from vitlab.inspect.images import embed_raw, to_pil
    from vitlab.data.images import thumbnail_uri

    (li,) = bb.resolve_layers(layer)
    feat = lambda r: bb.forward_tokens(normalize(bb, r.to(bb.device)), [li]).pooled(li, pool).float()  # noqa: E731
    logits = lambda r: probes.head(feat(r))  # noqa: E731
    yt = torch.as_tensor(y)
    f_clean = embed_raw(bb, raw, pool=pool, layer=layer)
    clean = probes.probs(f_clean.numpy())
    clean_ok = clean["linear"].argmax(1) == y
    out: dict[str, Any] = {"n": int(len(y)), "eps": eps_list, "clean_correct": int(clean_ok.sum())}
    for a in attacks:
        say(f"{bb.spec.name}: attack {a} at eps {['%.4g' % e for e in eps_list]}")
        mask = patch_mask(tuple(raw.shape), bb.spec.patch_size, side, seed=seed) if a == "pgd-patch" else None
        res: dict[str, Any] = {p: [] for p in ("linear", "knn")}
        res.update(success=[], raw_success=[], cosine=[])
        fooled = np.zeros(len(y), dtype=bool)
        adv_last = raw
        for e in eps_list:
            adv = pgd_patch(logits, raw, yt, mask, eps=e, steps=steps) if a == "pgd-patch" else \
                feature_attack(feat, raw, eps=e, steps=steps, seed=seed)
            f_adv = embed_raw(bb, adv, pool=pool, layer=layer).numpy()
            pr = probes.probs(f_adv)
            wrong = pr["linear"].argmax(1) != y
            fooled |= clean_ok & wrong
            n_ok = max(int(clean_ok.sum()), 1)
            res["raw_success"].append(float((clean_ok & wrong).sum() / n_ok))
            res["success"].append(float(fooled.sum() / n_ok))
            for p in ("linear", "knn"):
                res[p].append(_acc(y, pr[p], n_resamples, seed))
            res["cosine"].append(float(torch.nn.functional.cosine_similarity(torch.as_tensor(f_adv), f_clean).mean()))
            adv_last, pr_last = adv, pr
        res["max_abs_change"] = float((adv_last - raw).abs().max())
        res["examples"] = [{"clean": thumbnail_uri(to_pil(raw[i]), 96), "attacked": thumbnail_uri(to_pil(adv_last[i]), 96),
                            "label": int(y[i]), "clean_pred": int(clean["linear"][i].argmax()),
                            "attacked_pred": int(pr_last["linear"][i].argmax())} for i in range(min(4, len(y)))]
        out[a] = res
    return out


def _paired(keep: dict[str, dict[str, np.ndarray]], y: np.ndarray, n_resamples: int, seed: int) -> list[dict[str, Any]]:
    from vitlab.metrics.classification import top1
    from vitlab.stats.paired import holm, paired_bootstrap

    rows = []
    for a, b in combinations(sorted(keep), 2):
        for cond in sorted(set(keep[a]) & set(keep[b])):
            r = paired_bootstrap(top1, y, keep[a][cond], keep[b][cond], n_resamples=n_resamples, seed=seed)
            rows.append({"a": a, "b": b, "condition": cond, "diff": r.diff, "low": r.low, "high": r.high,
                         "p_bootstrap": r.p_value})
    for i, p in enumerate(holm([r["p_bootstrap"] for r in rows]) if rows else []):
        rows[i]["p_holm"] = p
    return rows


robust = robust_eval  # the public name: ``vitlab.robust(...)``
