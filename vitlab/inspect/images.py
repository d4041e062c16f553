"""Images in pixel space for inspection and attacks: load, normalise, embed, and a probe head in torch.

Inspection and attacks work on raw images ``[B, 3, H, W]`` in ``[0, 1]`` (so budgets such as
ε = 8/255 are in pixel units) and normalise inside the forward pass with the backbone's own
mean/std. :class:`ProbeHead` turns a fitted :class:`~vitlab.protocols.linear.LinearProbe` into
a differentiable torch head (same logits) for Grad-CAM, gradient rollout and attacks.

Example:
    >>> import vitlab
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> raw = load_raw(bb, vitlab.load_source("sample:fashion-mnist"), [0, 1])
    >>> embed_raw(bb, raw, pool="cls").shape
    torch.Size([2, 96])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from vitlab.backbones.base import Backbone, check_pool
from vitlab.errors import ConfigError, DataError

__all__ = ["load_raw", "normalize", "embed_raw", "to_pil", "ProbeHead", "fit_probe_head"]


def load_raw(backbone: Backbone, source: Any, indices: Sequence[int]) -> torch.Tensor:
    """Images ``indices`` of ``source`` resized/cropped as the backbone expects, not normalised: ``[n, 3, H, W]`` in [0, 1].

    Images are decoded with the embedding store's own checks (:func:`vitlab.store.extract.read_image`:
    not an image, over the pixel limit, smaller than one patch), so ``inspect`` and ``robust`` accept
    exactly what ``embed`` accepts.

    Raises:
        DataError: one line naming the first image the store would refuse, and why.

    Example:
        >>> import vitlab
        >>> bb = vitlab.load_backbone("demo:fmnist-vit")
        >>> load_raw(bb, vitlab.load_source("sample:fashion-mnist"), [0]).shape
        torch.Size([1, 3, 28, 28])
    """
    from torchvision import transforms as T

    from vitlab.store.extract import min_image_side, read_image

    tf = backbone.spec.preprocessing.build_transform()
    steps = [s for s in tf.transforms if not isinstance(s, T.Normalize)]
    pipe = T.Compose(steps)
    min_side, patch = min_image_side(backbone)
    out = []
    for i in indices:
        img, err = read_image(source, int(i), min_side, patch)
        if err is not None:
            raise DataError(f"{err}. Remove or fix it (inspect and robust load images as embed does).")
        out.append(pipe(img))
    return torch.stack(out).float()


def to_pil(raw: torch.Tensor) -> Any:
    """One raw image ``[3, H, W]`` in [0, 1] → an RGB PIL image (for thumbnails)."""
    from PIL import Image

    return Image.fromarray((raw.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def normalize(backbone: Backbone, raw: torch.Tensor) -> torch.Tensor:
    """``(raw - mean) / std`` with the backbone's preprocessing; ``[B, 3, H, W]`` → same shape (differentiable)."""
    p = backbone.spec.preprocessing
    mean = torch.tensor(p.mean, dtype=raw.dtype, device=raw.device).view(1, 3, 1, 1)
    std = torch.tensor(p.std, dtype=raw.dtype, device=raw.device).view(1, 3, 1, 1)
    return (raw - mean) / std


def embed_raw(backbone: Backbone, raw: torch.Tensor, *, pool: str = "cls", layer: int = -1,
              batch_size: int = 64, grad: bool = False) -> torch.Tensor:
    """Pooled features ``[B, C]`` (``[B, 2C]`` for ``cls+mean``) of raw images ``[B, 3, H, W]``, batched.

    ``grad=True`` keeps the graph (one batch, for attacks).
    """
    check_pool(pool, backbone.spec.has_cls_token)
    (li,) = backbone.resolve_layers(layer)
    if grad:
        out = backbone.forward_tokens(normalize(backbone, raw.to(backbone.device)), [li])
        return out.pooled(li, pool)
    feats = []
    with torch.no_grad():
        for s in range(0, raw.shape[0], batch_size):
            x = normalize(backbone, raw[s: s + batch_size].to(backbone.device))
            feats.append(backbone.forward_tokens(x, [li]).pooled(li, pool).float().cpu())
    return torch.cat(feats)


class ProbeHead(nn.Module):
    """A fitted linear probe as a torch head: logits ``[B, K] = ((f - mean) / scale) @ W^T + b`` on pooled features ``[B, C]``.

    Args:
        coef: ``[K, C]``. intercept: ``[K]``. mean, scale: ``[C]`` standardisation (ones/zeros for none).

    Example:
        >>> h = ProbeHead(np.eye(2), np.zeros(2), np.zeros(2), np.ones(2))
        >>> h(torch.tensor([[1.0, 0.0]])).argmax(1).tolist()
        [0]
    """

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        f32 = dict(dtype=torch.float32)
        self.register_buffer("coef", torch.as_tensor(np.asarray(coef), **f32))
        self.register_buffer("intercept", torch.as_tensor(np.asarray(intercept), **f32))
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean), **f32))
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale), **f32))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        d = f.device  # features may live on the backbone's device; the head follows them
        return ((f.float() - self.mean.to(d)) / self.scale.to(d)) @ self.coef.to(d).T + self.intercept.to(d)


def fit_probe_head(features: np.ndarray, labels: np.ndarray, *, seed: int = 0,
                   num_classes: int | None = None) -> tuple[ProbeHead, Any]:
    """Fit :class:`~vitlab.protocols.linear.LinearProbe` (C in 1e-3..10, chosen on a validation split) on ``features [n, C]`` and return it as a head.

    Example:
        >>> X = np.random.default_rng(0).normal(size=(40, 4)); y = (X[:, 0] > 0).astype(int)
        >>> head, probe = fit_probe_head(X, y)
        >>> head(torch.tensor(X[:2], dtype=torch.float32)).shape
        torch.Size([2, 2])
    """
    from vitlab.protocols.linear import LinearProbe

    labels = np.asarray(labels)
    if labels.size == 0:
        raise ConfigError("a probe head needs labelled images; the data has none.")
    probe = LinearProbe(Cs=np.logspace(-3, 1, 5), seed=seed, num_classes=num_classes).fit(np.asarray(features), labels)
    mean = probe.mean_ if probe.standardize else np.zeros(probe.coef_.shape[1])
    scale = probe.scale_ if probe.standardize else np.ones(probe.coef_.shape[1])
    return ProbeHead(probe.coef_, probe.intercept_, mean, scale), probe
