"""Unlabelled training images at one working size, as uint8 tensors, decoded once and kept while they fit.

Each image is brought to the working size by the backbone's own preprocessing geometry (resize and centre crop,
or stretch), then kept as uint8 ``[3, H, W]`` (the normalisation is applied per view, after augmentation). Images
are decoded on first use, so a run of a few hundred steps over 60,000 images decodes only what it draws.

Example:
    >>> import vitlab
    >>> bb = vitlab.load_backbone("demo:fmnist-vit")
    >>> store = ImageStore(vitlab.load_source("sample:digits?limit=8"), bb.spec.preprocessing)
    >>> store.batch(np.array([0, 3])).shape, store.batch(np.array([0])).dtype
    (torch.Size([2, 3, 28, 28]), torch.uint8)
"""

from __future__ import annotations

import numpy as np
import torch

from vitlab.backbones.preprocessing import Preprocessing
from vitlab.data.base import DataSource

__all__ = ["ImageStore", "CACHE_BYTES"]

#: decoded images are kept in memory up to this many bytes (uint8), else decoded again per batch
CACHE_BYTES = 2 << 30


class ImageStore:
    """Images of ``source`` at ``size`` (default: the preprocessing's input size) as uint8 ``[B, 3, H, W]``.

    Args:
        source: the images (labels, if any, are not read).
        preprocessing: whose geometry (resize, crop) brings an image to the working size.
        size: the working size ``(H, W)``; ``None`` = ``preprocessing.input_size``.
        max_bytes: keep decoded images in memory up to this budget.
    """

    def __init__(self, source: DataSource, preprocessing: Preprocessing, size: tuple[int, int] | None = None,
                 max_bytes: int = CACHE_BYTES) -> None:
        self.source = source
        self.size = tuple(size or preprocessing.input_size)
        prep = preprocessing.replace(input_size=self.size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        if prep.resize == "clean":
            prep = prep.replace(resize="stretch")
        self._transform = prep.build_transform()
        self._cache: dict[int, torch.Tensor] = {}
        self._keep = len(source) * 3 * self.size[0] * self.size[1] <= max_bytes

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, i: int) -> torch.Tensor:
        x = self._transform(self.source.load_image(int(i)))
        return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        """uint8 images ``[len(rows), 3, H, W]`` of source rows ``rows``."""
        out = []
        for i in np.asarray(rows, dtype=np.int64).tolist():
            t = self._cache.get(i)
            if t is None:
                t = self._load(i)
                if self._keep:
                    self._cache[i] = t
            out.append(t)
        return torch.stack(out)
