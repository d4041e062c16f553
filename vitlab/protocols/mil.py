"""Multiple-instance learning as a protocol: ``mil-<head>`` on the store's ``bags`` view.

One protocol per MIL head of :data:`vitlab.mil.heads.HEADS` (``mil-mean``, ``mil-max``, ``mil-abmil``,
``mil-transmil``, ``mil-clam_sb``; a head added to that registry gets its protocol without any list
being edited). ``vitlab eval``/``compare`` run them like any other protocol; ``vitlab mil`` is
``vitlab eval`` with these protocols.

What a MIL protocol receives (``view = "bags"``, built by :func:`vitlab.evaluation.evaluate`): the
cross-validation bags as the *train* :class:`~vitlab.protocols.base.Split` and the bags of the
manifest's split ``test`` (possibly none) as the *test* split; each split carries its
:class:`~vitlab.mil.data.BagData` in ``extra["bags"]`` (one ``[n_i, d]`` array per bag) and
``extra["instance_names"]`` (per bag, the ids of its instances, for the attention examples).

What it does: stratified K folds grouped by patient (or the manifest's own folds, checked for
leakage: :mod:`vitlab.mil.cv`), one head per fold (:func:`vitlab.mil.train.fit_head`: early stopping
on a patient-disjoint validation part of the training folds), out-of-fold probabilities pooled over
the folds. The :class:`~vitlab.protocols.base.Result` holds them (units: bag ids; groups: patients, so
the classification scorer resamples **patients**). When there are held-out test bags, every fold
model scores them and their mean probability is a second result (``companions["@test"]``, reported as
``mil-<head>@test``) with the ensemble's gain over the average single fold model
(:mod:`vitlab.mil.ensemble`).

Example:
    >>> from vitlab.protocols import parse_protocols
    >>> p = parse_protocols("mil-abmil:epochs=20")[0]
    >>> p.name, p.view, p.task, p.config.head, p.config.epochs
    ('mil-abmil', 'bags', 'classification', 'abmil', 20)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.protocols.base import Protocol, Result, Split, _restore, register_protocol

__all__ = ["MIL", "MILConfig", "HEADLINE", "N_ATTENTION_EXAMPLES", "register_mil_protocols"]

HEADLINE = "auroc"  # the leaderboard metric of MIL runs (slide-level studies report AUROC first)
N_ATTENTION_EXAMPLES = 4
MAX_HEAT_POINTS = 4096


@dataclass(frozen=True)
class MILConfig:
    """A MIL head's training recipe (CLAM's defaults) and its cross-validation.

    Attributes:
        head: the head (:data:`vitlab.mil.heads.HEADS`).
        folds: K of the patient-grouped stratified K-fold (a manifest ``fold`` column wins when
            ``use_manifest_folds``).
        epochs, min_epochs, patience, lr, max_instances: :func:`vitlab.mil.train.fit_head`.
        options: keyword arguments of the head (e.g. ``{"dim": 128}`` for TransMIL).
    """

    head: str = "abmil"
    folds: int = 5
    epochs: int = 200
    min_epochs: int = 50
    patience: int = 20
    lr: float = 2e-4
    max_instances: int | None = None
    use_manifest_folds: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from vitlab.mil.heads import HEADS

        HEADS.entry(self.head)  # unknown head: one line with suggestions
        if not isinstance(self.folds, int) or self.folds < 2:
            raise ConfigError(f"mil: folds must be a whole number >= 2, got {self.folds!r}.")
        for name in ("epochs", "min_epochs", "patience"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"mil: {name} must be a whole number >= 1, got {v!r}.")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"mil: lr must be > 0, got {self.lr!r}.")
        if self.max_instances is not None and (not isinstance(self.max_instances, int) or self.max_instances < 1):
            raise ConfigError(f"mil: max_instances must be a whole number >= 1 or none, got {self.max_instances!r}.")
        if not isinstance(self.options, dict):
            raise ConfigError(f"mil: options must be a dict of head keyword arguments, got {self.options!r}.")


class MIL(Protocol):
    """Base of the ``mil-<head>`` protocols (each fixes :attr:`MILConfig.head`)."""

    name: ClassVar[str] = "mil"
    task: ClassVar[str] = "classification"
    view: ClassVar[str] = "bags"
    Config: ClassVar[type] = MILConfig
    headline: ClassVar[str] = HEADLINE
    cross_fitted: ClassVar[bool] = True
    head: ClassVar[str] = "abmil"

    def __init__(self, config: Any = None, **params: Any) -> None:
        if config is None and "head" in params and params["head"] != self.head:
            raise ConfigError(f"{self.name} trains the {self.head} head; use mil-{params['head']} for another.")
        if config is None:
            params.setdefault("head", self.head)
        super().__init__(config, **params)

    @classmethod
    def default_config(cls) -> MILConfig:
        return MILConfig(head=cls.head)

    def run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str = "cpu") -> Result:
        """As :meth:`Protocol.run`, for a cross-fitted protocol: both sides are put in canonical order (by bag id,
        their bag data with them), and the result's units are the **train** bags (scored out of fold) in the
        caller's order; the held-out ``test`` bags, when there are any, are ``companions["@test"]``."""
        (tr, tr_order), (te, te_order) = _canonical_bags(train), _canonical_bags(test)
        for side, split in (("train", tr), ("test", te)):
            _check_finite_bags(split, side)
        res = self._run(tr, te, seed=seed, n_classes=n_classes, device=device)
        companions = dict(res.companions)
        if tr_order is not None:
            res = _restore_bags(res, tr_order)
        if te_order is not None and "@test" in companions:
            companions["@test"] = _restore_bags(companions["@test"], te_order)
        res.companions = companions
        return res

    def _run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str) -> Result:
        from vitlab.mil.cv import cross_validate
        from vitlab.mil.folds import patient_folds
        from vitlab.mil.ensemble import ensemble_proba
        from vitlab.mil.train import fit_head, predict

        cfg = self.config
        bags = train.extra["bags"]
        test_bags = test.extra.get("bags") if len(test) else None
        patients = np.asarray(bags.patients)
        if cfg.use_manifest_folds and bags.fold is not None:
            uniq = sorted(set(bags.fold))
            fold = np.array([uniq.index(f) for f in bags.fold])
            fold_origin = "manifest fold column"
        else:
            fold = patient_folds(bags.labels, patients, k=cfg.folds, seed=seed)
            fold_origin = f"stratified {cfg.folds}-fold grouped by patient (seed {seed})"
        att: list[np.ndarray | None] = [None] * len(bags)
        fitted_epochs: list[int] = []
        test_probas: list[np.ndarray] = []

        def fit_predict(train_idx, val_idx, test_idx, k):
            fitted = fit_head([bags.features[i] for i in train_idx], bags.labels[train_idx],
                              [bags.features[i] for i in val_idx] if len(val_idx) else None,
                              bags.labels[val_idx] if len(val_idx) else None, head=cfg.head, n_classes=n_classes,
                              seed=seed + int(k), device=device, epochs=cfg.epochs,
                              min_epochs=min(cfg.min_epochs, cfg.epochs), patience=cfg.patience, lr=cfg.lr,
                              max_instances=cfg.max_instances, head_cfg=cfg.options or None)
            fitted_epochs.append(int(fitted.best_epoch))
            proba, attn = predict(fitted, [bags.features[i] for i in test_idx])
            for i, a in zip(test_idx, attn):
                att[int(i)] = a
            if test_bags is not None:  # every fold model also scores the held-out test bags
                test_probas.append(predict(fitted, test_bags.features)[0])
            return proba

        cv = cross_validate(len(bags), bags.labels, patients, fold, fit_predict, seed=seed, bag_ids=bags.ids)
        res = cv.to_result(bags.ids, patients)
        res.outputs["attention"] = att
        res.hparams = {"head": cfg.head, "epochs": cfg.epochs, "lr": cfg.lr, "patience": cfg.patience,
                       **(cfg.options or {})}
        res.details = {**res.details, "per_fold": cv.per_fold(), "best_epochs": fitted_epochs, "fold_origin": fold_origin,
                       "folds": int(len(set(fold.tolist()))),
                       "instance_auroc_of_attention": _instance_auroc(att, bags.instance_labels, bags.labels),
                       "attention_examples": _examples(bags, train.extra.get("instance_names"), att, seed)}
        if test_bags is not None:  # the K fold models as one ensemble (the scorer adds its gain, members given)
            res.companions["@test"] = Result(
                "classification", [str(b) for b in test_bags.ids],
                {"y": np.asarray(test_bags.labels), "proba": ensemble_proba(test_probas), "members": test_probas},
                groups=np.asarray(test_bags.patients), hparams=dict(res.hparams))
        return res


