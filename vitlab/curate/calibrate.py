"""``threshold="auto"``: a semantic duplicate threshold calibrated on the user's own images.

A seeded sample of the data is copied under the edits a near-duplicate usually went through
(JPEG re-encoding, a small crop, a down-and-up resize, a horizontal flip); each copy is embedded
with the same backbone through the embedding store, and its cosine to its original is a
*positive* score. Cosines of random pairs of distinct items are the *negative* scores. The
threshold is the largest ``t`` that keeps recall on the positives >= ``recall``; if more than
``max_fpr`` of the random pairs then score >= ``t``, ``t`` is raised to the ``1 - max_fpr``
quantile of the negatives instead (precision first) and the record says so. Both score lists
are kept for the report.

Example:
    >>> pos, neg = np.array([0.97, 0.98, 0.99, 0.995]), np.array([0.1, 0.5, 0.6])
    >>> pick_threshold(pos, neg, recall=0.75, max_fpr=0.01)["threshold"]
    0.98
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vitlab.data.base import DataSource
from vitlab.errors import ConfigError, DataError

__all__ = ["AUGMENTATIONS", "augment", "check_edits", "AugmentedSource", "pick_threshold", "Calibration", "calibrate",
           "MIN_CALIBRATION_IMAGES"]

AUGMENTATIONS = ("jpeg", "crop", "resize", "flip")
#: Fewer images than this cannot calibrate a threshold.
MIN_CALIBRATION_IMAGES = 20


def augment(img: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One near-duplicate edit of ``img`` (a new image; ``img`` is not changed).

    ``jpeg``: re-encode at quality 60-90; ``crop``: keep 90-97% of each side at a random offset;
    ``resize``: down to 50-80% and back up (bilinear); ``flip``: mirror left-right.

    Example:
        >>> augment(Image.new("RGB", (40, 20)), "crop", np.random.default_rng(0)).size[0] < 40
        True
    """
    img = img.convert("RGB")
    w, h = img.size
    if kind == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(60, 91)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "crop":
        f = rng.uniform(0.90, 0.97)
        cw, ch = max(1, round(w * f)), max(1, round(h * f))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return img.crop((x0, y0, x0 + cw, y0 + ch))
    if kind == "resize":
        f = rng.uniform(0.5, 0.8)
        small = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BILINEAR)
        return small.resize((w, h), Image.BILINEAR)
    if kind == "flip":
        return img.transpose(Image.FLIP_LEFT_RIGHT)
    raise DataError(f"unknown augmentation {kind!r}; choose from {', '.join(AUGMENTATIONS)}.")


class AugmentedSource(DataSource):
    """In-memory images (augmented copies) as a data source, so they are embedded through the store.

    The fingerprint hashes every image's pixels, so a different sample is a different cache entry.
    """

    kind = "augmented"

    def __init__(self, images: list[Image.Image], ids: list[str], origin: str) -> None:
        h = hashlib.blake2b(digest_size=16)
        for im in images:
            h.update(f"{im.size}".encode())
            h.update(im.tobytes())
        self._images, self._key = images, h.hexdigest()
        super().__init__(f"augmented:{origin}#{self._key[:12]}", ids, None, [])

    def load_image(self, i: int) -> Image.Image:
        return self._images[i]

    def _content_key(self) -> Any:
        return self._key


def pick_threshold(pos: np.ndarray, neg: np.ndarray, *, recall: float = 0.99, max_fpr: float | None = None
                   ) -> dict[str, Any]:
    """The threshold rule of this module on given positive and negative scores.

    Returns:
        ``{"threshold", "recall", "fpr", "precision_balanced", "rule"}``: recall is measured on the
        positives, fpr on the negatives; ``precision_balanced`` is the precision if positives and
        negatives were equally common.

    Example:
        >>> pick_threshold(np.array([0.9, 0.95, 1.0]), np.array([0.0, 0.92]), recall=0.6)["fpr"]
        0.0
    """
    pos, neg = np.sort(np.asarray(pos, np.float64)), np.sort(np.asarray(neg, np.float64))
    # largest t with mean(pos >= t) >= recall: the ceil(recall * m)-th largest positive
    m = len(pos)
    t_rec = float(pos[m - int(np.ceil(recall * m))])
    fpr_at = float(np.mean(neg >= t_rec))
    rule = f"recall >= {recall} on augmented copies"
    t = t_rec
    if max_fpr is not None and fpr_at > max_fpr:
        # smallest t with mean(neg >= t) <= max_fpr: just above the floor(max_fpr * n)+1-th largest negative
        nn = len(neg)
        allowed = int(np.floor(max_fpr * nn))
        t = float(np.nextafter(neg[nn - allowed - 1], np.inf))
        rule = f"false-positive rate <= {max_fpr} on random pairs (recall target {recall} not reachable)"
    r, f = float(np.mean(pos >= t)), float(np.mean(neg >= t))
    return {"threshold": t, "recall": r, "fpr": f,
            "precision_balanced": r / (r + f) if r + f > 0 else float("nan"), "rule": rule}


