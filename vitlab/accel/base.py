"""The :class:`Accelerator` contract, the accelerator registry and the ``--accel`` string syntax.

An accelerator is a frozen, validated config. ``apply(backbone)`` returns a NEW
:class:`~vitlab.backbones.base.Backbone` built on a deep copy of the model (the
user's model is never touched) whose ``accel`` dict (name + every parameter) is
part of the embedding cache key.

String syntax (``parse_accel``)::

    none                         the unaccelerated baseline
    tome:r=8                     one accelerator with parameters
    tome:r=13,schedule=decrease  parameters continue after commas ("k=v" pieces)
    tome:r=[8,8,4,0]             lists in brackets
    none,tome:r=8,evit:keep=0.7,int8,w8a8     several accelerators (a sweep)
    tome:r=8+int8                "+" chains accelerators into one (applied left to right)

Example:
    >>> [a.name for a in parse_accel("none,tome:r=8,evit:keep=0.7,int8")]
    ['none', 'tome', 'evit', 'int8']
"""

from __future__ import annotations

import copy
import dataclasses
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch

from vitlab._registry import Registry
from vitlab._spec import parse_value, split_top
from vitlab.backbones.base import Backbone
from vitlab.errors import BackboneError, ConfigError

ACCELERATORS = Registry("accelerator", hint="Known accelerators are listed by vitlab.accel.ACCELERATORS.names().")


@dataclasses.dataclass(frozen=True)
class Accelerator(ABC):
    """A training-free accelerator: a frozen config that builds a new, faster backbone.

    Subclasses are frozen dataclasses that validate in ``__post_init__``, set
    ``name``, and implement :meth:`supports` and :meth:`_build`.
    """

    name: ClassVar[str] = "accelerator"
    needs_calibration: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able ``{"name": ..., <every parameter>}``; goes into the embedding cache key."""
        d: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @abstractmethod
    def supports(self, backbone: Backbone) -> str | None:
        """``None`` when ``backbone`` can be accelerated, else the reason it cannot."""

    @abstractmethod
    def _build(self, backbone: Backbone, calib: Any) -> tuple[Backbone, dict[str, Any]]:
        """Return the new backbone and extra JSON-able facts for its ``accel`` dict."""

    def check(self, backbone: Backbone) -> None:
        """Raise :class:`BackboneError` with the reason when ``backbone`` is unsupported."""
        reason = self.supports(backbone)
        if reason:
            raise BackboneError(f"accelerator {self.name!r} cannot be applied to {backbone.name}: {reason}")

    def apply(self, backbone: Backbone, *, calib: Any = None) -> Backbone:
        """Return a new accelerated backbone; ``backbone`` and its model are left unchanged.

        Args:
            backbone: the backbone to accelerate.
            calib: calibration images for accelerators that need them (``needs_calibration``):
                a preprocessed tensor ``[n, 3, H, W]`` or a :class:`~vitlab.data.base.DataSource`.

        Raises:
            BackboneError: the backbone's architecture is not supported (the message says why).
        """
        self.check(backbone)
        new, extra = self._build(backbone, calib)
        new.accel = chain_accel(backbone.accel, {**self.to_dict(), **extra})
        return new

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Accelerator:
        """Build from string parameters (``{"r": "8"}``), with clear errors for unknown keys."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigError(f"accelerator {cls.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                              f"its parameters are: {', '.join(known) or 'none'}.")
        return cls(**{k: parse_value(v) for k, v in params.items()})


@dataclasses.dataclass(frozen=True)
class NoAccel(Accelerator):
    """The baseline: a copy of the backbone, unchanged (``accel`` stays as it was).

    Example:
        >>> NoAccel().to_dict()
        {'name': 'none'}
    """

    name: ClassVar[str] = "none"

    def supports(self, backbone: Backbone) -> str | None:
        return None

    def _build(self, backbone: Backbone, calib: Any) -> tuple[Backbone, dict[str, Any]]:
        return derive(backbone, copy.deepcopy(backbone.model)), {}

    def apply(self, backbone: Backbone, *, calib: Any = None) -> Backbone:
        return self._build(backbone, calib)[0]


@dataclasses.dataclass(frozen=True)
class Chain(Accelerator):
    """Several accelerators applied left to right (``"tome:r=8+int8"``)."""

    name: ClassVar[str] = "chain"
    steps: tuple[Accelerator, ...] = ()

    def __post_init__(self) -> None:
        if not self.steps:
            raise ConfigError("an accelerator chain needs at least one step, e.g. 'tome:r=8+int8'.")

    @property
    def needs_calibration(self) -> bool:  # type: ignore[override]
        return any(s.needs_calibration for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "chain", "steps": [s.to_dict() for s in self.steps]}

    def supports(self, backbone: Backbone) -> str | None:
        return self.steps[0].supports(backbone)

    def _build(self, backbone: Backbone, calib: Any) -> tuple[Backbone, dict[str, Any]]:
        raise NotImplementedError  # apply() is overridden

    def apply(self, backbone: Backbone, *, calib: Any = None) -> Backbone:
        for step in self.steps:
            backbone = step.apply(backbone, calib=calib)
        return backbone


