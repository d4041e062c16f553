"""Seeded, stratified, group-aware splits."""

import numpy as np
import pytest

from vitlab.data.splits import make_splits
from vitlab.errors import ConfigError


def test_stratified_and_seeded():
    y = np.repeat(np.arange(4), 50)
    a, b = make_splits(y, seed=3), make_splits(y, seed=3)
    assert (a == b).all()
    assert not (a == make_splits(y, seed=4)).all()
    assert np.bincount(y[a == "test"]).tolist() == [10, 10, 10, 10]


def test_groups_never_cross_splits():
    rng = np.random.default_rng(0)
    groups = [f"patient{g}" for g in rng.integers(0, 30, 300)]
    y = rng.integers(0, 3, 300)
    s = make_splits(y, groups, seed=0, test_fraction=0.2, val_fraction=0.2)
    by_split = {name: {g for g, t in zip(groups, s) if t == name} for name in ("train", "val", "test")}
    assert not by_split["train"] & by_split["test"] and not by_split["train"] & by_split["val"]
    assert not by_split["val"] & by_split["test"] and all(by_split.values())


def test_bad_fractions():
    with pytest.raises(ConfigError, match="must be in"):
        make_splits(np.zeros(10, int), test_fraction=0.6, val_fraction=0.5)


def test_holdout_is_the_split_of_make_splits_and_strict_equals_fallback_when_stratifiable():
    from vitlab.data.splits import holdout

    y = np.repeat(np.arange(4), 25)
    kept, held = holdout(y, None, 0.2, 3)
    kept_f, held_f = holdout(y, None, 0.2, 3, fallback=True)
    assert np.array_equal(kept, kept_f) and np.array_equal(held, held_f)
    assert sorted(held.tolist()) == np.flatnonzero(make_splits(y, seed=3) == "test").tolist()
    groups = np.arange(100) // 4
    kept, held = holdout(y, groups, 0.25, 1)
    assert np.array_equal(held, holdout(y, groups, 0.25, 1, fallback=True)[1])
    assert not set(groups[kept]) & set(groups[held])


def test_holdout_raises_or_falls_back_on_small_data():
    from vitlab.data.splits import holdout
    from vitlab.errors import DataError

    y = np.array([0, 0, 1, 1, 2, 2, 3])  # class 3 has one sample
    with pytest.raises(DataError, match="too few samples for a stratified validation split"):
        holdout(y, None, 0.5, 0)
    kept, held = holdout(y, None, 0.5, 0, fallback=True)  # unstratified, still seeded
    assert len(held) == 4 and not set(kept) & set(held)
    with pytest.raises(DataError, match=r"3 group\(s\) cannot be split"):
        holdout(np.arange(30) % 2, np.arange(30) % 3, 0.2, 0)
    with pytest.raises(DataError, match="only 1 group present"):
        holdout(None, np.zeros(10), 0.2, 0, fallback=True)
    with pytest.raises(DataError, match=r"groups has shape \(3,\), expected \(4,\)"):
        holdout(np.array([0, 1, 0, 1]), np.array([0, 1, 2]), 0.5, 0)
    with pytest.raises(ConfigError, match="needs labels"):
        holdout(None, None, 0.2, 0, n=10)
