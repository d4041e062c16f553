"""``folder:<dir>``: one subfolder per class, or a flat folder of unlabeled images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PIL import Image

from vitlab.data.base import DataSource, check_fingerprint_mode, file_content_key, file_stat_key, with_query
from vitlab.data.images import IMAGE_SUFFIXES, open_rgb
from vitlab.errors import DataError


def images_under(root: Path, seen: set[tuple[int, int]] | None = None) -> list[Path]:
    """Image files under ``root``, recursively, sorted, hidden files and folders skipped.

    Symbolic links to folders are followed **at most once per real folder**: a folder already listed
    (through another link, or an ancestor reached by a loop such as ``bag/loop -> ..``) is not listed
    again, so a link loop cannot multiply the rows. Links to files are listed under their own name; a
    broken link is listed too and becomes a bad item when read (one line naming it, or skipped and
    listed with ``--on-error skip``). ``seen`` (the real folders already listed, updated) lets several walks
    share the rule: the class folders of one source, the source's own root among them.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "a").mkdir(); Image.new("L", (4, 4)).save(d / "a" / "x.png")
        >>> (d / "a" / "loop").symlink_to("..")
        >>> [p.relative_to(d).as_posix() for p in images_under(d)]
        ['a/x.png']
    """
    out = []
    seen = set() if seen is None else seen
    seen.add(_real_id(root))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(x for x in dirnames if not x.startswith(".")):
            ident = _real_id(Path(dirpath) / d)
            if ident is not None and ident not in seen:
                seen.add(ident)
                keep.append(d)
        dirnames[:] = keep
        out.extend(Path(dirpath) / f for f in sorted(filenames)
                   if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return out


def _real_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the folder a path leads to (links followed), or ``None`` if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class FolderSource(DataSource):
    """Images under a directory. Class folders (``root/<class>/**/img``) give labels;
    images directly in ``root`` with no class folders give an unlabeled source.

    The default fingerprint (``stat``) covers each file's relative path, size, mtime, ctime
    and inode: a file rewritten in place is a new fingerprint even if its mtime was put back
    (``cp -p``, ``touch -r``); a copy of the folder is too. ``folder:<dir>?fingerprint=content``
    (``fingerprint="content"``) hashes the bytes instead: slower, unchanged by copies and touches.

    Symbolic links: a linked folder is followed at most once per real folder (:func:`images_under`; a
    link back up, such as ``bag/loop -> ..``, adds nothing); a broken link is listed and is a bad item
    when read (one line naming it, or skipped and listed with ``--on-error skip``).

    Example:
        >>> for cls in ("cat", "dog"):
        ...     os.makedirs(f"my_images/{cls}")
        ...     Image.new("RGB", (16, 16)).save(f"my_images/{cls}/1.png")
        >>> src = FolderSource("./my_images")
        >>> len(src), src.classes, src.ids
        (2, ['cat', 'dog'], ['cat/1.png', 'dog/1.png'])
    """

    kind = "folder"

    def __init__(self, root: str | Path, *, fingerprint: str = "stat") -> None:
        root = Path(root).expanduser()
        if not root.exists():
            raise DataError(f"folder:{root}: no such directory. Check the path (relative paths are from {Path.cwd()}).")
        if not root.is_dir():
            raise DataError(f"folder:{root}: is a file, not a directory. For a CSV/Parquet manifest use csv:{root}.")
        self._fp_mode = check_fingerprint_mode(f"folder:{root}", fingerprint)
        self.root = root.resolve()
        top = sorted(p for p in self.root.iterdir() if not p.name.startswith("."))
        class_dirs = [p for p in top if p.is_dir()]
        loose = [p for p in top if (p.is_file() or (p.is_symlink() and not p.exists()))  # a broken link: a bad item
                 and p.suffix.lower() in IMAGE_SUFFIXES]
        if class_dirs and loose:
            raise DataError(
                f"folder:{root}: has {len(loose)} image(s) at the top level (e.g. {loose[0].name}) and "
                f"{len(class_dirs)} subfolder(s). Use one subfolder per class with no loose images, "
                "or a flat folder of images with no subfolders.")
        if class_dirs:
            classes, files, labels = [], [], []
            seen = {_real_id(self.root)} | {_real_id(d) for d in class_dirs}  # a link back up is not a way in
            for d in class_dirs:
                imgs = images_under(d, seen)
                if imgs:
                    labels += [len(classes)] * len(imgs)
                    classes.append(d.name)
                    files += imgs
            empty = [d.name for d in class_dirs if d.name not in classes]
            if empty and files:
                raise DataError(f"folder:{root}: class folder(s) {', '.join(empty)} contain no images "
                                f"({', '.join(sorted(IMAGE_SUFFIXES))}). Add images or remove the folder(s).")
        else:
            classes, files, labels = [], loose, None
        if not files:
            raise DataError(f"folder:{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}). "
                            "Point --data at a folder of images or of class subfolders.")
        self.files = files
        import numpy as np

        uri = with_query(f"folder:{root}", fingerprint=None if fingerprint == "stat" else fingerprint)
        super().__init__(uri, [p.relative_to(self.root).as_posix() for p in files],
                         None if labels is None else np.asarray(labels), classes)

    def load_image(self, i: int) -> Image.Image:
        return open_rgb(self.files[i])

    def describe_item(self, i: int) -> str:
        return str(self.files[i])

    def _content_key(self) -> Any:
        if self._fp_mode == "content":
            return file_content_key(self.files)
        return file_stat_key(self.files)