@dataclass(frozen=True)
class Calibration:
    """An ``auto`` threshold and the evidence behind it.

    Attributes:
        threshold: the chosen cosine. recall, fpr, precision_balanced, rule: see :func:`pick_threshold`.
        positives: ``[m]`` cosines of augmented copies to their originals; pos_kinds: their edits.
        negatives: ``[p]`` cosines of random pairs of distinct items.
        sample: the source rows that were copied.
    """

    threshold: float
    recall: float
    fpr: float
    precision_balanced: float
    rule: str
    positives: np.ndarray
    pos_kinds: list[str]
    negatives: np.ndarray
    sample: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with both score lists (rounded to 5 digits)."""
        per_kind = {k: float(np.mean(self.positives[np.asarray(self.pos_kinds) == k] >= self.threshold))
                    for k in dict.fromkeys(self.pos_kinds)}
        return {"threshold": self.threshold, "recall": self.recall, "fpr": self.fpr,
                "precision_balanced": self.precision_balanced, "rule": self.rule, "recall_by_edit": per_kind,
                "n_positive": len(self.positives), "n_negative": len(self.negatives),
                "positives": np.round(self.positives, 5).tolist(), "pos_kinds": list(self.pos_kinds),
                "negatives": np.round(self.negatives, 5).tolist()}


def check_edits(edits: Any) -> tuple[str, ...]:
    """Validate a list of edits (names of :data:`AUGMENTATIONS`, or one comma-separated string).

    Example:
        >>> check_edits("jpeg,flip")
        ('jpeg', 'flip')
    """
    items = tuple(e.strip() for e in edits.split(",")) if isinstance(edits, str) else tuple(edits)
    bad = [e for e in items if e not in AUGMENTATIONS]
    if bad or not items:
        raise ConfigError(f"edits must be some of {', '.join(AUGMENTATIONS)} (comma-separated), got {edits!r}.")
    return items


def check_calibration_size(n: int, uri: str) -> None:
    """Refuse data too small to calibrate (one clear line)."""
    if n < MIN_CALIBRATION_IMAGES:
        raise DataError(f"{uri} has {n} image(s); --threshold auto needs at least {MIN_CALIBRATION_IMAGES} to "
                        "calibrate (augmented copies of a sample against random pairs). Pass a number instead, "
                        "e.g. --threshold 0.95.")


def calibrate(backbone: Any, source: DataSource, X: np.ndarray, index: np.ndarray, store: Any, *,
              sample: int = 200, n_negative: int = 20000, recall: float = 0.99, max_fpr: float | None = None,
              seed: int = 0, edits: tuple[str, ...] = AUGMENTATIONS, embed_kwargs: dict[str, Any] | None = None
              ) -> Calibration:
    """Calibrate the semantic threshold on augmented copies of ``sample`` of the source's images.

    Args:
        backbone: the backbone that embedded ``X``.
        source: the data source; ``X [n, C]`` its embeddings, ``index [n]`` their source rows.
        store: the :class:`~vitlab.store.EmbeddingStore` (the copies go through it, like every feature).
        sample: images copied (each under every edit in ``edits``).
        edits: which of :data:`AUGMENTATIONS` count as "the same image" for you (default all four).
        n_negative: random pairs of distinct items.
        recall, max_fpr: the targets of :func:`pick_threshold`.
        embed_kwargs: passed to ``store.get_or_compute`` (``layers``, ``pool``, ``batch_size``...).

    Raises:
        DataError: fewer than :data:`MIN_CALIBRATION_IMAGES` images.

    Example:
        >>> cal = calibrate(bb, src, emb.get(), emb.index, store)  # doctest: +SKIP
        >>> cal.threshold, cal.recall, cal.fpr  # doctest: +SKIP
        (0.93, 0.95, 0.0004)
    """
    n = len(X)
    check_calibration_size(n, source.uri)
    edits = check_edits(edits)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    images, ids, kinds, origin = [], [], [], []
    for r in rows:
        img = source.load_image(int(index[r]))
        for kind in edits:
            images.append(augment(img, kind, rng))
            ids.append(f"{source.ids[int(index[r])]}#{kind}")
            kinds.append(kind)
            origin.append(r)
    aug = AugmentedSource(images, ids, source.uri)
    kw = dict(embed_kwargs or {})
    emb = store.get_or_compute(backbone, aug, **kw)
    A = _unit(np.asarray(emb.get(), np.float64))
    Xn = _unit(np.asarray(X, np.float64))
    pos = np.einsum("ij,ij->i", A, Xn[np.asarray(origin)[np.asarray(emb.index)]])
    kinds = [kinds[i] for i in np.asarray(emb.index)]
    a = rng.integers(0, n, size=n_negative)
    b = (a + rng.integers(1, n, size=n_negative)) % n  # b != a
    neg = np.einsum("ij,ij->i", Xn[a], Xn[b])
    pick = pick_threshold(pos, neg, recall=recall, max_fpr=max_fpr)
    return Calibration(pick["threshold"], pick["recall"], pick["fpr"], pick["precision_balanced"], pick["rule"],
                       pos, kinds, neg, rows)


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
