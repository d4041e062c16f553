"""Closed-form approximation of the sliced 2-Wasserstein distance.

As dgm-eval's ``dgm_eval/metrics/sw.py::sw_approx``, from Nadjahi et al. 2021
("Fast approximation of the sliced-Wasserstein distance using concentration of
random projections", arXiv:2106.15427), without Monte Carlo projections:

    m  = ||mean(X) - mean(Y)||^2 / d
    sX = mean_i ||X_i - mean(X)||^2 / d,    sY likewise for Y
    SW_2 ~= sqrt( m + (sqrt(sX) - sqrt(sY))^2 )

(population second moments, i.e. ``ddof = 0``). Computed in float64.

Example:
    >>> import numpy as np
    >>> x = np.random.default_rng(0).standard_normal((1000, 4))
    >>> round(sliced_wasserstein_approx(x, x + 2.0), 6)   # sqrt(4 * 4 / 4)
    2.0
"""

from __future__ import annotations

import numpy as np

from vitlab.metrics._validate import check_features, check_same_dim

__all__ = ["sliced_wasserstein_approx"]


def sliced_wasserstein_approx(real: np.ndarray, fake: np.ndarray) -> float:
    """Approximate sliced W2 between two feature sets (dgm-eval ``sw_approx``).

    Args:
        real: ``[n, d]`` real features.
        fake: ``[m, d]`` generated features.

    Returns:
        ``sqrt(||mu_x - mu_y||^2 / d + (sqrt(sX) - sqrt(sY))^2)`` with ``sX, sY`` the mean
        squared distances to the set means divided by ``d``.

    Raises:
        DataError: mismatched dims, empty sets, NaN/inf.

    Example:
        >>> sliced_wasserstein_approx(np.zeros((3, 2)), np.zeros((5, 2)))
        0.0
    """
    x = check_features(real, "real")
    y = check_features(fake, "fake")
    check_same_dim(x, y, "real", "fake")
    d = x.shape[1]
    mx, my = x.mean(axis=0), y.mean(axis=0)
    diff = mx - my
    mean_term = float(diff @ diff) / d
    m2x = float(((x - mx) ** 2).sum(axis=1).mean()) / d
    m2y = float(((y - my) ** 2).sum(axis=1).mean()) / d
    return float(np.sqrt(mean_term + (np.sqrt(m2x) - np.sqrt(m2y)) ** 2))
