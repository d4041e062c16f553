"""Tests of vitlab.stats.ranks and vitlab.stats.cd_diagram."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy import stats

from vitlab.errors import ConfigError, DataError
from vitlab.stats.cd_diagram import cliques, plot_critical_difference
from vitlab.stats.ranks import friedman_test, mean_ranks, nemenyi_cd, nemenyi_q, rank_matrix


@pytest.mark.parametrize("seed,rounding", [(0, None), (1, 1), (2, 0)])
def test_friedman_matches_scipy(seed, rounding):
    s = np.random.default_rng(seed).normal(size=(12, 5)) * 2
    if rounding is not None:
        s = np.round(s, rounding)  # ties -> tie correction
    stat, p = friedman_test(s)
    ref = stats.friedmanchisquare(*s.T)
    assert stat == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)


def test_mean_ranks():
    s = np.array([[0.9, 0.8, 0.7], [0.6, 0.8, 0.7], [0.5, 0.5, 0.9]])
    np.testing.assert_allclose(rank_matrix(s), [[1, 2, 3], [3, 1, 2], [2.5, 2.5, 1]])
    np.testing.assert_allclose(mean_ranks(s), [6.5 / 3, 5.5 / 3, 2.0])
    np.testing.assert_allclose(mean_ranks(s, higher_is_better=False), [4 - 6.5 / 3, 4 - 5.5 / 3, 2.0])


@pytest.mark.parametrize("k,q", [(2, 1.960), (3, 2.343), (5, 2.728), (10, 3.164)])
def test_nemenyi_q_matches_demsar_table(k, q):
    assert nemenyi_q(k, 0.05) == pytest.approx(q, abs=1.5e-3)


def test_nemenyi_cd_formula():
    # Demsar 2006, Sec. 3.2.2 example: k=4, N=14, q=2.569 -> CD = 1.25
    assert nemenyi_cd(4, 14) == pytest.approx(2.569 * np.sqrt(4 * 5 / (6 * 14)), abs=2e-3)
    assert nemenyi_cd(4, 14) == pytest.approx(1.25, abs=6e-3)


def test_cd_diagram_returns_figure(tmp_path):
    ranks = {"dinov2": 1.3, "clip": 2.1, "siglip": 2.4, "mae": 3.9, "deit": 4.3}
    fig = plot_critical_difference(ranks, cd=nemenyi_cd(5, 10))
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "cd.png")
    assert (tmp_path / "cd.png").stat().st_size > 1000
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert any(t.startswith("dinov2") for t in texts) and any(t.startswith("CD =") for t in texts)


def test_cliques():
    assert cliques([1.0, 1.5, 3.0, 3.2], 1.0) == [(0, 1), (2, 3)]
    assert cliques([1.0, 1.4, 1.8, 2.2], 1.0) == [(0, 2), (1, 3)]
    assert cliques([1.0, 3.0], 1.0) == []


def test_errors():
    with pytest.raises(ConfigError, match="needs >= 3 methods, got 2.*wilcoxon"):
        friedman_test(np.ones((5, 2)))
    with pytest.raises(DataError, match="NaN/inf at \\(dataset, method\\) \\[\\(1, 2\\)\\]"):
        mean_ranks(np.array([[1, 2, 3], [1, 2, np.nan]]))
    with pytest.raises(DataError, match="\\[n_datasets, n_methods\\]"):
        mean_ranks(np.ones(4))
    with pytest.raises(ConfigError, match="alpha=2"):
        nemenyi_cd(3, 5, alpha=2)
    with pytest.raises(ConfigError, match="cd=0 must be > 0"):
        plot_critical_difference({"a": 1.0, "b": 2.0}, cd=0)
