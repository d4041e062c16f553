"""The member index of an uncompressed ``.tar``: ``(name, data offset, size)`` per regular file.

Used by the ``wds:`` source to read samples in place. Two readers give the same index:

* a direct ustar header walk (one 512-byte positioned read and a checksum per member), about
  ten times faster than :mod:`tarfile`, which parses every header field in Python
  (``bench/bench_formats.py``: the index rate of a shard);
* :mod:`tarfile`, used for the whole shard as soon as a header needs more than ustar
  (pax ``x``/``g`` records, GNU long names ``L``/``K``, base-256 sizes).

Both refuse a shard that is cut or damaged: a header with a bad checksum, a member that runs
past the end of the file, or no clean end-of-archive marker (``tarfile`` alone stops quietly at
a cut header after the first member, which would drop the samples behind it).

This is written here because the stdlib reader is the slow part of opening a million-sample
set, and the ``webdataset`` package has no index at all (it streams).

Example:
    >>> import io, tarfile, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "s.tar"
    >>> with tarfile.open(p, "w") as tf:
    ...     info = tarfile.TarInfo("k1.cls"); info.size = 1; tf.addfile(info, io.BytesIO(b"3"))
    >>> scan_tar(p)
    [('k1.cls', 512, 1)]
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from vitlab.errors import DataError

BLOCK = 512
_ZERO = bytes(BLOCK)
_REGULAR = (b"0", b"\0", b"7")
_NEEDS_TARFILE = (b"x", b"g", b"L", b"K")


class _UseTarfile(Exception):
    """A header the ustar walk does not handle: index the shard with :mod:`tarfile` instead."""


def _damaged(tar: Path, at: int, what: str) -> DataError:
    return DataError(f"wds:{tar}: the shard is truncated or damaged at byte {at:,} ({what}), so samples behind it "
                     "would be lost. Re-download or re-create the shard.")


def _not_tar(tar: Path) -> DataError:
    return DataError(f"wds:{tar}: not a tar archive (its first block is no tar header). Point wds: at uncompressed "
                     "WebDataset .tar shards.")


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 (GNU, huge sizes)
        raise _UseTarfile
    text = field.replace(b"\0", b" ").strip()
    return int(text, 8) if text else 0


def _check_tail(tar: Path, fd: int, end: int, size: int) -> None:
    """What follows the last member must be zero blocks (the end-of-archive marker, at least one block)."""
    rest = size - end
    if rest < BLOCK:
        raise _damaged(tar, end, "no end-of-archive marker")
    if rest > 1 << 20 or os.pread(fd, rest, end).count(0) != rest:
        raise _damaged(tar, end, "data after the last readable header")


def _walk(tar: Path, fd: int, size: int) -> list[tuple[str, int, int]]:
    out, pos = [], 0
    while True:
        if pos + BLOCK > size:
            raise _damaged(tar, pos, "no end-of-archive marker")
        buf = os.pread(fd, BLOCK, pos)
        if buf == _ZERO:
            _check_tail(tar, fd, pos, size)
            return out
        try:
            chk = _octal(buf[148:156])
        except ValueError:
            if pos == 0:
                raise _not_tar(tar) from None
            raise _damaged(tar, pos, "unreadable header") from None
        if chk != sum(buf[:148]) + 256 + sum(buf[156:]):
            if pos == 0:
                raise _not_tar(tar)
            raise _damaged(tar, pos, "header checksum mismatch")
        kind = buf[156:157]
        if kind in _NEEDS_TARFILE:
            raise _UseTarfile
        name = buf[:100].split(b"\0", 1)[0]
        if buf[257:262] == b"ustar":
            prefix = buf[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        try:
            n = _octal(buf[124:136])
        except ValueError:
            raise _damaged(tar, pos, "unreadable size") from None
        data = pos + BLOCK
        if kind in _REGULAR:
            if data + n > size:
                raise _damaged(tar, data, f"member {name.decode('utf-8', 'replace')!r} runs past the end of the file")
            out.append((name.decode("utf-8", "surrogateescape"), data, n))
        pos = data + (n + BLOCK - 1) // BLOCK * BLOCK


def _with_tarfile(tar: Path, fd: int, size: int) -> list[tuple[str, int, int]]:
    out = []
    try:
        with tarfile.open(tar, mode="r:") as tf:
            for m in tf:
                if m.isfile():
                    if m.offset_data + m.size > size:
                        raise _damaged(tar, m.offset_data, f"member {m.name!r} runs past the end of the file")
                    out.append((m.name, m.offset_data, m.size))
            end = tf.offset
    except tarfile.TarError as e:
        raise DataError(f"wds:{tar}: not a readable tar ({e}). Re-download or re-create the shard.") from None
    _check_tail(tar, fd, end, size)
    return out


def scan_tar(tar: str | Path) -> list[tuple[str, int, int]]:
    """``(member name, data offset, size)`` of every regular file of an uncompressed tar, in order.

    Raises:
        DataError: the shard is unreadable, truncated or damaged (the message names the byte and the fix).

    Example:
        >>> import io
        >>> with tarfile.open("00000.tar", "w") as tf:
        ...     for name, data in [("000000000.cls", b"3"), ("000000000.json", b'{"caption": "a shoe"}')]:
        ...         info = tarfile.TarInfo(name); info.size = len(data); tf.addfile(info, io.BytesIO(data))
        >>> scan_tar("00000.tar")  # (member, data offset, size)
        [('000000000.cls', 512, 1), ('000000000.json', 1536, 21)]
    """
    tar = Path(tar)
    try:
        with open(tar, "rb") as f:
            fd, size = f.fileno(), os.fstat(f.fileno()).st_size
            try:
                return _walk(tar, fd, size)
            except _UseTarfile:
                return _with_tarfile(tar, fd, size)
    except OSError as e:
        raise DataError(f"wds:{tar}: cannot read the shard ({e.strerror or e}).") from None
