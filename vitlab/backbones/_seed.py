"""Seeded construction of randomly initialised models, without touching global RNG state."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def seeded(build: Callable[[], T], seed: int) -> T:
    """Call ``build()`` under ``torch.manual_seed(seed)``, restoring the caller's RNG state after.

    Example:
        >>> a = seeded(lambda: torch.randn(2), 0); b = seeded(lambda: torch.randn(2), 0)
        >>> bool((a == b).all())
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()
