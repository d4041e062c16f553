"""Preprocessing that travels with a backbone's weights (as timm's data config).

The transform is built from torchvision's well-kept ops; only the small mapping
from each model source's config to one :class:`Preprocessing` is our own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vitlab.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shorter", "stretch", "clean")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
DECODERS = ("pil", "pil-draft", "tensor", "tensor-draft")
DRAFT_MARGIN = 2.0  # draft decoding keeps at least this multiple of the resize target (see BENCHMARKS.md)
#: The largest deviation from the reference (``decoder="pil"``) each faster data path is held to, in 8-bit
#: levels of the network input (``|x - x_ref| * std * 255``), mean over pixels and maximum: measured on
#: real photographs by ``bench/bench_decode.py`` and checked by ``tests/unit/test_decode.py``.
TOLERANCE = {"tensor": {"mean": 0.05, "max": 3.0}, "draft": {"mean": 0.5, "max": 8.0}}


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB PIL image becomes a normalised ``[3, H, W]`` tensor.

    Args:
        input_size: ``(H, W)`` fed to the model.
        resize: ``"shorter"`` resizes the shorter side to ``floor(size / crop_pct)``
            then centre-crops ``input_size`` (timm/ImageNet eval); ``"stretch"``
            resizes straight to ``input_size`` without cropping (dgm-eval); ``"clean"``
            resizes straight to ``input_size`` like clean-fid (Parmar et al. 2022): each
            channel as a float32 PIL image (mode ``"F"``), antialiased, clipped to
            [0, 255] and kept in float (no re-quantisation), see :class:`CleanResize`.
        crop_pct: fraction kept by the centre crop (``"shorter"`` only).
        interpolation: PIL resampling filter name.
        mean, std: per-channel normalisation.
        antialias: must stay ``True``: PIL-image resizing always antialiases (kept in the
            fingerprint so a future tensor-resize path gets a different cache key).
        decoder: the data path, opt-in faster ones measured in ``bench/bench_decode.py``:
            ``"pil"`` (default, the reference): full decode, PIL resize. ``"tensor"``: the same
            decode, then resize and crop of the uint8 image as a tensor (torchvision ``v2``,
            antialiased, rounded back to uint8 like PIL): within :data:`TOLERANCE` ``"tensor"``
            of the reference. ``"pil-draft"``: the JPEG decoder first downscales by 1/2, 1/4 or
            1/8 in the DCT domain (PIL's ``Image.draft``), to no less than :meth:`draft_size`,
            then the PIL resize; ``"tensor-draft"``: both. Draft modes change JPEGs only and stay
            within :data:`TOLERANCE` ``"draft"``. Tensor modes need ``resize`` ``shorter`` or
            ``stretch`` and ``bilinear``/``bicubic``. Part of the cache key when not ``"pil"``
            (so keys made before the option existed stay the same).

    Example:
        >>> p = Preprocessing(input_size=(224, 224), crop_pct=0.875)
        >>> p.resize_size
        256
    """

    input_size: tuple[int, int] = (224, 224)
    resize: str = "shorter"
    crop_pct: float = 1.0
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    antialias: bool = True
    decoder: str = "pil"

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(int(s) for s in self.input_size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ConfigError(f"input_size must be (H, W) with positive sizes, got {self.input_size}.")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}.")
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct}.")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}.")
        if not self.antialias:
            raise ConfigError("antialias=False is not supported: images are resized as PIL images, which torchvision "
                              "and PIL always antialias. Leave antialias=True.")
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}.")
        if self.decoder != "pil" and self.resize == "clean":
            raise ConfigError(f"decoder {self.decoder!r} does not apply to resize='clean' (clean-fid's exact float "
                              "resize, which generative metrics compare against); use decoder='pil'.")
        if self.decoder.startswith("tensor") and self.interpolation not in ("bilinear", "bicubic"):
            raise ConfigError(f"decoder {self.decoder!r} resizes tensors, which supports bilinear and bicubic "
                              f"only, not {self.interpolation!r}; use decoder='pil' or 'pil-draft'.")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean/std need 3 values and std > 0, got mean={self.mean} std={self.std}.")

    @property
    def resize_size(self) -> int:
        """Shorter-side size before the centre crop (timm's ``floor(size / crop_pct)``)."""
        return int(math.floor(min(self.input_size) / self.crop_pct))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (part of every embedding fingerprint)."""
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.decoder == "pil":  # the reference decoder: keys made before the option existed stay the same
            del d["decoder"]
        return d

    def draft_size(self, width: int, height: int) -> tuple[int, int] | None:
        """The smallest ``(width, height)`` a JPEG decoder may downscale a ``width x height`` image to
        for this preprocessing, or ``None`` (decoders without ``draft``: decode in full).

        At least :data:`DRAFT_MARGIN` times the size the resize produces (the shorter side's
        ``resize_size`` for ``shorter``, ``input_size`` otherwise), so the resize that follows still
        shrinks the image and antialiases.

        Example:
            >>> p = Preprocessing(input_size=(224, 224), crop_pct=0.875, decoder="pil-draft")
            >>> p.draft_size(2000, 1500)
            (683, 512)
            >>> Preprocessing().draft_size(2000, 1500) is None
            True
        """
        if not self.decoder.endswith("draft"):
            return None
        if self.resize == "shorter":
            scale = DRAFT_MARGIN * self.resize_size / min(width, height)
            return math.ceil(width * scale), math.ceil(height * scale)
        h, w = self.input_size
        return math.ceil(DRAFT_MARGIN * w), math.ceil(DRAFT_MARGIN * h)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        extra = set(d) - known
        if extra:
            raise ConfigError(f"unknown preprocessing keys {sorted(extra)}; allowed: {sorted(known)}.")
        return cls(**d)

    def replace(self, **changes: Any) -> Preprocessing:
        """A copy with some fields changed."""
        return Preprocessing(**{**self.to_dict(), **changes})

    def view_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The region ``(top, left, h, w)`` of an ``height x width`` image, in its own pixels, that the model
        sees after :meth:`build_transform`: the whole image for ``stretch`` and ``clean``; for
        ``shorter``, the part the centre crop keeps (torchvision's Resize and CenterCrop arithmetic).
        Dense protocols crop masks to it, so patch tokens and mask pixels cover the same region.

        Raises:
            ConfigError: the centre crop is larger than the resized image (it would pad).

        Example:
            >>> Preprocessing(input_size=(224, 224), crop_pct=0.875).view_box(512, 512)
            (32, 32, 448, 448)
            >>> Preprocessing(input_size=(28, 28)).view_box(56, 56)
            (0, 0, 56, 56)
        """
        if self.resize != "shorter":
            return 0, 0, int(height), int(width)
        short, long = (height, width) if height <= width else (width, height)
        new_short, new_long = self.resize_size, int(self.resize_size * long / short)
        rh, rw = (new_short, new_long) if height <= width else (new_long, new_short)
        ch, cw = self.input_size
        if ch > rh or cw > rw:
            raise ConfigError(f"the centre crop {ch}x{cw} is larger than the resized image {rh}x{rw}; "
                              "dense protocols need a crop inside the image.")
        top, left = int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0))
        sy, sx = height / rh, width / rw
        t, l_ = int(round(top * sy)), int(round(left * sx))
        return t, l_, int(round((top + ch) * sy)) - t, int(round((left + cw) * sx)) - l_

    def build_transform(self):
        """A callable mapping an RGB PIL image to a float tensor ``[3, H, W]``."""
        from torchvision import transforms as T

        if self.resize == "clean":
            return T.Compose([CleanResize(self.input_size, self.interpolation), T.Normalize(self.mean, self.std)])
        interp = T.InterpolationMode(self.interpolation)
        if self.decoder.startswith("tensor"):
            from torchvision.transforms import v2

            size = list(self.input_size) if self.resize == "stretch" else self.resize_size
            crop = [] if self.resize == "stretch" else [v2.CenterCrop(self.input_size)]
            return v2.Compose([v2.PILToTensor(), v2.Resize(size, interpolation=interp, antialias=True), *crop,
                               v2.ToDtype(torch_float32(), scale=True), v2.Normalize(self.mean, self.std)])
        if self.resize == "stretch":
            steps = [T.Resize(self.input_size, interpolation=interp, antialias=self.antialias)]
        else:
            steps = [T.Resize(self.resize_size, interpolation=interp, antialias=self.antialias),
                     T.CenterCrop(self.input_size)]
        return T.Compose([*steps, T.ToTensor(), T.Normalize(self.mean, self.std)])


