"""PCA maps of patch features with a fixed, documented recipe (DINOv2's figures, made reproducible).

Recipe (:class:`PatchPCA`):

1. Fit a 1-component PCA (scikit-learn) on the patch tokens ``[n·N, C]`` of all images.
2. Sign-canonical components: each component is flipped so its largest-magnitude loading is
   positive (as scikit-learn's ``svd_flip``), so refits on the same data give the same colours.
3. Foreground: Otsu's threshold on the first-component scores of all patches (instead of a magic
   0.35); the side of the threshold that covers less of the image border is the foreground.
4. A 3-component PCA fitted on the foreground patches only (sign-canonical), its scores scaled to
   [0, 1] with the 1st/99th percentiles of the fitted scores → RGB; background patches are black.
5. Everything fitted (means, components, threshold, side, percentiles, and the backbone
   ``weights_id`` and layer it belongs to) is saved to ``.npz`` and reused across images
   (:meth:`PatchPCA.save` / :meth:`PatchPCA.load`; a different backbone is refused).

Otsu's threshold is written out (:func:`otsu_threshold`, a few lines) because scikit-image is not a
vitlab dependency; it matches ``skimage.filters.threshold_otsu`` (256-bin histogram, bin centres).

Example:
    >>> feats = torch.randn(4, 12, 8)  # [n, N, C] patch tokens of a 3x4 grid
    >>> pca = PatchPCA().fit(feats, (3, 4))
    >>> pca.transform(feats, (3, 4))["rgb"].shape
    (4, 3, 4, 3)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitlab.errors import ConfigError, DataError

__all__ = ["otsu_threshold", "sign_canonical", "PatchPCA"]


def otsu_threshold(values: np.ndarray, nbins: int = 256) -> float:
    """Otsu's threshold (maximum between-class variance) of ``values``, as ``skimage.filters.threshold_otsu``.

    Example:
        >>> v = np.r_[np.zeros(50), np.ones(50)]
        >>> 0.0 < otsu_threshold(v) < 1.0
        True
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise DataError("Otsu's threshold needs finite values; got an empty or non-finite array.")
    if v.min() == v.max():
        return float(v.min())
    hist, edges = np.histogram(v, bins=nbins)
    centres = (edges[:-1] + edges[1:]) / 2
    w1 = np.cumsum(hist)
    w2 = np.cumsum(hist[::-1])[::-1]
    m1 = np.cumsum(hist * centres) / w1
    m2 = (np.cumsum((hist * centres)[::-1]) / w2[::-1])[::-1]
    var = w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2
    return float(centres[:-1][np.argmax(var)])


def sign_canonical(components: np.ndarray) -> np.ndarray:
    """Flip each row of ``components [k, C]`` so its largest-magnitude entry is positive.

    Example:
        >>> sign_canonical(np.array([[0.1, -0.9], [0.5, 0.2]])).tolist()
        [[-0.1, 0.9], [0.5, 0.2]]
    """
    c = np.asarray(components, dtype=np.float64)
    signs = np.sign(c[np.arange(c.shape[0]), np.abs(c).argmax(1)])
    return c * np.where(signs == 0, 1.0, signs)[:, None]


def _border(grid: tuple[int, int]) -> np.ndarray:
    b = np.zeros(grid, dtype=bool)
    b[0, :] = b[-1, :] = b[:, 0] = b[:, -1] = True
    return b.ravel()


