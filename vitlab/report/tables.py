"""Leaderboards from run records → plain rows, rich tables, Markdown and CSV.

(About 400 lines by design: one leaderboard model rendered four ways; splitting the renderers would
spread one row format over several files.)

One :class:`Board` per (dataset, protocol). A ``compare`` record supplies the order
and the significance marks (Holm-adjusted paired tests against the leader); ``eval``
records not covered by a comparison add rows without marks.

Example:
    >>> from vitlab.record import RunRecord
    >>> r = RunRecord(kind="eval", config={"backbone": "pixels:28", "dataset": "sample:fashion-mnist"},
    ...               metrics={"knn": {"top1": {"value": 0.8, "low": 0.7, "high": 0.9}}})
    >>> b = leaderboards([r])[0]
    >>> (b.dataset, b.protocol, b.rows[0].backbone, fmt_ci(b.rows[0].values["top1"]))
    ('sample:fashion-mnist', 'knn', 'pixels:28', '0.800 [0.700, 0.900]')
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from vitlab.record import RunRecord

__all__ = ["SCALAR_METRICS", "MARKS", "Board", "BoardRow", "leaderboards", "metric_rows", "fmt", "fmt_ci", "fmt_p",
           "fmt_sig", "spread_text", "outside_ci", "leaderboard_table", "to_markdown", "to_csv", "gen_eval_markdown",
           "FEWSHOT_KEY"]

SCALAR_METRICS = ("top1", "top5", "balanced_accuracy", "macro_f1", "auroc", "cohen_kappa", "cohen_kappa_quadratic")
# Leaderboard columns of the other tasks, headline first (every metric stays in Markdown/CSV rows).
TASK_COLUMNS = (("recall@1", "recall@5", "recall@10", "map", "map@r"), ("miou", "mdice", "pixel_accuracy"))
FEWSHOT_KEY = re.compile(r"^(?P<clf>.+)_(?P<shot>\d+)shot$")
# mark → (symbol, explanation)
MARKS = {
    "leader": ("★", "leader (best primary metric)"),
    "worse": ("▼", "significantly worse than the leader (Holm-adjusted p < 0.05)"),
    "same": ("=", "not significantly different from the leader (Holm-adjusted p ≥ 0.05)"),
    None: ("", "no paired test"),
}


@dataclass
class BoardRow:
    """One backbone on a board: ``values[metric] = {"value", "low", "high", ...}``; ``mark`` a :data:`MARKS` key."""

    backbone: str
    values: dict[str, dict[str, Any]]
    mark: str | None = None


@dataclass
class Board:
    """A leaderboard for one (dataset, protocol): rows best first, ``metrics`` the columns in order."""

    dataset: str
    protocol: str
    metrics: list[str]
    rows: list[BoardRow] = field(default_factory=list)
    paired: bool = False
    alpha: float = 0.05

    @property
    def primary(self) -> str:
        return self.metrics[0] if self.metrics else "top1"


def fmt(x: Any, digits: int = 3, *, signed: bool = False) -> str:
    """A metric value with ``digits`` decimals (``+`` in front of positives when ``signed``); ``–`` for missing/NaN.

    The one formatter of metric cells (HTML, Markdown, CSV-free views and the CLI); see also
    :func:`fmt_ci`, :func:`fmt_p` and, for metrics spanning orders of magnitude, :func:`fmt_sig`.

    Example:
        >>> fmt(0.91666), fmt(None), fmt(float("nan")), fmt(-0.0001)
        ('0.917', '–', '–', '0.000')
        >>> fmt(0.05, signed=True), fmt(-0.05, signed=True), fmt(0.0, signed=True)
        ('+0.050', '-0.050', '+0.000')
    """
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "–" if x is None else str(x)
    if math.isnan(x):
        return "–"
    if round(x, digits) == 0:
        x = 0.0  # no "-0.000"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def fmt_sig(x: Any, sig: int = 4) -> str:
    """A metric value with ``sig`` significant digits, for metrics spanning 1e-4 … 1e3 (FD, KD, IS…);
    integers as they are; ``–`` when missing.

    Example:
        >>> fmt_sig(0.132685), fmt_sig(112.898), fmt_sig(4.07e-16), fmt_sig(None), fmt_sig(float("nan")), fmt_sig(3)
        ('0.1327', '112.9', '4.07e-16', '–', '–', '3')
        >>> fmt_sig(float("inf"))
        '∞'
    """
    if x is None:
        return "–"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if isinstance(x, int):
        return str(x)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{sig}g}"


def spread_text(m: dict[str, Any]) -> str:
    """The uncertainty of one metric entry as plain text (:func:`fmt_sig`): ``[low, high]``, ``± std (…)`` or ``""``.

    Example:
        >>> spread_text({"value": 1.0, "low": 0.5, "high": 1.5})
        '[0.5, 1.5]'
        >>> spread_text({"value": 0.01, "low": None, "std": 0.002, "uncertainty": "mean ± std over subsets"})
        '± 0.002 (std over subsets)'
    """
    if m.get("low") is not None and m.get("high") is not None:
        return f"[{fmt_sig(m.get('low'))}, {fmt_sig(m.get('high'))}]"
    if m.get("std") is not None:
        over = str(m.get("uncertainty", "")).split(" over ")[-1] if m.get("uncertainty") else ""
        return f"± {fmt_sig(m.get('std'))} (std{' over ' + over if over else ''})"
    return ""


def outside_ci(m: dict[str, Any]) -> bool:
    """Whether a metric's value lies outside its own interval (old bootstrap records).

    Example:
        >>> outside_ci({"value": 2.0, "low": 0.0, "high": 1.0}), outside_ci({"value": 0.5})
        (True, False)
    """
    lo, hi, v = m.get("low"), m.get("high"), m.get("value")
    return all(isinstance(x, (int, float)) for x in (lo, hi, v)) and not lo <= v <= hi


def fmt_p(p: Any) -> str:
    """A p-value: 3 decimals, ``<0.001`` below.

    Example:
        >>> fmt_p(0.0004), fmt_p(0.0312)
        ('<0.001', '0.031')
    """
    if isinstance(p, (int, float)) and not math.isnan(p) and p < 0.001:
        return "<0.001"
    return fmt(p)


def fmt_ci(m: dict[str, Any] | None, digits: int = 3) -> str:
    """``value [low, high]`` from a metric dict.

    Example:
        >>> fmt_ci({"value": 0.5, "low": 0.25, "high": 0.75})
        '0.500 [0.250, 0.750]'
    """
    if not m:
        return "–"
    if m.get("low") is None or m.get("high") is None:
        return fmt(m.get("value"), digits)
    return f"{fmt(m.get('value'), digits)} [{fmt(m.get('low'), digits)}, {fmt(m.get('high'), digits)}]"


def _columns(per_backbone: list[dict[str, Any]]) -> list[str]:
    """Metric columns: the scalar metrics present, else few-shot entries at the largest shared shot."""
    present = set().union(*(m.keys() for m in per_backbone)) if per_backbone else set()
    for order in (SCALAR_METRICS, *TASK_COLUMNS):
        cols = [k for k in order if k in present]
        if cols:
            return cols
    shots = [{int(g["shot"]) for k in m if (g := FEWSHOT_KEY.match(k))} for m in per_backbone]
    common = set.intersection(*shots) if shots and all(shots) else set()
    if common:
        top = max(common)
        return sorted(k for k in present if (g := FEWSHOT_KEY.match(k)) and int(g["shot"]) == top)
    return sorted(present)


def leaderboards(records: list[RunRecord]) -> list[Board]:
    """Build one :class:`Board` per (dataset, protocol) from compare and eval records.

    Later records win over earlier ones for the same (dataset, backbone, protocol).

    Example:
        >>> leaderboards([])
        []
    """
    cells: dict[tuple[str, str], dict[str, BoardRow]] = {}
    paired: dict[tuple[str, str], tuple[list[str], float]] = {}
    for r in records:
        if r.kind != "compare":
            continue
        alpha = float(r.config.get("alpha", 0.05))
        for ds, per_proto in r.details.get("leaderboards", {}).items():
            for proto, rows in per_proto.items():
                key = (ds, proto)
                order = [row["backbone"] for row in rows]
                board = cells.setdefault(key, {})
                has_tests = any("worse_than_leader" in row for row in rows)
                for i, row in enumerate(rows):
                    values = r.metrics.get(f"{ds}|{row['backbone']}", {}).get(proto) or {row["metric"]: row}
                    mark = ("leader" if i == 0 else "worse" if row.get("worse_than_leader") else "same") \
                        if has_tests else None
                    board[row["backbone"]] = BoardRow(row["backbone"], values, mark)
                if has_tests:
                    paired[key] = (order, alpha)
    for r in records:
        if r.kind != "eval":
            continue
        ds, bb = str(r.config.get("dataset", r.config.get("data", "?"))), str(r.config.get("backbone", "?"))
        for proto, values in r.metrics.items():
            board = cells.setdefault((ds, proto), {})
            if bb not in board or board[bb].mark is None:
                board[bb] = BoardRow(bb, values, None)
    out = []
    for (ds, proto), rows in cells.items():
        cols = _columns([row.values for row in rows.values()])
        order, alpha = paired.get((ds, proto), ([], 0.05))
        primary = cols[0] if cols else None

        def score(row: BoardRow) -> float:
            v = row.values.get(primary, {}).get("value") if primary else None
            return -v if isinstance(v, (int, float)) and not math.isnan(v) else math.inf

        ranked = [rows[b] for b in order if b in rows] + sorted((r for b, r in rows.items() if b not in order),
                                                              key=score)
        out.append(Board(ds, proto, cols, ranked, paired=bool(order), alpha=alpha))
    return out


def metric_rows(records: list[RunRecord]) -> list[dict[str, Any]]:
    """Flat rows ``{dataset, backbone, protocol, metric, value, low, high}`` from eval and compare records.

    Example:
        >>> from vitlab.record import RunRecord
        >>> r = RunRecord(kind="eval", config={"backbone": "b", "dataset": "d"},
        ...               metrics={"knn": {"top1": {"value": 0.8, "low": 0.7, "high": 0.9}}})
        >>> metric_rows([r])[0]["value"]
        0.8
    """
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}

    def add(ds: str, bb: str, per_proto: dict[str, Any]) -> None:
        for proto, metrics in per_proto.items():
            for name, m in metrics.items():
                if isinstance(m, dict) and "value" in m:
                    rows[(ds, bb, proto, name)] = {"dataset": ds, "backbone": bb, "protocol": proto, "metric": name,
                                                   "value": m.get("value"), "low": m.get("low"),
                                                   "high": m.get("high")}

    for r in records:
        if r.kind == "compare":
            for key, per_proto in r.metrics.items():
                ds, _, bb = key.rpartition("|") if "|" in key else ("", "", key)
                add(ds, bb, per_proto)
    for r in records:
        if r.kind == "eval":
            add(str(r.config.get("dataset", r.config.get("data", ""))), str(r.config.get("backbone", "")), r.metrics)
    for r in records:  # gen-eval: dataset = the generated (fake) set, backbone = the encoder
        if r.kind == "gen-eval":
            enc = (r.config.get("encoder") or {}).get("encoder") or "precomputed features"
            add(str((r.config.get("sets") or {}).get("fake", "")), str(enc), {"gen-eval": r.metrics})
    return list(rows.values())


def leaderboard_table(records: list[RunRecord]) -> list[Table]:
    """Rich tables for the terminal, one per (dataset, protocol).

    Example:
        >>> import io, vitlab
        >>> from rich.console import Console
        >>> res = vitlab.evaluate("demo:fmnist-vit", "sample:digits?limit=200", protocols="knn", n_resamples=20,
        ...                       progress=False)
        >>> for t in leaderboard_table([res.record]):
        ...     Console(file=io.StringIO()).print(t)  # a terminal: Console()
    """
    tables = []
    for b in leaderboards(records):
        t = Table(title=f"{b.dataset} · {b.protocol} · value [95% CI]", caption=_legend(b) or None,
                  title_justify="left")
        # terminal: the primary metric with its CI, a few others as values (full detail in the HTML report)
        shown = b.metrics[:1] + [m for m in b.metrics[1:] if m in TERMINAL_EXTRA]
        t.add_column("backbone", no_wrap=True)
        for j, m in enumerate(shown):
            t.add_column(f"{m} [95% CI]" if j == 0 else TERMINAL_EXTRA[m], justify="right", no_wrap=True)
        if b.paired:
            t.add_column("", justify="center")
        for row in b.rows:
            cells = [escape(row.backbone), fmt_ci(row.values.get(shown[0]))]
            cells += [fmt(row.values.get(m, {}).get("value")) for m in shown[1:]]
            t.add_row(*cells, *([MARKS[row.mark][0]] if b.paired else []))
        tables.append(t)
    return tables


TERMINAL_EXTRA = {"balanced_accuracy": "bal.acc", "auroc": "AUROC", "recall@5": "R@5", "map": "mAP",
                  "pixel_accuracy": "pix.acc"}


def _two_lines(m: dict[str, Any] | None) -> str:
    """``value`` over ``[low, high]`` (dim) for a narrow terminal column."""
    if not m or m.get("low") is None:
        return fmt_ci(m)
    return f"{fmt(m.get('value'))}\n[dim][{fmt(m.get('low'))}, {fmt(m.get('high'))}][/dim]"


def _legend(b: Board) -> str:
    if not b.paired:
        return ""
    return "; ".join(f"{MARKS[k][0]} {MARKS[k][1]}" for k in ("leader", "worse", "same"))


def _md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def to_markdown(records: list[RunRecord], *, title: str = "vitlab results") -> str:
    """Leaderboards as Markdown tables (``value [95% CI]`` cells, significance marks).

    The first line is an HTML comment (invisible when rendered) that marks the file as vitlab's, so
    ``vitlab report --markdown`` replaces its own earlier output and nothing else.

    Example:
        >>> print(to_markdown([]))
        <!-- generated by vitlab -->
        # vitlab results
        <BLANKLINE>
        _No eval or compare records._
        <BLANKLINE>
    """
    lines = ["<!-- generated by vitlab -->", f"# {_md_escape(title)}", ""]
    boards = leaderboards(records)
    if not boards:
        lines += ["_No eval or compare records._", ""]
    for b in boards:
        lines += [f"## {_md_escape(b.dataset)} · {_md_escape(b.protocol)}", ""]
        head = ["#", "backbone"] + [f"{m} [95% CI]" for m in b.metrics] + (["vs leader"] if b.paired else [])
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---:", "---"] + ["---:"] * (len(head) - 2)) + "|"]
        for i, row in enumerate(b.rows, 1):
            cells = [str(i), f"`{_md_escape(row.backbone)}`"] + [fmt_ci(row.values.get(m)) for m in b.metrics]
            lines.append("| " + " | ".join(cells + ([MARKS[row.mark][0]] if b.paired else [])) + " |")
        legend = _legend(b)
        lines += ([""] + [f"_{legend}_"] if legend else []) + [""]
    lines += gen_eval_markdown(records)
    return "\n".join(lines)


def gen_eval_markdown(records: list[RunRecord]) -> list[str]:
    """Markdown lines: one table (metric, value, 95% CI / spread) per ``gen-eval`` record, then its notes.

    Example:
        >>> r = RunRecord(kind="gen-eval", config={"sets": {"fake": "folder:f", "real": "folder:r"},
        ...               "encoder": {"encoder": "dinov2-l"}}, metrics={"fd": {"value": 3.0, "low": 2.0, "high": 4.0}})
        >>> print("\\n".join(gen_eval_markdown([r])))
        ## gen-eval · folder:f vs folder:r · encoder `dinov2-l`
        <BLANKLINE>
        | metric | value | 95% CI / spread |
        |---|---:|---|
        | fd | 3 | [2, 4] |
        <BLANKLINE>
    """
    lines: list[str] = []
    for r in records:
        if r.kind != "gen-eval":
            continue
        c = r.config
        sets = c.get("sets") or {}
        enc = (c.get("encoder") or {}).get("encoder") or "precomputed features"
        ref = sets.get("real") or c.get("real_stats") or "–"
        lines += [f"## gen-eval · {_md_escape(sets.get('fake', '?'))} vs {_md_escape(ref)} · encoder "
                  f"`{_md_escape(enc)}`", "", "| metric | value | 95% CI / spread |", "|---|---:|---|"]
        for name, m in r.metrics.items():
            if isinstance(m, dict):
                flag = " ⚠" if m.get("small_sample") or outside_ci(m) else ""
                lines.append(f"| {_md_escape(name)} | {fmt_sig(m.get('value'))}{flag} | {_md_escape(spread_text(m))} |")
        notes = r.details.get("notes", [])
        lines.append("")
        if notes:
            lines += [f"- **{_md_escape('all metrics' if n.get('metric') == '*' else n.get('metric'))}**: "
                      f"{_md_escape(n.get('message'))}" for n in notes] + [""]
    return lines


def to_csv(records: list[RunRecord], path: str | Path) -> Path:
    """Write one row per (dataset, backbone, protocol, metric) with value, low and high.

    Example:
        >>> import vitlab
        >>> res = vitlab.evaluate("demo:fmnist-vit", "sample:digits?limit=200", protocols="knn", n_resamples=20,
        ...                       progress=False)
        >>> to_csv([res.record], "results.csv")
        PosixPath('results.csv')
    """
    import io

    from vitlab._io import atomic_write

    fields = ["dataset", "backbone", "protocol", "metric", "value", "low", "high"]
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for row in metric_rows(records):
        w.writerow({k: ("" if row[k] is None else repr(row[k]) if isinstance(row[k], float) else row[k])
                    for k in fields})
    return atomic_write(Path(path), f.getvalue())
