"""Coverage of the generative-metric 95% intervals by simulation with a known truth (seeded, small).

For each metric: draw many independent data sets from known distributions, compute the interval on
each, and count how often it covers the target:

* FD, PRDC, Vendi: the interval is for the metric's expected value at this sample size,
  ``E[theta_n]``, estimated by Monte Carlo over many more independent draws of the same size.
* ``debiased`` FD: the closed-form FD between the two Gaussians,
  ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
* KD (unbiased by construction): the population MMD^2 under the cubic kernel, in closed form.

Coverage must lie in a binomial band around 0.95 (3 standard deviations for the number of
repetitions), and the mean standard error must match the Monte-Carlo spread of the estimate
(ratio in [0.8, 1.35]: the half-sample scaling is neither 1/sqrt(2) nor sqrt(2) off). Every
interval must contain its own point estimate. Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg

from vitlab.metrics.gen_intervals import halfsample_fd, halfsample_prdc, halfsample_vendi
from vitlab.metrics.kd import kernel_distance
from vitlab.metrics.prdc import prdc
from vitlab.metrics.vendi import vendi_score

pytestmark = pytest.mark.filterwarnings("ignore::vitlab.metrics._validate.SmallSampleWarning")
NOMINAL = 0.95
SE_RATIO = (0.8, 1.35)


def band(reps: int) -> tuple[float, float]:
    """Nominal coverage +/- 3 binomial standard deviations for ``reps`` repetitions."""
    sd = math.sqrt(NOMINAL * (1 - NOMINAL) / reps)
    return NOMINAL - 3 * sd, min(1.0, NOMINAL + 3 * sd)


def batched_fd(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """FD of each of ``R`` pairs ``x[r], y[r]`` (``[R, n, d]``), written independently of vitlab."""
    def stats(a):
        mu = a.mean(1)
        ac = a - mu[:, None]
        return mu, np.einsum("rni,rnj->rij", ac, ac) / (a.shape[1] - 1)

    (mu1, s1), (mu2, s2) = stats(x), stats(y)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))[:, None, :]) @ np.swapaxes(v, 1, 2)
    ev = np.linalg.eigvalsh(root1 @ s2 @ root1)
    tr_sqrt = np.sqrt(np.clip(ev, 0, None)).sum(-1)
    return ((mu1 - mu2) ** 2).sum(-1) + np.trace(s1, axis1=1, axis2=2) + np.trace(s2, axis1=1, axis2=2) - 2 * tr_sqrt


def test_fd_interval_covers_expected_fd_and_debiased_covers_true_fd():
    d, n, reps, b = 8, 200, 200, 30
    rng = np.random.default_rng(20240601)
    mu2 = np.full(d, 0.2)
    scale = np.linspace(1.0, 1.5, d)  # fake = N(mu2, diag(scale^2)), real = N(0, I)
    s1, s2 = np.eye(d), np.diag(scale**2)
    fd_true = float(mu2 @ mu2 + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))
    mc = batched_fd(rng.standard_normal((4000, n, d)), rng.standard_normal((4000, n, d)) * scale + mu2)
    e_n, sd_n = float(mc.mean()), float(mc.std())
    hit_e = hit_deb = hit_plain_true = 0
    ses = []
    for rep in range(reps):
        ci = halfsample_fd(rng.standard_normal((n, d)), rng.standard_normal((n, d)) * scale + mu2,
                           n_resamples=b, seed=rep)
        assert ci.low <= ci.value <= ci.high and ci.debiased.low <= ci.debiased.value <= ci.debiased.high
        hit_e += ci.low <= e_n <= ci.high
        hit_deb += ci.debiased.low <= fd_true <= ci.debiased.high
        hit_plain_true += ci.low <= fd_true <= ci.high
        ses.append(ci.se)
    cov_e, cov_deb, cov_plain = hit_e / reps, hit_deb / reps, hit_plain_true / reps
    ratio = float(np.mean(ses)) / sd_n
    print(f"\nFD d={d} n={n} reps={reps} B={b}: FD={fd_true:.4f} E[FD_n]={e_n:.4f} sd={sd_n:.4f} "
          f"se/sd={ratio:.3f} | coverage of E[FD_n] {cov_e:.3f}, debiased of FD {cov_deb:.3f}, "
          f"plain interval of FD {cov_plain:.3f}")
    lo, hi = band(reps)
    assert e_n - fd_true > 0.5 * sd_n  # the setting has a real finite-sample bias to correct
    assert lo <= cov_e <= hi and lo <= cov_deb <= hi
    assert cov_plain < lo  # without the correction the interval misses the population FD too often
    assert SE_RATIO[0] <= ratio <= SE_RATIO[1]


NAMES = ("precision", "recall", "density", "coverage")


def test_prdc_intervals_cover_the_expected_values():
    d, n, reps, b = 4, 200, 100, 20
    rng = np.random.default_rng(7)
    scale, shift = np.array([0.6, 0.6, 1.5, 1.5]), 0.3
    draw = lambda: (rng.standard_normal((n, d)), rng.standard_normal((n, d)) * scale + shift)  # noqa: E731
    mc = np.array([[getattr(r, m) for m in NAMES] for r in (prdc(*draw()) for _ in range(400))])
    e_n, sd_n = mc.mean(0), mc.std(0)
    hits, ses = np.zeros(4), []
    for rep in range(reps):
        cis = halfsample_prdc(*draw(), n_resamples=b, seed=rep)
        for m in NAMES:
            assert cis[m].low <= cis[m].value <= cis[m].high, m
        hits += [cis[m].low <= e_n[i] <= cis[m].high for i, m in enumerate(NAMES)]
        ses.append([cis[m].se for m in NAMES])
    cov, ratio = hits / reps, np.mean(ses, 0) / sd_n
    fmt = lambda v: ", ".join(f"{k} {x:.3f}" for k, x in zip(NAMES, v))  # noqa: E731
    print(f"\nPRDC d={d} n={n} reps={reps} B={b}: E[theta_n] {fmt(e_n)} | se/sd {fmt(ratio)} | "
          f"coverage {fmt(cov)}")
    lo, hi = band(reps)
    assert np.all((cov >= lo) & (cov <= hi)), cov
    assert np.all((ratio >= SE_RATIO[0]) & (ratio <= SE_RATIO[1])), ratio


def test_vendi_interval_covers_the_expected_value():
    d, n, reps, b = 8, 200, 200, 30
    rng = np.random.default_rng(11)
    scale = np.linspace(0.3, 2.0, d)
    draw = lambda: rng.standard_normal((n, d)) * scale + 0.5  # noqa: E731
    mc = np.array([vendi_score(draw()) for _ in range(4000)])
    e_n, sd_n = float(mc.mean()), float(mc.std())
    hits, ses = 0, []
    for rep in range(reps):
        ci = halfsample_vendi(draw(), n_resamples=b, seed=rep)
        assert ci.low <= ci.value <= ci.high
        hits += ci.low <= e_n <= ci.high
        ses.append(ci.se)
    cov, ratio = hits / reps, float(np.mean(ses)) / sd_n
    print(f"\nVendi d={d} n={n} reps={reps} B={b}: E[V_n]={e_n:.4f} sd={sd_n:.4f} se/sd={ratio:.3f} "
          f"coverage={cov:.3f}")
    lo, hi = band(reps)
    assert lo <= cov <= hi and SE_RATIO[0] <= ratio <= SE_RATIO[1]


def kd_draw(rng: np.random.Generator, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Real N(0, I_4) and fake N(0.3, 1.2^2 I_4), ``k`` rows each."""
    return rng.standard_normal((k, 4)), rng.standard_normal((k, 4)) * 1.2 + 0.3