def chain_accel(previous: dict[str, Any] | None, step: dict[str, Any]) -> dict[str, Any]:
    """The ``accel`` dict of a backbone accelerated by ``step`` on top of ``previous``.

    Example:
        >>> chain_accel({"name": "tome", "r": 8}, {"name": "int8"})
        {'name': 'chain', 'steps': [{'name': 'tome', 'r': 8}, {'name': 'int8'}]}
    """
    if previous is None:
        return step
    steps = previous["steps"] if previous.get("name") == "chain" else [previous]
    return {"name": "chain", "steps": [*steps, step]}


def accel_names(accel: dict[str, Any] | None) -> list[str]:
    """Names of the accelerators already applied, in order (``[]`` for none)."""
    if accel is None:
        return []
    return [s["name"] for s in accel["steps"]] if accel.get("name") == "chain" else [accel["name"]]


def derive(backbone: Backbone, model: torch.nn.Module, **attrs: Any) -> Backbone:
    """A new backbone object of the same class with ``model`` swapped in (no re-hash of weights).

    The new backbone keeps ``backbone``'s ``weights_id`` (the source weights) unless
    ``attrs`` say otherwise; its ``accel`` is set by :meth:`Accelerator.apply`.
    """
    new = copy.copy(backbone)
    new.__dict__["weights_id"] = backbone.weights_id
    new.model = model.eval().requires_grad_(False)
    for k, v in attrs.items():
        setattr(new, k, v)
    return new


# -- string syntax ---------------------------------------------------------------------------
def _build_one(name: str, params: dict[str, str]) -> Accelerator:
    target = ACCELERATORS.get(name.strip())
    return target(params) if not isinstance(target, type) else target.from_params(params)


def parse_accel(spec: str) -> list[Accelerator]:
    """Parse an accelerator spec string into a list of accelerators (see the module doc).

    Raises:
        ConfigError: unknown accelerator (with suggestions), unknown parameter, bad value.

    Example:
        >>> parse_accel("tome:r=13,schedule=decrease")[0].schedule
        'decrease'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty accelerator spec; use e.g. 'none', 'tome:r=8', 'evit:keep=0.7', 'int8' or 'w8a8'.")
    groups: list[list[tuple[str, dict[str, str]]]] = []
    for piece in split_top(spec, ",", "accelerator spec"):
        piece = piece.strip()
        if not piece:
            raise ConfigError(f"empty item in accelerator spec {spec!r} (two commas in a row?).")
        chain = split_top(piece, "+", "accelerator spec")
        if len(chain) == 1 and ":" not in piece and "=" in piece:  # continues the previous accelerator
            if not groups:
                raise ConfigError(f"parameter {piece!r} comes before any accelerator name in {spec!r}; "
                                  "write name:key=value, e.g. tome:r=8.")
            k, _, v = piece.partition("=")
            groups[-1][-1][1][k.strip()] = v
            continue
        group = []
        for item in chain:
            name, _, rest = item.strip().partition(":")
            params: dict[str, str] = {}
            if rest:
                k, eq, v = rest.partition("=")
                if not eq:
                    raise ConfigError(f"{item!r}: expected name:key=value, e.g. tome:r=8.")
                params[k.strip()] = v
            group.append((name, params))
        groups.append(group)
    out: list[Accelerator] = []
    for group in groups:
        accs = [_build_one(n, p) for n, p in group]
        out.append(accs[0] if len(accs) == 1 else Chain(tuple(accs)))
    return out


def apply_accel(backbone: Backbone, accel: str | Accelerator | None, *, calib: Any = None) -> Backbone:
    """Apply ONE accelerator (object or spec string such as ``"tome:r=8"``) and return the new backbone.

    Example:
        >>> import vitlab
        >>> bb = vitlab.load_backbone("demo:fmnist-vit")
        >>> fast = apply_accel(bb, "tome:r=2")
        >>> fast.accel["name"], bb.accel
        ('tome', None)
    """
    if accel is None:
        accel = NoAccel()
    if isinstance(accel, str):
        accs = parse_accel(accel)
        if len(accs) != 1:
            raise ConfigError(f"apply_accel takes one accelerator, got {len(accs)} in {accel!r}; "
                              "chain them with '+' (e.g. 'tome:r=8+int8') or loop over parse_accel(...).")
        accel = accs[0]
    if not isinstance(accel, Accelerator):
        raise ConfigError(f"expected an Accelerator or a spec string, got {type(accel).__name__}.")
    return accel.apply(backbone, calib=calib)