def _restore_bags(res: Result, order: np.ndarray) -> Result:
    """:func:`_restore` plus the per-bag lists (attention) and the members' ``[m, C]`` probabilities."""
    out = _restore(res, order)
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    outputs = dict(out.outputs)
    if "attention" in res.outputs:
        outputs["attention"] = [res.outputs["attention"][i] for i in inv]
    if "members" in res.outputs:
        outputs["members"] = [np.asarray(m)[inv] for m in res.outputs["members"]]
    return dataclasses.replace(out, outputs=outputs)


def _check_finite_bags(split: Split, side: str) -> None:
    """Refuse NaN / inf instance features, naming the first bag (as :func:`check_finite` does for rows)."""
    bags = split.extra.get("bags") if len(split) else None
    if bags is None:
        return
    bad = [i for i, x in enumerate(bags.features) if not np.isfinite(np.asarray(x)).all()]
    if bad:
        raise DataError(f"{side} features contain NaN or inf ({len(bad)} sample(s), first: {bags.ids[bad[0]]}, a bag). "
                        "Re-embed its instances (check --precision), or fix its feature file.")


def _canonical_bags(split: Split) -> tuple[Split, np.ndarray | None]:
    """``split`` (and its bag data) sorted by bag id, so the row order of a manifest changes nothing; and the
    order used (``None``: already sorted)."""
    if split.ids is None or not len(split):
        return split, None
    order = np.argsort(np.asarray([str(i) for i in split.ids]), kind="stable")
    if np.array_equal(order, np.arange(len(order))):
        return split, None
    extra = dict(split.extra)
    extra["bags"] = split.extra["bags"].subset(order)
    if extra.get("instance_names") is not None:
        extra["instance_names"] = [split.extra["instance_names"][i] for i in order]
    pick = lambda a: None if a is None else np.asarray(a)[order]  # noqa: E731
    return dataclasses.replace(split, y=pick(split.y), rows=np.asarray(split.rows)[order], groups=pick(split.groups),
                               ids=[split.ids[i] for i in order], extra=extra), order


