"""Shared by the explorer tests: a small csv: manifest of real Fashion-MNIST images with hostile ids."""

from __future__ import annotations

import csv
from pathlib import Path

from tests.conftest import write_images

#: An id that must be shown as text, never run.
SCRIPT_ID = "<script>alert(1)</script>"
#: An id that needs CSV quoting.
QUOTE_ID = 'a,"b"'


def hostile_manifest(root: Path, n_per_class: int = 12, labelled: bool = True) -> Path:
    """``root/m.csv``: ``3 * n_per_class`` images (bag, coat, shoe) with ids ``img-000``..., two of them hostile."""
    imgs = write_images(root / "imgs", n_per_class=n_per_class)
    files = sorted(imgs.rglob("*.png"))
    path = root / "m.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "id"] if labelled else ["path", "id"])
        for i, f in enumerate(files):
            sid = SCRIPT_ID if i == 4 else QUOTE_ID if i == 5 else f"img-{i:03d}"
            w.writerow([str(f), f.parent.name, sid] if labelled else [str(f), sid])
    return path
