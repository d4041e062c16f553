"""``demo:fmnist-vit``: a small ViT trained on Fashion-MNIST, shipped with the package.

Trained by ``scripts/train_demo_vit.py`` (recipe and measured test accuracy in
``assets/fmnist_vit.json``). Useful offline: quickstart, tests, benchmarks.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from vitlab.backbones.file import load_file
from vitlab.backbones.timm import TimmBackbone
from vitlab.errors import UnknownNameError

DEMOS = {"fmnist-vit": "fmnist_vit.safetensors"}


def demo_path(name: str) -> Path:
    """Path of a shipped demo checkpoint."""
    if name not in DEMOS:
        raise UnknownNameError("demo backbone", name, DEMOS)
    return Path(str(resources.files("vitlab.backbones") / "assets" / DEMOS[name]))


def demo_info(name: str = "fmnist-vit") -> dict[str, Any]:
    """The demo's sidecar: architecture, preprocessing, classes, recipe, measured accuracy."""
    return json.loads(demo_path(name).with_suffix(".json").read_text())


def load_demo(name: str, *, pretrained: bool = True, seed: int = 0, **kwargs: Any) -> TimmBackbone:
    """Load ``demo:<name>``; ``pretrained=False`` gives the same architecture with seeded random weights.

    Example:
        >>> bb = load_demo("fmnist-vit")
        >>> bb.spec.grid_size
        (7, 7)
    """
    return load_file(str(demo_path(name)), pretrained=pretrained, seed=seed, name=f"demo:{name}", **kwargs)
