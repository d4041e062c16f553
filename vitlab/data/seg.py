"""Segmentation data: ``seg:<dir>`` image + mask folders, and the mask helpers ``csv:`` manifests share.

A mask is a single-channel integer label map of its image's size: each pixel holds a
class index (``0..C-1``, the line number in ``classes.txt`` counted from 0) or the ignore
index (default 255, left out of training and scoring). PNG only: a lossy JPEG mask would
blur its label values.

Layout of ``seg:<dir>``::

    <dir>/images/<stem>.<ext>     any image format vitlab decodes
    <dir>/masks/<stem>.png        mode L, P (palette indices), I;16 or I (and 1 = 0/1)
    <dir>/classes.txt             optional: one class name per line (or classes.json: a list of
                                  names, or {"0": "background", ...})

Subfolders of ``images/`` are mirrored in ``masks/`` (``images/a/x.jpg`` pairs with
``masks/a/x.png``). When every image sits under a first-level folder named after a split
(``train``, ``val``, ``test`` or a synonym such as ``training``/``validation``) those folders
give the split column.

Without a classes file the classes are ``"0" .. str(max value)``, found by reading every mask
once at construction (slower; write a classes.txt to skip it).

Example:
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "images").mkdir(); (d / "masks").mkdir()
    >>> Image.new("RGB", (8, 6)).save(d / "images" / "a.jpg")
    >>> Image.new("L", (8, 6), 1).save(d / "masks" / "a.png")
    >>> _ = (d / "classes.txt").write_text("background\\nroad\\n")
    >>> src = SegFolderSource(d)
    >>> src.classes, src.has_masks, src.mask(0).shape, int(src.mask(0)[0, 0])
    (['background', 'road'], True, (6, 8), 1)
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vitlab.data.base import DataSource, check_fingerprint_mode, file_content_key, file_stat_key, with_query
from vitlab.data.folder import images_under
from vitlab.data.images import IMAGE_SUFFIXES, open_rgb
from vitlab.data.splits import SPLIT_SYNONYMS
from vitlab.errors import DataError

__all__ = ["SegFolderSource", "load_mask", "read_classes_file", "resolve_classes", "parse_ignore_index",
           "DEFAULT_IGNORE_INDEX", "MASK_MODES"]

#: Label of pixels left out of training and scoring (the PASCAL VOC / ADE20K convention).
DEFAULT_IGNORE_INDEX = 255
#: PIL modes accepted for a mask: single-channel integer images.
MASK_MODES = ("L", "P", "1", "I", "I;16", "I;16L", "I;16B")


def read_classes_file(path: str | Path) -> list[str]:
    """Class names from ``classes.txt`` (one per line; index = label value) or ``classes.json``.

    JSON may be a list of names or an object mapping label values to names
    (``{"0": "background", "1": "road"}``: the keys must be 0..C-1).

    Raises:
        DataError: missing file, empty list, duplicate names or gaps in the JSON keys.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "classes.json"
        >>> _ = p.write_text('{"1": "road", "0": "background"}')
        >>> read_classes_file(p)
        ['background', 'road']
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such classes file. Write one class name per line (index = label value), "
                        "or pass the right path.")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}). Write a list of class names "
                            'such as ["background", "road"].') from None
        if isinstance(raw, dict):
            try:
                items = sorted((int(k), str(v)) for k, v in raw.items())
            except ValueError:
                raise DataError(f"{path}: keys must be label values 0..C-1 such as \"0\", got "
                                f"{sorted(raw)[:3]}.") from None
            if [k for k, _ in items] != list(range(len(items))):
                raise DataError(f"{path}: label values {[k for k, _ in items]} are not 0..{len(items) - 1}; "
                                "give every value from 0 up a name.")
            names = [v for _, v in items]
        elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
            names = list(raw)
        else:
            raise DataError(f"{path}: expected a list of class names or an object {{\"0\": name, ...}}, "
                            f"got {type(raw).__name__}.")
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
        if "" in names:
            raise DataError(f"{path}: line {names.index('') + 1} is blank; every line up to the last names the "
                            "class of that label value (write e.g. 'unused' for a gap).")
    if not names:
        raise DataError(f"{path}: lists no classes. Write one class name per line (index = label value).")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: class name {dup[0]!r} appears more than once; give each label value its own name.")
    return names


