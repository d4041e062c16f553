"""Dense probes: semantic segmentation on frozen patch tokens (``seg-linear``, ``seg-linear-ms``, ``seg-knn``).

- ``seg-linear``: a 1 x 1 linear probe on the patch tokens of one layer (DINOv2's linear
  segmentation evaluation: logits upsampled bilinearly, cross-entropy per pixel), C chosen by mIoU on a
  validation split of training *images*;
- ``seg-linear-ms``: the same on the last four layers concatenated (DINOv2's "+ms" features);
- ``seg-knn``: training-free label transfer from a memory bank of training patches
  (Hummingbird, Balažević et al. 2023).

``seg-linear`` trains on sampled pixels (``loss="pixel"``, default) or on one majority label per
patch (``loss="patch"``, the earlier recipe); ``seg-knn``'s memory bank holds patch labels, the
majority label of each patch's pixels. Predictions are per-patch scores upsampled bilinearly to
each mask's own resolution (:mod:`vitlab.protocols.dense`). Metrics are
computed at that resolution, restricted to the region of the image the model sees (the whole
image unless the preprocessing centre-crops), and the resolution is recorded in every result.

Example:
    >>> import numpy as np
    >>> from vitlab.protocols.base import Split
    >>> rng = np.random.default_rng(0); lab = rng.integers(0, 2, (12, 4))   # 12 images, 2x2 patches
    >>> tok = np.eye(2)[lab] + 0.05 * rng.normal(size=(12, 4, 2))
    >>> masks = [np.kron(l.reshape(2, 2), np.ones((2, 2), int)) for l in lab]
    >>> s = Split(None, None, np.arange(12), tokens=tok, grid=(2, 2), masks=masks, extra={"ignore_index": 255})
    >>> res = SegKNN(k=3).run(s, s, seed=0, n_classes=2)
    >>> res.task, res.outputs["confusion"].shape
    ('segmentation', (12, 2, 2))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vitlab.errors import ConfigError, DataError
from vitlab.metrics.segmentation import per_image_confusion
from vitlab.protocols.base import Protocol, Result, Split, check_finite, register_protocol

__all__ = ["SegLinear", "SegLinearConfig", "SegLinearMS", "SegLinearMSConfig", "SegKNN", "SegKNNConfig"]

N_EXAMPLES = 6


def _check_layers(layers: tuple[int, ...], who: str) -> None:
    if not layers or len(set(layers)) != len(layers):
        raise ConfigError(f"{who}: layers must be distinct block indices, e.g. layers=[-1], got {layers}.")


LOSSES = ("pixel", "patch")


@dataclass(frozen=True)
class SegLinearConfig:
    """``layers`` whose patch tokens are concatenated; ``Cs`` the grid of C (chosen on validation images);
    ``val_metric`` what C is chosen by
    (``miou``, the reported metric; ``accuracy``: pixel / patch accuracy, the earlier rule, which the
    background class dominates); ``loss``: ``pixel`` (cross-entropy per pixel of the bilinearly upsampled logits, DINOv2's; on at most
    ``max_train_pixels`` labelled pixels, a seeded uniform draw) or ``patch`` (one sample per patch with its
    majority label; at most ``max_train_patches``); ``none``: no cap."""

    layers: tuple[int, ...] = (-1,)
    Cs: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
    loss: str = "pixel"
    max_train_pixels: int | None = 50_000
    max_train_patches: int | None = 200_000
    max_iter: int = 1000
    val_fraction: float = 0.2
    val_metric: str = "miou"

    def __post_init__(self) -> None:
        _check_layers(self.layers, "seg-linear")
        if self.val_metric not in ("miou", "accuracy"):
            raise ConfigError(f"seg-linear: val_metric={self.val_metric!r}; choose miou (the reported metric) or "
                              "accuracy.")
        if not self.Cs or min(self.Cs) <= 0:
            raise ConfigError(f"seg-linear: Cs must be positive, got {self.Cs}.")
        if self.loss not in LOSSES:
            raise ConfigError(f"seg-linear: loss={self.loss!r}; choose pixel (per-pixel cross-entropy, DINOv2) or "
                              "patch (majority label per patch).")
        for name in ("max_train_pixels", "max_train_patches"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"seg-linear: {name} must be >= 1 or none, got {v}.")
        if self.max_iter < 1 or not 0 < self.val_fraction < 1:
            raise ConfigError("seg-linear: max_iter must be >= 1 and val_fraction in (0, 1).")


@dataclass(frozen=True)
class SegLinearMSConfig(SegLinearConfig):
    """As ``seg-linear``, on the last four layers concatenated (DINOv2's "+ms")."""

    layers: tuple[int, ...] = (-4, -3, -2, -1)


@dataclass(frozen=True)
class SegKNNConfig:
    """``layers`` of the memory bank's tokens; ``k`` neighbours and softmax ``temperature`` of the vote
    (30 and 0.02, as open-hummingbird-eval)."""

    layers: tuple[int, ...] = (-1,)
    k: int = 30
    temperature: float = 0.02

    def __post_init__(self) -> None:
        _check_layers(self.layers, "seg-knn")
        if self.k < 1 or not self.temperature > 0:
            raise ConfigError(f"seg-knn: k must be >= 1 and temperature > 0, got k={self.k}, "
                              f"temperature={self.temperature}.")


class _Dense(Protocol):
    """Shared plumbing of the dense protocols: inputs, patch labels, confusion matrices, examples."""

    task = "segmentation"
    view = "tokens"
    needs_labels = False
    needs_masks = True

    def _inputs(self, train: Split, test: Split, n_classes: int, *, patch_labels: bool = True) -> tuple[Any, ...]:
        from vitlab.protocols import dense

        check_finite(train, "train")
        check_finite(test, "test")
        for side, s in (("train", train), ("test", test)):
            if s.tokens is None or s.masks is None or s.grid is None:
                raise ConfigError(f"{self.name} needs patch tokens and masks for the {side} split; run it through "
                                  "vitlab.evaluate on segmentation data (seg:, csv: with a mask column, "
                                  "sample:fashion-mnist-mosaic).")
        ignore = train.extra.get("ignore_index", 255)
        labels = dense.patch_labels(list(train.masks), train.grid, n_classes, ignore) if patch_labels else None
        sizes = [tuple(m.shape) for m in test.masks]
        return ignore, labels, sizes

    def _result(self, test: Split, pred: list[np.ndarray] | np.ndarray, n_classes: int, ignore: int | None,
                hparams: dict[str, Any], details: dict[str, Any]) -> Result:
        cms = per_image_confusion(list(test.masks), list(pred), n_classes, ignore)
        ids = [str(i) for i in test.ids] if test.ids is not None else [str(r) for r in test.rows]
        sizes = sorted({tuple(int(v) for v in m.shape) for m in test.masks})
        pick = np.linspace(0, len(ids) - 1, min(N_EXAMPLES, len(ids))).astype(int)
        details = {**details, "grid": list(test.grid), "ignore_index": ignore,
                   "mask_resolution": "each mask's own size, over the region the model sees",
                   "mask_sizes": [list(s) for s in sizes[:5]],
                   "examples": [{"id": ids[i], "mask": np.asarray(test.masks[i]).tolist(),
                                 "pred": np.asarray(pred[i]).tolist()} for i in pick]}
        return Result("segmentation", ids, {"confusion": cms, "classes": test.extra.get("classes")}, test.groups,
                      hparams, details)


@register_protocol
class SegLinear(_Dense):
    """1 x 1 linear probe on patch tokens, C chosen on validation images, bilinear upsampling to the masks."""

    name = "seg-linear"
    Config = SegLinearConfig
    help = "linear 1x1 probe on patch tokens (DINOv2 linear segmentation)"

    def _fit_probe(self, train: Split, *, seed: int, n_classes: int, device: str = "cpu") -> Any:
        """The fitted :class:`~vitlab.protocols.dense.LinearSegProbe` of this config on ``train`` (C chosen on
        validation images), on a split in canonical order (as ``_run`` gets it); ``probe.pixel_samples`` /
        ``patch_samples`` give its training set."""
        from vitlab.protocols.dense import LinearSegProbe, patch_labels
        from vitlab.protocols.linear import ConvergenceWarning

        import warnings

        cfg = self.config
        ignore = train.extra.get("ignore_index", 255)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe = LinearSegProbe(n_classes, ignore_index=ignore, Cs=list(cfg.Cs), seed=seed,
                                   max_train_patches=cfg.max_train_patches, max_train_pixels=cfg.max_train_pixels,
                                   max_iter=cfg.max_iter, val_fraction=cfg.val_fraction, device=device,
                                   val_metric=cfg.val_metric)
            if cfg.loss == "pixel":
                probe.fit_pixels(train.tokens, list(train.masks), train.grid)
            else:
                probe.fit(train.tokens, patch_labels(list(train.masks), train.grid, n_classes, ignore))
        return probe

    def _run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str = "cpu") -> Result:
        from vitlab.protocols.linear import convergence_summary

        cfg = self.config
        ignore, _, sizes = self._inputs(train, test, n_classes, patch_labels=False)
        probe = self._fit_probe(train, seed=seed, n_classes=n_classes, device=device)
        conv = {**convergence_summary(probe.probe_.fit_info_, f"{self.name} probe"), "max_iter": cfg.max_iter}
        pred = probe.predict(test.tokens, test.grid, sizes)
        n_train = {"n_train_pixels": int(probe.n_train_pixels_)} if cfg.loss == "pixel" else \
            {"n_train_patches": int(probe.n_train_patches_)}
        return self._result(test, pred, n_classes, ignore,
                            {"C": probe.probe_.C_, "layers": list(cfg.layers), "loss": cfg.loss, "val_metric": cfg.val_metric},
                            {f"val_{cfg.loss}_{cfg.val_metric}_by_C": {f"{c:.3g}": float(v) for c, v in
                                                               zip(probe.probe_.Cs_, probe.probe_.val_scores_)},
                             **n_train, "convergence": conv})


