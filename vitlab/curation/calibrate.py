"""``threshold="auto"``: a semantic duplicate threshold calibrated on the user's own images.

A seeded sample of the data is copied under the edits a near-duplicate usually went through
(JPEG re-encoding, a small crop, a down-and-up resize, a horizontal flip); each copy is embedded
with the same backbone through the embedding store, and its cosine to its original is a
*positive* score. Cosines of random pairs of distinct items are the *negative* scores (every pair
when there are fewer than ``n_negative``; pairs the exact or perceptual step already found are
duplicates, not distinct items, and are left out).

The rule (issue 20: a threshold that flags many random pairs is never applied):

* the threshold never lets more than ``max_fpr`` (default :data:`MAX_FPR` = 1e-3) of the random
  pairs score at or above it: ``t_fpr`` is the smallest such cosine;
* ``t_rec`` is the largest cosine at which EVERY edit reaches ``recall`` on its copies;
* ``t_rec >= t_fpr``: the copies separate from random pairs; ``t = t_rec``;
* otherwise no threshold separates them at that bound: ``t = t_fpr`` (still bounded), the edits
  whose recall at ``t`` is below ``recall`` are named, and ``separable`` is ``False``;
  :func:`vitlab.curate` then removes no semantic duplicates (exact and perceptual results stand).

The recall every edit reaches at ``t`` is reported. Both score lists are kept for the report.
With ``n`` items there are ``n (n - 1) / 2`` pairs, so up to ``fpr`` times that many false pairs
can clear ``t`` (``expected_false_pairs`` in the record).

Example:
    >>> pos, neg = np.array([0.97, 0.98, 0.99, 0.995]), np.linspace(0.0, 0.6, 2000)
    >>> pick_threshold(pos, neg, recall=0.75)["threshold"]
    0.98
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from vitlab.data.base import DataSource
from vitlab.errors import ConfigError, DataError

__all__ = ["AUGMENTATIONS", "augment", "check_edits", "AugmentedSource", "pick_threshold", "Calibration", "calibrate",
           "MIN_CALIBRATION_IMAGES", "MAX_FPR", "RECALL", "check_rates"]

AUGMENTATIONS = ("jpeg", "crop", "resize", "flip")
#: Default bound on the fraction of random pairs at or above an ``auto`` threshold.
MAX_FPR = 1e-3
#: Default recall every edit must reach at the threshold.
RECALL = 0.99
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


def check_rates(recall: float, max_fpr: float) -> None:
    """``recall`` in (0, 1] and ``max_fpr`` in (0, 1), else one :class:`ConfigError` line.

    Example:
        >>> check_rates(0.99, 0.5)
        >>> check_rates(0.99, 0.0)
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: max_fpr must be a fraction in (0, 1), e.g. 0.001; got 0.0.
    """
    if not 0.0 < recall <= 1.0:
        raise ConfigError(f"recall must be a fraction in (0, 1], e.g. 0.99; got {recall}.")
    if not 0.0 < max_fpr < 1.0:
        raise ConfigError(f"max_fpr must be a fraction in (0, 1), e.g. 0.001; got {max_fpr}.")


def pick_threshold(pos: np.ndarray, neg: np.ndarray, *, kinds: Any = None, recall: float = RECALL,
                   max_fpr: float = MAX_FPR) -> dict[str, Any]:
    """The threshold rule of this module on given positive (per edit) and negative scores.

    Args:
        pos: ``[m]`` cosines of copies to their originals; kinds: ``[m]`` their edits (``None``: one edit).
        neg: ``[p]`` cosines of random pairs.
        recall: the recall every edit must reach. max_fpr: the most random pairs allowed above the threshold.

    Returns:
        ``{"threshold", "recall", "fpr", "precision_balanced", "rule", "recall_by_edit", "separable",
        "failing_edits", "max_fpr"}``: recall is measured on all positives, ``recall_by_edit`` per edit,
        fpr on the negatives; ``precision_balanced`` is the precision if positives and negatives were
        equally common.

    Example:
        >>> neg = np.linspace(-0.5, 0.96, 5000)   # 1 in 1000 random pairs at or above ~0.9586
        >>> r = pick_threshold(np.array([0.9, 0.99, 1.0, 0.97]), neg, kinds=["flip", "jpeg", "jpeg", "flip"])
        >>> r["separable"], r["failing_edits"], r["recall_by_edit"]["jpeg"], r["fpr"] <= 1e-3
        (False, ['flip'], 1.0, True)
    """
    check_rates(recall, max_fpr)
    pos, neg = np.asarray(pos, np.float64), np.sort(np.asarray(neg, np.float64))
    kinds = np.asarray(["all"] * len(pos) if kinds is None else list(kinds), dtype=object)
    edits = list(dict.fromkeys(kinds.tolist()))
    # t_fpr: smallest t with mean(neg >= t) <= max_fpr: just above the (floor(max_fpr * p) + 1)-th largest negative
    nn = len(neg)
    allowed = int(np.floor(max_fpr * nn))
    t_fpr = float(np.nextafter(neg[nn - allowed - 1], np.inf)) if allowed < nn else -1.0
    # t_rec: largest t with mean(pos_e >= t) >= recall for every edit e: the ceil(recall * m_e)-th largest of each
    t_rec = min(float(np.sort(pos[kinds == e])[len(pos[kinds == e]) - int(np.ceil(recall * (kinds == e).sum()))])
                for e in edits)
    separable = t_rec >= t_fpr
    t = t_rec if separable else t_fpr
    by_edit = {e: float(np.mean(pos[kinds == e] >= t)) for e in edits}
    failing = [e for e in edits if by_edit[e] < recall]
    if separable:
        rule = f"recall >= {recall} on every edit's copies, false-positive rate <= {max_fpr} on random pairs"
    else:
        rule = (f"false-positive rate <= {max_fpr} on random pairs; no threshold separates the copies of "
                f"{', '.join(failing)} from random pairs at that bound (recall < {recall})")
    r, f = float(np.mean(pos >= t)), float(np.mean(neg >= t))
    return {"threshold": t, "recall": r, "fpr": f, "precision_balanced": r / (r + f) if r + f > 0 else float("nan"),
            "rule": rule, "recall_by_edit": by_edit, "separable": bool(separable), "failing_edits": failing,
            "max_fpr": float(max_fpr), "recall_target": float(recall)}


@dataclass(frozen=True)
class Calibration:
    """An ``auto`` threshold and the evidence behind it.

    Attributes:
        threshold: the chosen cosine. recall, fpr, precision_balanced, rule, recall_by_edit, separable,
            failing_edits, max_fpr, recall_target: see :func:`pick_threshold`.
        positives: ``[m]`` cosines of augmented copies to their originals; pos_kinds: their edits.
        negatives: ``[p]`` cosines of random pairs of distinct items.
        sample: the source rows that were copied. n_items: items in the data (for the expected false pairs).
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
    recall_by_edit: dict[str, float] = field(default_factory=dict)
    separable: bool = True
    failing_edits: list[str] = field(default_factory=list)
    max_fpr: float = MAX_FPR
    recall_target: float = RECALL
    n_items: int = 0

    @property
    def message(self) -> str:
        """One line saying why no semantic duplicates are removed (empty when the copies separate)."""
        if self.separable:
            return ""
        at = ", ".join(f"{e} {self.recall_by_edit[e]:.3f}" for e in self.failing_edits)
        return (f"--threshold auto: no cosine threshold separates the {', '.join(self.failing_edits)} copies from "
                f"random pairs at a false-positive rate <= {self.max_fpr:g} (recall at {self.threshold:.4f}: {at}; "
                f"target {self.recall_target:g}), so no semantic duplicates are removed; exact and perceptual "
                "results are kept. Calibrate on edits this backbone separates (--edits), or pass a fixed --threshold.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with both score lists (rounded to 5 digits)."""
        n = self.n_items
        return {"threshold": self.threshold, "recall": self.recall, "fpr": self.fpr,
                "precision_balanced": self.precision_balanced, "rule": self.rule, "recall_by_edit": self.recall_by_edit,
                "separable": self.separable, "failing_edits": list(self.failing_edits), "max_fpr": self.max_fpr,
                "recall_target": self.recall_target,
                "expected_false_pairs": float(self.fpr * n * (n - 1) / 2) if n else None,
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
              sample: int = 200, n_negative: int = 20000, recall: float = RECALL, max_fpr: float = MAX_FPR,
              seed: int = 0, edits: tuple[str, ...] = AUGMENTATIONS, embed_kwargs: dict[str, Any] | None = None,
              known_duplicates: Any = None) -> Calibration:
    """Calibrate the semantic threshold on augmented copies of ``sample`` of the source's images.

    Args:
        backbone: the backbone that embedded ``X``.
        source: the data source; ``X [n, C]`` its embeddings, ``index [n]`` their source rows.
        store: the :class:`~vitlab.store.EmbeddingStore` (the copies go through it, like every feature).
        sample: images copied (each under every edit in ``edits``).
        edits: which of :data:`AUGMENTATIONS` count as "the same image" for you (default all four).
        n_negative: random pairs of distinct items (every pair when the data has fewer).
        known_duplicates: ``(i, j)`` row pairs already known to be duplicates (exact or perceptual): not
            counted as random pairs of distinct items.
        recall, max_fpr: the targets of :func:`pick_threshold` (every edit's recall; random pairs above).
        embed_kwargs: passed to ``store.get_or_compute`` (``layers``, ``pool``, ``batch_size``...).

    Raises:
        DataError: fewer than :data:`MIN_CALIBRATION_IMAGES` images.

    Example:
        >>> import vitlab
        >>> from vitlab.store import EmbeddingStore
        >>> bb, src = vitlab.load_backbone("demo:fmnist-vit"), vitlab.load_source("sample:digits?limit=300")
        >>> store = EmbeddingStore()
        >>> emb = store.get_or_compute(bb, src, progress=False)
        >>> cal = calibrate(bb, src, emb.get(), emb.index, store, sample=50, embed_kwargs={"progress": False})
        >>> -1 <= cal.threshold <= 1, 0 <= cal.recall <= 1, 0 <= cal.fpr <= 1
        (True, True, True)
    """
    n = len(X)
    check_calibration_size(n, source.uri)
    check_rates(recall, max_fpr)
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
    a, b = _negative_pairs(n, n_negative, rng)
    if known_duplicates is not None and len(known_duplicates):
        dup = {(min(x, y), max(x, y)) for x, y in known_duplicates}
        ok = np.array([(min(x, y), max(x, y)) not in dup for x, y in zip(a.tolist(), b.tolist())], bool)
        a, b = a[ok], b[ok]
    neg = np.einsum("ij,ij->i", Xn[a], Xn[b])
    pick = pick_threshold(pos, neg, kinds=kinds, recall=recall, max_fpr=max_fpr)
    return Calibration(pick["threshold"], pick["recall"], pick["fpr"], pick["precision_balanced"], pick["rule"],
                       pos, kinds, neg, rows, pick["recall_by_edit"], pick["separable"], pick["failing_edits"],
                       pick["max_fpr"], pick["recall_target"], n)


def _negative_pairs(n: int, n_negative: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n_negative`` random pairs ``a != b`` (with replacement), or every pair once when there are fewer.

    Example:
        >>> a, b = _negative_pairs(4, 100, np.random.default_rng(0))
        >>> len(a), bool((a < b).all())
        (6, True)
    """
    if n * (n - 1) // 2 <= n_negative:
        a, b = np.triu_indices(n, 1)
        return a.astype(np.int64), b.astype(np.int64)
    a = rng.integers(0, n, size=n_negative)
    b = (a + rng.integers(1, n, size=n_negative)) % n  # b != a
    return a, b


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
