"""Bag data for multiple-instance learning: per-bag feature arrays and labels, and bag tables.

:class:`BagData` holds what a MIL head trains on: one ``[n_i, d]`` float32 array per bag, one
label per bag, the bag's patient, split and fold. :func:`bag_data` builds it from a
``bags:`` feature manifest (:class:`~vitlab.data.bag_features.FeatureBagSource`) or from an image bag
source (``bags:`` with ``path``, ``sample:fashion-mnist-bags``) and the per-row embeddings a
backbone computed for it.

:class:`BagTable` is a bag manifest in memory (one row per feature file); the importers of
:mod:`vitlab.mil.importers` return one and :meth:`BagTable.write_manifest` writes it as a
``bags:`` manifest.

Example:
    >>> from vitlab.data import load_source
    >>> src = load_source("sample:fashion-mnist-bags")
    >>> X = np.zeros((len(src), 4), np.float32)  # embeddings of every instance row
    >>> data = bag_data(src, X)
    >>> len(data), data.dim, data.features[0].shape[0] == int(data.sizes[0]), data.classes
    (200, 4, True, ['no-bag', 'bag'])
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError

__all__ = ["BagData", "bag_data", "BagTable"]


@dataclass
class BagData:
    """Bags of instance features with one label per bag.

    Attributes:
        ids: bag ids.
        features: one ``[n_i, d]`` float32 array per bag.
        labels: ``[n_bags]`` int64 class indices.
        classes: class names (index = label).
        patients: the patient of every bag.
        split: per bag train/val/test, or ``None``.
        fold: per bag fold name, or ``None``.
        instance_labels: per bag ``[n_i]`` int64 instance labels, or ``None``.
        coords: per bag ``[n_i, 2]`` coordinates (or ``None`` entries), or ``None``.

    Example:
        >>> d = BagData(["a", "b"], [np.ones((2, 3), np.float32), np.zeros((1, 3), np.float32)],
        ...             np.array([1, 0]), ["neg", "pos"], ["p", "p"])
        >>> d.sizes.tolist(), d.dim, d.subset([1]).ids
        ([2, 1], 3, ['b'])
    """

    ids: list[str]
    features: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    patients: list[str]
    split: list[str] | None = None
    fold: list[str] | None = None
    instance_labels: list[np.ndarray] | None = None
    coords: list[np.ndarray | None] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        n = len(self.ids)
        for name in ("features", "labels", "patients", "split", "fold", "instance_labels", "coords"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ConfigError(f"BagData: {name} has {len(v)} entries but there are {n} bags; pass one per bag.")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def sizes(self) -> np.ndarray:
        """``[n_bags]`` instances per bag."""
        return np.array([len(x) for x in self.features], dtype=np.int64)

    @property
    def dim(self) -> int:
        """The feature dimension ``d``."""
        return int(self.features[0].shape[1]) if self.features else 0

    def subset(self, index: Sequence[int] | np.ndarray) -> BagData:
        """The bags at ``index`` (positions or a boolean mask), metadata included."""
        idx = np.asarray(index)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)

        def pick(v: Any) -> Any:
            return None if v is None else [v[i] for i in idx]

        return BagData([self.ids[i] for i in idx], [self.features[i] for i in idx], self.labels[idx],
                       list(self.classes), [self.patients[i] for i in idx], pick(self.split), pick(self.fold),
                       pick(self.instance_labels), pick(self.coords), dict(self.meta))


def bag_data(source: Any, X: np.ndarray | None = None) -> BagData:
    """Per-bag features of a bag source.

    Args:
        source: a :class:`~vitlab.data.bag_features.FeatureBagSource` (its files are read; ``X`` must be
            ``None``), or an image bag source (:class:`~vitlab.data.bags.BagSource`,
            ``sample:fashion-mnist-bags``) with its per-row embeddings ``X``.
        X: ``[n_rows, d]`` embeddings of the source's instance rows, in row order (``emb.get()``).

    Raises:
        ConfigError: ``X`` is missing for an image source, given for a feature source, or has the
            wrong number of rows.

    Example:
        >>> bag_data(object())
        Traceback (most recent call last):
        ...
        vitlab.errors.ConfigError: bag_data needs a bag source (bags:<manifest> or sample:fashion-mnist-bags), got object.
    """
    from vitlab.data.bag_features import FeatureBagSource
    from vitlab.data.bag_table import BagInfo

    if not isinstance(source, BagInfo):
        raise ConfigError(f"bag_data needs a bag source (bags:<manifest> or sample:fashion-mnist-bags), got "
                          f"{type(source).__name__}.")
    common = dict(ids=list(source.bags), labels=source.bag_labels, classes=list(source.classes),
                  patients=list(source.bag_patients), split=source.bag_split, fold=source.bag_fold)
    if isinstance(source, FeatureBagSource):
        if X is not None:
            raise ConfigError(f"{source.uri} holds precomputed features; call bag_data(source) without X.")
        feats = [source.load_bag_features(i) for i in range(len(source.bags))]
        coords = [source.coords(i) for i in range(len(source.bags))]
        return BagData(features=feats, coords=None if all(c is None for c in coords) else coords, **common)
    if X is None:
        raise ConfigError(f"{source.uri} is an image bag source; embed it first and pass its per-row embeddings: "
                          "bag_data(source, emb.get()).")
    X = np.asarray(X)
    if X.ndim != 2 or len(X) != len(source.bag_ids):
        raise ConfigError(f"X has shape {tuple(X.shape)} but {source.uri} has {len(source.bag_ids)} instance rows; pass "
                          "the [n_rows, d] embeddings of this source (emb.get()).")
    from vitlab.store.bags import make_bags

    index = make_bags(source.bag_ids)
    if index.ids != list(source.bags):
        raise DataError(f"{source.uri}: bag order of the rows differs from source.bags; this is a bug, please report it.")
    feats = [np.array(x, dtype=np.float32) for x in index.features(X)]  # own, writable copies (X may be a read-only map)
    inst = None if source.instance_labels is None else [source.instance_labels[index.bag(i)] for i in range(len(index))]
    xy = getattr(source, "instance_coords", None)
    coords = None if xy is None else [xy[index.bag(i)] for i in range(len(index))]
    return BagData(features=feats, instance_labels=inst, coords=coords, **common)


@dataclass
class BagTable:
    """A bag manifest in memory: one row per feature file (``write_manifest`` writes a ``bags:`` manifest).

    Attributes:
        bag_id: per row, the bag (a slide).
        label: per row, the bag's label (text).
        features: per row, the feature file.
        patient_id: per row, or ``None``.
        split: per row, or ``None``.
        fold: per row, or ``None``.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); np.save(d / "s1.npy", np.ones((2, 3)))
        >>> t = BagTable(["s1"], ["1"], [d / "s1.npy"], patient_id=["p1"])
        >>> out = t.write_manifest(d / "bags.csv"); print(out.read_text().strip())
        bag_id,label,features,patient_id
        s1,1,s1.npy,p1
        >>> from vitlab.data import load_source
        >>> load_source(f"bags:{out}").load_bag_features("s1").shape
        (2, 3)
    """

    bag_id: list[str]
    label: list[str]
    features: list[Path]
    patient_id: list[str] | None = None
    split: list[str] | None = None
    fold: list[str] | None = None

    def __post_init__(self) -> None:
        self.bag_id = [str(b) for b in self.bag_id]
        self.label = [str(v) for v in self.label]
        self.features = [Path(f) for f in self.features]
        for name in ("label", "features", "patient_id", "split", "fold"):
            v = getattr(self, name)
            if v is not None and len(v) != len(self.bag_id):
                raise ConfigError(f"BagTable: {name} has {len(v)} entries but there are {len(self.bag_id)} rows.")

    def __len__(self) -> int:
        return len(self.bag_id)

    def columns(self) -> dict[str, list[str]]:
        """Column name → values, in manifest order (absent optional columns left out)."""
        cols = {"bag_id": self.bag_id, "label": self.label, "features": [str(f) for f in self.features]}
        for name in ("patient_id", "split", "fold"):
            v = getattr(self, name)
            if v is not None:
                cols[name] = [str(x) for x in v]
        return cols

    def to_frame(self) -> Any:
        """The table as a pandas ``DataFrame``."""
        import pandas as pd

        return pd.DataFrame(self.columns())

    def write_manifest(self, path: str | Path) -> Path:
        """Write a ``bags:`` manifest (CSV, or TSV/Parquet by suffix); feature paths relative to it when below it.

        The manifest is then validated by opening it (a bad table raises the source's error).
        """
        path = Path(path).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        base = path.parent.resolve()
        cols = self.columns()
        rel = []
        for f in self.features:
            a = f.expanduser().resolve()
            try:
                rel.append(a.relative_to(base).as_posix())
            except ValueError:
                rel.append(os.fspath(a))
        cols["features"] = rel
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            import pandas as pd

            pd.DataFrame(cols).to_parquet(path, index=False)
        else:
            with open(path, "w", newline="") as fh:
                w = csv.writer(fh, delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
                w.writerow(cols)
                w.writerows(zip(*cols.values()))
        from vitlab.data.bag_features import FeatureBagSource

        FeatureBagSource(path)
        return path