def cubic_kernel_mean(a: np.ndarray, cov_a: np.ndarray, b: np.ndarray, cov_b: np.ndarray) -> float:
    """``E[(x.y/d + 1)^3]`` for independent ``x ~ N(a, cov_a)``, ``y ~ N(b, cov_b)`` (closed form).

    With ``s = x.y``: ``E s = a.b``; ``E s^2 = tr((cov_a + a a^T)(cov_b + b b^T))``; given ``y``, ``s`` is
    normal with mean ``a.y`` and variance ``y^T cov_a y``, so ``E s^3 = mu^3 + 3 mu a^T cov_b a +
    3 [(a.b)(b^T cov_a b + tr(cov_a cov_b)) + 2 a^T cov_b cov_a b]`` with ``mu = a.b``.
    """
    d = a.shape[0]
    mu = a @ b
    e2 = np.trace((cov_a + np.outer(a, a)) @ (cov_b + np.outer(b, b)))
    e3 = mu**3 + 3 * mu * (a @ cov_b @ a) + 3 * (mu * (b @ cov_a @ b + np.trace(cov_a @ cov_b))
                                                 + 2 * a @ cov_b @ cov_a @ b)
    return float(1 + 3 * mu / d + 3 * e2 / d**2 + e3 / d**3)


def kd_truth() -> float:
    """Population MMD^2 between the two Gaussians of :func:`kd_draw` under dgm-eval's cubic kernel."""
    a, cov_a, b, cov_b = np.zeros(4), np.eye(4), np.full(4, 0.3), 1.44 * np.eye(4)
    return (cubic_kernel_mean(a, cov_a, a, cov_a) + cubic_kernel_mean(b, cov_b, b, cov_b)
            - 2 * cubic_kernel_mean(a, cov_a, b, cov_b))


