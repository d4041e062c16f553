"""``bags:`` manifests with a ``features`` column: one row per bag, its precomputed feature file(s)
(:func:`read_feature_file`: ``.npy``, ``.pt``, ``.h5``), no images (:class:`FeatureBagSource`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlab.data.base import DataSource, check_fingerprint_mode, file_content_key, file_stat_key
from vitlab.data.base import with_query
from vitlab.errors import DataError
from vitlab.data.bag_table import (FEATURE_SUFFIXES, BagInfo, _bag_metadata,
                                    _open_manifest, _resolve_files)

__all__ = ["FeatureBagSource", "read_feature_file"]


def read_feature_file(f: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one feature file: ``(features [n, d] float32, coords [n, 2] or None)``.

    ``.npy``: the array; ``.pt``/``.pth``: a tensor, a list of tensors (concatenated) or a dict
    with ``features`` (and ``coords``); ``.h5``/``.hdf5``: the ``features`` and ``coords``
    datasets (TRIDENT, CLAM). ``[1, n, d]`` is squeezed, a 1-D vector is one instance.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "x.npy"; np.save(f, np.ones((1, 3, 2)))
        >>> x, c = read_feature_file(f); x.shape, x.dtype, c
        ((3, 2), dtype('float32'), None)
    """
    f = Path(f)
    suffix = f.suffix.lower()
    coords = None
    try:
        if suffix == ".npy":
            x = np.load(f, allow_pickle=False)
        elif suffix in (".pt", ".pth"):
            import torch

            obj = torch.load(f, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                if "features" not in obj:
                    raise DataError(f"feature file {f} is a dict without a 'features' entry (keys: "
                                    f"{', '.join(map(str, obj)) or 'none'}); save {{'features': tensor [n, d]}} or the "
                                    "tensor itself.")
                coords, obj = obj.get("coords"), obj["features"]
            if isinstance(obj, (list, tuple)):
                obj = torch.cat([torch.as_tensor(t).reshape(-1, t.shape[-1]) for t in obj]) if obj else torch.empty(0, 0)
            x = obj.detach().float().numpy() if isinstance(obj, torch.Tensor) else np.asarray(obj)
            if coords is not None:
                coords = np.asarray(coords.numpy() if isinstance(coords, torch.Tensor) else coords)
        elif suffix in (".h5", ".hdf5"):
            import h5py

            with h5py.File(f, "r") as h:
                if "features" not in h:
                    raise DataError(f"feature file {f} has no 'features' dataset (found: {', '.join(h.keys()) or 'none'}); "
                                    "write the instance features as dataset 'features' [n, d].")
                x = h["features"][()]
                coords = h["coords"][()] if "coords" in h else None
        else:
            raise DataError(f"feature file {f}: unsupported type {suffix or '(none)'}; use one of "
                            f"{', '.join(FEATURE_SUFFIXES)}.")
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a corrupt file of any of three formats
        raise DataError(f"feature file {f}: cannot read it ({type(e).__name__}: {e}); re-export it.") from e
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise DataError(f"feature file {f} holds an array of shape {tuple(x.shape)}; save features as [n, d] "
                        "(or [1, n, d]).")
    if coords is not None:
        coords = np.asarray(coords)
        if coords.ndim == 3 and coords.shape[0] == 1:
            coords = coords[0]
        if len(coords) != len(x):
            raise DataError(f"feature file {f} has {len(x)} feature rows but {len(coords)} coords; write one coord per "
                            "instance, or drop 'coords'.")
    return x.astype(np.float32, copy=False), coords


class FeatureBagSource(BagInfo, DataSource):
    """Bags of precomputed instance features (``bags:<manifest>`` with a ``features`` column).

    One row per bag (``ids`` = ``bags``, ``labels`` = ``bag_labels``, ``groups`` = patients,
    ``split_column`` = ``bag_split``); there are no images (:meth:`load_image` raises). Feature
    files are read on demand by :meth:`load_bag_features`, which checks that every file has the
    same feature dimension. The fingerprint covers the table and the files' stats
    (``fingerprint="content"``: their bytes).

    Attributes:
        bag_files: per bag, its feature files (several rows of one bag are concatenated).
        dim: the feature dimension, once a file has been read (``None`` before).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); np.save(d / "a.npy", np.ones((2, 3)))
        >>> _ = (d / "m.csv").write_text("bag_id,label,features\\nA,1,a.npy\\nA,1,a.npy\\n")
        >>> src = FeatureBagSource(d / "m.csv"); src.load_bag_features("A").shape, src.dim
        ((4, 3), 3)
    """

    kind = "bags"

    def __init__(self, manifest: str | Path, *, fingerprint: str = "stat", table: Any = None) -> None:
        path, uri, df = _open_manifest(manifest, table, "features")
        self._fp_mode = check_fingerprint_mode(uri, fingerprint)
        if "features" not in df.columns:
            raise DataError(f"{uri}: missing column 'features' (a feature file per bag); use BagSource for a 'path' "
                            "column of instance images.")
        if "path" in df.columns:
            raise DataError(f"{uri}: has both 'path' and 'features' columns; a bag manifest lists instance images "
                            "(path) or feature files (features). Drop one of them.")
        meta = _bag_metadata(df, uri, data_col="features")
        files = _resolve_files(df, "features", path.parent.resolve(), uri)
        bad = [f for f in files if f.suffix.lower() not in FEATURE_SUFFIXES]
        if bad:
            i = files.index(bad[0])
            raise DataError(f"{uri}: line {i + 2}: feature file {bad[0]} is not one of {', '.join(FEATURE_SUFFIXES)}; "
                            "convert it (np.save, torch.save or an .h5 'features' dataset).")
        for k in ("bag_ids", "bags", "bag_labels", "bag_patients", "bag_split", "bag_fold", "bag_folds"):
            setattr(self, k, meta[k])
        self.bag_ids = list(meta["bags"])  # rows are bags
        self.files = files
        self.bag_files: list[list[Path]] = [[] for _ in meta["bags"]]
        pos = {b: i for i, b in enumerate(meta["bags"])}
        for b, f in zip(meta["bag_ids"], files):
            self.bag_files[pos[b]].append(f)
        self.path = path
        self.dim: int | None = None
        self._dim_file: Path | None = None
        self._coords: dict[int, np.ndarray | None] = {}
        super().__init__(with_query(uri, fingerprint=None if fingerprint == "stat" else fingerprint),
                         list(meta["bags"]), meta["bag_labels"], meta["classes"], list(meta["bag_patients"]),
                         meta["bag_split"])

    def load_image(self, i: int) -> Image.Image:
        raise DataError(f"{self.uri}: a feature bag source has no images (bag {self.ids[i]!r}); read its features "
                        "with load_bag_features(bag), or list instance images in a 'path' column.")

    def _read_bag(self, bag: str | int) -> tuple[int, np.ndarray, np.ndarray | None]:
        i = self.bag_index(bag)
        parts, coords = [], []
        for f in self.bag_files[i]:
            x, c = read_feature_file(f)
            if self.dim is None:
                self.dim, self._dim_file = x.shape[1], f
            elif x.shape[1] != self.dim:
                raise DataError(f"{self.uri}: feature file {f} (bag {self.bags[i]!r}) has dimension {x.shape[1]} but "
                                f"{self._dim_file} has {self.dim}; extract every bag with the same backbone.")
            if len(x) == 0:
                raise DataError(f"{self.uri}: bag {self.bags[i]!r} has no instances: feature file {f} holds 0 rows; "
                                "re-extract it or drop the bag.")
            bad = ~np.isfinite(x)
            if bad.any():
                r, c = (int(v[0]) for v in np.nonzero(bad))
                raise DataError(f"{self.uri}: feature file {f} (bag {self.bags[i]!r}) holds {int(bad.sum())} NaN or "
                                f"infinite value(s) (first at row {r}, column {c}: {x[r, c]}); re-extract it or drop "
                                "the bag.")
            parts.append(x)
            coords.append(c)
        feats = parts[0] if len(parts) == 1 else np.concatenate(parts)
        xy = None if any(c is None for c in coords) else (coords[0] if len(coords) == 1 else np.concatenate(coords))
        return i, feats, xy

    def load_bag_features(self, bag: str | int) -> np.ndarray:
        """``[n, d]`` float32 features of one bag (by id or position).

        Raises:
            DataError: a file is unreadable, lacks ``features``, is empty, or its dimension differs.
        """
        i, x, c = self._read_bag(bag)
        self._coords[i] = c
        return x

    def coords(self, bag: str | int) -> np.ndarray | None:
        """``[n, 2]`` instance coordinates of one bag when its files have them, else ``None``."""
        i = self.bag_index(bag)
        if i not in self._coords:
            self.load_bag_features(i)
        return self._coords[i]

    def describe_item(self, i: int) -> str:
        return f"bag {self.ids[i]!r} ({', '.join(map(str, self.bag_files[i]))}; manifest {self.path})"

    def _content_key(self) -> Any:
        key: dict[str, Any] = {"bag_files": [[str(f) for f in fs] for fs in self.bag_files],
                               "folds": self.bag_folds}
        if self._fp_mode == "content":
            key["files"] = file_content_key(self.files)
        else:
            key["files"] = [[str(f), *st] for f, st in zip(self.files, file_stat_key(self.files))]
        return key
