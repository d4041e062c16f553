"""Floor 1 of vitlab's file handling: the cache root, atomic writes, the file hash, the stat key and
removal that never follows a symbolic link. The registry of cache namespaces is in
:mod:`vitlab._cache`; the output rule of every verb in :mod:`vitlab.outputs`.

Imports nothing from vitlab but :mod:`vitlab.errors`, so every layer (data, backbones, store,
record, report) uses the same few functions.

Example:
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> p = atomic_write(d / "a.json", '{"n": 1}')
    >>> p.read_text(), len(hash_file(p)), len(hash_file(p, "sha256")), len(stat_key(p))
    ('{"n": 1}', 32, 64, 4)
"""

from __future__ import annotations

import contextvars
import errno as errno_mod
import hashlib
import json
import os
import re
import secrets
import shutil
import stat as stat_mod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from vitlab.errors import WriteError

__all__ = ["ENV_VAR", "cache_root", "use_cache_root", "hash_file", "stat_key", "atomic_write", "atomic_write_json",
           "atomic_path", "write_error", "check_space", "is_tmp_name", "is_real_dir", "is_real_file", "remove_tree",
           "open_lock", "human_bytes"]

ENV_VAR = "VITLAB_CACHE_DIR"
_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("vitlab_cache_root", default=None)

#: suffixes of the image files a folder: source reads (and an output may never replace)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm"})


