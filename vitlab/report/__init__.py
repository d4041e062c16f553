"""Reports: run records (versioned JSON) → leaderboards, Markdown, CSV and one self-contained HTML file.

The renderers are imported on first use, so ``vitlab.record`` stays light
(no matplotlib or rich) for the code that only writes records.

Example:
    >>> import vitlab
    >>> from vitlab.report import load_records, render_html, to_markdown
    >>> _ = vitlab.evaluate("demo:fmnist-vit", "sample:digits?limit=200", protocols="knn", n_resamples=20, out="runs/",
    ...                     progress=False)
    >>> records = load_records("runs/")
    >>> render_html(records, "report.html")
    PosixPath('report.html')
    >>> to_markdown(records).splitlines()[1]
    '# vitlab results'
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
