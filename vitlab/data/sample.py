"""``sample:fashion-mnist``: 2,000 Fashion-MNIST test images (200 per class) shipped with vitlab.

Fashion-MNIST: Copyright 2017 Zalando SE, MIT licence
(https://github.com/zalandoresearch/fashion-mnist); see ``assets/FASHION_MNIST_LICENSE``.
Drawn by ``scripts/make_sample.py`` from Debian's ``dataset-fashion-mnist``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from vitlab.data.base import ArraySource, hash_bytes
from vitlab.data.idx import FASHION_CLASSES
from vitlab.errors import UnknownNameError

SAMPLES = {"fashion-mnist": "fashion_mnist_sample.npz"}


def sample_path(name: str) -> Path:
    if name not in SAMPLES:
        raise UnknownNameError("bundled sample", name, SAMPLES)
    return Path(str(resources.files("vitlab.data") / "assets" / SAMPLES[name]))


class SampleSource(ArraySource):
    """A bundled sample (no split column: splits are seeded and stratified).

    Example:
        >>> src = SampleSource("fashion-mnist")
        >>> len(src), src.classes[0]
        (2000, 'T-shirt/top')
    """

    kind = "sample"

    def __init__(self, name: str) -> None:
        path = sample_path(name)
        raw = path.read_bytes()
        with np.load(path) as z:
            images, labels, ids = z["images"], z["labels"].astype(np.int64), [str(i) for i in z["ids"]]
        super().__init__(f"sample:{name}", images, ids, labels, list(FASHION_CLASSES), hash_bytes(raw))