# -- the cache root ----------------------------------------------------------------------------------
def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The cache root: ``override`` (``--cache-dir``), else the one set by :func:`use_cache_root`, else
    ``$VITLAB_CACHE_DIR``, else the user cache dir (``~/.cache/vitlab`` on Linux).

    Every cache namespace (embeddings, text embeddings, backbone specs, wds indexes, PCA fits, tune
    resume) lives under this one root.

    Example:
        >>> cache_root("/tmp/c").as_posix()
        '/tmp/c'
        >>> with use_cache_root("/tmp/d"):
        ...     cache_root().as_posix()
        '/tmp/d'
    """
    if override is not None:
        return Path(override).expanduser()
    ctx = _ROOT.get()
    if ctx is not None:
        return ctx
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vitlab"))


@contextmanager
def use_cache_root(root: str | os.PathLike | None) -> Iterator[Path]:
    """Make ``root`` the cache root of everything inside the block (``None``: leave it as it is).

    The CLI wraps each verb in it with ``--cache-dir``, so the flag governs every namespace, also
    those written deep inside loading (``specs/`` of ``file:`` backbones, ``wds-index/``).
    """
    if root is None:
        yield cache_root()
        return
    token = _ROOT.set(Path(root).expanduser())
    try:
        yield cache_root()
    finally:
        _ROOT.reset(token)


# -- identity of files ----------------------------------------------------------------------------------
def hash_file(path: str | os.PathLike, algorithm: str = "blake2b", chunk: int = 1 << 22) -> str:
    """Hex digest of a file's bytes, read 4 MiB at a time: ``blake2b`` (128-bit, 32 hex digits; content
    fingerprints of data files and checkpoints) or ``sha256`` (64 hex digits; the cache's checksums).

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"abc")
        >>> hash_file(p) == hashlib.blake2b(b"abc", digest_size=16).hexdigest()
        True
        >>> hash_file(p, "sha256") == hashlib.sha256(b"abc").hexdigest()
        True
    """
    if algorithm == "blake2b":
        h = hashlib.blake2b(digest_size=16)
    elif algorithm == "sha256":
        h = hashlib.sha256()
    else:
        raise ValueError(f"unknown hash algorithm {algorithm!r}; use blake2b or sha256.")
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stat_key(path: str | os.PathLike) -> list[int]:
    """``[size, mtime_ns, ctime_ns, inode]`` of a file (the ``stat`` fingerprint, the cache's cheap check).

    ctime and inode are what a user cannot set back: a file rewritten in place with its old mtime
    restored (``cp -p``, ``rsync -t``, ``touch -r``) still gets a new ctime, and a file replaced by
    another one gets a new inode. chmod, chown or a new hard link also change ctime: that only
    costs a recompute. A broken symbolic link gets the link's own stat.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "a.png"; _ = p.write_bytes(b"x")
        >>> stat_key(p)[0]
        1
    """
    try:
        s = os.stat(path)
    except FileNotFoundError:
        s = os.lstat(path)  # a broken link: its own stat (the bad item is reported when it is read)
    return [s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino]


# -- atomic writes --------------------------------------------------------------------------------------
_TMP = re.compile(r"^\..+\.tmp-\d+-[0-9a-f]{6}$")


def _tmp_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(3)}")


def is_tmp_name(name: str) -> bool:
    """Whether ``name`` is the temporary file of an unfinished :func:`atomic_write` / :func:`atomic_path`.

    Example:
        >>> is_tmp_name(".m.json.tmp-41-0a1b2c"), is_tmp_name("m.json")
        (True, False)
    """
    return bool(_TMP.match(name))


def human_bytes(n: float | None) -> str:
    """``1234567`` → ``'1.2 MB'`` (decimal units, as ``df -H``).

    Example:
        >>> human_bytes(0), human_bytes(2100), human_bytes(3.2e9)
        ('0 B', '2.1 kB', '3.2 GB')
    """
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _free_bytes(path: Path) -> int | None:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p if p.is_dir() else p.parent).free
    except OSError:
        return None


def write_error(path: str | os.PathLike, err: OSError, *, need: int | None = None,
                elsewhere: str = "write it somewhere else") -> WriteError:
    """One line for a failed write: the path, what happened, for a full disk the space needed and
    free, and the fix. ``elsewhere`` is the alternative offered (``"pass --cache-dir <another dir>"``).

    Example:
        >>> e = write_error("/x/r.json", OSError(28, "No space left on device"), need=2100)
        >>> str(e).split(" (")[0], "2.1 kB needed" in str(e)
        ('cannot write /x/r.json', True)
    """
    if isinstance(err, WriteError):
        return err
    path = Path(path)
    code = err.errno
    if code in (errno_mod.ENOSPC, getattr(errno_mod, "EDQUOT", -1)):
        free = _free_bytes(path)
        what = "quota exceeded" if code != errno_mod.ENOSPC else "no space left on device"
        space = f"{human_bytes(need)} needed, " if need else ""
        msg = f"cannot write {path} ({what}: {space}{human_bytes(free)} free). Free some space or {elsewhere}."
    elif code in (errno_mod.EACCES, errno_mod.EPERM):
        msg = f"cannot write {path} (permission denied). Fix the permissions of {path.parent} or {elsewhere}."
    elif code == errno_mod.EROFS:
        msg = f"cannot write {path} (read-only file system). {elsewhere[0].upper()}{elsewhere[1:]}."
    else:
        msg = f"cannot write {path} ({err.strerror or err}). Check the location or {elsewhere}."
    return WriteError(msg, errno=code, filename=str(path))


def check_space(path: str | os.PathLike, need: int, *, elsewhere: str = "write it somewhere else") -> None:
    """Raise the one-line :class:`~vitlab.errors.WriteError` of a full disk now when fewer than ``need``
    bytes are free where ``path`` goes (before memory-mapped writes, which a full disk would kill with
    SIGBUS instead of an error).

    Example:
        >>> import tempfile
        >>> check_space(tempfile.mkdtemp(), 1)
    """
    free = _free_bytes(Path(path))
    if free is not None and free < need:
        raise write_error(path, OSError(errno_mod.ENOSPC, "No space left on device"), need=need,
                          elsewhere=elsewhere)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, *, need: int | None = None, mkdir: bool = True,
                elsewhere: str = "write it somewhere else") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends it is fsynced and renamed onto ``path``.

    For libraries that write to a path themselves (safetensors, pyarrow, ``np.savez``). Readers never
    see half a file; on any error the temporary file is removed and an ``OSError`` becomes one
    :class:`~vitlab.errors.WriteError` line (path, space needed and free). ``need``: the expected size
    for that message (default: what was written before the failure).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "x.bin"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_bytes(b"abc")
        >>> target.read_bytes(), [p.name for p in target.parent.iterdir()]
        (b'abc', ['x.bin'])
    """
    path = Path(path)
    tmp = _tmp_for(path)
    try:
        if mkdir:
            path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        if tmp.is_file():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        written = _size_of(tmp)
        _discard(tmp)
        raise write_error(path, e, need=need or written or None, elsewhere=elsewhere) from None
    except BaseException:
        _discard(tmp)
        raise


def _size_of(p: Path) -> int:
    try:
        if p.is_dir():
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        return p.stat().st_size
    except OSError:
        return 0


def _discard(tmp: Path) -> None:
    try:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    except OSError:
        pass


def atomic_write(path: str | os.PathLike, data: bytes | str, *, mkdir: bool = True,
                 elsewhere: str = "write it somewhere else") -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically: temporary file, fsync, rename.

    A failure (full disk, permissions) is one :class:`~vitlab.errors.WriteError` line naming the path
    and the space needed; nothing is left behind, and an earlier ``path`` is untouched.

    Example:
        >>> import tempfile
        >>> atomic_write(Path(tempfile.mkdtemp()) / "sub" / "a.txt", "hi").read_text()
        'hi'
    """
    blob = data.encode() if isinstance(data, str) else bytes(data)
    path = Path(path)
    with atomic_path(path, need=len(blob), mkdir=mkdir, elsewhere=elsewhere) as tmp:
        with open(tmp, "wb") as f:
            f.write(blob)
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = None, mkdir: bool = True,
                      elsewhere: str = "write it somewhere else", **dumps: Any) -> Path:
    """:func:`atomic_write` of ``json.dumps(obj, indent=indent, **dumps)``.

    Example:
        >>> import tempfile
        >>> p = atomic_write_json(Path(tempfile.mkdtemp()) / "k.json", {"a": [1, 2]})
        >>> json.loads(p.read_text())
        {'a': [1, 2]}
    """
    return atomic_write(path, json.dumps(obj, indent=indent, **dumps), mkdir=mkdir, elsewhere=elsewhere)


# -- what is really there --------------------------------------------------------------------------------
def is_real_dir(path: str | os.PathLike) -> bool:
    """A directory that is not a symbolic link (``lstat``: links are never followed)."""
    try:
        return stat_mod.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def is_real_file(path: str | os.PathLike) -> bool:
    """A regular file that is not a symbolic link."""
    try:
        return stat_mod.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def remove_tree(path: str | os.PathLike) -> None:
    """Delete a real directory and everything in it, never following a symbolic link.

    Refuses (``OSError``) a link or anything that is not a directory; inside, links are removed, never
    followed (``shutil.rmtree`` works on directory file descriptors where the platform has them).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "e").mkdir(); (d / "keep").mkdir(); _ = (d / "keep" / "x").write_text("x")
        >>> (d / "e" / "link").symlink_to(d / "keep")
        >>> remove_tree(d / "e"); sorted(p.name for p in d.rglob("*"))
        ['keep', 'x']
    """
    p = Path(path)
    if not is_real_dir(p):
        raise OSError(errno_mod.ENOTDIR, "not a real directory (a symbolic link or a file); left alone", str(p))
    if not shutil.rmtree.avoids_symlink_attacks:  # pragma: no cover - every POSIX with openat has it
        raise OSError(errno_mod.ENOTSUP, "this platform cannot delete a tree without following links", str(p))
    shutil.rmtree(p)


def open_lock(folder: str | os.PathLike, name: str = ".lock") -> IO[str]:
    """Open (creating it) the lock file ``folder/name`` without following a symbolic link, neither for
    ``folder`` nor for the file: a link raises ``OSError`` (``ELOOP`` / ``ENOTDIR``) instead of
    creating a file in the link's target.
    """
    dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o644, dir_fd=dfd)
    finally:
        os.close(dfd)
    return os.fdopen(fd, "a")