def torch_float32():
    import torch

    return torch.float32


class CleanResize:
    """clean-fid's resize: an RGB PIL image → float tensor ``[3, H, W]`` in ``[0, 1]``.

    As ``cleanfid.resize.make_resizer("PIL", quantize_after=False, filter, (W, H))`` (and
    dgm-eval's ``pil_resize``): the 8-bit image (already quantised, as clean-fid quantises
    generator outputs to uint8 before resizing) is converted to float32, each channel is
    resized as a PIL mode ``"F"`` image (PIL filters are antialiased when downsampling),
    clipped to ``[0, 255]``, kept in float32 (no re-quantisation) and divided by 255.

    Args:
        size: output ``(H, W)``.
        interpolation: PIL filter name (clean-fid uses ``"bicubic"``).

    Example:
        >>> from PIL import Image
        >>> CleanResize((4, 6))(Image.new("RGB", (10, 8), (255, 0, 0))).shape
        torch.Size([3, 4, 6])
    """

    def __init__(self, size: tuple[int, int], interpolation: str = "bicubic") -> None:
        self.size = (int(size[0]), int(size[1]))
        self.interpolation = interpolation

    def __call__(self, img: Any) -> Any:
        import torch
        from PIL import Image

        resample = Image.Resampling[self.interpolation.upper()]
        h, w = self.size
        x = np.asarray(img.convert("RGB"), dtype=np.float32)
        chans = []
        for c in range(3):
            ch = Image.fromarray(np.ascontiguousarray(x[:, :, c]))  # 2-D float32 → mode "F"
            chans.append(np.asarray(ch.resize((w, h), resample=resample), dtype=np.float32).clip(0, 255))
        return torch.from_numpy(np.stack(chans, axis=0) / np.float32(255.0))

    def __repr__(self) -> str:
        return f"CleanResize(size={self.size}, interpolation={self.interpolation!r})"


def from_timm_config(cfg: dict[str, Any]) -> Preprocessing:
    """Map timm's ``resolve_model_data_config`` output to :class:`Preprocessing`."""
    _, h, w = cfg["input_size"]
    crop_mode = cfg.get("crop_mode", "center")
    return Preprocessing(
        input_size=(h, w),
        resize="stretch" if crop_mode == "squash" else "shorter",
        crop_pct=float(cfg.get("crop_pct", 1.0) or 1.0),
        interpolation=cfg.get("interpolation", "bicubic") or "bicubic",
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
    )
