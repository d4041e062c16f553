"""The protocol contract: a frozen, validated config, a registry entry, and ``run(train, test) -> Result``.

Protocols never call a model: they receive a :class:`Split` per side (arrays from the
embedding store, and masks or text embeddings where the task needs them) and return a
:class:`Result` that declares its **task**. The task picks the scorer
(:mod:`vitlab.scorers`) that turns the result into metrics with confidence intervals,
pairs two backbones' results for a significance test, and names the leaderboard columns.

A protocol is named by a spec string, as accelerators are (:mod:`vitlab._spec`)::

    knn                          defaults
    knn:ks=[10,20],temperature=0.1
    knn,linear:max_iter=2000,fewshot

Example:
    >>> [p.name for p in parse_protocols("knn:ks=[5],linear")]
    ['knn', 'linear']
    >>> parse_protocols("knn:ks=[5]")[0].config.ks
    (5,)
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from vitlab._registry import Registry
from vitlab._spec import config_from_params, split_specs
from vitlab.errors import ConfigError, DataError

__all__ = ["Split", "Result", "Protocol", "PROTOCOLS", "parse_protocols", "register_protocol", "TASKS"]

#: Tasks a result can declare; each has a scorer in :mod:`vitlab.scorers`.
TASKS = ("classification", "retrieval", "segmentation", "episodes")


@dataclass(frozen=True)
class Split:
    """What a protocol sees of one split.

    Attributes:
        X: ``[n, d]`` pooled features (``None`` for token-only protocols).
        y: ``[n]`` integer labels, or ``None``.
        rows: ``[n]`` row indices into the embeddings (for ids, galleries, reports).
        groups: ``[n]`` group ids (patient, slide, site) or ``None``.
        ids: ``[n]`` sample ids.
        tokens: ``[n, N, C]`` patch tokens (dense protocols), or ``None``.
        grid: patch grid ``(h, w)`` of ``tokens``.
        masks: ``[n]`` label maps ``[H, W]`` (segmentation), or ``None``.
        extra: split-level inputs of a task, never bare per-row arrays (e.g. ``text_embeddings [classes,
            templates, D]`` for zero-shot, ``classes`` and ``ignore_index`` for segmentation; the bags view's
            :class:`~vitlab.mil.data.BagData` of the split for MIL, ``extra["bags"]``).
    """

    X: np.ndarray | None
    y: np.ndarray | None
    rows: np.ndarray
    groups: np.ndarray | None = None
    ids: Sequence[str] | None = None
    tokens: np.ndarray | None = None
    grid: tuple[int, int] | None = None
    masks: Sequence[np.ndarray] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class Result:
    """What a protocol returns; the scorer of ``task`` turns it into metrics and paired tests.

    Attributes:
        task: one of :data:`TASKS`.
        units: ``[m]`` ids of the scored units (test images, queries), in order: two results are
            comparable (paired) only when their units are identical.
        outputs: what the scorer needs, per task: classification ``{"y": [m], "proba": [m, C]}``;
            retrieval ``{"per_query": {metric: [m]}}``; segmentation ``{"confusion": [m, C, C]}``.
        groups: ``[m]`` bootstrap clusters (whole groups are resampled), or ``None``.
        hparams: chosen hyper-parameters (``{"k": 20}``).
        details: anything else worth recording (sweeps, convergence, galleries).
        episodes: pre-computed summaries ``{name: {value, low, high, method}}`` (few-shot).
        companions: further results the protocol produced on other units, keyed by the suffix their
            label gets (``{"@test": Result}``: a MIL protocol's K fold models as one ensemble on held-out
            bags, reported as ``mil-<head>@test``); each is scored and recorded like a protocol's own.
    """

    task: str
    units: list[str]
    outputs: dict[str, Any] = field(default_factory=dict)
    groups: np.ndarray | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    episodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    companions: dict[str, Result] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}.")


class Protocol(ABC):
    """Base class of every evaluation protocol.

    Subclasses set ``name``, ``task``, ``Config`` (a frozen dataclass validated in
    ``__post_init__``), optionally ``view`` (``"pooled"``, ``"tokens"``, ``"embed"`` or ``"bags"``: what the
    store must serve), ``needs_labels`` and ``headline`` (the leaderboard metric, when not the task's), and
    implement :meth:`run`. Build one from keyword
    arguments (``KNN(ks=(10,))``), from a config (``KNN(KNNConfig(...))``), or from a spec string
    with :func:`parse_protocols`.
    """

    name: ClassVar[str] = "protocol"
    task: ClassVar[str] = "classification"
    Config: ClassVar[type] = object
    view: ClassVar[str] = "pooled"
    needs_labels: ClassVar[bool] = True
    needs_masks: ClassVar[bool] = False
    headline: ClassVar[str | None] = None
    #: scores its *train* split out of fold (K-fold cross-fitting): the result's units are the train items,
    #: and the test items, when any, come back as ``companions`` (MIL)
    cross_fitted: ClassVar[bool] = False
    help: ClassVar[str] = ""

    def __init__(self, config: Any = None, **params: Any) -> None:
        if config is not None and params:
            raise ConfigError(f"{self.name}: pass either a config or keyword parameters, not both.")
        if config is None:
            config = config_from_params(self.Config, params, f"protocol {self.name!r}")
        elif not isinstance(config, self.Config):
            raise ConfigError(f"{self.name}: config must be a {self.Config.__name__}, got {type(config).__name__}.")
        self.config = config

    def run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str = "cpu") -> Result:
        """Fit on ``train`` (choosing hyper-parameters on a validation part of it) and score ``test``.

        Row order does not matter: both splits are put in a canonical order (by id, when ids are
        given) before :meth:`_run`, and the result's per-unit outputs are put back in the order of
        ``test``, so shuffling the rows of either split changes nothing but the order of the units.
        """
        tr_order, te_order = _canonical(train), _canonical(test)
        res = self._run(_take(train, tr_order), _take(test, te_order), seed=seed, n_classes=n_classes,
                        device=device)
        if te_order is not None:
            res = _restore(res, te_order)
        return res

    @abstractmethod
    def _run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str) -> Result:
        """The protocol itself, on splits in canonical order (see :meth:`run`)."""

    @classmethod
    def default_config(cls) -> Any:
        """The config of ``cls()`` (what :meth:`spec` leaves out)."""
        return cls.Config()

    def to_dict(self) -> dict[str, Any]:
        """The protocol's name, task and every config value (recorded in run records)."""
        return {"name": self.name, "task": self.task, **dataclasses.asdict(self.config)}

    @property
    def label(self) -> str:
        """The key of this protocol in records and tables: its name (``knn``), or, when the same protocol
        is run twice with different configs, the name with the parameters that differ from the defaults
        (``knn:ks=[5]``)."""
        return getattr(self, "_label", None) or self.name

    def spec(self) -> str:
        """The spec string of this protocol: its name plus the parameters that differ from the defaults.

        Example:
            >>> from vitlab.protocols.classification import KNN
            >>> KNN(ks=(5, 10)).spec(), KNN().spec()
            ('knn:ks=[5,10]', 'knn')
        """
        default = dataclasses.asdict(self.default_config())
        diff = {k: v for k, v in dataclasses.asdict(self.config).items() if v != default.get(k)}
        if not diff:
            return self.name
        fmt = lambda v: "[" + ",".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)  # noqa: E731
        return self.name + ":" + ",".join(f"{k}={fmt(v)}" for k, v in diff.items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def _canonical(split: Split) -> np.ndarray | None:
    """The order that sorts a split by id (stable); ``None`` when it is already sorted or has no ids."""
    if split.ids is None:
        return None
    order = np.argsort(np.asarray([str(i) for i in split.ids]), kind="stable")
    return None if np.array_equal(order, np.arange(len(order))) else order


def _take(split: Split, order: np.ndarray | None) -> Split:
    if order is None:
        return split
    pick = lambda a: None if a is None else (np.asarray(a)[order] if isinstance(a, np.ndarray)  # noqa: E731
                                            else [a[i] for i in order])
    return dataclasses.replace(split, X=pick(split.X), y=pick(split.y), rows=np.asarray(split.rows)[order],
                               groups=pick(split.groups), ids=pick(split.ids), tokens=pick(split.tokens),
                               masks=pick(split.masks))


def _restore(res: Result, order: np.ndarray) -> Result:
    """Put per-unit outputs (arrays whose first axis is the units) back in the caller's order."""
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    m = len(order)

    def back(v: Any) -> Any:
        if isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == m:
            return v[inv]
        if isinstance(v, dict):
            return {k: back(x) for k, x in v.items()}
        return v

    return dataclasses.replace(res, units=[res.units[i] for i in inv], outputs=back(res.outputs),
                               groups=None if res.groups is None else np.asarray(res.groups)[inv])


PROTOCOLS = Registry("protocol", hint="Use a comma-separated list such as knn,linear,fewshot (vitlab ls lists them).")


def register_protocol(cls: type[Protocol]) -> type[Protocol]:
    """Class decorator: add a protocol to :data:`PROTOCOLS` under ``cls.name``."""
    PROTOCOLS.register(cls.name, cls, help=cls.help)
    return cls


def _load_builtin() -> None:
    # the built-in protocols register themselves on import
    from vitlab.protocols import classification, mil, retrieval, seg, zeroshot  # noqa: F401


def parse_protocols(spec: str | Protocol | Sequence[str | Protocol]) -> list[Protocol]:
    """Protocol specs (or instances) → validated :class:`Protocol` instances, checked before any work.

    Raises:
        UnknownNameError: unknown protocol, with close matches.
        ConfigError: unknown parameter or invalid value; the same protocol listed twice.
    """
    _load_builtin()
    items = [spec] if isinstance(spec, (str, Protocol)) else list(spec)
    out: list[Protocol] = []
    for item in items:
        if isinstance(item, Protocol):
            out.append(item)
            continue
        if not isinstance(item, str):
            raise ConfigError(f"a protocol must be a name such as 'knn' or a Protocol, got {type(item).__name__}.")
        for name, params in split_specs(item, "protocol spec"):
            out.append(PROTOCOLS.get(name)(**params))
    if not out:
        raise ConfigError("no protocol given; choose from " + ", ".join(PROTOCOLS.names()) + ".")
    specs = [p.spec() for p in out]
    dup = sorted({x for x in specs if specs.count(x) > 1})
    if dup:
        raise ConfigError(f"protocol(s) {', '.join(map(repr, dup))} listed twice; list each once.")
    names = [p.name for p in out]
    for p in out:  # the same protocol with two configs: key each by its spec
        p._label = p.spec() if names.count(p.name) > 1 else None
    return out


def check_finite(split: Split, side: str) -> None:
    """Refuse NaN / inf features with a clear error (every protocol calls this first).

    Example:
        >>> check_finite(Split(np.zeros((2, 3)), None, np.arange(2)), "train")
    """
    for name in ("X", "tokens"):
        arr = getattr(split, name)
        if arr is not None and not np.isfinite(np.asarray(arr)).all():
            bad = np.flatnonzero(~np.isfinite(np.asarray(arr)).reshape(len(arr), -1).all(1))
            who = split.ids[bad[0]] if split.ids is not None else f"row {bad[0]}"
            raise DataError(f"{side} features contain NaN or inf ({len(bad)} sample(s), first: {who}). "
                            "Re-embed them (check --precision), or drop those images.")
