"""Sanity checks for saliency maps: the model-randomisation test and deletion / insertion curves.

* Model randomisation (Adebayo et al. 2018): the maps of a copy whose block weights are re-drawn
  (seeded; the user's model is never touched) must differ from the trained model's. Reported:
  the Spearman rank correlation (SciPy) of each image's two maps, its mean with a bootstrap CI
  over images (:func:`vitlab.stats.bootstrap.bootstrap_ci`).
* Deletion / insertion (Petsiuk et al. 2018): patches are removed (set to the image mean) from the
  most to the least salient, or inserted into a mean-filled image in that order; the probe's
  probability of the explained class is recorded at each step. Per image the area under the
  curve (trapezoid over the fraction of patches); mean AUC with a bootstrap CI over images, and
  a paired bootstrap against a random patch order (same images, same steps).

Example:
    >>> import vitlab
    >>> bb, x = vitlab.load_backbone("demo:fmnist-vit"), torch.rand(4, 3, 28, 28)
    >>> r = randomisation_test(bb, x, "rollout", n_resamples=20)
    >>> -1 <= r["spearman"]["value"] <= 1  # high: the map ignores the weights (a failed sanity check)
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from vitlab.backbones.base import Backbone
from vitlab.errors import ConfigError
from vitlab.stats.bootstrap import bootstrap_ci
from vitlab.stats.paired import paired_bootstrap

__all__ = ["randomised_copy", "randomisation_test", "deletion_insertion", "mean_ci", "mean_metric"]


def mean_metric(y: np.ndarray, s: np.ndarray) -> float:
    """The mean of per-image values ``s`` (``y`` unused): the statistic behind :func:`mean_ci`."""
    return float(np.mean(s, dtype=np.float64))


def mean_ci(values: np.ndarray, *, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap CI of the mean of per-image ``values [n]`` as a record entry.

    Example:
        >>> e = mean_ci(np.array([0.1, 0.2, 0.3, 0.4]), n_resamples=200)
        >>> e["low"] <= e["value"] <= e["high"]
        True
    """
    v = np.asarray(values, dtype=np.float64)
    return bootstrap_ci(mean_metric, np.zeros(len(v)), v, n_resamples=n_resamples, seed=seed).to_entry()


def randomised_copy(backbone: Backbone, *, seed: int = 0, top_blocks: int | None = None) -> Backbone:
    """A deep copy whose last ``top_blocks`` blocks (all when ``None``) have re-drawn weights (N(0, 0.02) for
    linear weights, zero biases, LayerScale kept). The original is not modified.
    """
    ops, why = backbone.block_ops()
    if ops is None:
        raise ConfigError(f"{backbone.spec.name}: the randomisation test needs a ViT with blocks: {why}")
    new = copy.copy(backbone)
    new.__dict__ = {k: v for k, v in backbone.__dict__.items() if not k.startswith("_weights") and k != "weights_id"}
    new.model = copy.deepcopy(backbone.model)
    blocks = ops.blocks(new.model)
    k = len(blocks) if top_blocks is None else int(top_blocks)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in list(blocks)[len(blocks) - k:]:
            for m in blk.modules():
                if isinstance(m, torch.nn.Linear):
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.02)
                    if m.bias is not None:
                        m.bias.zero_()
    return new


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.stats import spearmanr

    out = []
    for x, y in zip(a.reshape(len(a), -1), b.reshape(len(b), -1)):
        r = spearmanr(x, y).statistic if np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan
        out.append(r)
    return np.asarray(out, dtype=np.float64)


