"""Variants of a sweep: ``--accel`` labels, early-exit specs, and applying accelerators with calibration.

A sweep spec is the ``--accel`` syntax of :func:`vitlab.accel.parse_accel`, e.g.
``"none,tome:r=8,evit:keep=0.7,int8"``; each variant keeps the text the user wrote as its
label. :func:`vitlab.perf.tradeoff` also accepts ``early_exit`` / ``exit:threshold=0.9``
(confidence-based early exit with linear heads per layer), which is not a backbone.

Example:
    >>> split_variants("none,tome:r=13,schedule=decrease,int8")
    ['none', 'tome:r=13,schedule=decrease', 'int8']
    >>> parse_exit("exit:threshold=0.8")
    ExitSpec(threshold=0.8, C=1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vitlab._spec import parse_value, split_top
from vitlab.accel.base import ACCELERATORS, Accelerator, NoAccel, parse_accel
from vitlab.backbones.base import Backbone
from vitlab.errors import ConfigError, UnknownNameError

EXIT_NAMES = ("early_exit", "exit")
BASELINE = "none"


def split_variants(spec: str) -> list[str]:
    """Split a sweep spec into one label per variant (``k=v`` pieces continue the previous one).

    Raises:
        ConfigError: empty spec or empty item, or a duplicate variant.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty --accel; use e.g. 'none,tome:r=8,evit:keep=0.7,int8'.")
    labels: list[str] = []
    for piece in split_top(spec, ","):
        piece = piece.strip()
        if not piece:
            raise ConfigError(f"empty item in --accel {spec!r} (two commas in a row?).")
        if ":" not in piece and "=" in piece and "+" not in piece and labels:
            labels[-1] = f"{labels[-1]},{piece}"
        else:
            labels.append(piece)
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"variant(s) {', '.join(map(repr, dup))} listed twice in --accel; list each once.")
    return labels


def is_exit(label: str) -> bool:
    """Whether ``label`` names early exit (``early_exit`` or ``exit:...``)."""
    return label.partition(":")[0].strip() in EXIT_NAMES


@dataclass(frozen=True)
class ExitSpec:
    """Early exit: exit at the first layer whose head's max probability >= ``threshold``.

    Args:
        threshold: the operating point reported in the trade-off table (a full sweep is kept too).
        C: inverse L2 strength of the per-layer logistic heads.
    """

    threshold: float = 0.9
    C: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.threshold, (int, float)) or not 0 <= self.threshold <= 1:
            raise ConfigError(f"exit: threshold must be a number in [0, 1], got {self.threshold!r}.")
        if not isinstance(self.C, (int, float)) or self.C <= 0:
            raise ConfigError(f"exit: C must be > 0, got {self.C!r}.")


def parse_exit(label: str) -> ExitSpec:
    """``"early_exit"`` / ``"exit:threshold=0.8,C=0.5"`` → :class:`ExitSpec`."""
    name, _, rest = label.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in split_top(rest, ","))) if rest else []:
        k, eq, v = item.partition("=")
        if not eq:
            raise ConfigError(f"{label!r}: expected {name}:key=value, e.g. exit:threshold=0.9.")
        params[k.strip()] = parse_value(v)
    unknown = sorted(set(params) - {"threshold", "C"})
    if unknown:
        raise ConfigError(f"{name} has no parameter {', '.join(map(repr, unknown))}; its parameters are: threshold, C.")
    return ExitSpec(**params)


def parse_variant(label: str, *, allow_exit: bool = False) -> Accelerator | ExitSpec:
    """One label → an accelerator (or an :class:`ExitSpec` when ``allow_exit``).

    Raises:
        UnknownNameError: unknown accelerator name, with close matches (early-exit names included).
        ConfigError: bad parameters, or early exit where only accelerators are allowed.
    """
    if is_exit(label):
        if not allow_exit:
            raise ConfigError(f"{label!r} is early exit, which `bench` cannot time on its own (it needs labelled "
                              "data to train the exit heads); use `vitlab tradeoff` for it.")
        return parse_exit(label)
    if "+" in label and any(is_exit(p) for p in split_top(label, "+")):
        raise ConfigError(f"{label!r}: early exit cannot be chained with '+'; list it as its own variant.")
    try:
        (acc,) = parse_accel(label)
    except UnknownNameError as e:
        known = ACCELERATORS.names() + (list(EXIT_NAMES) if allow_exit else [])
        raise UnknownNameError("accelerator", e.name, known,
                               "Run `vitlab ls` for the accelerators and their parameters.") from None
    return acc


def parse_variants(spec: str, *, allow_exit: bool = False, baseline: bool = True) -> dict[str, Accelerator | ExitSpec]:
    """Label → accelerator (or exit spec), with ``none`` first (added when ``baseline`` and missing).

    Example:
        >>> list(parse_variants("tome:r=2,int8"))
        ['none', 'tome:r=2', 'int8']
    """
    out = {label: parse_variant(label, allow_exit=allow_exit) for label in split_variants(spec)}
    base = [k for k, v in out.items() if isinstance(v, NoAccel)]
    if baseline and not base:
        out = {BASELINE: NoAccel(), **out}
    elif base and base[0] != next(iter(out)):  # baseline first, under its own label
        out = {base[0]: out.pop(base[0]), **out}
    return out


def calibration_rows(split: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` seeded row indices drawn from the non-test rows of ``split`` (sorted).

    Example:
        >>> calibration_rows(np.array(["train", "test", "train", "val"]), 2).tolist()
        [2, 3]
    """
    pool = np.flatnonzero(np.asarray(split) != "test")
    if not len(pool):
        raise ConfigError("no training rows to calibrate on; the split has only test samples.")
    return np.sort(np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False))


def load_images(source: Any, backbone: Backbone, rows: np.ndarray) -> torch.Tensor:
    """Preprocessed images ``[n, 3, H, W]`` of ``source`` rows, with the backbone's own transform."""
    tf = backbone.spec.preprocessing.build_transform()
    return torch.stack([tf(source.load_image(int(i))) for i in rows]).float()


def needs_calibration(acc: Accelerator) -> bool:
    """Whether ``acc`` (or a step of a chain) needs calibration images."""
    return bool(getattr(acc, "needs_calibration", False))


def apply_variant(backbone: Backbone, acc: Accelerator, calib: torch.Tensor | None, label: str) -> Backbone:
    """Apply ``acc`` to a copy of ``backbone`` (PTQ variants get ``calib``).

    Raises:
        ConfigError: a calibrated accelerator without calibration images.
    """
    if needs_calibration(acc) and calib is None:
        raise ConfigError(f"{label!r} needs calibration images: pass calib=<DataSource or tensor [n, 3, H, W]> "
                          "(CLI: --calib-data sample:fashion-mnist, or any labelled or unlabelled source).")
    return acc.apply(backbone, calib=calib if needs_calibration(acc) else None)


__all__ = ["split_variants", "is_exit", "ExitSpec", "parse_exit", "parse_variant", "parse_variants",
           "calibration_rows", "load_images", "apply_variant", "needs_calibration", "BASELINE", "EXIT_NAMES"]
