"""Fidelity of an accelerated backbone to its original, and calibration-image loading."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vitlab.backbones.base import Backbone
from vitlab.errors import ConfigError

FEATURE_POOLS = ("auto", "tokens", "cls", "mean", "cls+mean")


def features(backbone: Backbone, x: torch.Tensor, *, layer: int = -1, pool: str = "auto",
             batch_size: int = 16) -> torch.Tensor:
    """Features of ``x`` at ``layer``: pooled ``[n, D]``, or all tokens ``[n, P + N, C]`` for ``pool="tokens"``.

    ``pool="auto"`` is ``cls+mean`` when the backbone has a class token, else ``mean``.
    """
    if pool not in FEATURE_POOLS:
        raise ConfigError(f"unknown pool {pool!r}; choose one of {', '.join(FEATURE_POOLS)}.")
    if pool == "auto":
        pool = "cls+mean" if backbone.spec.has_cls_token else "mean"
    outs = []
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(backbone.device)
            out = backbone.forward_tokens(xb, layer)
            (lay,) = out.tokens
            outs.append((out.tokens[lay] if pool == "tokens" else out.pooled(lay, pool)).float().cpu())
    return torch.cat(outs)


def feature_cosine(backbone_a: Backbone, backbone_b: Backbone, x: torch.Tensor, *, layer: int = -1,
                   pool: str = "auto") -> float:
    """Mean cosine similarity between two backbones' features of the same images.

    Args:
        backbone_a, backbone_b: e.g. the FP32 original and its accelerated version.
        x: preprocessed images ``[n, 3, H, W]``.
        layer: block index (negative from the end).
        pool: ``auto`` (``cls+mean``, or ``mean`` without CLS), ``cls``, ``mean``, ``cls+mean``, or
            ``tokens`` (cosine per token, averaged over tokens and images).

    Returns:
        Mean cosine similarity in [-1, 1].

    Example:
        >>> import vitlab
        >>> from vitlab.accel import apply_accel
        >>> bb, x = vitlab.load_backbone("demo:fmnist-vit"), torch.rand(16, 3, 28, 28)
        >>> 0.9 < feature_cosine(bb, apply_accel(bb, "w8a8", calib=x), x) <= 1
        True
    """
    fa = features(backbone_a, x, layer=layer, pool=pool)
    fb = features(backbone_b, x, layer=layer, pool=pool)
    if fa.shape != fb.shape:
        raise ConfigError(f"feature shapes differ: {tuple(fa.shape)} vs {tuple(fb.shape)}; compare backbones "
                          "of the same architecture.")
    return float(F.cosine_similarity(fa, fb, dim=-1).mean())


def calibration_images(calib: Any, backbone: Backbone, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` preprocessed calibration images ``[n, 3, H, W]`` from a tensor or a DataSource.

    A tensor is used as given (its first ``n`` images); from a
    :class:`~vitlab.data.base.DataSource`, ``n`` images are drawn without
    replacement (seeded) and preprocessed with the backbone's own transform.

    Raises:
        ConfigError: no calibration data, or a tensor of the wrong shape.
    """
    from vitlab.data.base import DataSource

    if calib is None:
        raise ConfigError("this accelerator needs calibration images: pass calib=<tensor [n, 3, H, W]> "
                          "(preprocessed) or calib=<DataSource>, e.g. vitlab.load_source('folder:./imgs').")
    if isinstance(calib, DataSource):
        if len(calib) == 0:
            raise ConfigError(f"calibration source {calib!r} is empty.")
        rows = np.random.default_rng(seed).choice(len(calib), size=min(n, len(calib)), replace=False)
        tf = backbone.spec.preprocessing.build_transform()
        calib = torch.stack([tf(calib.load_image(int(i))) for i in sorted(rows)])
    if not isinstance(calib, torch.Tensor) or calib.ndim != 4 or calib.shape[1] != 3 or not calib.is_floating_point():
        got = tuple(calib.shape) if isinstance(calib, torch.Tensor) else type(calib).__name__
        raise ConfigError(f"calibration images must be a float tensor [n, 3, H, W] (preprocessed), got {got}.")
    return calib[:n].float()


def tensor_digest(x: torch.Tensor) -> str:
    """Short content hash of a tensor (shape, dtype and bytes)."""
    t = x.detach().cpu().contiguous()
    h = hashlib.blake2b(f"{tuple(t.shape)}|{t.dtype}".encode(), digest_size=12)
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
