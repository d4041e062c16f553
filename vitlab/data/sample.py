"""Bundled samples: ``sample:fashion-mnist``, ``sample:fashion-mnist-mosaic`` and ``sample:digits``.

``sample:fashion-mnist``: 2,000 Fashion-MNIST test images (200 per class) shipped with vitlab.

``sample:digits``: scikit-learn's bundled 8 x 8 handwritten digits (1,797 images, 10 classes; UCI
"Optical Recognition of Handwritten Digits", shipped inside the scikit-learn wheel), a real transfer
task for the Fashion-MNIST demo ViT (see :class:`DigitsSource`).

``sample:fashion-mnist-mosaic``: 1,000 segmentation images built from those 2,000 (see
:class:`MosaicSource`): real pixels, exact masks, no download.

Fashion-MNIST: Copyright 2017 Zalando SE, MIT licence
(https://github.com/zalandoresearch/fashion-mnist); see ``assets/FASHION_MNIST_LICENSE``.
Drawn by ``scripts/make_sample.py`` from Debian's ``dataset-fashion-mnist``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.data.bag_table import BagInfo
from vitlab.data.base import ArraySource, hash_bytes
from vitlab.data.idx import FASHION_CLASSES
from vitlab.errors import UnknownNameError

SAMPLES = {"fashion-mnist": "fashion_mnist_sample.npz"}
MOSAICS = ("fashion-mnist-mosaic",)
DIGITS = "digits"
#: every name ``sample:`` knows (for suggestions)
ALL_SAMPLES = (*SAMPLES, *MOSAICS, DIGITS, "fashion-mnist-bags")

#: Mosaic recipe (part of the fingerprint: change any value and cached embeddings are recomputed).
MOSAIC_TILE = 28                          # a Fashion-MNIST item; the canvas is 2 x 2 tiles = 56 x 56
MOSAIC_COUNTS = {"train": 800, "test": 200}
MOSAIC_FILL = 0.75                        # chance that a quadrant holds an item (at least one always does)
MOSAIC_THRESHOLD = 32                     # item pixel >= 32 -> the item's class; 1..31 -> ignore; 0 -> background
MOSAIC_TEST_ITEMS = 0.2                   # share of each class's items reserved for test mosaics
MOSAIC_SEED = 0
MOSAIC_IGNORE = 255


def sample_path(name: str) -> Path:
    if name not in SAMPLES:
        raise UnknownNameError("bundled sample", name, ALL_SAMPLES)
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


def make_mosaics(images: np.ndarray, labels: np.ndarray, *, seed: int = MOSAIC_SEED
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Build the 2 x 2 mosaics: ``(canvases [n, 56, 56] uint8, masks [n, 56, 56] uint8, layout [n, 4], splits)``.

    Each class's items are split (seeded) into a train pool and a test pool
    (:data:`MOSAIC_TEST_ITEMS`), so no Fashion-MNIST item appears in both train and test
    mosaics. Each quadrant (row-major: top-left, top-right, bottom-left, bottom-right) holds an
    item drawn from its split's pool with probability :data:`MOSAIC_FILL`, else stays black
    (at least one quadrant is filled). ``layout[i, q]`` is the row of the item in
    ``sample:fashion-mnist`` (``-1``: empty).

    Mask: an item pixel ``>= MOSAIC_THRESHOLD`` gets the item's class + 1; a pixel ``0`` is
    background (0); the faint pixels in between (1..31: the anti-aliased rims, about 5% of
    the pixels) get the ignore index 255, neither item nor background.

    Example:
        >>> imgs = np.zeros((20, 28, 28), np.uint8); imgs[:, 10:20, 10:20] = 200; imgs[:, 9, 10:20] = 5
        >>> canv, masks, layout, splits = make_mosaics(imgs, np.arange(20) % 10, seed=1)
        >>> canv.shape, masks.shape, layout.shape, sorted(set(splits))
        ((1000, 56, 56), (1000, 56, 56), (1000, 4), ['test', 'train'])
        >>> q = int(np.flatnonzero(layout[0] >= 0)[0]); r, c = 28 * (q // 2), 28 * (q % 2)
        >>> int(masks[0, r + 15, c + 15]) == int(layout[0, q]) % 10 + 1, int(masks[0, r + 9, c + 15]), int(masks[0, r, c])
        (True, 255, 0)
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    pools: dict[str, list[int]] = {"train": [], "test": []}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(len(idx) - 1, max(1, int(round(MOSAIC_TEST_ITEMS * len(idx)))))  # both pools get items
        pools["test"] += idx[:n_test].tolist()
        pools["train"] += idx[n_test:].tolist()
    layouts, splits = [], []
    for split, n in MOSAIC_COUNTS.items():
        pool = np.sort(np.asarray(pools[split]))
        filled = rng.random((n, 4)) < MOSAIC_FILL
        empty = ~filled.any(1)
        filled[np.flatnonzero(empty), rng.integers(0, 4, int(empty.sum()))] = True
        items = pool[rng.integers(0, len(pool), (n, 4))]
        layouts.append(np.where(filled, items, -1))
        splits += [split] * n
    layout = np.concatenate(layouts)
    t = MOSAIC_TILE
    canvas = np.zeros((len(layout), 2 * t, 2 * t), np.uint8)
    masks = np.zeros_like(canvas)
    for q in range(4):
        rows = np.flatnonzero(layout[:, q] >= 0)
        item = images[layout[rows, q]]
        r0, c0 = t * (q // 2), t * (q % 2)
        canvas[rows, r0:r0 + t, c0:c0 + t] = item
        lab = (labels[layout[rows, q]] + 1).astype(np.uint8)[:, None, None]
        masks[rows, r0:r0 + t, c0:c0 + t] = np.where(item >= MOSAIC_THRESHOLD, lab,
                                                     np.where(item > 0, MOSAIC_IGNORE, 0))
    return canvas, masks, layout, splits


class MosaicSource(ArraySource):
    """``sample:fashion-mnist-mosaic``: 1,000 56 x 56 segmentation images (800 train, 200 test).

    Built deterministically at load time by :func:`make_mosaics` from the 2,000 bundled
    Fashion-MNIST images: 2 x 2 quadrants on a black canvas, each an item or empty; the
    split column keeps train and test items disjoint. Classes: ``"background"`` then the
    10 Fashion-MNIST classes (mask value = Fashion-MNIST label + 1); ``ignore_index`` 255
    marks the faint anti-aliased rim pixels (1..31). No image-level labels (``labels`` is
    ``None``).

    Resolution: masks are 56 x 56, the images' own size, and predictions are scored there.
    The demo ViT (``demo:fmnist-vit``, 28 x 28 input, patch 4) resizes each mosaic to
    28 x 28 first, so its 7 x 7 patch grid covers 8 x 8 mask pixels per patch (a quadrant
    is 3.5 patches wide); dense probes upsample their 7 x 7 logits to 56 x 56.

    Attributes:
        layout: ``[n, 4]`` rows of ``sample:fashion-mnist`` in each quadrant (``-1``: empty).

    Example:
        >>> src = MosaicSource("fashion-mnist-mosaic")
        >>> len(src), src.classes[:2], src.has_masks, src.ignore_index, src.mask(0).shape
        (1000, ['background', 'T-shirt/top'], True, 255, (56, 56))
    """

    kind = "sample"
    has_masks = True
    ignore_index = MOSAIC_IGNORE

    def __init__(self, name: str = "fashion-mnist-mosaic") -> None:
        if name not in MOSAICS:
            raise UnknownNameError("bundled sample", name, ALL_SAMPLES)
        path = sample_path("fashion-mnist")
        raw = path.read_bytes()
        with np.load(path) as z:
            images, labels = z["images"], z["labels"].astype(np.int64)
        canvas, self.masks, self.layout, splits = make_mosaics(images, labels)
        recipe = {"tile": MOSAIC_TILE, "counts": MOSAIC_COUNTS, "fill": MOSAIC_FILL, "threshold": MOSAIC_THRESHOLD,
                  "test_items": MOSAIC_TEST_ITEMS, "seed": MOSAIC_SEED, "ignore": MOSAIC_IGNORE}
        super().__init__(f"sample:{name}", canvas, [f"mosaic-{i:04d}" for i in range(len(canvas))], None,
                         ["background", *FASHION_CLASSES], {"bytes": hash_bytes(raw), "recipe": recipe},
                         split_column=splits)

    def mask(self, i: int) -> np.ndarray:
        """``[56, 56]`` int64 label map of mosaic ``i``."""
        return self.masks[i].astype(np.int64)


class DigitsSource(ArraySource):
    """``sample:digits``: scikit-learn's 1,797 8 x 8 handwritten digits (classes ``"0"`` .. ``"9"``).

    Read with :func:`sklearn.datasets.load_digits` (offline: the data ship inside the scikit-learn
    wheel). Pixel values 0..16 are mapped to uint8 by ``round(v * 255 / 16)``; the backbone's
    preprocessing resizes the 8 x 8 images (e.g. to 28 x 28 for ``demo:fmnist-vit``). The
    fingerprint hashes the converted pixels and labels, so another scikit-learn copy of the data
    with different bytes gives another cache key. No split column: splits are seeded and stratified.

    Args:
        name: ``"digits"``.
        limit: keep only the first ``limit`` images (a quick subset; part of the URI and fingerprint).

    Example:
        >>> src = DigitsSource()
        >>> len(src), src.classes[:3], src.load_image(0).size
        (1797, ['0', '1', '2'], (8, 8))
    """

    kind = "sample"

    def __init__(self, name: str = DIGITS, limit: int | None = None) -> None:
        from sklearn.datasets import load_digits

        from vitlab.data.base import with_query
        from vitlab.errors import DataError

        if name != DIGITS:
            raise UnknownNameError("bundled sample", name, ALL_SAMPLES)
        d = load_digits()
        images = np.rint(np.asarray(d.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
        labels = np.asarray(d.target, dtype=np.int64)
        if limit is not None:
            if int(limit) < 1:
                raise DataError(f"sample:digits: limit must be >= 1, got {limit}. Drop ?limit= to use all 1,797 images.")
            images, labels = images[:int(limit)], labels[:int(limit)]
        ids = [f"digits-{i:04d}" for i in range(len(images))]
        super().__init__(with_query(f"sample:{name}", limit=limit), images, ids, labels, [str(c) for c in range(10)],
                         {"bytes": hash_bytes(images.tobytes(), labels.tobytes()), "scale": "round(v * 255 / 16)"})


def open_sample(name: str, **options: Any) -> ArraySource:
    """``sample:<name>``: the bundled sample, mosaic, digits or bag sample (``fashion-mnist-bags``) of that name.

    Example:
        >>> type(open_sample("fashion-mnist-mosaic")).__name__
        'MosaicSource'
    """
    if name in MOSAICS:
        return MosaicSource(name, **options)
    if name == DIGITS:
        return DigitsSource(name, **options)
    if name == "fashion-mnist-bags":  # multiple-instance bags, see vitlab.data.bags
        return FashionBagsSource(name, **options)
    return SampleSource(name, **options)




# --------------------------------------------------------------------------- sample:fashion-mnist-bags

BAG_SAMPLES = ("fashion-mnist-bags",)
#: Recipe of ``sample:fashion-mnist-bags`` (part of the fingerprint).
BAGS_POSITIVE_CLASS = 8        # Fashion-MNIST "Bag": a bag is positive when it holds at least one
BAGS_COUNT = 200
BAGS_SIZE = (5, 50)            # inclusive
BAGS_PATIENT_BAGS = (1, 3)     # bags per patient, inclusive
BAGS_KEY_ITEMS = 1             # a positive bag holds exactly one item of the positive class (as in MNIST-bags'
                               # hardest setting): mean pooling dilutes it in up to 49 others, attention need not
BAGS_SEED = 0


def make_fashion_bags(labels: np.ndarray, *, n_bags: int = BAGS_COUNT, positive_class: int = BAGS_POSITIVE_CLASS,
                      seed: int = BAGS_SEED) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """MNIST-bags style bags: ``(items per bag, bag labels [n_bags] 0/1, patient per bag)``.

    Exactly half of the bags (rounded down) are positive. Each bag draws a size in
    :data:`BAGS_SIZE`; a positive bag holds :data:`BAGS_KEY_ITEMS` item(s) of
    ``positive_class``, the rest (and all of a negative bag) come from the other classes.
    Items are drawn without replacement within a bag; an item may appear in several bags.
    Consecutive bags are grouped into patients of 1–3 bags.

    Example:
        >>> items, y, patients = make_fashion_bags(np.arange(100) % 10, n_bags=6)
        >>> [bool(((np.arange(100) % 10)[it] == 8).any()) for it in items] == y.astype(bool).tolist()
        True
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    pos_pool, neg_pool = np.flatnonzero(labels == positive_class), np.flatnonzero(labels != positive_class)
    y = np.zeros(n_bags, np.int64)
    y[rng.permutation(n_bags)[: n_bags // 2]] = 1
    lo, hi = BAGS_SIZE
    items = []
    for yi in y:
        size = int(rng.integers(lo, hi + 1))
        k = BAGS_KEY_ITEMS if yi else 0
        chosen = np.concatenate([rng.choice(pos_pool, k, replace=False), rng.choice(neg_pool, size - k, replace=False)])
        items.append(rng.permutation(chosen))
    patients, p = [], 0
    while len(patients) < n_bags:
        patients += [f"patient-{p:03d}"] * int(rng.integers(BAGS_PATIENT_BAGS[0], BAGS_PATIENT_BAGS[1] + 1))
        p += 1
    return items, y, patients[:n_bags]


class FashionBagsSource(BagInfo, ArraySource):
    """``sample:fashion-mnist-bags``: 200 bags of 5–50 Fashion-MNIST test images (about 5,500 instances).

    A bag is positive (class ``"bag"``) when it holds at least one item of Fashion-MNIST
    class 8 (``"Bag"``), else negative (``"no-bag"``); exactly 100 of the 200 bags are
    positive. Instances are the bundled 28 x 28 images (an image can sit in several bags);
    ``instance_labels`` is 1 for a class-8 item, else 0, ``instance_classes`` its
    Fashion-MNIST class, ``items`` its row in ``sample:fashion-mnist``. Patients own 1–3
    consecutive bags. Deterministic (:func:`make_fashion_bags`, seed 0); no split column.

    Example:
        >>> src = FashionBagsSource()
        >>> len(src.bags), src.classes, int(src.bag_labels.sum()), src.groups[0], src.ids[0]
        (200, ['no-bag', 'bag'], 100, 'bag-000', 'bag-000/00')
    """

    kind = "sample"

    def __init__(self, name: str = "fashion-mnist-bags") -> None:
        from vitlab.data.sample import sample_path

        if name not in BAG_SAMPLES:
            from vitlab.errors import UnknownNameError

            raise UnknownNameError("bundled bag sample", name, BAG_SAMPLES)
        path = sample_path("fashion-mnist")
        raw = path.read_bytes()
        with np.load(path) as z:
            images, labels = z["images"], z["labels"].astype(np.int64)
        items, y, patients = make_fashion_bags(labels)
        self.bags = [f"bag-{b:03d}" for b in range(len(items))]
        self.bag_labels = y
        self.bag_patients = patients
        self.bag_split, self.bag_fold, self.bag_folds = None, None, {}
        self.items = np.concatenate(items)
        self.bag_ids = [b for b, it in zip(self.bags, items) for _ in it]
        self.instance_classes = labels[self.items]
        self.instance_labels = (self.instance_classes == BAGS_POSITIVE_CLASS).astype(np.int64)
        ids = [f"{b}/{k:02d}" for b, it in zip(self.bags, items) for k in range(len(it))]
        recipe = {"positive_class": BAGS_POSITIVE_CLASS, "count": BAGS_COUNT, "size": BAGS_SIZE,
                  "patient_bags": BAGS_PATIENT_BAGS, "key_items": BAGS_KEY_ITEMS, "seed": BAGS_SEED}
        row_labels = np.repeat(y, [len(it) for it in items])
        super().__init__(f"sample:{name}", images[self.items], ids, row_labels, ["no-bag", "bag"],
                         {"bytes": hash_bytes(raw), "recipe": recipe}, groups=list(self.bag_ids))
