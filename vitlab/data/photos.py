"""``photos:<names>``: natural photographs bundled inside installed wheels, for maps on real images offline.

Always available: scikit-learn's ``china`` and ``flower`` (``sklearn/datasets/images``, 640 × 427 JPEGs).
When scikit-image is installed, its bundled photographs are added (``astronaut``, ``chelsea``,
``coffee``, ``rocket``, ``immunohistochemistry``, ``retina``...; not a vitlab dependency).
``photos:all`` opens every available photo; ``photos:china,flower`` a selection. The photos are
unlabelled (no classes); the fingerprint hashes their bytes.

Example:
    >>> src = PhotoSource("all")
    >>> src.ids[:2], src.labels is None
    (['china', 'flower'], True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vitlab.data.base import ArraySource, hash_bytes
from vitlab.errors import UnknownNameError

__all__ = ["PhotoSource", "available_photos"]

_SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "cat", "hubble_deep_field")


def available_photos() -> dict[str, Any]:
    """Name → loader of every bundled photo installed here (sklearn's always; scikit-image's when installed).

    Example:
        >>> sorted(available_photos())[:2]
        ['china', 'flower']
    """
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    out: dict[str, Any] = {}
    for name in ("china", "flower"):
        p = folder / f"{name}.jpg"
        if p.exists():
            out[name] = (lambda p=p: _read_jpeg(p))
    try:
        import skimage.data as skd
    except ImportError:
        return out
    for name in _SKIMAGE:
        if hasattr(skd, name):
            out[name] = (lambda n=name: _rgb(getattr(skd, n)()))
    return out


def _read_jpeg(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _rgb(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float64) / (a.max() or 1), 0, 1) * 255).round().astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return np.ascontiguousarray(a[..., :3])


class PhotoSource(ArraySource):
    """Bundled natural photographs (unlabelled); see the module docstring.

    Args:
        names: ``"all"`` or comma-separated photo names.
    """

    kind = "photos"

    def __init__(self, names: str = "all", **options: Any) -> None:
        avail = available_photos()
        want = list(avail) if names in ("", "all") else [n.strip() for n in names.split(",") if n.strip()]
        for n in want:
            if n not in avail:
                raise UnknownNameError("bundled photo", n, avail,
                                       "scikit-image's photos need `pip install scikit-image`; photos:all opens "
                                       "every installed one.")
        images = [avail[n]() for n in want]
        key = hash_bytes(*[a.tobytes() + str(a.shape).encode() for a in images])
        super().__init__(f"photos:{names or 'all'}", images, want, None, [], key, **options)
