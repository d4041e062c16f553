"""Image decoding with clear errors: every image becomes 8-bit RGB."""

from __future__ import annotations

import base64
import io
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vitlab._io import IMAGE_SUFFIXES  # noqa: F401  (defined with the file helpers: outputs.py needs them too)
from vitlab.errors import ConfigError

MAX_PIXELS_ENV = "VITLAB_MAX_IMAGE_PIXELS"
_UNLIMITED = ("0", "none", "unlimited")


def max_image_pixels() -> int | None:
    """The largest image (width x height) vitlab decodes; ``None`` = no limit.

    ``$VITLAB_MAX_IMAGE_PIXELS`` sets it (``0`` or ``none`` = unlimited); otherwise PIL's
    ``Image.MAX_IMAGE_PIXELS`` (about 89.5 million pixels), its guard against decompression bombs.
    The variable reaches DataLoader worker processes too.

    Example:
        >>> os.environ[MAX_PIXELS_ENV] = "400_000_000"; max_image_pixels()
        400000000
        >>> os.environ[MAX_PIXELS_ENV] = "none"; max_image_pixels() is None
        True
        >>> del os.environ[MAX_PIXELS_ENV]; max_image_pixels() == Image.MAX_IMAGE_PIXELS
        True
    """
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return Image.MAX_IMAGE_PIXELS
    if raw.lower() in _UNLIMITED:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise ConfigError(f"{MAX_PIXELS_ENV}={raw!r} is not a pixel count; set a whole number such as 400000000 "
                          "(width x height), or 0 / none for no limit.")
    return n or None


@contextmanager
def _pil_limit(limit: int | None):
    """PIL's own check at ``limit`` for one decode (PIL errors at 2x its limit, warns at 1x: we turn the warning
    into an error, so ``limit`` is exact). PIL's global is only touched when the limit differs."""
    old = Image.MAX_IMAGE_PIXELS
    if limit == old:
        yield
        return
    Image.MAX_IMAGE_PIXELS = limit
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _too_large(path: str | Path, limit: int | None) -> str:
    """The message for an image over the pixel limit: its file, size, the limit and the fix."""
    try:
        with _pil_limit(None), Image.open(path) as img:  # header only: cheap even for a huge image
            w, h = img.size
        size = f"{w}x{h} = {w * h:,} pixels"
        need = w * h
    except Exception:  # noqa: BLE001 - the size is a nicety; the limit message stands without it
        size, need = "too many pixels", None
    allow = f"{MAX_PIXELS_ENV}={need}" if need else f"{MAX_PIXELS_ENV}=<pixels>"
    return (f"{path}: image is {size}, over the {limit:,}-pixel limit (a guard against decompression bombs). "
            f"If the image is genuine, allow it with {allow} (0 = no limit), or downscale it")


DraftSize = Callable[[int, int], "tuple[int, int] | None"]
_DRAFT: ContextVar[DraftSize | None] = ContextVar("vitlab_jpeg_draft", default=None)


@contextmanager
def jpeg_draft(size: DraftSize | None) -> Iterator[None]:
    """Within the block, :func:`open_rgb` lets the JPEG decoder downscale (PIL's ``Image.draft``: DCT
    scaling by 1/2, 1/4 or 1/8) to no less than ``size(width, height)``; ``None`` = full decode.

    The extraction loop sets it for the ``pil-draft`` decoder (see
    :meth:`vitlab.backbones.preprocessing.Preprocessing.draft_size`), so every source that
    decodes through :func:`open_rgb` gets it. Other formats decode in full.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.jpg"; Image.new("RGB", (800, 600)).save(p)
        >>> with jpeg_draft(lambda w, h: (200, 150)):
        ...     open_rgb(p).size
        (200, 150)
    """
    token = _DRAFT.set(size)
    try:
        yield
    finally:
        _DRAFT.reset(token)


class ImageDecodeError(Exception):
    """Raised by :func:`open_rgb`; the message names the file and the cause."""


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB. 16-bit and float greyscale are rescaled, not clipped.

    Example:
        >>> to_rgb(Image.new("L", (4, 4))).mode
        'RGB'
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            a = a / 65535.0 * 255.0
        else:  # 32-bit int / float: min-max per image
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))  # composite on white, like most viewers
        return Image.alpha_composite(bg, img).convert("RGB")
    return img.convert("RGB")


def open_rgb(path: str | Path) -> Image.Image:
    """Decode an image file fully (so truncation is caught here) and return it as RGB.

    Images over :func:`max_image_pixels` are refused before decoding (``$VITLAB_MAX_IMAGE_PIXELS``
    raises or lifts the limit).

    Raises:
        ImageDecodeError: with the file and the reason (and for an oversized image, its size and the fix).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.png"; Image.new("L", (40, 30)).save(p)
        >>> open_rgb(p).size
        (40, 30)
        >>> os.environ[MAX_PIXELS_ENV] = "1000"
        >>> open_rgb(p)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        vitlab.data.images.ImageDecodeError: .../a.png: image is 40x30 = 1,200 pixels, over the 1,000-pixel limit ...
        >>> del os.environ[MAX_PIXELS_ENV]
    """
    limit = max_image_pixels()
    try:
        with warnings.catch_warnings(), _pil_limit(limit):
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                draft = _DRAFT.get()
                if draft is not None and img.format == "JPEG" and (size := draft(*img.size)) is not None:
                    img.draft(img.mode, size)
                img.load()
                return to_rgb(img)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ImageDecodeError(_too_large(path, limit)) from None
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageDecodeError(f"{path}: broken symbolic link (to {os.readlink(path)}, which does not "
                                   "exist)") from None
        raise ImageDecodeError(f"{path}: file not found (was it moved or deleted?)") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{path}: cannot decode image (not an image, or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated file" if "truncated" in str(e) else str(e)
        raise ImageDecodeError(f"{path}: cannot decode image ({reason})") from None


def png_data_uri(png: bytes) -> str:
    """Wrap PNG bytes in a ``data:`` URI.

    Example:
        >>> png_data_uri(b"abc")
        'data:image/png;base64,YWJj'
    """
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thumbnail_uri(img: Image.Image, size: int = 96) -> str:
    """A PIL image as a PNG thumbnail ``data:`` URI, longest side ``size`` pixels.

    Small images (e.g. 28x28) are enlarged with nearest-neighbour sampling so pixels stay crisp;
    larger ones are reduced with Lanczos.

    Example:
        >>> thumbnail_uri(Image.new("RGB", (28, 28)), 84).startswith("data:image/png")
        True
    """
    im = img.convert("RGB") if img.mode not in ("RGB", "L") else img
    w, h = im.size
    scale = size / max(w, h, 1)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = im.resize(new, Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return png_data_uri(buf.getvalue())
