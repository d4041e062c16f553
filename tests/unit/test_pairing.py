"""The one pairing function: paired tests on the same units, Holm within a family (DeLong's p included)."""

from __future__ import annotations

import numpy as np
import pytest

from vitlab.errors import ConfigError
from vitlab.protocols.base import Result
from vitlab.scorers import against, pair_results
from vitlab.stats.paired import delong_test, holm, mcnemar


def _result(correct: np.ndarray, n_cls: int = 2, units: list[str] | None = None) -> Result:
    y = np.arange(len(correct)) % n_cls
    pred = np.where(correct, y, (y + 1) % n_cls)
    proba = np.full((len(y), n_cls), 0.2 / (n_cls - 1))
    proba[np.arange(len(y)), pred] = 0.8
    return Result("classification", units or [f"i{k}" for k in range(len(y))], {"y": y, "proba": proba})


@pytest.fixture(scope="module")
def three():
    rng = np.random.default_rng(0)
    base = rng.random(300) < 0.7
    return {"a": _result(base), "b": _result(base | (rng.random(300) < 0.5)), "c": _result(rng.random(300) < 0.7)}


def test_every_p_value_of_a_family_is_holm_adjusted_delong_included(three):
    rows = pair_results(three, n_resamples=300, seed=0)
    assert [(r["a"], r["b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    for key in ("p_bootstrap", "p_mcnemar", "p_delong"):
        assert [r[f"{key}_holm"] for r in rows] == pytest.approx(holm([r[key] for r in rows]))
    y = three["a"].outputs["y"]
    for r in rows:  # the raw tests are the references'
        pa, pb = three[r["a"]].outputs["proba"], three[r["b"]].outputs["proba"]
        assert r["p_mcnemar"] == pytest.approx(mcnemar(pa.argmax(1) == y, pb.argmax(1) == y).p_value)
        assert r["p_delong"] == pytest.approx(delong_test(y, pa[:, 1], pb[:, 1]).p_value)
        assert r["low"] <= r["diff"] <= r["high"]
    assert rows[0]["significant"] and not rows[1]["significant"]  # planted gain found, none where there is none


def test_reference_mode_is_its_own_family_and_against_turns_rows_around(three):
    rows = pair_results(three, n_resamples=300, seed=0, reference="a")
    assert [(r["a"], r["b"]) for r in rows] == [("b", "a"), ("c", "a")]
    assert [r["p_bootstrap_holm"] for r in rows] == pytest.approx(holm([r["p_bootstrap"] for r in rows]))
    every = pair_results(three, n_resamples=300, seed=0)
    turned = against(every, "a")
    assert turned["b"][0]["diff"] == pytest.approx(rows[0]["diff"]) and set(turned) == {"b", "c"}


def test_results_on_other_units_are_left_out_unless_asked_for(three):
    other = _result(np.ones(300, bool), units=[f"q{k}" for k in range(300)])
    assert {(r["a"], r["b"]) for r in pair_results({**three, "q": other}, n_resamples=50, seed=0)} == \
        {("a", "b"), ("a", "c"), ("b", "c")}
    with pytest.raises(ConfigError, match="different test items"):
        pair_results({"a": three["a"], "q": other}, pairs=[("a", "q")], n_resamples=50, seed=0)
    with pytest.raises(ConfigError, match="reference 'zz'"):
        pair_results(three, reference="zz", n_resamples=50, seed=0)
