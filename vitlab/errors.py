"""Error types. Every message says what is wrong *and* how to fix it.

Example:
    >>> from vitlab.errors import DataError
    >>> raise DataError("data/cats/img_017.jpg: cannot decode image (truncated JPEG). "
    ...                 "Remove it or pass --on-error skip.")
    Traceback (most recent call last):
    ...
    vitlab.errors.DataError: data/cats/img_017.jpg: cannot decode image (truncated JPEG). Remove it or pass --on-error skip.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VitlabError(Exception):
    """Base class of every error vitlab raises on purpose."""


class ConfigError(VitlabError, ValueError):
    """A configuration value is invalid (bad k, unknown pooling, ...)."""


class UnknownNameError(ConfigError, KeyError):
    """A name (backbone, alias, data kind, metric, ...) is not known.

    The message lists the closest known names.
    """

    def __init__(self, what: str, name: str, known: Iterable[str], hint: str = "") -> None:
        known = sorted(set(known))
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
        msg = f"unknown {what} {name!r}."
        if close:
            msg += f" Did you mean: {', '.join(close)}?"
        elif known and len(known) <= 30:
            msg += f" Known: {', '.join(known)}."
        if hint:
            msg += f" {hint}"
        self.name = name
        self.suggestions = close
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class DataError(VitlabError, ValueError):
    """Input data is missing, malformed or inconsistent."""


class BackboneError(VitlabError):
    """A backbone cannot be loaded or does not support what was asked."""


class CacheError(VitlabError):
    """The embedding cache is unusable (unwritable dir, corrupt entry that cannot be repaired)."""


class WriteError(VitlabError, OSError):
    """A file could not be written (full disk, permissions, read-only file system).

    The message names the path and, for a full disk, the space needed and free. It is also an
    :class:`OSError` (``errno`` and ``filename`` set), so code that treats an optional write as
    best-effort (``except OSError``) keeps doing so. ``record`` is the run record whose result was
    computed but could not be saved (the CLI prints it before the error line), when there is one.

    Example:
        >>> e = WriteError("cannot write runs/eval-1.json (no space left on device: 2.1 kB needed, 0 B free).",
        ...                errno=28, filename="runs/eval-1.json")
        >>> isinstance(e, OSError), e.errno, str(e)
        (True, 28, 'cannot write runs/eval-1.json (no space left on device: 2.1 kB needed, 0 B free).')
    """

    def __init__(self, message: str, *, errno: int | None = None, filename: str | None = None) -> None:
        super().__init__(message)
        self.errno, self.filename = errno, filename
        self.record = None

    def __str__(self) -> str:
        return str(self.args[0])


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during extraction, with a truthful note of what was kept.

    ``resume_hint`` says how many rows and shards are saved and whether running the
    same command again resumes (the CLI prints it instead of a generic line).

    Example:
        >>> e = Interrupted("16 of 30 rows (2 shards) are kept: run the same command again to resume.")
        >>> isinstance(e, KeyboardInterrupt), e.resume_hint
        (True, '16 of 30 rows (2 shards) are kept: run the same command again to resume.')
    """

    def __init__(self, resume_hint: str) -> None:
        super().__init__(resume_hint)
        self.resume_hint = resume_hint

    def __str__(self) -> str:
        return self.resume_hint
