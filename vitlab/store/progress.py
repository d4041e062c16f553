"""A rich progress bar for image throughput: bar, count, images/s, elapsed and ETA."""

from __future__ import annotations

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Images per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} img/s" if speed else "– img/s", style="progress.data.speed")


def image_progress(disable: bool = False) -> Progress:
    """The progress bar used by long image loops.

    Example:
        >>> with image_progress(disable=True) as p:
        ...     t = p.add_task("embed", total=10); p.advance(t, 10)
    """
    return Progress(TextColumn("[bold blue]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    disable=disable, transient=False)
