"""Tests of vitlab.protocols.linear: parity with sklearn LogisticRegression, C selection, splits."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from vitlab.data.splits import holdout
from vitlab.errors import ConfigError, DataError
from vitlab.protocols import linear as lin
from vitlab.protocols.linear import LinearProbe, fit_logistic


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _data(n=300, d=8, n_cls=3, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(d, n_cls)) * scale
    p = _softmax(X @ W)
    y = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return X, y


def _sk(X, y, C):
    return LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(X, y)


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("n_cls", [2, 4])
def test_matches_sklearn(C, n_cls):
    X, y = _data(n_cls=n_cls, seed=n_cls)
    W, b = fit_logistic(X, y, C, tol=1e-9, max_iter=5000)
    sk = _sk(X, y, C)
    np.testing.assert_allclose(_softmax(X @ W + b), sk.predict_proba(X), atol=1e-5)
    if n_cls == 2:  # returned as the symmetric pair [-w/2, w/2]
        np.testing.assert_allclose(W[:, 1] - W[:, 0], sk.coef_[0], atol=1e-4)
        np.testing.assert_allclose(b[1] - b[0], sk.intercept_[0], atol=1e-4)
    else:
        np.testing.assert_allclose(W.T, sk.coef_, atol=1e-4)
        np.testing.assert_allclose(b, sk.intercept_ - sk.intercept_.mean(), atol=1e-4)


def test_objective_is_sklearns():
    """At our optimum, the gradient of C*sum(logloss) + 0.5||W||^2 (written out) vanishes."""
    X, y = _data(n_cls=3, seed=5)
    C = 0.3
    W, b = fit_logistic(X, y, C, tol=1e-10, max_iter=5000)
    G = _softmax(X @ W + b) - np.eye(3)[y]
    np.testing.assert_allclose(C * X.T @ G + W, 0, atol=1e-6)
    np.testing.assert_allclose(C * G.sum(0), 0, atol=1e-6)


def test_float32_close_and_warm_start_same_solution():
    X, y = _data(seed=1)
    W64, b64 = fit_logistic(X, y, 1.0, tol=1e-9)
    W32, b32 = fit_logistic(X, y, 1.0, dtype="float32", tol=1e-5)
    np.testing.assert_allclose(_softmax(X @ W32 + b32), _softmax(X @ W64 + b64), atol=1e-3)
    Wa, ba = fit_logistic(X, y, 0.01, tol=1e-9)
    Ww, bw = fit_logistic(X, y, 1.0, init=(Wa, ba), tol=1e-9)
    np.testing.assert_allclose(Ww, W64, atol=1e-5)


def test_probe_picks_sensible_C():
    # many noise dims, few samples: tiny C underfits, huge C overfits
    rng = np.random.default_rng(0)
    n, d = 240, 60
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d))
    X[:, :3] += 1.2 * np.eye(3)[y]
    Xte = rng.normal(size=(2000, d))
    yte = rng.integers(0, 3, 2000)
    Xte[:, :3] += 1.2 * np.eye(3)[yte]
    Cs = np.logspace(-6, 4, 11)
    probe = LinearProbe(Cs=Cs, seed=0).fit(X, y)
    assert probe.val_scores_.shape == (11,)
    assert probe.C_ == Cs[np.argmax(probe.val_scores_)]
    assert 1e-4 <= probe.C_ <= 1e2
    assert probe.val_scores_[0] < probe.val_scores_.max()  # C=1e-6 predicts ~one class
    acc = (probe.predict(Xte) == yte).mean()
    assert acc > 0.55
    # final model = refit on all training data at C_, same as sklearn at that C
    sk = _sk(X, y, probe.C_)
    np.testing.assert_allclose(probe.predict_proba(Xte), sk.predict_proba(Xte), atol=1e-3)
    assert probe.coef_.shape == (3, d) and probe.intercept_.shape == (3,)


def test_group_split_keeps_groups_apart():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 10)
    y = np.repeat(rng.integers(0, 2, 40), 10)
    y[:20] = [0] * 10 + [1] * 10
    groups[:20] = [0] * 10 + [1] * 10
    tr, va = holdout(y, groups, 0.2, seed=0)
    assert not set(groups[tr]) & set(groups[va])
    assert 0.1 < len(va) / len(y) < 0.35
    tr2, va2 = holdout(y, None, 0.2, seed=0)
    assert len(va2) == 80 and not set(tr2) & set(va2)
    # stratified: each class's validation count is within 1 of 20% of the class
    assert np.all(np.abs(np.bincount(y[va2], minlength=2) - 0.2 * np.bincount(y)) <= 1)


def test_probe_with_groups_fits_and_is_deterministic():
    X, y = _data(n=400, seed=2)
    groups = np.arange(400) // 4
    a = LinearProbe(Cs=[0.01, 1.0, 100.0], seed=3).fit(X, y, groups=groups)
    b = LinearProbe(Cs=[0.01, 1.0, 100.0], seed=3).fit(X, y, groups=groups)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.val_scores_, b.val_scores_)


def test_standardize_flag_and_predict_shapes():
    X, y = _data(seed=4)
    Xs = X * np.array([1000.0] + [1.0] * 7) + 50
    p = LinearProbe(Cs=[1.0], standardize=True).fit(Xs, y)
    ref = fit_logistic((Xs - Xs.mean(0)) / Xs.std(0), y, 1.0)
    Z = ((Xs - Xs.mean(0)) / Xs.std(0)) @ ref[0] + ref[1]
    np.testing.assert_allclose(p.predict_proba(Xs), _softmax(Z), atol=1e-5)
    assert p.predict(Xs).dtype == np.int64


def test_errors():
    X, y = _data(n_cls=3)
    with pytest.raises(DataError, match=r"class\(es\) \[3\] have no train samples \(of 4 classes\)"):
        fit_logistic(X, y, 1.0, num_classes=4)
    with pytest.raises(DataError, match=r"class\(es\) \[1\] have no train samples"):
        fit_logistic(X, np.where(y == 1, 0, y), 1.0)
    with pytest.raises(DataError, match="only one class"):
        fit_logistic(X, np.zeros_like(y), 1.0)
    with pytest.raises(ConfigError, match="C=-1.0 must be a finite positive"):
        fit_logistic(X, y, -1.0)
    with pytest.raises(ConfigError, match="init shapes"):
        fit_logistic(X, y, 1.0, init=(np.zeros((3, 3)), np.zeros(3)))
    with pytest.raises(DataError, match="too few samples for a stratified validation split.*"
                                         "class 0 has 1 sample"):
        LinearProbe(Cs=[0.1, 1.0]).fit(X[:7], np.array([0, 1, 1, 2, 2, 1, 2]))
    with pytest.raises(DataError, match="2 group\\(s\\) cannot be split"):
        LinearProbe(Cs=[0.1, 1.0]).fit(X, y, groups=np.arange(300) % 2)
    with pytest.raises(ConfigError, match="val_fraction=1.5"):
        LinearProbe(val_fraction=1.5).fit(X, y)
    with pytest.raises(ConfigError, match="not fitted"):
        LinearProbe().predict(X)
    fitted = LinearProbe(Cs=[1.0]).fit(X, y)
    assert 0.0 <= fitted.score(X, y) <= 1.0
    with pytest.raises(DataError, match="labels contain class 5 but the probe was trained on classes 0..2"):
        fitted.score(X[:3], np.array([0, 1, 5]))
    with pytest.raises(DataError, match="fitted on d=8"):
        LinearProbe(Cs=[1.0]).fit(X, y).predict(X[:, :4])


# -- convergence: recorded for every fit, warned, and the defaults converge -------------------------------------

def test_a_fit_stopped_at_its_cap_warns_and_says_so():
    X, y = _data(n_cls=4, seed=1, scale=5.0)
    with pytest.warns(lin.ConvergenceWarning, match=r"iteration cap without converging for C = 100 .*max_iter"):
        fit_logistic(X, y, 100.0, max_iter=2)
    W, b, info = fit_logistic(X, y, 100.0, max_iter=2, return_info=True)
    assert info.stop == "max_iter" and not info.converged and info.n_iter == 2 and info.grad_max > 1e-6
    W, b, info = fit_logistic(X, y, 1.0, tol=1e-9, max_iter=5000, return_info=True, dtype="float64")
    assert info.converged and info.n_iter < 5000
    # a converged fit meets the gradient tolerance or can make no more progress, and matches sklearn
    np.testing.assert_allclose(_softmax(X @ W + b), _sk(X, y, 1.0).predict_proba(X), atol=1e-5)


def test_the_probe_records_convergence_of_every_fit_in_the_sweep_and_the_refit():
    X, y = _data(n=400, n_cls=3, seed=2, scale=4.0)
    with pytest.warns(lin.ConvergenceWarning):
        p = LinearProbe(Cs=[0.01, 1.0, 1e4], max_iter=3).fit(X, y)
    assert len(p.fit_info_) == 3 + 1 and [f.C for f in p.fit_info_[:3]] == [0.01, 1.0, 1e4]
    assert p.fit_info_[-1].C == p.C_ and p.converged_ == p.fit_info_[-1].converged
    assert p.convergence_["all_converged"] is False and 1e4 in p.convergence_["not_converged_C"]
    assert p.convergence_["fits"][0].keys() >= {"C", "n_iter", "stop", "grad_max", "converged"}
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", lin.ConvergenceWarning)  # a converged sweep does not warn
        q = LinearProbe(Cs=[0.01, 1.0], max_iter=2000).fit(X, y)
    assert q.convergence_["all_converged"] and q.converged_


def test_patience_stops_the_sweep_without_changing_the_choice():
    X, y = _data(n=300, d=40, n_cls=3, seed=3, scale=0.7)  # few samples, many dims: large C overfits
    Cs = 10.0 ** np.arange(-4, 6)
    full = LinearProbe(Cs=Cs, max_iter=3000).fit(X, y)
    short = LinearProbe(Cs=Cs, max_iter=3000, patience=2).fit(X, y)
    assert short.C_ == full.C_
    k = len(short.Cs_)
    np.testing.assert_array_equal(short.val_scores_, full.val_scores_[:k])
    best = int(np.argmax(full.val_scores_))
    assert k < len(Cs)  # stopped early: the last two swept all scored below the best
    assert k - 1 - best >= 2 and (short.val_scores_[-2:] < full.val_scores_[best]).all()
    with pytest.raises(ConfigError, match="patience=0 must be >= 1"):
        LinearProbe(patience=0).fit(X, y)


def test_default_linear_protocol_converges_on_the_bundled_sample(tmp_path):
    """The shipped defaults: every fit of the coarse-to-fine sweep converges on demo features of the sample."""
    import warnings

    import vitlab
    from vitlab.protocols import Linear, Split

    emb = vitlab.embed("demo:fmnist-vit", "sample:fashion-mnist", cache_dir=tmp_path, progress=False)
    X, y = np.asarray(emb.get(), dtype=np.float32), np.asarray(emb.labels)
    split = emb.splits(seed=0)
    tr, te = np.flatnonzero(split != "test"), np.flatnonzero(split == "test")
    with warnings.catch_warnings():
        warnings.simplefilter("error", lin.ConvergenceWarning)
        out = Linear().run(Split(X[tr], y[tr], tr), Split(X[te], y[te], te), seed=0, n_classes=len(emb.classes))
    conv = out.details["convergence"]
    assert conv["all_converged"] and conv["refit_converged"] and conv["not_converged_C"] == []
    assert len(conv["fits"]) >= 8 and all(f["n_iter"] < Linear().config.max_iter for f in conv["fits"])
    # and an iteration cap that is too small is recorded and warned about, not silent
    with pytest.warns(lin.ConvergenceWarning, match="linear probe: L-BFGS stopped at its iteration cap"):
        out = Linear(max_iter=20).run(Split(X[tr], y[tr], tr), Split(X[te], y[te], te), seed=0,
                                      n_classes=len(emb.classes))
    assert not out.details["convergence"]["all_converged"]


def test_float64_probe_matches_sklearn_sweep():
    """The float64 probe (preconditioned L-BFGS, extrapolated warm starts) picks scikit-learn's C and
    gives its predictions and coefficients: same sweep, same split, refit from the chosen C's solution."""
    rng = np.random.default_rng(3)
    n, d = 400, 12
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d)) * rng.uniform(0.2, 5.0, d) + 2.0  # uncentred, badly scaled features
    X[:, :3] += 1.5 * np.eye(3)[y]
    Xte = rng.normal(size=(300, d)) * 1.0 + 2.0
    Cs = np.logspace(-4, 2, 7)
    probe = LinearProbe(Cs=Cs, seed=0, tol=1e-8, max_iter=5000).fit(X, y)
    tr, va = holdout(y, None, 0.2, 0)
    scores, sols = [], []
    for C in Cs:
        sk = LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(X[tr], y[tr])
        scores.append((sk.predict(X[va]) == y[va]).mean())
        sols.append(sk)
    best = int(np.argmax(scores))
    np.testing.assert_allclose(probe.val_scores_, scores)
    assert probe.C_ == Cs[best]
    sk = LogisticRegression(C=Cs[best], tol=1e-10, max_iter=20000).fit(X, y)
    np.testing.assert_array_equal(probe.predict(Xte), sk.predict(Xte))
    np.testing.assert_allclose(probe.coef_, sk.coef_, atol=1e-5)
    np.testing.assert_allclose(probe.predict_proba(Xte), sk.predict_proba(Xte), atol=1e-5)


