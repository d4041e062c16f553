"""Vendi score, sliced-Wasserstein approximation and Inception Score against references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.stats import entropy
from sklearn import preprocessing
from sklearn.metrics.pairwise import polynomial_kernel

from vitlab.errors import ConfigError, DataError
from vitlab.metrics._validate import SmallSampleWarning
from vitlab.metrics.inception_score import inception_score
from vitlab.metrics.sliced_wasserstein import sliced_wasserstein_approx
from vitlab.metrics.vendi import per_class_vendi_scores, vendi_score


# --------------------------------------------------------------------------- Vendi
def ref_vendi(x, q=1, kernel="linear"):
    """dgm-eval compute_vendi_score: eigenvalues of the full n x n kernel / n."""
    x = preprocessing.normalize(x, axis=1)
    n = x.shape[0]
    s = x @ x.T if kernel == "linear" else polynomial_kernel(x, degree=3, gamma=None, coef0=1)
    w = scipy.linalg.eigvalsh(s / n)
    p = w[w > 0]
    if q == 1:
        h = -(p * np.log(p)).sum()
    elif q == "inf":
        h = -np.log(np.max(w))
    else:
        h = np.log((p**q).sum()) / (1 - q)
    return np.exp(h)


@pytest.mark.parametrize("n,d", [(300, 20), (15, 40)])  # covariance form and kernel form
@pytest.mark.parametrize("q", [1, 2, 0.5, "inf"])
def test_vendi_matches_full_kernel_eigendecomposition(n, d, q):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    # for q < 1 the n x n reference lets its n - d rounding-noise eigenvalues (~1e-17)
    # contribute (1e-17)^q each; the d x d form has none, so allow ~1e-7 there
    rel = 1e-6 if (q == 0.5 and n > d) else 1e-8
    assert vendi_score(x, q=q) == pytest.approx(ref_vendi(x, q=q), rel=rel)


def test_vendi_polynomial_kernel_and_known_values():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 6))
    assert vendi_score(x, kernel="polynomial") == pytest.approx(ref_vendi(x, kernel="polynomial"), rel=1e-8)
    assert vendi_score(np.eye(5)) == pytest.approx(5.0, rel=1e-12)
    assert vendi_score(np.tile(rng.standard_normal(6), (40, 1))) == pytest.approx(1.0, rel=1e-9)


def test_per_class_vendi():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((90, 5))
    labels = np.array(["cat", "dog", "eel"])[np.arange(90) % 3]
    got = per_class_vendi_scores(x, labels)
    assert list(got) == ["cat", "dog", "eel"]
    for c in got:
        assert got[c] == pytest.approx(ref_vendi(x[labels == c]), rel=1e-8)
    # integer labels 0..C-1: same as dgm-eval's `reps[labels == i]` loop
    ints = np.arange(90) % 3
    vals = per_class_vendi_scores(x, ints)
    assert list(vals) == [0, 1, 2]
    assert np.mean(list(vals.values())) == pytest.approx(np.mean([ref_vendi(x[ints == i]) for i in range(3)]))


def test_vendi_errors():
    x = np.random.default_rng(3).standard_normal((10, 3))
    with pytest.raises(DataError, match="labels have shape \\(9,\\) but features have 10 rows"):
        per_class_vendi_scores(x, np.zeros(9))
    with pytest.raises(ConfigError, match="kernel must be 'linear' or 'polynomial'"):
        vendi_score(x, kernel="rbf")
    with pytest.raises(ConfigError, match="q must be a positive number"):
        vendi_score(x, q=-1)


# --------------------------------------------------------------------------- sliced W2
def ref_sw(x, y):
    """dgm-eval sw_approx."""
    d = x.shape[1]
    mx, my = x.mean(axis=0), y.mean(axis=0)
    mean_term = np.linalg.norm(mx - my) ** 2 / d
    m2x = (np.linalg.norm(x - mx, axis=1) ** 2).mean() / d
    m2y = (np.linalg.norm(y - my, axis=1) ** 2).mean() / d
    return (mean_term + (m2x**0.5 - m2y**0.5) ** 2) ** 0.5


def test_sliced_wasserstein_matches_reference():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((200, 9)), rng.standard_normal((150, 9)) * 2 + 1
    assert sliced_wasserstein_approx(x, y) == pytest.approx(ref_sw(x, y), rel=1e-12)
    assert sliced_wasserstein_approx(x, x) == 0.0
    with pytest.raises(DataError, match="real features have dim 9 but fake features have dim 8"):
        sliced_wasserstein_approx(x, y[:, :8])


# --------------------------------------------------------------------------- Inception Score
def ref_is(preds, splits=10, shuffle=True, rng_seed=2020):
    """dgm-eval calculate_score."""
    n = preds.shape[0]
    if shuffle:
        preds = preds[np.random.RandomState(rng_seed).permutation(n), :]
    split_scores = []
    for k in range(splits):
        part = preds[k * (n // splits) : (k + 1) * (n // splits), :]
        py = np.mean(part, axis=0)
        scores = [entropy(part[i, :], py) for i in range(part.shape[0])]
        split_scores.append(np.exp(np.mean(scores)))
    return np.mean(split_scores), np.std(split_scores)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.filterwarnings("ignore::vitlab.metrics._validate.SmallSampleWarning")
def test_inception_score_matches_reference():
    rng = np.random.default_rng(5)
    probs = _softmax(rng.standard_normal((1003, 1000)) * 3)
    probs[0, :] = 0.0
    probs[0, 7] = 1.0  # exact zeros: 0 log 0 = 0
    res = inception_score(probs, splits=10)
    m, s = ref_is(probs)
    assert res.mean == pytest.approx(m, rel=1e-10) and res.std == pytest.approx(s, rel=1e-8)
    m2, _ = ref_is(probs, splits=3, shuffle=False)
    assert inception_score(probs, splits=3, shuffle=False).mean == pytest.approx(m2, rel=1e-10)


@pytest.mark.filterwarnings("ignore::vitlab.metrics._validate.SmallSampleWarning")
def test_inception_score_known_values():
    onehot = np.eye(10)[np.arange(500) % 10]
    assert inception_score(onehot, splits=5, shuffle=False).mean == pytest.approx(10.0, rel=1e-12)
    assert inception_score(np.full((200, 7), 1 / 7), splits=4).mean == pytest.approx(1.0, rel=1e-12)


def test_inception_score_errors_and_warning():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((100, 10))
    with pytest.raises(DataError, match="not logits"):
        inception_score(logits)
    with pytest.raises(DataError, match="rows must sum to 1 but 100 of 100 rows do not"):
        inception_score(np.abs(logits))
    with pytest.raises(DataError, match="probs has 5 rows but splits=10"):
        inception_score(_softmax(logits[:5]))
    with pytest.warns(SmallSampleWarning, match="Inception Score on 100 samples"):
        inception_score(_softmax(logits))
