"""Image decoding with clear errors: every image becomes 8-bit RGB."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm"})


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

    Raises:
        ImageDecodeError: with the file and the reason.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                return to_rgb(img)
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: file not found (was it moved or deleted?)") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{path}: cannot decode image (not an image, or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        reason = "truncated file" if "truncated" in str(e) else str(e)
        raise ImageDecodeError(f"{path}: cannot decode image ({reason})") from None