def test_cubic_kernel_closed_form_matches_monte_carlo():
    rng = np.random.default_rng(3)
    a, b = np.array([0.1, -0.2, 0.3, 0.5]), np.array([0.4, 0.1, -0.3, 0.2])
    la, lb = rng.standard_normal((4, 4)) * 0.5, rng.standard_normal((4, 4)) * 0.5
    cov_a, cov_b = la @ la.T + 0.5 * np.eye(4), lb @ lb.T + 0.3 * np.eye(4)
    x = rng.standard_normal((400_000, 4)) @ np.linalg.cholesky(cov_a).T + a
    y = rng.standard_normal((400_000, 4)) @ np.linalg.cholesky(cov_b).T + b
    k = ((x * y).sum(1) / 4 + 1) ** 3
    assert abs(k.mean() - cubic_kernel_mean(a, cov_a, b, cov_b)) < 4 * k.std() / math.sqrt(k.size)


@pytest.mark.parametrize("n, subsets, method", [(400, 20, "subset jackknife"), (150, 10, "half-sample")])
def test_kd_interval_covers_the_population_mmd(n, subsets, method):
    d, m, reps = 4, 100, 120
    rng = np.random.default_rng(n)
    truth = kd_truth()  # KD is unbiased: E[KD] is the population MMD^2
    hits, ses, values = 0, [], []
    for rep in range(reps):
        r = kernel_distance(*kd_draw(rng, n), n_subsets=subsets, subset_size=m, seed=rep, n_resamples=20)
        assert r.method == method and r.low <= r.value <= r.high
        hits += r.low <= truth <= r.high
        ses.append(r.se)
        values.append(r.value)
    cov, ratio = hits / reps, float(np.mean(ses)) / float(np.std(values))
    print(f"\nKD ({method}) d={d} n={n} m={m} T={subsets} reps={reps}: MMD^2={truth:.4f} "
          f"mean KD={np.mean(values):.4f} se/sd={ratio:.3f} coverage={cov:.3f}")
    lo, hi = band(reps)
    assert lo <= cov <= hi and SE_RATIO[0] <= ratio <= SE_RATIO[1]