def _instance_auroc(attention: list[np.ndarray | None], instance_labels: list[np.ndarray] | None,
                    bag_labels: np.ndarray) -> float | None:
    """AUROC of attention scores for key (label 1) vs other instances, within positive bags."""
    if instance_labels is None or any(a is None for a in attention):
        return None
    from vitlab.metrics.classification import auroc

    scores, labels = [], []
    for a, il, y in zip(attention, instance_labels, bag_labels):
        if y > 0 and len(np.unique(il)) == 2:
            scores.append(a * len(a))  # normalise for bag size: 1.0 = uniform attention
            labels.append(il)
    if not scores:
        return None
    s, t = np.concatenate(scores), np.concatenate(labels).astype(int)
    return float(auroc(t, np.stack([1 - s, s], 1)))


def _heat(xy: np.ndarray, a: np.ndarray) -> dict[str, Any]:
    """A bag's attention at its tiles' coordinates for the report's heat map.

    Up to :data:`MAX_HEAT_POINTS` tiles are kept as they are; a larger bag is binned onto a
    64 × 64 grid over its extent (mean attention per occupied cell, at the cell centre).
    """
    xy = np.asarray(xy, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64) * len(a)  # 1.0 = uniform attention
    binned = len(a) > MAX_HEAT_POINTS
    if binned:
        lo, hi = xy.min(0), xy.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        cell = np.minimum((64 * (xy - lo) / span).astype(np.int64), 63)
        key = cell[:, 0] * 64 + cell[:, 1]
        uniq, inv = np.unique(key, return_inverse=True)
        a = np.bincount(inv, weights=a) / np.bincount(inv)
        xy = lo + (np.stack([uniq // 64, uniq % 64], 1) + 0.5) * span / 64
    return {"x": np.round(xy[:, 0], 3).tolist(), "y": np.round(xy[:, 1], 3).tolist(),
            "attention": np.round(a, 4).tolist(), "binned": bool(binned), "scale": "attention x bag size"}


def _examples(bags: Any, instance_names: list[list[str]] | None, attention: list[np.ndarray | None],
              seed: int) -> list[dict[str, Any]]:
    """For a few positive bags, the most and least attended instances (ids and weights), for the report;
    with tile coordinates, the bag's attention heat map too."""
    labels, ids, coords = bags.labels, bags.ids, bags.coords
    pos = [i for i in range(len(ids)) if labels[i] > 0 and attention[i] is not None]
    if not pos:
        return []
    pick = np.sort(np.random.default_rng(seed).choice(pos, min(N_ATTENTION_EXAMPLES, len(pos)), replace=False))
    out = []
    for i in pick:
        a = attention[i]
        order = np.argsort(-a, kind="stable")
        top, low = order[:3], order[::-1][:3]
        # image bags name each instance by its row id; feature bags by its index in the bag's file
        names = instance_names[i] if instance_names is not None else None
        name = (lambda j: names[j]) if names is not None and len(names) == len(a) else (lambda j: f"{ids[i]}#{j}")
        ex = {"bag": ids[i], "size": int(len(a)),
              "top": [{"id": name(j), "attention": float(a[j])} for j in top],
              "bottom": [{"id": name(j), "attention": float(a[j])} for j in low]}
        if coords is not None and coords[i] is not None and len(coords[i]) == len(a):
            ex["heatmap"] = _heat(coords[i], a)
        out.append(ex)
    return out


def register_mil_protocols() -> None:
    """Register ``mil-<head>`` for every head of :data:`vitlab.mil.heads.HEADS` (idempotent)."""
    from vitlab.mil.heads import HEADS
    from vitlab.protocols.base import PROTOCOLS

    for entry in HEADS:
        name = f"mil-{entry.name}"
        if name in PROTOCOLS:
            continue
        cls = type(f"MIL_{entry.name}", (MIL,), {"name": name, "head": entry.name,
                                                  "help": f"MIL, {entry.help or entry.name}: patient-grouped K-fold",
                                                  "__doc__": f"MIL protocol with the {entry.name} head."})
        register_protocol(cls)


register_mil_protocols()
