"""The frozen-probe reference of a tune run: ``vitlab eval --protocol linear`` on the same data and seed.

Every tuned method is paired against it (``details["vs_probe"]``): a method that cannot beat the frozen
L-BFGS probe has not earned its training cost.

Example:
    >>> import tempfile, vitlab
    >>> from vitlab.tuning.plan import tune_splits
    >>> src = vitlab.load_source("sample:digits?limit=150")
    >>> te = tune_splits(src, [0], 0.2, 0.1)[0][2]
    >>> res, fit = frozen_probe(vitlab.load_backbone("demo:fmnist-vit"), src, 0, 0.2, "cls",
    ...                         [src.ids[i] for i in te], tempfile.mkdtemp(), torch.device("cpu"))
    >>> res.outputs["proba"].shape, fit["head_params"]
    ((30, 10), 970)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitlab.backbones import Backbone
from vitlab.data import DataSource
from vitlab.errors import DataError

__all__ = ["PROBE", "frozen_probe"]

#: label of the frozen-probe reference in a tune record
PROBE = "probe"


def frozen_probe(backbone: Backbone, source: DataSource, seed: int, test_fraction: float, pool: str,
                 test_ids: list[str], cache_dir: str | Path | None, dev: torch.device) -> tuple[Any, dict[str, Any]]:
    """``vitlab eval --protocol linear --seed <seed>`` on the same data: its test predictions in ``test_ids``
    order (a classification ``Result``), and the probe's chosen C and head size."""
    from vitlab.evaluation import evaluate
    from vitlab.protocols.base import Result

    with warnings.catch_warnings():  # eval's own intervals are discarded (tune scores the predictions itself)
        warnings.filterwarnings("ignore", message="bootstrap: metric undefined", category=RuntimeWarning)
        ev = evaluate(backbone, source, protocols="linear", seed=seed, test_fraction=test_fraction, pool=pool,
                      n_resamples=10, cache_dir=cache_dir, device=str(dev), progress=False)
    r = ev.results["linear"]
    pos = {u: i for i, u in enumerate(r.units)}
    if sorted(pos) != sorted(test_ids):
        raise DataError(f"seed {seed}: vitlab eval's test split differs from the tuning split "
                        f"({len(pos)} vs {len(test_ids)} items); this is a bug, please report it.")
    order = np.array([pos[u] for u in test_ids])
    groups = None if r.groups is None else np.asarray(r.groups)[order]
    res = Result("classification", list(test_ids), {"y": np.asarray(r.outputs["y"])[order],
                                                    "proba": np.asarray(r.outputs["proba"])[order]},
                 groups=groups, hparams=dict(r.hparams))
    n_cls, dim = int(res.outputs["proba"].shape[1]), int(backbone.spec.embed_dim)
    return res, {"C": r.hparams.get("C"), "head_params": n_cls * (dim + 1)}
