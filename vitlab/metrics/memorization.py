"""Memorization / data-copying metrics: AuthPct and the C_T test statistic.

**AuthPct** (Alaa et al. 2022, as dgm-eval ``dgm_eval/metrics/authpct.py``, from
marcojira/fls): for each generated ``g``, let ``t(g)`` be its nearest training
point, ``d1 = d(g, t(g))``, and ``d2`` the distance from ``t(g)`` to *its*
nearest other training point. ``g`` is authentic iff ``d2 < d1``;

    AuthPct = 100 * mean_g 1[ d2(t(g)) < d1(g) ].

(The "other point" excludes only the point itself -- dgm-eval's
``fill_diagonal_(inf)`` -- so an exact duplicate in the training set counts.
Ties for ``t(g)`` go to the lowest index, as dgm-eval's ``torch.min``.)

**C_T** (Meehan et al. 2020, as dgm-eval ``dgm_eval/metrics/ct.py``, from
casey-meehan/data-copying): features with ``d > 64`` are projected on the first 64
principal components fitted on the training set; ``KMeans(3, n_init=10)`` fitted
on the training set partitions space into cells ``pi``. In each cell, with
``L(.)`` the distance to the nearest *training* point of that cell, the
Mann-Whitney statistic of generated ``Qm`` vs test ``Pn`` distances

    U = #{(a, b): L(Qm_a) > L(Pn_b)} + 0.5 #{ties}     (scipy's U for the first sample)
    Z_U = (U - (m n / 2 - 0.5)) / sqrt(m n (m + n + 1) / 12)

(dgm-eval's "continuity correction" always subtracts 0.5; no tie correction).
Over the cells with a generated fraction ``Qm(pi) > tau`` (``tau = 20 / |gen|``),

    C_T = sum_pi Pn(pi) Z_U(pi) / sum_pi Pn(pi).

``C_T << 0`` indicates copying (generated samples closer to training data than
held-out test data are), ``C_T >> 0`` underfitting. dgm-eval variants:
``ct_modified`` (memorisation only) swaps training and generated sets;
``ct_test`` (mode collapse only) splits the *test* set in halves with
``np.array_split`` and uses the first half as "training" set -- the real
training set is not used at all.

dgm-eval's PCA and KMeans are unseeded; here both get ``random_state=seed``.
Nearest neighbours come from :func:`vitlab.neighbors.search` (``metric="l2"``,
``k=1``): blocked (never an ``n x n`` matrix), ties to the smallest index.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> train = rng.standard_normal((500, 8))
    >>> authenticity_pct(train, train + 1e-6) < 5.0     # copies are not authentic
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from vitlab.errors import DataError
from vitlab.metrics._validate import check_features, check_positive_int, check_same_dim
from vitlab.neighbors import DEFAULT_BLOCK, search

__all__ = [
    "authenticity_pct",
    "mann_whitney_z",
    "c_t_statistic",
    "ct_score",
    "ct_score_modified",
    "ct_score_test",
]


# ----------------------------------------------------------------------------- AuthPct


def authenticity_pct(
    train: np.ndarray,
    gen: np.ndarray,
    *,
    dtype: str = "float64",
    device: Any = None,
    block_size: int = DEFAULT_BLOCK,
) -> float:
    """Percentage of generated samples that are "authentic" (dgm-eval ``compute_authpct``).

    ``100 * mean_g 1[d2(t(g)) < d1(g)]`` (see module docstring).

    Args:
        train: ``[n, d]`` training features, ``n >= 2``.
        gen: ``[m, d]`` generated features.
        dtype: ``"float64"`` (default) or ``"float32"`` (dgm-eval computes in float32).
        device: torch device (``None`` = CPU).
        block_size: Tile edge for the blocked distances.

    Returns:
        AuthPct in ``[0, 100]``.

    Raises:
        DataError: mismatched dims, empty sets, NaN/inf, or fewer than 2 training rows.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> 0.0 <= authenticity_pct(rng.standard_normal((50, 3)), rng.standard_normal((20, 3))) <= 100.0
        True
    """
    x = check_features(train, "train")
    y = check_features(gen, "gen")
    check_same_dim(x, y, "train", "gen")
    block = check_positive_int(block_size, "block_size")
    if x.shape[0] < 2:
        raise DataError(
            f"train features have {x.shape[0]} row: AuthPct needs each training point's "
            "nearest *other* training point, so pass at least 2 training samples."
        )
    opts = dict(k=1, metric="l2", block=block, dtype=dtype, device=device)
    real_nn = search(x, x, exclude_self=True, **opts).scores[:, 0]  # d2^2 of every training point
    gen = search(y, x, **opts)  # t(g) and d1^2
    authen = real_nn[gen.indices[:, 0]] < gen.scores[:, 0]
    return float(100.0 * authen.mean())


# ----------------------------------------------------------------------------- C_T


def mann_whitney_z(lq: np.ndarray, lp: np.ndarray) -> float:
    """Z-scored Mann-Whitney U of ``lq`` (generated) vs ``lp`` (test), as dgm-eval's ``Zu``.

    ``U = sum(rank(lq in pooled)) - m (m + 1) / 2``;
    ``Z = (U - (m n / 2 - 0.5)) / sqrt(m n (m + n + 1) / 12)``.

    Example:
        >>> round(mann_whitney_z(np.array([0.1, 0.2]), np.array([1.0, 2.0])), 4)
        -1.1619
    """
    lq = np.asarray(lq, dtype=np.float64).ravel()
    lp = np.asarray(lp, dtype=np.float64).ravel()
    m, n = lq.size, lp.size
    ranks = rankdata(np.concatenate([lq, lp]))
    u = ranks[:m].sum() - m * (m + 1) / 2.0
    mean = n * m / 2.0 - 0.5
    std = np.sqrt(n * m * (n + m + 1) / 12.0)
    return float((u - mean) / std)


def _nn_dist(query: np.ndarray, ref: np.ndarray, block: int) -> np.ndarray:
    """Euclidean distance from each ``query`` row to its nearest ``ref`` row (float64)."""
    return np.sqrt(search(query, ref, 1, metric="l2", block=block, dtype="float64").scores[:, 0])


def c_t_statistic(
    pn: np.ndarray,
    pn_cells: np.ndarray,
    qm: np.ndarray,
    qm_cells: np.ndarray,
    t: np.ndarray,
    t_cells: np.ndarray,
    tau: float,
    *,
    block_size: int = DEFAULT_BLOCK,
) -> float:
    """C_T from samples and their cell labels (dgm-eval / Meehan et al. ``C_T``).

    Args:
        pn: ``[n, d]`` test sample; ``pn_cells`` its ``[n]`` integer cell labels.
        qm: ``[m, d]`` generated sample; ``qm_cells`` its cell labels.
        t: ``[l, d]`` training sample; ``t_cells`` its cell labels (cells are ``0..max``).
        tau: A cell is used iff its generated fraction ``Qm(pi) > tau``.
        block_size: Tile edge for the nearest-neighbour distances.

    Returns:
        ``sum_pi Pn(pi) Z_U(pi) / sum_pi Pn(pi)`` over the used cells.

    Raises:
        DataError: a cell lacks test or training samples, or no cell passes ``tau``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b, c = (rng.standard_normal((40, 2)) for _ in range(3))
        >>> z = np.zeros(40, dtype=int)
        >>> isinstance(c_t_statistic(a, z, b, z, c, z, tau=0.1), float)
        True
    """
    pn_cells, qm_cells, t_cells = (np.asarray(c).astype(int).ravel() for c in (pn_cells, qm_cells, t_cells))
    k = int(t_cells.max()) + 1
    m, n = qm.shape[0], pn.shape[0]
    qm_frac = np.bincount(qm_cells, minlength=k)[:k] / m
    pn_frac = np.bincount(pn_cells, minlength=k)[:k] / n
    used = qm_frac > tau
    zu = np.zeros(k)
    for i in range(k):
        p_i, q_i, t_i = pn[pn_cells == i], qm[qm_cells == i], t[t_cells == i]
        if p_i.shape[0] == 0 or t_i.shape[0] == 0:
            raise DataError(
                f"C_T cell {i} has {p_i.shape[0]} test and {t_i.shape[0]} training samples: "
                "every cell needs both. Reduce n_cells or pass more samples."
            )
        if q_i.shape[0] > 0:
            zu[i] = mann_whitney_z(_nn_dist(q_i, t_i, block_size), _nn_dist(p_i, t_i, block_size))
    if not used.any():
        raise DataError(
            f"C_T: no cell holds more than tau = {tau:.4g} of the generated samples "
            f"(fractions {np.round(qm_frac, 4).tolist()}): lower tau or pass more generated samples."
        )
    return float(pn_frac[used] @ zu[used] / pn_frac[used].sum())


def ct_score(
    train: np.ndarray,
    test: np.ndarray,
    gen: np.ndarray,
    *,
    n_cells: int = 3,
    pca_dim: int = 64,
    tau: float | None = None,
    seed: int = 0,
    block_size: int = DEFAULT_BLOCK,
) -> float:
    """C_T score of generated vs train/test features (dgm-eval ``compute_CTscore``, "ct").

    PCA to ``pca_dim`` (fitted on ``train``, only if ``d > pca_dim``), KMeans with
    ``n_cells`` clusters (``n_init=10``) fitted on ``train``, then
    :func:`c_t_statistic` with ``tau = 20 / len(gen)`` unless given.

    Args:
        train: ``[l, d]`` training features.
        test: ``[n, d]`` held-out real features.
        gen: ``[m, d]`` generated features.
        n_cells: KMeans clusters (dgm-eval: 3).
        pca_dim: PCA components when ``d > pca_dim`` (dgm-eval: 64).
        tau: Generated-fraction threshold (default ``20 / m``).
        seed: ``random_state`` of PCA and KMeans.
        block_size: Tile edge for distances.

    Returns:
        C_T (``<< 0``: copying; ``>> 0``: underfitting; ``~0``: neither).

    Raises:
        DataError: invalid/mismatched features or empty cells.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> tr, te = rng.standard_normal((300, 4)), rng.standard_normal((300, 4))
        >>> ct_score(tr, te, tr + 1e-3) < -3      # copies of the training set
        True
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n_cells = check_positive_int(n_cells, "n_cells")
    pca_dim = check_positive_int(pca_dim, "pca_dim")
    tr = check_features(train, "train")
    te = check_features(test, "test")
    ge = check_features(gen, "gen")
    check_same_dim(tr, te, "train", "test")
    check_same_dim(tr, ge, "train", "gen")
    if tr.shape[1] > pca_dim:
        if tr.shape[0] < pca_dim:
            raise DataError(
                f"train features have {tr.shape[0]} rows < pca_dim={pca_dim}: PCA needs at least "
                "pca_dim samples; pass more training samples or lower pca_dim."
            )
        pca = PCA(n_components=pca_dim, random_state=seed).fit(tr)
        tr, te, ge = pca.transform(tr), pca.transform(te), pca.transform(ge)
    if tr.shape[0] < n_cells:
        raise DataError(
            f"train features have {tr.shape[0]} rows < n_cells={n_cells}: lower n_cells."
        )
    km = KMeans(n_clusters=n_cells, n_init=10, random_state=seed).fit(tr)
    tau_ = 20.0 / ge.shape[0] if tau is None else float(tau)
    return c_t_statistic(
        te, km.predict(te), ge, km.predict(ge), tr, km.predict(tr), tau_, block_size=block_size
    )