def parse_ignore_index(value: Any, where: str) -> int:
    """The ignore index as an int (from ``?ignore_index=255`` or a keyword).

    Example:
        >>> parse_ignore_index("0", "seg:x")
        0
        >>> parse_ignore_index("none", "seg:x")
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: seg:x: ignore_index must be an integer such as 255, got 'none'.
    """
    try:
        out = int(value)
        if isinstance(value, float) and out != value:
            raise ValueError
    except (TypeError, ValueError):
        raise DataError(f"{where}: ignore_index must be an integer such as 255, got {value!r}.") from None
    return out


def _check_ignore_vs_classes(where: str, ignore_index: int, classes: list[str]) -> None:
    if 0 <= ignore_index < len(classes):
        raise DataError(f"{where}: ignore_index {ignore_index} is also the label of class "
                        f"{classes[ignore_index]!r} (classes 0..{len(classes) - 1}). Choose an ignore_index "
                        f"outside 0..{len(classes) - 1}, e.g. ?ignore_index=255.")


def _raw_mask(path: Path) -> np.ndarray:
    """Decode a mask file into an integer array, or raise a DataError naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode not in MASK_MODES:
                bands = len(img.getbands())
                what = f"has {bands} channels ({mode})" if bands > 1 else f"is mode {mode} (not integer labels)"
                raise DataError(f"{path}: mask {what}; a mask must be single-channel. Save it as an 8- or 16-bit "
                                "greyscale (mode L / I;16) or palette PNG whose pixel values are class indices.")
            return np.asarray(img).astype(np.int64)
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found (was it moved or deleted?).") from None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        raise DataError(f"{path}: cannot decode mask ({e}). Re-export it as a PNG.") from None


def _image_size(path: Path) -> tuple[int, int] | None:
    """``(W, H)`` from the image header (no decode); ``None`` when unreadable (``load_image`` reports it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return img.size
    except Exception:  # noqa: BLE001
        return None


def load_mask(path: str | Path, n_classes: int, ignore_index: int | None, *,
              image: str | Path | None = None, image_size: tuple[int, int] | None = None,
              classes_from: str = "the classes") -> np.ndarray:
    """Read one mask as an ``[H, W]`` int64 label map and check it.

    Args:
        path: the mask file (PNG).
        n_classes: number of classes; valid values are ``0..n_classes-1`` and ``ignore_index``.
        ignore_index: label of unlabelled pixels (``None``: none).
        image: its image file; its header gives the size the mask must have.
        image_size: ``(W, H)`` the mask must have (instead of ``image``).
        classes_from: where the classes come from, for the message (e.g. ``"classes.txt"``).

    Raises:
        DataError: not single-channel, size differs from the image, or a value that is neither a
            class index nor the ignore index (the file and the value are named).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.png"; Image.new("L", (3, 2), 7).save(p)
        >>> load_mask(p, 2, 255)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        vitlab.errors.DataError: .../m.png: mask value 7 is neither a class index (0..1, 2 classes from the classes) nor the ignore index 255. ...
    """
    path = Path(path)
    m = _raw_mask(path)
    if image is not None and image_size is None:
        image_size = _image_size(Path(image))
    if image_size is not None and (m.shape[1], m.shape[0]) != tuple(image_size):
        where = f"its image {image}" if image is not None else "its image"
        raise DataError(f"{path}: mask is {m.shape[1]}x{m.shape[0]} px but {where} is "
                        f"{image_size[0]}x{image_size[1]} px. Masks must have their image's size: re-export the "
                        "mask, or resize it with nearest-neighbour interpolation.")
    values = np.unique(m)
    bad = (values < 0) | (values >= n_classes)
    if ignore_index is not None:
        bad &= values != ignore_index
    bad = values[bad]
    if bad.size:
        v = int(bad[0])
        ign = f"the ignore index {ignore_index}" if ignore_index is not None else "an ignore index (none is set)"
        raise DataError(f"{path}: mask value {v} is neither a class index (0..{n_classes - 1}, {n_classes} classes "
                        f"from {classes_from}) nor {ign}. Add the class to the classes file, fix the mask, or set "
                        f"?ignore_index={v}.")
    return m


def resolve_classes(classes: str | Path | Sequence[str] | None, base: Path, default_dir: Path | None,
                    mask_files: list[Path], ignore_index: int, where: str) -> tuple[list[str], str]:
    """Class names for a mask source and where they came from.

    ``classes`` is a list of names, or a classes file (relative to ``base``); with ``None``,
    ``classes.txt`` / ``classes.json`` in ``default_dir`` are looked for; with neither, every mask
    is read once and the classes are ``"0" .. str(largest value)`` (ignore index excluded).
    """
    if classes is not None and not isinstance(classes, (str, Path)):
        names = [str(c) for c in classes]
        if not names:
            raise DataError(f"{where}: classes= is empty; pass the class names (index = label value).")
        return names, "classes="
    if classes is not None:
        p = Path(classes).expanduser()
        p = p if p.is_absolute() else base / p
        return read_classes_file(p), p.name
    if default_dir is not None:
        found = [default_dir / n for n in ("classes.txt", "classes.json") if (default_dir / n).is_file()]
        if len(found) == 2:
            raise DataError(f"{where}: both classes.txt and classes.json are in {default_dir}; keep one.")
        if found:
            return read_classes_file(found[0]), found[0].name
    top = -1
    for f in mask_files:
        vals = np.unique(_raw_mask(f))
        vals = vals[vals != ignore_index]
        if vals.size and vals.min() < 0:
            raise DataError(f"{f}: mask value {int(vals.min())} is negative; class indices start at 0.")
        if vals.size:
            top = max(top, int(vals.max()))
    if top < 0:
        raise DataError(f"{where}: every mask pixel is the ignore index {ignore_index}; nothing to learn. "
                        "Check the masks and ?ignore_index=.")
    return [str(i) for i in range(top + 1)], "the mask values (no classes file)"


def _first(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


class SegFolderSource(DataSource):
    """``seg:<dir>``: images in ``<dir>/images``, masks of the same stem in ``<dir>/masks`` (see the module doc).

    Options (keywords or ``?key=value``): ``ignore_index`` (default 255), ``classes`` (a classes
    file, relative to ``<dir>``, instead of ``<dir>/classes.txt``), ``fingerprint`` (``stat``, the
    default: size, mtime, ctime and inode of every image AND mask; ``content``: their bytes).

    Pairing and existence are checked at construction; a mask's size and values when it is
    first loaded (:meth:`mask`, ``source[i]``).

    Example:
        >>> for d in ("roads/images", "roads/masks"):
        ...     os.makedirs(d)
        >>> Image.new("RGB", (16, 16)).save("roads/images/a.jpg")
        >>> m = np.eye(16, dtype=np.uint8); m[0] = 255  # 0 background, 1 road, 255 unlabelled (first row)
        >>> Image.fromarray(m).save("roads/masks/a.png")
        >>> src = SegFolderSource("roads", ignore_index=255)  # seg:roads?ignore_index=255 (the default)
        >>> len(src), src.classes, int((src.mask(0) == 255).sum())  # no classes.txt: "0" .. the largest value
        (1, ['0', '1'], 16)
    """

    kind = "seg"
    has_masks = True

    def __init__(self, root: str | Path, *, ignore_index: int | str = DEFAULT_IGNORE_INDEX,
                 classes: str | Path | Sequence[str] | None = None, fingerprint: str = "stat") -> None:
        root = Path(root).expanduser()
        where = f"seg:{root}"
        if not root.is_dir():
            raise DataError(f"{where}: no such directory. Expected <dir>/images/<stem>.<ext> and "
                            f"<dir>/masks/<stem>.png (relative paths are from {Path.cwd()}).")
        self._fp_mode = check_fingerprint_mode(where, fingerprint)
        self.ignore_index = parse_ignore_index(ignore_index, where)
        self.root = root.resolve()
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise DataError(f"{where}: no {d.name}/ folder. Expected <dir>/images/<stem>.<ext> and "
                                "<dir>/masks/<stem>.png.")
        images: dict[str, Path] = {}
        for p in images_under(img_dir):
            key = p.relative_to(img_dir).with_suffix("").as_posix()
            if key in images:
                raise DataError(f"{where}: images/{key}{images[key].suffix} and images/{key}{p.suffix} share the "
                                "stem, so they would share one mask. Rename or remove one.")
            images[key] = p
        masks: dict[str, Path] = {}
        for p in images_under(mask_dir):
            rel = p.relative_to(mask_dir).as_posix()
            if p.suffix.lower() != ".png":
                raise DataError(f"{where}: masks/{rel} is not a PNG; masks must be lossless PNG (a JPEG blurs "
                                "the label values). Re-export it as .png.")
            masks[p.relative_to(mask_dir).with_suffix("").as_posix()] = p
        if not images:
            raise DataError(f"{where}: no images in {img_dir} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
        no_mask = [k for k in images if k not in masks]
        if no_mask:
            raise DataError(f"{where}: {len(no_mask)} image(s) have no mask: "
                            f"{_first([images[k].relative_to(self.root).as_posix() for k in no_mask])} "
                            f"(expected masks/{no_mask[0]}.png). Add the masks, or remove those images.")
        no_image = [k for k in masks if k not in images]
        if no_image:
            raise DataError(f"{where}: {len(no_image)} mask(s) have no image: "
                            f"{_first([masks[k].relative_to(self.root).as_posix() for k in no_image])} "
                            f"(expected images/{no_image[0]}.<ext>). Add the images, or remove those masks.")
        keys = sorted(images)
        self.files = [images[k] for k in keys]
        self.mask_files = [masks[k] for k in keys]
        cls_names, self._classes_from = resolve_classes(classes, self.root, self.root, self.mask_files,
                                                        self.ignore_index, where)
        _check_ignore_vs_classes(where, self.ignore_index, cls_names)
        firsts = [k.split("/", 1)[0].lower() if "/" in k else "" for k in keys]
        splits = [SPLIT_SYNONYMS[f] for f in firsts] if all(f in SPLIT_SYNONYMS for f in firsts) else None
        uri = with_query(where, ignore_index=None if self.ignore_index == DEFAULT_IGNORE_INDEX else self.ignore_index,
                         classes=classes if isinstance(classes, (str, Path)) else None,
                         fingerprint=None if fingerprint == "stat" else fingerprint)
        super().__init__(uri, [p.relative_to(img_dir).as_posix() for p in self.files], None, cls_names,
                         split_column=splits)

    def load_image(self, i: int) -> Image.Image:
        return open_rgb(self.files[i])

    def mask(self, i: int) -> np.ndarray:
        """``[H, W]`` int64 label map of sample ``i`` (the image header is read for its size, not decoded)."""
        return load_mask(self.mask_files[i], len(self.classes), self.ignore_index, image=self.files[i],
                         classes_from=self._classes_from)

    def describe_item(self, i: int) -> str:
        return f"{self.files[i]} (mask {self.mask_files[i]})"

    def _content_key(self) -> Any:
        files = self.files + self.mask_files
        rel = [p.relative_to(self.root).as_posix() for p in files]
        keys = file_content_key(files) if self._fp_mode == "content" else file_stat_key(files)
        return {"ignore_index": self.ignore_index, "files": [[r, k] for r, k in zip(rel, keys)]}
