"""Draw the bundled ``sample:fashion-mnist``: 200 images per class from the Fashion-MNIST test split.

Example:
    python scripts/make_sample.py
"""

from pathlib import Path

import numpy as np

from vitlab.data.idx_format import read_idx

ROOT = Path(__file__).resolve().parents[1]
SRC = Path("/usr/share/datasets/fashion-mnist")
OUT = ROOT / "vitlab" / "data" / "assets" / "fashion_mnist_sample.npz"

x = read_idx(SRC / "t10k-images-idx3-ubyte.gz")
y = read_idx(SRC / "t10k-labels-idx1-ubyte.gz")
rng = np.random.default_rng(0)
idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), 200, replace=False) for c in range(10)]))
OUT.parent.mkdir(parents=True, exist_ok=True)
np.savez_compressed(OUT, images=x[idx], labels=y[idx].astype(np.uint8),
                    ids=np.array([f"t10k-{i:05d}" for i in idx]))
print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB, {len(idx)} images)")