def ct_score_modified(train: np.ndarray, test: np.ndarray, gen: np.ndarray, **kwargs: Any) -> float:
    """dgm-eval "ct_modified" (memorisation only): :func:`ct_score` with train and gen swapped.

    ``ct_score(gen, test, train, **kwargs)`` -- PCA/KMeans are fitted on the generated
    set and ``tau = 20 / len(train)``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b, c = (rng.standard_normal((200, 3)) for _ in range(3))
        >>> isinstance(ct_score_modified(a, b, c), float)
        True
    """
    return ct_score(gen, test, train, **kwargs)


def ct_score_test(train: np.ndarray, test: np.ndarray, gen: np.ndarray, **kwargs: Any) -> float:
    """dgm-eval "ct_test" (mode collapse only): test halves act as train and test.

    ``t1, t2 = np.array_split(test, 2)``; ``ct_score(t1, t2, gen, **kwargs)``. The
    ``train`` argument is only validated, not used (as in dgm-eval).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b, c = (rng.standard_normal((200, 3)) for _ in range(3))
        >>> isinstance(ct_score_test(a, b, c), float)
        True
    """
    tr = check_features(train, "train")
    te = check_features(test, "test")
    check_same_dim(tr, te, "train", "test")
    t1, t2 = np.array_split(te, 2)
    return ct_score(t1, t2, gen, **kwargs)
