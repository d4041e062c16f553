"""Exact and perceptual duplicates: one pass over the images, two hashes per image.

* exact: a BLAKE2b digest of the decoded pixels (mode, size and RGB bytes), so the same picture
  saved twice, or under two names, is one group whatever the file's container metadata;
* perceptual: the 64-bit pHash of the ``imagehash`` package (DCT of an 8x8 low-frequency block),
  compared by Hamming distance. Near pairs are found with the one nearest-neighbour search of
  vitlab (:func:`vitlab.neighbors.search`, through :func:`vitlab.curation.pairs.pairs_within`) on +-1
  bit vectors: for 64-bit codes ``a`` and ``b``, ``hamming(a, b) = (64 - a.b) / 2``, so the top-k
  inner products are the k smallest distances; every pair within the distance is found.

``imagehash`` is an optional dependency (``pip install 'vitlab[curate]'``): :func:`require_imagehash`
checks it before any work.

Example:
    >>> from PIL import Image
    >>> imgs = [Image.new("RGB", (32, 32), c) for c in ("red", "red", "blue")]
    >>> h = hash_images(imgs)
    >>> exact_groups(h.exact)
    [[0, 1]]
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from vitlab.curation.pairs import MAX_NEIGHBOURS, pairs_within
from vitlab.errors import ConfigError

__all__ = ["ImageHashes", "hash_images", "exact_groups", "perceptual_pairs", "PerceptualPairs", "HASH_BITS",
           "require_imagehash", "INSTALL_HINT"]

HASH_BITS = 64


@dataclass(frozen=True)
class ImageHashes:
    """Hashes of ``n`` images.

    Attributes:
        exact: ``[n]`` hex digests of the decoded pixels.
        phash: ``[n, 64]`` bool pHash bits (``imagehash.phash``, hash_size 8).
    """

    exact: list[str]
    phash: np.ndarray


INSTALL_HINT = "pip install 'vitlab[curate]'"


def require_imagehash() -> None:
    """Refuse, in one line naming the extra, when ``imagehash`` (perceptual hashes) is not installed.

    Raises:
        ConfigError: ``imagehash`` cannot be imported.

    Example:
        >>> require_imagehash()  # installed here: nothing happens
    """
    try:
        import imagehash  # noqa: F401
    except ImportError:
        raise ConfigError(f"curate's duplicate search needs the imagehash package (perceptual hashes): "
                          f"{INSTALL_HINT}, or pass --no-dedup.") from None


def pixel_digest(img: Image.Image) -> str:
    """BLAKE2b-128 of an image's RGB pixels and size.

    Example:
        >>> pixel_digest(Image.new("RGB", (2, 2))) == pixel_digest(Image.new("RGB", (2, 2)))
        True
    """
    rgb = img.convert("RGB")
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{rgb.size[0]}x{rgb.size[1]}".encode())
    h.update(rgb.tobytes())
    return h.hexdigest()


def hash_images(images: Iterable[Image.Image], on_item: Callable[[int], None] | None = None) -> ImageHashes:
    """Exact pixel digest and 64-bit pHash of each image.

    Args:
        images: PIL images (decoded one at a time).
        on_item: called with the running count after each image (progress).

    Returns:
        :class:`ImageHashes` for the images, in order.

    Example:
        >>> hash_images([Image.new("RGB", (8, 8))]).phash.shape
        (1, 64)
    """
    import imagehash

    exact, bits = [], []
    for i, img in enumerate(images):
        exact.append(pixel_digest(img))
        bits.append(np.asarray(imagehash.phash(img).hash, dtype=bool).ravel())
        if on_item is not None:
            on_item(i + 1)
    phash = np.stack(bits) if bits else np.zeros((0, HASH_BITS), bool)
    return ImageHashes(exact, phash)


def exact_groups(digests: list[str]) -> list[list[int]]:
    """Indices sharing a digest, groups of >= 2 in order of first appearance.

    Example:
        >>> exact_groups(["a", "b", "a", "c", "b"])
        [[0, 2], [1, 4]]
    """
    seen: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        seen.setdefault(d, []).append(i)
    return [g for g in seen.values() if len(g) > 1]


@dataclass(frozen=True)
class PerceptualPairs:
    """Every pair of images whose pHash codes differ in at most ``max_distance`` bits.

    Iterating gives ``(i, j, hamming)`` with ``i < j``, sorted.

    Attributes:
        pairs: the pairs. max_distance: the distance. capped: rows with more than ``max_neighbours``
            near codes (pairs beyond the cap are missing; the caller warns and records them).
    """

    pairs: list[tuple[int, int, int]]
    max_distance: int
    capped: np.ndarray
    max_neighbours: int

    def __iter__(self):  # noqa: ANN204
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)


def perceptual_pairs(bits: np.ndarray, max_distance: int = 4, k: int = 16,
                     max_neighbours: int = MAX_NEIGHBOURS) -> PerceptualPairs:
    """Every pair ``(i, j, hamming)``, ``i < j``, whose pHash codes differ in at most ``max_distance`` bits.

    Each image's ``k`` nearest codes are searched, then (:func:`vitlab.curation.pairs.pairs_within`) twice as
    many for images whose ``k``-th code is still within the distance, up to ``max_neighbours``: no pair is
    lost to ``k``. Images that reach the cap are listed in ``capped``.

    Args:
        bits: ``[n, B]`` bool hash bits.
        max_distance: the largest Hamming distance counted as a near-duplicate (0..B).
        k: neighbours per image in the first search.
        max_neighbours: the most near codes searched per image.

    Example:
        >>> b = np.array([[0] * 64, [0] * 63 + [1], [1] * 64], dtype=bool)
        >>> list(perceptual_pairs(b, max_distance=2))
        [(0, 1, 1)]
        >>> len(perceptual_pairs(np.zeros((20, 64), bool), k=4))  # 20 identical codes: every pair
        190
    """
    n, nbits = bits.shape
    if not 0 <= max_distance <= nbits:
        raise ConfigError(f"max_distance must be in [0, {nbits}] bits, got {max_distance}.")
    if n < 2:
        return PerceptualPairs([], max_distance, np.zeros(0, np.int64), max_neighbours)
    signs = np.where(bits, 1.0, -1.0).astype(np.float32)
    # hamming = (B - a.b) / 2 <= d  <=>  a.b >= B - 2d (integers, exact in float32)
    ps = pairs_within(signs, nbits - 2 * max_distance, metric="ip", k=k, max_neighbours=max_neighbours)
    dist = np.rint((nbits - ps.score) / 2).astype(np.int64)
    pairs = list(zip(ps.i.tolist(), ps.j.tolist(), dist.tolist()))
    return PerceptualPairs(pairs, max_distance, ps.capped, max_neighbours)
