"""Folders of real images with known near-copies, for the curation tests and ``bench/bench_curate_flood.py``.

:func:`build_flood` rebuilds the flooding case of issue 20 §1 from bundled data: distinct images at
112 px (Fashion-MNIST items of the bundled sample, upscaled, and textured tiles of scikit-learn's
``china.jpg`` / ``flower.jpg``) plus near-copies of some of them (a shift of 1-2 px, brightness
+-10%, or a JPEG re-encode at quality 85).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

SIZE = 112
COPY_EDITS = ("shift", "brightness", "jpeg")


def near_copy(img: Image.Image, edit: str, rng: np.random.Generator) -> Image.Image:
    """One near-copy of ``img``: ``shift`` (1-2 px in x and y, edges filled black), ``brightness`` (x0.9 or
    x1.1) or ``jpeg`` (quality 85)."""
    img = img.convert("RGB")
    if edit == "shift":
        dx, dy = (int(rng.integers(1, 3)) * int(rng.choice([-1, 1])) for _ in range(2))
        return img.transform(img.size, Image.AFFINE, (1, 0, dx, 0, 1, dy), fillcolor=(0, 0, 0))
    if edit == "brightness":
        return ImageEnhance.Brightness(img).enhance(float(rng.choice([0.9, 1.1])))
    if edit == "jpeg":
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    raise ValueError(edit)


def _tiles(n: int) -> list[Image.Image]:
    """The ``n`` most textured non-overlapping 112-px tiles of the two scikit-learn photos (half from each)."""
    from sklearn.datasets import load_sample_image

    out = []
    for j, name in enumerate(("china.jpg", "flower.jpg")):
        a = load_sample_image(name)
        tiles = [a[y:y + SIZE, x:x + SIZE] for y in range(0, a.shape[0] - SIZE + 1, SIZE)
                 for x in range(0, a.shape[1] - SIZE + 1, SIZE)]
        tiles.sort(key=lambda t: -float(t.std()))  # textured first: no two blank skies
        out += [Image.fromarray(t) for t in tiles[:(n + 1 - j) // 2]]
    return out


def build_flood(root: Path, *, n_fmnist: int = 280, n_tiles: int = 20, n_copies: int = 20, seed: int = 0
                ) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Write ``n_fmnist + n_tiles`` distinct images and ``n_copies`` near-copies of some of them as PNGs.

    Returns:
        ``(distinct file names, [(original, copy, edit)])``.
    """
    import vitlab

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fm = vitlab.load_source("sample:fashion-mnist")
    imgs: dict[str, Image.Image] = {}
    for j, i in enumerate(np.sort(rng.choice(len(fm), n_fmnist, replace=False))):
        imgs[f"fm_{j:03d}.png"] = fm.load_image(int(i)).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
    for j, t in enumerate(_tiles(n_tiles)):
        imgs[f"tile_{j:02d}.png"] = t
    for name, im in imgs.items():
        im.save(root / name)
    names = sorted(imgs)
    copies = []
    for j, src in enumerate(rng.choice(names, n_copies, replace=False)):
        edit = COPY_EDITS[j % len(COPY_EDITS)]
        copy = f"zz_copy_{j:02d}_{edit}.png"
        near_copy(imgs[str(src)], edit, rng).save(root / copy)
        copies.append((str(src), copy, edit))
    return names, copies
