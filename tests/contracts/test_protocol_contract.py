"""The protocol contract: every registered protocol passes the same checks (as scikit-learn's
``parametrize_with_checks`` runs one suite over every estimator).

Checks: a frozen, validated config with a clear error for unknown parameters; seeded determinism;
invariance to the row order of both splits; inputs not mutated; NaN / inf features refused with
one clear line; the scorer's record entries survive a JSON round trip; every interval contains
its point estimate; two results on the same units can be paired.

Inputs are synthetic and chosen by what the protocol declares it needs (``view``): pooled
vectors, or patch tokens with masks, or joint-space embeddings with text embeddings, or bags of
instance features (MIL). A cross-fitted protocol (MIL) scores its train split out of fold, so its
units are the train items.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest

from vitlab.errors import ConfigError, DataError
from vitlab.protocols.base import PROTOCOLS, Split, parse_protocols
from vitlab.record import RunRecord
from vitlab.scorers import scorer_for

parse_protocols("knn")  # registers the built-in protocols
N_CLASSES = 3
# Small configs so the suite stays fast; every protocol not listed runs with its defaults.
FAST = {"knn": {"ks": (3, 5)}, "linear": {"Cs": (0.1, 1.0)}, "fewshot": {"shots": (1, 2), "episodes": 3},
        "seg-linear": {"Cs": (1.0,)}}
FAST_MIL = {"folds": 2, "epochs": 2, "min_epochs": 1, "patience": 1}


def _make(name: str):
    cls = PROTOCOLS.get(name)
    return cls(**(FAST_MIL if cls.view == "bags" else FAST.get(name, {})))


def _pooled(seed: int, n: int, offset: int) -> Split:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    X = (np.eye(N_CLASSES, 8)[y] * 2 + rng.normal(size=(n, 8))).astype(np.float32)
    ids = [f"id{offset + i:04d}" for i in range(n)]
    return Split(X, y, np.arange(offset, offset + n), None, ids)


def _tokens(seed: int, n: int, offset: int) -> Split:
    """4x4 patch grid, masks at 8x8: each quadrant's class is written into its patch features."""
    rng = np.random.default_rng(seed)
    quad = rng.integers(0, N_CLASSES, size=(n, 2, 2))
    patch_lab = np.kron(quad, np.ones((2, 2), int)).reshape(n, 16)
    tokens = (np.eye(N_CLASSES, 8)[patch_lab] * 2 + 0.3 * rng.normal(size=(n, 16, 8))).astype(np.float32)
    masks = [np.kron(q, np.ones((4, 4), int)) for q in quad]
    y = quad[:, 0, 0]
    X = tokens.mean(1)
    ids = [f"id{offset + i:04d}" for i in range(n)]
    return Split(X, y, np.arange(offset, offset + n), None, ids, tokens=tokens, grid=(4, 4), masks=masks,
                 extra={"classes": [f"c{i}" for i in range(N_CLASSES)], "ignore_index": 255})


def _embed(seed: int, n: int, offset: int) -> Split:
    s = _pooled(seed, n, offset)
    text = np.eye(N_CLASSES, 8)[:, None, :].repeat(2, axis=1).astype(np.float32)  # [classes, templates, D]
    return dataclasses.replace(s, extra={"text_embeddings": text, "classes": [f"c{i}" for i in range(N_CLASSES)]})


def _bags(seed: int, n: int, offset: int) -> Split:
    """``n`` bags of 3-6 instances (8-d); a bag of class c holds one instance near e_c, the rest noise."""
    from vitlab.mil.data import BagData

    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    feats = []
    for c in y:
        x = rng.normal(size=(int(rng.integers(3, 7)), 8)).astype(np.float32)
        x[0] += 3 * np.eye(N_CLASSES, 8, dtype=np.float32)[c]
        feats.append(x)
    ids = [f"id{offset + i:04d}" for i in range(n)]
    patients = [f"p{offset + i // 2:04d}" for i in range(n)]
    bags = BagData(ids, feats, y, [f"c{i}" for i in range(N_CLASSES)], patients)
    return Split(None, y, np.arange(offset, offset + n), np.asarray(patients, dtype=object), ids,
                 extra={"bags": bags, "instance_names": None})


MAKERS = {"pooled": _pooled, "tokens": _tokens, "embed": _embed, "bags": _bags}


def _units_side(proto, train: Split, test: Split) -> Split:
    """The split whose items a result scores: test, or train for a cross-fitted protocol."""
    return train if getattr(proto, "cross_fitted", False) else test


def _with_bags(split: Split, fn) -> Split:
    """``split`` with ``fn(list of [n_i, d] arrays) -> list`` applied to its bags' features (a new object)."""
    b = split.extra["bags"]
    return dataclasses.replace(split, extra={**split.extra, "bags": dataclasses.replace(b, features=fn(b.features))})


def _splits(proto, seed: int = 0) -> tuple[Split, Split]:
    make = MAKERS[proto.view]
    n_train, n_test = (36, 12) if proto.view == "bags" else (60, 30)  # a MIL head trains per fold: keep it small
    return make(seed, n_train, 0), make(seed + 1, n_test, 1000)


def _shuffle(split: Split, seed: int) -> Split:
    order = np.random.default_rng(seed).permutation(len(split))
    pick = lambda a: None if a is None else (a[order] if isinstance(a, np.ndarray) else [a[i] for i in order])  # noqa
    extra = split.extra
    if "bags" in extra:
        extra = {**extra, "bags": extra["bags"].subset(order)}
    return dataclasses.replace(split, X=pick(split.X), y=pick(split.y), rows=split.rows[order],
                               groups=pick(split.groups), ids=pick(split.ids), tokens=pick(split.tokens),
                               masks=pick(split.masks), extra=extra)


