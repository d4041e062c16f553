"""Reports: run records (versioned JSON) → leaderboards, Markdown, CSV and one self-contained HTML file.

The renderers are imported on first use, so ``vitlab.record`` stays light
(no matplotlib or rich) for the code that only writes records.

Example:
    >>> from vitlab.report import load_records, render_html, to_markdown
    >>> records = load_records("runs/")  # doctest: +SKIP
    >>> render_html(records, "report.html")  # doctest: +SKIP
    PosixPath('report.html')
    >>> print(to_markdown(records))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from vitlab.record import RunRecord, load_records

_LAZY = {"render_html": "vitlab.report.html", "register_section": "vitlab.report.html",
         "to_markdown": "vitlab.report.tables", "to_csv": "vitlab.report.tables",
         "leaderboard_table": "vitlab.report.tables", "leaderboards": "vitlab.report.tables"}

__all__ = ["RunRecord", "load_records", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vitlab.report' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