@register_protocol
class SegLinearMS(SegLinear):
    """``seg-linear`` on the last four layers' patch tokens concatenated (DINOv2's "+ms")."""

    name = "seg-linear-ms"
    Config = SegLinearMSConfig
    help = "linear 1x1 probe on the last 4 layers concatenated (DINOv2 +ms)"


@register_protocol
class SegKNN(_Dense):
    """Training-free kNN label transfer from a memory bank of training patches (Hummingbird)."""

    name = "seg-knn"
    Config = SegKNNConfig
    help = "training-free kNN label transfer of patch labels (Hummingbird)"

    def _run(self, train: Split, test: Split, *, seed: int, n_classes: int, device: str = "cpu") -> Result:
        from vitlab.protocols.dense_knn import knn_label_transfer

        ignore, labels, sizes = self._inputs(train, test, n_classes)
        cfg = self.config
        n_bank = int((labels != ignore).sum()) if ignore is not None else labels.size
        if n_bank == 0:
            raise DataError("seg-knn: no training patch has a label (every patch is ignore_index); check the masks.")
        k = min(cfg.k, n_bank)
        pred = knn_label_transfer(train.tokens, labels, test.tokens, n_classes, grid=test.grid, out_size=sizes,
                                  k=k, temperature=cfg.temperature, ignore_index=ignore, device=device)
        return self._result(test, pred, n_classes, ignore,
                            {"k": k, "temperature": cfg.temperature, "layers": list(cfg.layers)},
                            {"memory_bank_patches": n_bank})