@dataclass
class PatchPCA:
    """The fitted PCA-map recipe (see the module docstring). Learned state ends in ``_``.

    Args:
        foreground: separate foreground by Otsu on the first component (else every patch is foreground).
        backbone_id, layer: what the features came from (checked on reuse).
    """

    foreground: bool = True
    backbone_id: str | None = None
    layer: int | None = None
    mean1_: np.ndarray | None = None
    comp1_: np.ndarray | None = None
    threshold_: float | None = None
    fg_above_: bool = True
    mean3_: np.ndarray | None = None
    comp3_: np.ndarray | None = None
    lo_: np.ndarray | None = None
    hi_: np.ndarray | None = None
    info_: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def _flat(feats: torch.Tensor | np.ndarray) -> np.ndarray:
        f = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats, np.float64)
        if f.ndim != 3:
            raise ConfigError(f"PCA maps need patch tokens [n, N, C], got shape {f.shape}.")
        return f

    def fit(self, feats: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> PatchPCA:
        """Fit on patch tokens ``[n, N, C]`` with ``N = h·w`` of ``grid``."""
        from sklearn.decomposition import PCA

        f = self._flat(feats)
        n, N, C = f.shape
        if N != grid[0] * grid[1]:
            raise ConfigError(f"{N} patch tokens do not fill a {grid[0]}x{grid[1]} grid.")
        X = f.reshape(-1, C)
        p1 = PCA(n_components=1, svd_solver="full").fit(X)
        self.mean1_, self.comp1_ = p1.mean_, sign_canonical(p1.components_)
        s1 = (X - self.mean1_) @ self.comp1_[0]
        if self.foreground and n * N >= 4:
            self.threshold_ = otsu_threshold(s1)
            above = (s1 > self.threshold_).reshape(n, N)
            border = _border(grid)
            share_above = above[:, border].mean() if border.any() else 0.5
            self.fg_above_ = bool(share_above <= 0.5)
            fg = above.ravel() if self.fg_above_ else ~above.ravel()
            if fg.sum() < 3:  # degenerate split: keep everything
                fg = np.ones_like(fg)
        else:
            self.threshold_, self.fg_above_ = None, True
            fg = np.ones(X.shape[0], dtype=bool)
        k = int(min(3, C, fg.sum()))
        p3 = PCA(n_components=k, svd_solver="full").fit(X[fg])
        self.mean3_, self.comp3_ = p3.mean_, sign_canonical(p3.components_)
        S = (X[fg] - self.mean3_) @ self.comp3_.T
        self.lo_, self.hi_ = np.percentile(S, 1, axis=0), np.percentile(S, 99, axis=0)
        self.info_ = {"n_images": n, "grid": list(grid), "foreground_share": float(fg.mean()),
                      "explained_variance_ratio": p3.explained_variance_ratio_.tolist(), "components": k}
        return self

    def transform(self, feats: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> dict[str, np.ndarray]:
        """``{"rgb": [n, h, w, 3] in [0, 1], "foreground": [n, h, w] bool, "first": [n, h, w]}`` for new tokens."""
        if self.comp3_ is None:
            raise ConfigError("PatchPCA is not fitted; call .fit(feats, grid) or PatchPCA.load(path) first.")
        f = self._flat(feats)
        n, N, C = f.shape
        if C != self.comp3_.shape[1]:
            raise DataError(f"these patch tokens have {C} channels but the PCA was fitted on {self.comp3_.shape[1]}; "
                            "use features of the backbone and layer it was fitted on.")
        X = f.reshape(-1, C)
        s1 = (X - self.mean1_) @ self.comp1_[0]
        fg = np.ones(X.shape[0], bool) if self.threshold_ is None else \
            ((s1 > self.threshold_) if self.fg_above_ else (s1 <= self.threshold_))
        S = (X - self.mean3_) @ self.comp3_.T
        rgb = np.clip((S - self.lo_) / np.where(self.hi_ > self.lo_, self.hi_ - self.lo_, 1.0), 0, 1)
        rgb = np.concatenate([rgb, np.zeros((rgb.shape[0], 3 - rgb.shape[1]))], 1) if rgb.shape[1] < 3 else rgb
        rgb = rgb * fg[:, None]
        return {"rgb": rgb.reshape(n, *grid, 3), "foreground": fg.reshape(n, *grid), "first": s1.reshape(n, *grid)}

    def save(self, path: str | Path) -> Path:
        """Write the fitted state to ``path`` (``.npz`` is added when missing), atomically."""
        from vitlab._io import atomic_path

        p = Path(path)
        p = p if p.suffix == ".npz" else p.with_name(p.name + ".npz")
        with atomic_path(p) as tmp, open(tmp, "wb") as f:
            self._savez(f)
        return p

    def _savez(self, f: Any) -> None:
        np.savez(f, mean1=self.mean1_, comp1=self.comp1_, mean3=self.mean3_, comp3=self.comp3_, lo=self.lo_,
                 hi=self.hi_, threshold=np.nan if self.threshold_ is None else self.threshold_,
                 fg_above=self.fg_above_, foreground=self.foreground, backbone_id=str(self.backbone_id),
                 layer=-1 if self.layer is None else self.layer)

    @classmethod
    def load(cls, path: str | Path, *, backbone_id: str | None = None, layer: int | None = None) -> PatchPCA:
        """Read a saved PCA (:meth:`save`); with ``backbone_id`` / ``layer``, refuse one fitted on other
        weights or another layer.

        Raises:
            DataError: one line naming the file: not an ``.npz``, not a saved PCA (a key missing, an
                object array, a shape that does not fit), or fitted for another backbone or layer.

        Example:
            >>> import tempfile
            >>> p = PatchPCA(backbone_id="abc", layer=5).fit(torch.randn(2, 4, 6), (2, 2)).save(Path(tempfile.mkdtemp()) / "p.npz")
            >>> PatchPCA.load(p, backbone_id="abc", layer=5).comp3_.shape
            (3, 6)
            >>> PatchPCA.load(p, backbone_id="xyz")  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            vitlab.errors.DataError: .../p.npz: this PCA was fitted on weights abc, not xyz; ...
        """
        z = _read_pca_npz(path)
        if backbone_id is not None and z["backbone_id"] != backbone_id:
            raise DataError(f"{path}: this PCA was fitted on weights {z['backbone_id']}, not {backbone_id}; "
                            "delete it or fit a new one for this backbone.")
        if layer is not None and z["layer"] != layer:
            raise DataError(f"{path}: this PCA was fitted on layer {z['layer']}, not {layer}; pass the same --layer, "
                            "or another --pca path to fit one for this layer.")
        thr = z["threshold"]
        return cls(foreground=z["foreground"], backbone_id=z["backbone_id"], layer=z["layer"], mean1_=z["mean1"],
                   comp1_=z["comp1"], threshold_=None if np.isnan(thr) else thr, fg_above_=z["fg_above"],
                   mean3_=z["mean3"], comp3_=z["comp3"], lo_=z["lo"], hi_=z["hi"])


_PCA_ARRAYS = ("mean1", "comp1", "mean3", "comp3", "lo", "hi")
_PCA_SCALARS = ("threshold", "fg_above", "foreground", "backbone_id", "layer")


def _read_pca_npz(path: str | Path) -> dict[str, Any]:
    """The arrays of a saved PCA, checked (keys, numeric dtypes, shapes); one :class:`DataError` line otherwise."""
    fix = "Pass a PCA saved by vitlab inspect --maps pca (or a new path, where one is fitted and saved)."
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in (*_PCA_ARRAYS, *_PCA_SCALARS) if k not in f.files]
            if missing:
                raise DataError(f"{path}: not a saved PCA (no {', '.join(missing)} in it; it holds "
                                f"{', '.join(f.files[:8]) or 'nothing'}). {fix}")
            raw = {k: f[k] for k in (*_PCA_ARRAYS, *_PCA_SCALARS)}
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as e:  # not a zip / npz, or an object (pickled) array
        why = "it holds object arrays, which are never unpickled" if "allow_pickle" in str(e) else \
            f"not a readable .npz: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        raise DataError(f"{path}: not a saved PCA ({why}). {fix}") from None
    for k in _PCA_ARRAYS + ("threshold", "layer", "fg_above", "foreground"):
        a = raw[k]
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
            raise DataError(f"{path}: not a saved PCA ({k!r} has dtype {a.dtype}, not numbers). {fix}")
    if raw["backbone_id"].dtype.kind != "U" or raw["backbone_id"].ndim != 0:
        raise DataError(f"{path}: not a saved PCA ('backbone_id' is not a string). {fix}")
    C = raw["mean1"].shape[-1] if raw["mean1"].ndim == 1 else -1
    k = raw["comp3"].shape[0] if raw["comp3"].ndim == 2 else -1
    ok = (C > 0 and raw["comp1"].shape == (1, C) and raw["mean3"].shape == (C,) and 1 <= k <= 3
          and raw["comp3"].shape == (k, C) and raw["lo"].shape == raw["hi"].shape == (k,)
          and all(raw[s].ndim == 0 for s in ("threshold", "layer", "fg_above", "foreground"))
          and all(np.isfinite(raw[a]).all() for a in _PCA_ARRAYS))
    if not ok:
        shapes = ", ".join(f"{a} {tuple(raw[a].shape)}" for a in _PCA_ARRAYS)
        raise DataError(f"{path}: not a saved PCA (its arrays do not fit together or are not finite: {shapes}). {fix}")
    out: dict[str, Any] = {a: np.asarray(raw[a], np.float64) for a in _PCA_ARRAYS}
    out.update(threshold=float(raw["threshold"]), layer=int(raw["layer"]), fg_above=bool(raw["fg_above"]),
               foreground=bool(raw["foreground"]), backbone_id=str(raw["backbone_id"]))
    return out



def cached_fit_path(backbone_id: str, layer: int, source: Any, rows: Any) -> Path | None:
    """Where the PCA fitted on ``rows`` of ``source`` at ``layer`` of the weights ``backbone_id`` is kept:
    ``<cache>/pca/<key>.npz`` (the ``pca`` cache namespace, :mod:`vitlab._cache`), the key covering
    everything the fit saw. ``None`` when the cache cannot be written (the PCA is then fitted each run).
    A cached file that does not load is removed (it is vitlab's own entry) and fitted again.
    """
    import hashlib
    import json

    from vitlab._cache import entry_path

    ident = json.dumps([backbone_id, int(layer), source.fingerprint, [source.ids[int(i)] for i in rows]])
    path = entry_path("pca", hashlib.blake2b(ident.encode(), digest_size=16).hexdigest() + ".npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if path.exists():
        try:
            PatchPCA.load(path, backbone_id=backbone_id)
        except (DataError, KeyError, ValueError, OSError):
            path.unlink(missing_ok=True)
    return path


def describe_fit(path: Path) -> dict[str, Any]:
    """What ``vitlab cache ls`` shows of a ``pca`` entry (raises for a file that is not a saved PCA)."""
    with np.load(path, allow_pickle=False) as z:
        return {"weights_id": str(z["backbone_id"])[:12], "layer": int(z["layer"]),
                "foreground": bool(z["foreground"])}
