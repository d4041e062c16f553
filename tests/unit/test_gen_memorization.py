"""AuthPct and C_T against transcriptions of dgm-eval's reference code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from vitlab.errors import DataError
from vitlab.metrics.memorization import (
    authenticity_pct,
    c_t_statistic,
    ct_score,
    ct_score_modified,
    ct_score_test,
    mann_whitney_z,
)


# --------------------------------------------------------------------------- AuthPct
def ref_authpct(train_feat, gen_feat):
    """dgm-eval compute_authpct with full cdist (float64 instead of float32)."""
    train_feat = torch.tensor(train_feat, dtype=torch.float64)
    gen_feat = torch.tensor(gen_feat, dtype=torch.float64)
    real_dists = torch.cdist(train_feat, train_feat)
    real_dists.fill_diagonal_(float("inf"))
    gen_dists = torch.cdist(train_feat, gen_feat)
    real_min = real_dists.min(axis=0)
    gen_min = gen_dists.min(dim=0)
    authen = real_min.values[gen_min.indices] < gen_min.values
    return (100 * torch.sum(authen) / len(authen)).item()


@pytest.mark.parametrize("block", [16, 2048])
def test_authpct_matches_reference(block):
    rng = np.random.default_rng(0)
    train = rng.standard_normal((150, 6))
    gen = np.vstack([rng.standard_normal((80, 6)), train[:20] + 1e-3])
    got = authenticity_pct(train, gen, block_size=block)
    assert got == pytest.approx(ref_authpct(train, gen), abs=1e-9)
    assert 0.0 < got < 100.0


def test_authpct_copies_and_far_samples():
    rng = np.random.default_rng(1)
    train = rng.standard_normal((100, 4))
    assert authenticity_pct(train, train + 1e-9) == 0.0  # exact copies are never authentic
    assert authenticity_pct(train, rng.standard_normal((30, 4)) + 50.0) == 100.0
    with pytest.raises(DataError, match="at least 2 training samples"):
        authenticity_pct(train[:1], train)
    with pytest.raises(DataError, match="train features have dim 4 but gen features have dim 3"):
        authenticity_pct(train, train[:, :3])


# --------------------------------------------------------------------------- C_T reference
def ref_zu(pn, qm, t):
    m, n = qm.shape[0], pn.shape[0]
    nn = NearestNeighbors(n_neighbors=1).fit(t)
    lqm, _ = nn.kneighbors(X=qm, n_neighbors=1)
    lpn, _ = nn.kneighbors(X=pn, n_neighbors=1)
    u, _ = mannwhitneyu(lqm, lpn, alternative="less")
    return (u - (n * m / 2 - 0.5)) / np.sqrt(n * m * (n + m + 1) / 12)


def ref_c_t(pn, pn_cells, qm, qm_cells, t, t_cells, tau):
    m, n = qm.shape[0], pn.shape[0]
    k = np.max(np.unique(t_cells)) + 1
    labels, cts = np.unique(qm_cells, return_counts=True)
    qm_cts = np.zeros(k)
    qm_cts[labels.astype(int)] = cts
    pi_tau = qm_cts / m > tau
    labels, cts = np.unique(pn_cells, return_counts=True)
    pn_cts = np.zeros(k)
    pn_cts[labels.astype(int)] = cts
    pn_of_pi = pn_cts / n
    zu = np.zeros(k)
    for i in range(len(np.unique(pn_cells))):
        if (qm_cells == i).sum() > 0:
            zu[i] = np.ravel(ref_zu(pn[pn_cells == i], qm[qm_cells == i], t[t_cells == i]))[0]
    return pn_of_pi[pi_tau].dot(zu[pi_tau]) / np.sum(pn_of_pi[pi_tau])


def ref_ct_score(train, test, gen, seed):
    if train.shape[1] > 64:
        pca = PCA(n_components=64, random_state=seed).fit(train)
        train, test, gen = pca.transform(train), pca.transform(test), pca.transform(gen)
    km = KMeans(n_clusters=3, n_init=10, random_state=seed).fit(train)
    return ref_c_t(test, km.predict(test), gen, km.predict(gen), train, km.predict(train), 20 / len(gen))


# --------------------------------------------------------------------------- C_T tests
def test_mann_whitney_z_matches_scipy_u():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(37), rng.standard_normal(53) + 0.2
    a[:5] = b[:5]  # ties
    u = mannwhitneyu(a, b, alternative="less").statistic
    expected = (u - (37 * 53 / 2 - 0.5)) / np.sqrt(37 * 53 * (37 + 53 + 1) / 12)
    assert mann_whitney_z(a, b) == pytest.approx(expected, rel=1e-12)


def test_c_t_statistic_matches_reference():
    rng = np.random.default_rng(3)
    t, pn, qm = rng.standard_normal((200, 5)), rng.standard_normal((150, 5)), rng.standard_normal((120, 5)) * 0.9
    cells = lambda x: (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)  # noqa: E731
    got = c_t_statistic(pn, cells(pn), qm, cells(qm), t, cells(t), tau=20 / 120, block_size=32)
    assert got == pytest.approx(ref_c_t(pn, cells(pn), qm, cells(qm), t, cells(t), 20 / 120), rel=1e-10)


def test_ct_score_pipeline_with_pca_matches_reference_and_detects_copying():
    rng = np.random.default_rng(4)
    d = 70  # > 64: exercises the PCA step
    train, test = rng.standard_normal((400, d)), rng.standard_normal((300, d))
    gen = rng.standard_normal((250, d))
    got = ct_score(train, test, gen, seed=7)
    assert got == pytest.approx(ref_ct_score(train, test, gen, seed=7), rel=1e-8)
    assert ct_score(train, test, gen, seed=7) == got  # deterministic under a seed
    copies = train[:250] + 1e-4 * rng.standard_normal((250, d))
    assert ct_score(train, test, copies, seed=7) < -5.0


def test_ct_variants_are_the_dgm_eval_rearrangements():
    rng = np.random.default_rng(5)
    train, test, gen = (rng.standard_normal((240, 4)) for _ in range(3))
    assert ct_score_modified(train, test, gen, seed=1) == ct_score(gen, test, train, seed=1)
    t1, t2 = np.array_split(test, 2)
    assert ct_score_test(train, test, gen, seed=1) == ct_score(t1, t2, gen, seed=1)


def test_c_t_errors():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((30, 2))
    cells = np.zeros(30, dtype=int)
    t_cells = cells.copy()
    t_cells[0] = 1  # cell 1 has a training sample but no test sample
    with pytest.raises(DataError, match="cell 1 has 0 test and 1 training samples"):
        c_t_statistic(x, cells, x, cells, x, t_cells, tau=0.0)
    with pytest.raises(DataError, match="no cell holds more than tau"):
        c_t_statistic(x, cells, x, cells, x, cells, tau=1.0)
