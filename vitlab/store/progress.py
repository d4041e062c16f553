"""A rich progress bar for image throughput: bar, count, images/s, elapsed and ETA.

The bar always writes to **stderr** (stdout is kept for ``--json`` output) and, unless
asked explicitly, only appears when stderr is a terminal: piping or redirecting a
command never fills a log with bar frames.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Images per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} img/s" if speed else "– img/s", style="progress.data.speed")


def stderr_is_terminal() -> bool:
    """Whether ``sys.stderr`` (as it is now, e.g. redirected by a test runner) is a terminal.

    Example:
        >>> import io, contextlib
        >>> with contextlib.redirect_stderr(io.StringIO()):
        ...     stderr_is_terminal()
        False
    """
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # closed or detached stream
        return False


def show_progress(progress: bool | None) -> bool:
    """Resolve a ``progress`` setting: ``None`` (auto) = a bar only when stderr is a terminal.

    Example:
        >>> show_progress(False), show_progress(True)
        (False, True)
    """
    return stderr_is_terminal() if progress is None else bool(progress)


def image_progress(disable: bool | None = None, console: Console | None = None) -> Progress:
    """The progress bar used by long image loops, drawn on ``console`` (default: a stderr console).

    Args:
        disable: ``True`` hides the bar, ``False`` shows it, ``None`` (default) shows it only
            when stderr is a terminal.
        console: where to draw; default a fresh ``Console(stderr=True)``, never stdout.

    Example:
        >>> import io, contextlib
        >>> err, out = io.StringIO(), io.StringIO()
        >>> with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        ...     with image_progress() as p:  # stderr is not a terminal here: no bar
        ...         t = p.add_task("embed", total=10); p.advance(t, 10)
        >>> err.getvalue(), out.getvalue()
        ('', '')
    """
    if disable is None:
        disable = not stderr_is_terminal()
    return Progress(TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console or Console(stderr=True), disable=disable, transient=False)