@pytest.mark.parametrize("n_cls", [2, 4])
def test_preconditioning_does_not_move_the_optimum(n_cls):
    """The solver's change of variables (W = A V, b = c - mu . W) leaves the minimiser where it was."""
    import torch

    from vitlab.protocols._lbfgs import Problem, Whitening, minimize

    X, y = _data(n_cls=n_cls, seed=7)
    X = X * np.array([0.5, 1, 2, 1, 1, 3, 0.5, 2]) + 1.0
    Xt, yt = torch.as_tensor(X), torch.as_tensor(y)
    K = 1 if n_cls == 2 else n_cls
    prob = Problem(Xt, Xt.T.contiguous(), yt, K)
    d = X.shape[1]
    ident = Whitening(torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64),
                      torch.eye(d, dtype=torch.float64))
    z = (torch.zeros(d, K, dtype=torch.float64), torch.zeros(K, dtype=torch.float64))
    reg = 1.0 / (1.0 * len(y))
    sols = [minimize(prob, reg, *z, white, 20000, 1e-9, 0.0, 50000) for white in (ident, Whitening.of(Xt))]
    for W, b, _, _, stop, gmax in sols:
        assert stop in ("gradient", "no_progress") and gmax <= 1e-7  # round-off can end it just above tol
    np.testing.assert_allclose(sols[0][0].numpy(), sols[1][0].numpy(), atol=1e-6)
    np.testing.assert_allclose(sols[0][1].numpy(), sols[1][1].numpy(), atol=1e-6)