def randomisation_test(backbone: Backbone, x: torch.Tensor, map_name: str = "rollout", *,
                       head: Callable[[torch.Tensor], torch.Tensor] | None = None, pool: str = "cls",
                       seed: int = 0, n_resamples: int = 1000) -> dict[str, Any]:
    """Maps of ``x [B, 3, H, W]`` from the model and from :func:`randomised_copy`; per-image Spearman correlation.

    Returns:
        ``{"map", "spearman": {value, low, high, ...}, "per_image": [B], "changed": bool}``; ``changed`` is
        True when the CI's upper end is below 0.9 (the maps are not the same ranking).
    """
    from vitlab.inspect.maps import compute_maps

    def one(bb: Backbone) -> np.ndarray:
        m = compute_maps(bb, x, [map_name], head=head, pool=pool)[map_name]
        if map_name == "attention":  # last layer, mean over heads
            m = m[:, -1].mean(1)
        return m.detach().double().cpu().numpy()

    a, b = one(backbone), one(randomised_copy(backbone, seed=seed))
    rho = _spearman_rows(a, b)
    ok = rho[np.isfinite(rho)]
    entry = mean_ci(ok, n_resamples=n_resamples, seed=seed) if ok.size else {"value": None, "low": None, "high": None}
    return {"map": map_name, "spearman": entry, "per_image": rho.tolist(), "n_undefined": int((~np.isfinite(rho)).sum()),
            "changed": bool(ok.size and entry["high"] < 0.9)}


def _fill(raw: torch.Tensor) -> torch.Tensor:
    return raw.mean(dim=(2, 3), keepdim=True).expand_as(raw)


def deletion_insertion(backbone: Backbone, raw: torch.Tensor, saliency: torch.Tensor,
                       score_fn: Callable[[torch.Tensor], torch.Tensor], *, steps: int = 10, seed: int = 0,
                       n_resamples: int = 1000) -> dict[str, Any]:
    """Deletion and insertion curves of ``saliency [B, h, w]`` on raw images ``[B, 3, H, W]`` in [0, 1].

    Args:
        score_fn: raw images ``[B, 3, H, W]`` → ``[B]`` score to track (e.g. the probe's probability
            of the explained class).
        steps: points on each curve after the start (patches changed in ``steps`` equal shares).

    Returns:
        per mode (``deletion``, ``insertion``): ``fractions``, the mean ``curve``, ``auc`` (mean with CI over
        images), ``auc_random`` (random patch order) and ``vs_random`` (paired bootstrap of the difference).
        Lower deletion AUC and higher insertion AUC are better.
    """
    if steps < 1:
        raise ConfigError(f"steps={steps} must be >= 1.")
    B, _, H, W = raw.shape
    h, w = saliency.shape[-2:]
    ph, pw = H // h, W // w
    N = h * w
    counts = np.unique(np.linspace(0, N, steps + 1).round().astype(int))
    fractions = (counts / N).tolist()
    rng = np.random.default_rng(seed)
    orders = {"map": torch.argsort(saliency.reshape(B, N).double(), dim=1, descending=True, stable=True),
              "random": torch.as_tensor(np.stack([rng.permutation(N) for _ in range(B)]))}
    base = _fill(raw)
    result: dict[str, Any] = {"fractions": fractions}
    for mode in ("deletion", "insertion"):
        curves = {}
        for name, order in orders.items():
            scores = []
            for c in counts:
                m = torch.zeros(B, N)
                if c:
                    m.scatter_(1, order[:, :c], 1.0)
                pix = m.view(B, 1, h, w).repeat_interleave(ph, 2).repeat_interleave(pw, 3)
                pix = torch.nn.functional.pad(pix, (0, W - w * pw, 0, H - h * ph))
                img = raw * (1 - pix) + base * pix if mode == "deletion" else base * (1 - pix) + raw * pix
                with torch.no_grad():
                    scores.append(score_fn(img).double().cpu().numpy())
            curves[name] = np.stack(scores, 1)  # [B, S]
        auc = {k: np.trapezoid(v, fractions, axis=1) if hasattr(np, "trapezoid") else np.trapz(v, fractions, axis=1)
               for k, v in curves.items()}
        pr = paired_bootstrap(mean_metric, np.zeros(B), auc["map"], auc["random"], n_resamples=n_resamples, seed=seed)
        result[mode] = {"curve": curves["map"].mean(0).tolist(), "curve_random": curves["random"].mean(0).tolist(),
                        "auc": mean_ci(auc["map"], n_resamples=n_resamples, seed=seed),
                        "auc_random": mean_ci(auc["random"], n_resamples=n_resamples, seed=seed),
                        "vs_random": {"diff": pr.diff, "low": pr.low, "high": pr.high, "p_bootstrap": pr.p_value}}
    return result
