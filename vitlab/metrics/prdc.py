"""Precision, recall, density, coverage (PRDC) and realism score, computed in blocks.

Definitions follow the ``prdc`` package (Naeem et al. 2020,
clovaai/generative-evaluation-prdc) as vendored in dgm-eval
(``dgm_eval/metrics/prdc.py::compute_prdc``). With real features ``X`` (n rows),
fake features ``Y`` (m rows), ``d(.,.)`` Euclidean, ``r_i`` the distance from
``X_i`` to its k-th nearest other real point and ``s_j`` the same within ``Y``:

    precision = 1/m sum_j 1[ exists i: d(X_i, Y_j) < r_i ]
    recall    = 1/n sum_i 1[ exists j: d(X_i, Y_j) < s_j ]
    density   = 1/(k m) sum_j sum_i 1[ d(X_i, Y_j) < r_i ]
    coverage  = 1/n sum_i 1[ min_j d(X_i, Y_j) < r_i ]

(strict ``<`` as in ``prdc``; ``r_i`` is the (k+1)-th smallest entry of row i of
the real-real distance matrix, whose diagonal is 0). The realism score of each
fake sample (Kynkäänniemi et al. 2019, dgm-eval's variant) is

    realism_j = max_{i: r_i < median(r)} r_i / d(X_i, Y_j)

(only real balls with radius strictly below the median are used).

Nothing of size ``n x m`` is ever held: distances are computed in
``block x block`` tiles (one GEMM each, :func:`vitlab.neighbors.sq_dist_tile`; the
radii come from :func:`vitlab.neighbors.kth_nn_sq_dists`) and reduced on the fly
to k-NN radii, hit flags, counts and minima, so memory is ``O(block^2 + (n + m) * k)`` on top of
the features (50k x 1024 runs in a few GiB; see ``bench/bench_prdc.py``).

dgm-eval notes:

* dgm-eval's ``__main__`` first subsamples both sets to ``--reduced_n 10000``
  rows with an unseeded ``np.random.choice`` (and does *not* subsample the fake
  set when realism is requested); pass ``reduced_n=10_000, seed=...`` to mimic
  that, the default here uses all rows.
* ``prdc``'s ``np.argpartition(dists, k + 1)`` raises for ``k >= n - 1``; here
  any ``1 <= k <= n - 1`` works.
* ``sklearn.metrics.pairwise_distances`` upcasts float32 to float64 internally;
  the default ``dtype="float64"`` matches that. ``dtype="float32"`` is ~3x
  faster on CPU and can flip comparisons that are within rounding of a tie.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((200, 8))
    >>> res = prdc(x, x, nearest_k=5)
    >>> res.precision, res.recall, res.coverage
    (1.0, 1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vitlab.errors import DataError
from vitlab.metrics._validate import (
    check_features,
    check_k,
    check_positive_int,
    check_same_dim,
    warn_small_sample,
)
from vitlab.neighbors import (
    DEFAULT_BLOCK,
    iter_blocks,
    kth_nn_sq_dists,
    resolve_dtype,
    sq_dist_tile,
    to_tensors,
)

__all__ = ["PRDCResult", "prdc", "realism_score", "MIN_RECOMMENDED_SAMPLES"]

#: Below this many rows per set a :class:`SmallSampleWarning` is emitted
#: (Naeem et al. use 10,000; k-NN balls on a few hundred points are very noisy).
MIN_RECOMMENDED_SAMPLES = 1000


@dataclass(frozen=True)
class PRDCResult:
    """Result of :func:`prdc`.

    Attributes:
        precision: Fraction of fake samples inside some real k-NN ball.
        recall: Fraction of real samples inside some fake k-NN ball.
        density: Mean number of real balls containing a fake sample, divided by k.
        coverage: Fraction of real balls that contain at least one fake sample.
        nearest_k: The k used.
        realism: ``[m]`` realism score per fake sample, or ``None``.
    """

    precision: float
    recall: float
    density: float
    coverage: float
    nearest_k: int
    realism: np.ndarray | None = None

    def as_dict(self) -> dict[str, Any]:
        """dgm-eval style dict (``realism`` only when computed)."""
        out: dict[str, Any] = {
            "precision": self.precision,
            "recall": self.recall,
            "density": self.density,
            "coverage": self.coverage,
        }
        if self.realism is not None:
            out["realism"] = self.realism
        return out


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if x.shape[0] <= n:
        return x
    return x[np.sort(rng.choice(x.shape[0], n, replace=False))]


def prdc(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    nearest_k: int = 5,
    realism: bool = False,
    reduced_n: int | None = None,
    seed: int = 0,
    dtype: str = "float64",
    device: Any = None,
    block_size: int = DEFAULT_BLOCK,
) -> PRDCResult:
    """Precision, recall, density and coverage (and optionally realism), blocked.

    See the module docstring for the formulas.

    Args:
        real: ``[n, d]`` real features.
        fake: ``[m, d]`` generated features.
        nearest_k: k of the k-NN balls (dgm-eval / Naeem et al. default 5); ``1 <= k < n, m``.
        realism: Also return the per-sample realism score.
        reduced_n: If set, first subsample each set to at most this many rows
            without replacement (dgm-eval's ``--reduced_n``, default there 10000;
            the fake set is kept whole when ``realism=True``, as in dgm-eval).
        seed: Seed for ``reduced_n`` subsampling.
        dtype: ``"float64"`` (default) or ``"float32"`` distance arithmetic.
        device: torch device for the tiles (``None`` = CPU).
        block_size: Tile edge; peak extra memory is a few ``block_size^2`` tiles.

    Returns:
        :class:`PRDCResult`.

    Raises:
        DataError: mismatched dims, empty sets, NaN/inf rows.
        ConfigError: ``nearest_k`` not in ``[1, n - 1]`` for either set.

    Warns:
        SmallSampleWarning: a set has fewer than ``MIN_RECOMMENDED_SAMPLES`` rows.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> r = prdc(rng.standard_normal((300, 4)), rng.standard_normal((300, 4)) + 100.0)
        >>> r.precision, r.recall, r.density, r.coverage
        (0.0, 0.0, 0.0, 0.0)
    """
    x, y, block = _prepare(real, fake, dtype, block_size)
    if reduced_n is not None:
        reduced_n = check_positive_int(reduced_n, "reduced_n")
        rng = np.random.default_rng(seed)
        x = _subsample(x, reduced_n, rng)
        if not realism:
            y = _subsample(y, reduced_n, rng)
    k = check_k(nearest_k, x.shape[0], "real")
    check_k(nearest_k, y.shape[0], "fake")
    for name, arr in (("real", x), ("fake", y)):
        _warn_small(arr.shape[0], name, "PRDC")

    with torch.no_grad():
        xt, yt = to_tensors(x, y, dtype=dtype, device=device)
        del x, y  # the centred tensors are all we need; frees converted copies
        r2 = kth_nn_sq_dists(xt, k, block)  # real radii^2
        s2 = kth_nn_sq_dists(yt, k, block)  # fake radii^2
        return _cross_pass(xt, yt, r2, s2, k, realism, block)


def _prepare(real: Any, fake: Any, dtype: str, block_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    np_dtype = np.float32 if resolve_dtype(dtype) == torch.float32 else np.float64
    x = check_features(real, "real", dtype=np_dtype)
    y = check_features(fake, "fake", dtype=np_dtype)
    check_same_dim(x, y, "real", "fake")
    return x, y, check_positive_int(block_size, "block_size")


def _warn_small(n: int, name: str, what: str) -> None:
    if n < MIN_RECOMMENDED_SAMPLES:
        warn_small_sample(
            f"{what} with only {n} {name} samples: k-NN balls on small sets are noisy. "
            f"Use at least {MIN_RECOMMENDED_SAMPLES} (Naeem et al. use 10000).",
            stacklevel=4,
        )


def _cross_pass(
    xt: torch.Tensor,
    yt: torch.Tensor,
    r2: torch.Tensor,
    s2: torch.Tensor | None,
    k: int,
    realism: bool,
    block: int,
) -> PRDCResult:
    n, m = xt.shape[0], yt.shape[0]
    dev = xt.device
    x_sq = (xt * xt).sum(dim=1)
    y_sq = (yt * yt).sum(dim=1)
    prec_hit = torch.zeros(m, dtype=torch.bool, device=dev)
    dens_cnt = torch.zeros(m, dtype=torch.int64, device=dev)
    rec_hit = torch.zeros(n, dtype=torch.bool, device=dev)
    min_d2 = torch.full((n,), float("inf"), dtype=xt.dtype, device=dev)
    if realism:
        radii = torch.sqrt(r2)
        med = torch.from_numpy(np.asarray(np.median(radii.cpu().numpy()))).to(radii)
        small = radii < med
        if not bool(small.any()):
            raise DataError(
                "realism score is undefined: no real k-NN radius is strictly below the median "
                "(all radii equal, e.g. duplicated rows). Deduplicate the real features."
            )
        best_ratio2 = torch.zeros(m, dtype=xt.dtype, device=dev)
    for i0, i1 in iter_blocks(n, block):
        r2_i = r2[i0:i1]
        if realism:
            small_i = small[i0:i1]
            r2_small = r2_i[small_i][:, None]
        for j0, j1 in iter_blocks(m, block):
            tile = sq_dist_tile(xt[i0:i1], yt[j0:j1], x_sq[i0:i1], y_sq[j0:j1])
            inside = tile < r2_i[:, None]
            cnt = inside.view(torch.uint8).sum(dim=0, dtype=torch.int32)
            prec_hit[j0:j1] |= cnt > 0
            dens_cnt[j0:j1] += cnt
            if s2 is not None:
                rec_hit[i0:i1] |= (tile < s2[None, j0:j1]).any(dim=1)
            min_d2[i0:i1] = torch.minimum(min_d2[i0:i1], tile.min(dim=1).values)
            if realism and r2_small.shape[0] > 0:
                ratio2 = (r2_small / tile[small_i]).max(dim=0).values
                best_ratio2[j0:j1] = torch.maximum(best_ratio2[j0:j1], ratio2)
    precision = float(prec_hit.double().mean().item())
    recall = float(rec_hit.double().mean().item())
    density = float(dens_cnt.double().mean().item()) / k
    coverage = float((min_d2 < r2).double().mean().item())
    real_scores = torch.sqrt(best_ratio2).cpu().numpy().astype(np.float64) if realism else None
    return PRDCResult(precision, recall, density, coverage, k, real_scores)


def realism_score(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    nearest_k: int = 5,
    dtype: str = "float64",
    device: Any = None,
    block_size: int = DEFAULT_BLOCK,
) -> np.ndarray:
    """Per-sample realism score ``max_{i: r_i < median(r)} r_i / d(X_i, Y_j)``.

    Kynkäänniemi et al. 2019 (Eq. 3, discarding the half of the real balls with
    the largest radii), as dgm-eval's ``compute_prdc(..., realism=True)``.
    A fake sample identical to a used real point gets ``inf``.

    Args:
        real: ``[n, d]`` real features.
        fake: ``[m, d]`` generated features.
        nearest_k: k of the real k-NN radii.
        dtype: ``"float64"`` or ``"float32"``.
        device: torch device (``None`` = CPU).
        block_size: Tile edge.

    Returns:
        ``[m]`` float64 array; values ``>= 1`` mean "inside some small real ball".

    Example:
        >>> x = np.random.default_rng(0).standard_normal((100, 3))
        >>> realism_score(x, x[:2] + 1e-3).shape
        (2,)
    """
    x, y, block = _prepare(real, fake, dtype, block_size)
    k = check_k(nearest_k, x.shape[0], "real")
    _warn_small(x.shape[0], "real", "realism score")
    with torch.no_grad():
        xt, yt = to_tensors(x, y, dtype=dtype, device=device)
        r2 = kth_nn_sq_dists(xt, k, block)
        res = _cross_pass(xt, yt, r2, None, k, True, block)
    assert res.realism is not None
    return res.realism
