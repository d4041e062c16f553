"""Helpers of the reliability suite: a byte-exact picture of a user's folder, and a full disk."""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path

import pytest


def tree(root: Path) -> dict[str, object]:
    """Every file (its bytes), folder and symbolic link (its target) under ``root``, never following a link."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):  # links to folders are listed, not entered
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes()
    return out


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(folder)``: from now on every write under ``folder`` fails with ENOSPC (a simulated full
    filesystem: Python's ``open`` and ``os.open`` for writing)."""

    def arm(folder: Path) -> None:
        folder = str(Path(folder).resolve())
        real_open, real_os_open = builtins.open, os.open

        def under(file) -> bool:  # empty probe files still fit on a full disk (an inode, no blocks)
            try:
                p = os.path.abspath(os.fspath(file))
            except TypeError:
                return False
            return p.startswith(folder) and not os.path.basename(p).startswith(".vitlab-probe-")

        def fake_open(file, mode="r", *a, **k):
            if any(c in mode for c in "wax+") and under(file):
                raise OSError(errno.ENOSPC, "No space left on device", os.fspath(file))
            return real_open(file, mode, *a, **k)

        def fake_os_open(path, flags, *a, **k):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path) and "dir_fd" not in k:
                raise OSError(errno.ENOSPC, "No space left on device", os.fspath(path))
            return real_os_open(path, flags, *a, **k)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)

    return arm


def one_line_error(res, *needles: str) -> str:
    """The CLI failed with exit code 2 and one ``error:`` line holding every needle; returns that line."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output, res.output
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    err = " ".join(" ".join(lines[[i for i, x in enumerate(lines) if x.startswith("error:")][0]:]).split())
    for n in needles:
        assert n in err, (n, err)
    return err
