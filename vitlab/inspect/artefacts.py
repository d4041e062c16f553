"""Artefact tokens: per-layer token norms, high-norm outlier patches (Darcet et al. 2024) and registers.

For every layer the norm of each block output token (residual stream, ``[B, T]``) is measured.
A patch token is a high-norm outlier when its robust z-score against all patch tokens of that
layer, ``z = (‖t‖ - median) / (1.4826 · MAD)``, exceeds ``z_thresh`` (default 6) *and* its norm is
at least ``ratio`` (default 2) times the layer's median. The report gives, per layer, the norm
histogram, the outliers (image, row, column), the first layer where they appear, and the share of
the CLS (or mean) query's attention they receive; registers get the same norm and attention figures.

Example:
    >>> norms = torch.ones(2, 1, 5); norms[1, 0, 3] = 50.0   # [B, L, N]
    >>> detect_outliers(norms, grid=(1, 5))["positions"]
    [{'image': 1, 'layer': 0, 'row': 0, 'col': 3, 'norm': 50.0, 'z': inf}]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vitlab.errors import ConfigError
from vitlab.inspect.capture import AttentionCapture

__all__ = ["token_norms", "robust_z", "detect_outliers", "artefact_report", "norm_histograms", "MAD_SCALE"]

MAD_SCALE = 1.4826  # MAD → standard deviation of a normal


def token_norms(cap: AttentionCapture) -> torch.Tensor:
    """L2 norms of every block output token: ``[B, L, T]`` (layers in ``cap.layers`` order)."""
    return torch.stack([cap.hidden[i].detach().float().norm(dim=-1) for i in cap.layers], dim=1)


def robust_z(x: np.ndarray) -> np.ndarray:
    """``(x - median) / (1.4826 · MAD)`` of a 1-D array (``inf`` where MAD = 0 and x ≠ median).

    Example:
        >>> robust_z(np.array([1.0, 2.0, 3.0, 100.0])).round(2).tolist()
        [-1.01, -0.34, 0.34, 65.76]
    """
    x = np.asarray(x, dtype=np.float64)
    med = np.median(x)
    mad = MAD_SCALE * np.median(np.abs(x - med))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - med) / mad
    return np.where(x == med, 0.0, z)


def detect_outliers(norms: torch.Tensor | np.ndarray, grid: tuple[int, int], *, layers: list[int] | None = None,
                    z_thresh: float = 6.0, ratio: float = 2.0, max_positions: int = 200) -> dict[str, Any]:
    """High-norm patch tokens from patch norms ``[B, L, N]``.

    Returns:
        ``{"per_layer": [{layer, median, mad, count, share}], "first_layer": int | None,
        "positions": [{image, layer, row, col, norm, z}] (at most ``max_positions``, largest z first),
        "mask": [B, L, N] bool}``.
    """
    if z_thresh <= 0 or ratio < 1:
        raise ConfigError(f"z_thresh={z_thresh} must be > 0 and ratio={ratio} >= 1.")
    n = norms.detach().cpu().double().numpy() if isinstance(norms, torch.Tensor) else np.asarray(norms, np.float64)
    B, L, N = n.shape
    layers = list(range(L)) if layers is None else list(layers)
    mask = np.zeros_like(n, dtype=bool)
    per_layer, positions = [], []
    for li in range(L):
        v = n[:, li].ravel()
        z = robust_z(v).reshape(B, N)
        med = float(np.median(v))
        m = (z > z_thresh) & (n[:, li] >= ratio * med)
        mask[:, li] = m
        per_layer.append({"layer": layers[li], "median": med, "mad": float(np.median(np.abs(v - med))),
                          "count": int(m.sum()), "share": float(m.mean())})
        for b, j in zip(*np.nonzero(m)):
            positions.append({"image": int(b), "layer": layers[li], "row": int(j // grid[1]), "col": int(j % grid[1]),
                              "norm": float(n[b, li, j]), "z": float(z[b, j])})
    first = next((p["layer"] for p in per_layer if p["count"] > 0), None)
    positions.sort(key=lambda p: (-p["z"], p["layer"], p["image"]))
    return {"per_layer": per_layer, "first_layer": first, "positions": positions[:max_positions],
            "n_positions": len(positions), "mask": mask, "z_thresh": z_thresh, "ratio": ratio}


def norm_histograms(norms: np.ndarray, layers: list[int], bins: int = 30) -> dict[str, Any]:
    """Per-layer histograms of patch norms ``[B, L, N]`` on shared log-spaced bins (JSON-able)."""
    v = np.asarray(norms, dtype=np.float64)
    lo, hi = max(float(v.min()), 1e-6), max(float(v.max()), 1e-5)
    edges = np.geomspace(lo, hi * (1 + 1e-9), bins + 1) if hi > lo else np.linspace(lo - 0.5, lo + 0.5, bins + 1)
    return {"edges": edges.tolist(),
            "counts": {str(layer): np.histogram(v[:, li].ravel(), edges)[0].tolist() for li, layer in enumerate(layers)}}


def artefact_report(caps: list[AttentionCapture], *, z_thresh: float = 6.0, ratio: float = 2.0) -> dict[str, Any]:
    """The artefact figures of one or more captures (batches of the same backbone and input size).

    Returns a JSON-able dict: ``layers``, ``grid``, ``norm_histograms``, ``outliers`` (see
    :func:`detect_outliers`, without the mask), ``attention_share`` (per layer: mean share of the
    query's attention that goes to outlier patches, and to registers), ``registers`` (per layer:
    median register norm vs median patch norm), and ``norm_median`` per layer and token kind.
    """
    if not caps:
        raise ConfigError("no captures to analyse; pass at least one image.")
    lay, layers = caps[0].layout, caps[0].layers
    norms = torch.cat([token_norms(c) for c in caps]).numpy()  # [B, L, T]
    patch = norms[:, :, lay.patch_slice]
    out = detect_outliers(patch, lay.grid, layers=layers, z_thresh=z_thresh, ratio=ratio)
    mask = out.pop("mask")
    # share of the query's attention (CLS row, or mean row without CLS) that lands on outliers / registers
    shares, reg_shares = [], []
    b0 = 0
    per_img_out = np.zeros((norms.shape[0], len(layers)))
    per_img_reg = np.zeros((norms.shape[0], len(layers)))
    for c in caps:
        A = c.stacked().detach().double()  # [L, B, H, T, T]
        q = A[:, :, :, 0] if lay.has_cls else A.mean(dim=3)  # [L, B, H, T]
        q = q.mean(2).numpy()  # [L, B, T]
        nb = q.shape[1]
        m = mask[b0: b0 + nb].transpose(1, 0, 2)  # [L, b, N]
        per_img_out[b0: b0 + nb] = (q[:, :, lay.patch_slice] * m).sum(-1).T
        if lay.num_registers:
            per_img_reg[b0: b0 + nb] = q[:, :, lay.register_slice].sum(-1).T
        b0 += nb
    for li, layer in enumerate(layers):
        shares.append({"layer": layer, "to_outliers": float(per_img_out[:, li].mean()),
                       "to_registers": float(per_img_reg[:, li].mean()) if lay.num_registers else None})
    regs = None
    if lay.num_registers:
        rn = norms[:, :, lay.register_slice]
        regs = [{"layer": layer, "register_median_norm": float(np.median(rn[:, li])),
                 "patch_median_norm": float(np.median(patch[:, li]))} for li, layer in enumerate(layers)]
    medians = {str(layer): {"patch": float(np.median(patch[:, li])),
                            **({"cls": float(np.median(norms[:, li, 0]))} if lay.has_cls else {})}
               for li, layer in enumerate(layers)}
    return {"layers": layers, "grid": list(lay.grid), "n_images": int(norms.shape[0]),
            "norm_histograms": norm_histograms(patch, layers), "outliers": out, "attention_share": shares,
            "registers": regs, "norm_median": medians, "layout": lay.to_dict()}
