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