def _per_unit(res) -> dict:
    """Per-unit outputs keyed by unit id (for order-free comparison)."""
    out = {}
    for k, v in res.outputs.items():
        items = v.items() if isinstance(v, dict) else [(k, v)]
        for name, arr in items:
            if isinstance(arr, np.ndarray) and arr.ndim and arr.shape[0] == len(res.units):
                out[name] = {u: np.asarray(arr[i]).tolist() for i, u in enumerate(res.units)}
    return out


PROTOCOL_NAMES = sorted(e.name for e in PROTOCOLS)


@pytest.fixture(params=PROTOCOL_NAMES)
def proto(request):
    return _make(request.param)


def test_config_is_frozen_and_validated(proto):
    with pytest.raises(dataclasses.FrozenInstanceError):
        proto.config.__setattr__(dataclasses.fields(proto.config)[0].name, None)
    with pytest.raises(ConfigError, match=f"protocol '{proto.name}' has no parameter 'bogus'"):
        type(proto)(bogus=1)
    assert proto.to_dict()["name"] == proto.name and proto.task in ("classification", "retrieval",
                                                                    "segmentation", "episodes")
    assert parse_protocols(proto.spec())[0].config == proto.config  # the spec string round-trips


def test_seeded_determinism(proto):
    train, test = _splits(proto)
    a = proto.run(train, test, seed=0, n_classes=N_CLASSES)
    b = proto.run(train, test, seed=0, n_classes=N_CLASSES)
    assert a.units == b.units and _per_unit(a) == _per_unit(b) and a.episodes == b.episodes


def test_invariant_to_row_order(proto):
    train, test = _splits(proto)
    a = proto.run(train, test, seed=0, n_classes=N_CLASSES)
    b = proto.run(_shuffle(train, 1), _shuffle(test, 2), seed=0, n_classes=N_CLASSES)
    assert sorted(a.units) == sorted(b.units)
    side = _units_side(proto, _shuffle(train, 1), _shuffle(test, 2))
    assert b.units == [side.ids[i] for i in range(len(side))]  # in the caller's order
    pa, pb = _per_unit(a), _per_unit(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        for u in pa[k]:
            np.testing.assert_allclose(pa[k][u], pb[k][u], atol=1e-6, err_msg=f"{k} of {u}")
    assert a.episodes == b.episodes and a.hparams == b.hparams


def test_inputs_are_not_mutated(proto):
    train, test = _splits(proto)
    before = copy.deepcopy((train, test))
    proto.run(train, test, seed=0, n_classes=N_CLASSES)
    for old, new in zip(before, (train, test)):
        for f in ("X", "y", "rows", "tokens"):
            a, b = getattr(old, f), getattr(new, f)
            assert (a is None and b is None) or np.array_equal(a, b), f
        assert old.ids == new.ids


@pytest.mark.parametrize("side", ["train", "test"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_refused(proto, side, bad):
    train, test = _splits(proto)
    target = train if side == "train" else test
    if proto.view == "bags":
        def plant(feats):
            feats = [f.copy() for f in feats]
            feats[3][0, 0] = bad
            return feats
        broken = _with_bags(target, plant)
    else:
        field = "tokens" if proto.view == "tokens" else "X"
        arr = getattr(target, field).copy()
        arr[3] = bad
        broken = dataclasses.replace(target, **{field: arr})
    args = (broken, test) if side == "train" else (train, broken)
    with pytest.raises(DataError, match=rf"{side} features contain NaN or inf \(1 sample\(s\), first: id"):
        proto.run(*args, seed=0, n_classes=N_CLASSES)


def test_scores_round_trip_through_json_and_intervals_contain_their_estimate(proto):
    train, test = _splits(proto)
    res = proto.run(train, test, seed=0, n_classes=N_CLASSES)
    metrics, details = scorer_for(res.task).score(res, n_resamples=100, seed=0)
    assert metrics, "a protocol must report at least one metric"
    for name, m in metrics.items():
        if np.isfinite(m["low"]):
            assert m["low"] <= m["value"] <= m["high"], name
    rec = RunRecord(kind="eval", config={"protocols": [proto.label]}, metrics={proto.label: metrics},
                    hparams={proto.label: res.hparams}, details={proto.label: {**res.details, **details}})
    back = RunRecord.from_dict(json.loads(rec.to_json()))
    assert back.metrics == json.loads(json.dumps(rec.metrics))
    assert scorer_for(res.task).headline_for(set(metrics)) in metrics


def test_two_results_on_the_same_units_can_be_paired(proto):
    train, test = _splits(proto)
    a = proto.run(train, test, seed=0, n_classes=N_CLASSES)
    def noisy(s: Split) -> Split:
        if "bags" in s.extra:
            rng = np.random.default_rng(7)
            return _with_bags(s, lambda fs: [f + rng.normal(size=f.shape).astype(np.float32) for f in fs])
        return dataclasses.replace(
            s, X=None if s.X is None else s.X + np.random.default_rng(5).normal(size=s.X.shape).astype(np.float32),
            tokens=None if s.tokens is None else s.tokens + np.random.default_rng(6).normal(
                size=s.tokens.shape).astype(np.float32))
    b = proto.run(noisy(train), noisy(test), seed=0, n_classes=N_CLASSES)
    t = scorer_for(a.task).paired(a, b, n_resamples=100, seed=0)
    if scorer_for(a.task).p_keys:
        assert t is not None and t["low"] <= t["diff"] <= t["high"] and 0 < t["p_bootstrap"] <= 1
    else:
        assert t is None
