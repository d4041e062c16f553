"""FLS / FLS-POG against a full-matrix transcription of dgm-eval's fls.py (CPU, float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitlab.errors import DataError
from vitlab.metrics.fls import fls_pog, fls_score, fls_scores, split_fls_sets


# --------------------------------------------------------------------------- reference
def _norm(*sets):
    ts = [torch.tensor(s, dtype=torch.float64) for s in sets]
    allf = torch.cat(ts, dim=0)
    mean, std = allf.mean(dim=0), allf.std(dim=0)
    return [(t - mean) / std for t in ts]


def _nll(dists, log_sigmas, dim, detailed=False):
    e = (-0.5 * dists) / torch.exp(log_sigmas)
    e = e - (dim / 2) * log_sigmas
    e = e + torch.log(torch.tensor(1 / dists.shape[1], dtype=torch.float64))
    inner = torch.logsumexp(e, dim=1)
    return (torch.mean(-inner), -inner) if detailed else torch.mean(-inner)


def _optimize(x_data, x_kernel, steps=100):
    log_sigmas = torch.zeros(x_kernel.shape[0], dtype=torch.float64, requires_grad=True)
    optim = torch.optim.Adam([log_sigmas], lr=0.5)
    sched = torch.optim.lr_scheduler.MultiStepLR(optim, milestones=[50], gamma=0.1)
    dim = x_data.shape[1]
    dists = torch.cdist(x_data, x_kernel) ** 2
    for _ in range(steps):
        loss = _nll(dists, log_sigmas, dim)
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        with torch.no_grad():
            log_sigmas.data = log_sigmas.clamp(-100, 20).data
    return log_sigmas.detach()


def _pairwise_ll(x_data, x_kernel, log_sigmas):
    dists = torch.cdist(x_data, x_kernel) ** 2
    e = (-0.5 * dists) / torch.exp(log_sigmas)
    e = e - (x_kernel.shape[1] / 2) * log_sigmas
    return e + torch.log(torch.tensor(1 / dists.shape[1], dtype=torch.float64))


def ref_fls(train, baseline, test, gen, steps=100):
    train, baseline, test, gen = _norm(train, baseline, test, gen)
    gs = _optimize(train, gen, steps)
    gen_nll = _nll(torch.cdist(test, gen) ** 2, gs, gen.shape[1]).item()
    bs = _optimize(train, baseline, steps)
    base_nll = _nll(torch.cdist(test, baseline) ** 2, bs, baseline.shape[1]).item()
    fls = math.e ** (-2 * (gen_nll - base_nll) / train.shape[1]) * 100
    size = min(test.shape[0], train.shape[0])
    diff = _pairwise_ll(train[:size], gen, gs).logsumexp(axis=0) - _pairwise_ll(test[:size], gen, gs).logsumexp(axis=0)
    pog = ((diff > 0).sum().item() / diff.shape[0]) * 100 - 50
    return fls, pog


def _sets(seed, n=120, d=5):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, d)) for _ in range(3)] + [rng.standard_normal((n - 10, d)) * 0.8]


# --------------------------------------------------------------------------- tests
def test_fls_and_pog_match_reference_with_float64_cache():
    train, baseline, test, gen = _sets(0)
    got = fls_scores(train, baseline, test, gen, steps=60, chunk=37, cache_dtype="float64")
    ref_f, ref_p = ref_fls(train, baseline, test, gen, steps=60)
    assert got.fls == pytest.approx(ref_f, rel=1e-7)
    assert got.fls_pog == pytest.approx(ref_p, abs=1e-9)


def test_fls_float32_cache_close_and_wrappers_agree():
    train, baseline, test, gen = _sets(1)
    both = fls_scores(train, baseline, test, gen, steps=30)
    ref_f, ref_p = ref_fls(train, baseline, test, gen, steps=30)
    assert both.fls == pytest.approx(ref_f, rel=1e-4)
    assert fls_score(train, baseline, test, gen, steps=30) == both.fls
    assert fls_pog(train, baseline, test, gen, steps=30) == both.fls_pog


def test_copied_training_set_is_flagged_as_overfit():
    rng = np.random.default_rng(2)
    train, baseline, test = (rng.standard_normal((150, 4)) for _ in range(3))
    res = fls_scores(train, baseline, test, train.copy(), steps=40)
    fresh = fls_scores(train, baseline, test, rng.standard_normal((150, 4)), steps=40)
    assert res.fls_pog > 40.0 > fresh.fls_pog


def test_split_fls_sets_is_seeded_and_sized_like_dgm_eval():
    rng = np.random.default_rng(3)
    train, test, gen = rng.standard_normal((50, 3)), rng.standard_normal((30, 3)), rng.standard_normal((40, 3))
    tr, base, te, ge = split_fls_sets(train, test, gen, reduced_n=100, seed=4)
    assert [len(a) for a in (tr, base, te, ge)] == [25, 25, 25, 25]
    again = split_fls_sets(train, test, gen, reduced_n=100, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((tr, base, te, ge), again))
    # train and baseline are disjoint rows of train
    rows = {tuple(r) for r in tr}
    assert not any(tuple(r) in rows for r in base)


def test_fls_errors():
    train, baseline, test, gen = _sets(5, n=30)
    const = [a.copy() for a in (train, baseline, test, gen)]
    for a in const:
        a[:, 2] = 1.0
    with pytest.raises(DataError, match="1 feature dims are constant"):
        fls_scores(*const, steps=2)
    with pytest.raises(DataError, match="train features have dim 5 but gen features have dim 4"):
        fls_scores(train, baseline, test, gen[:, :4], steps=2)
