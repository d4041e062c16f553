"""Shared pieces of the HTML report: the section registries, :class:`RenderContext` and small HTML helpers.

Every report module imports from here and nothing here imports a section module, so the
page (:mod:`vitlab.report.html`) and its sections (:mod:`~vitlab.report.gen_section`,
:mod:`~vitlab.report.perf_section`, :mod:`~vitlab.report.task_sections`) form no import
circle: ``base`` ← sections ← ``html``.

Two registries:

* :data:`SECTIONS`: ``record.kind`` → ``(heading, fn(records, ctx) -> html)``, one page section
  per kind (:func:`register_section`);
* :data:`TASK_SECTIONS`: a protocol's task (``details[protocol]["task"]``) → ``fn(protocol, record,
  ctx) -> html``, a block inside each eval run's details (:func:`register_task_section`).

Example:
    >>> @register_section("my-kind", "My runs")
    ... def _mine(records, ctx):
    ...     return "<p>" + e(str(len(records))) + " runs</p>"
    >>> SECTIONS["my-kind"][0]
    'My runs'
    >>> _ = SECTIONS.pop("my-kind")  # unregister
    >>> "<th>a&lt;b</th>" in _table(["a<b"], [[_td("x&y")]]), _td("x&y")
    (True, '<td>x&amp;y</td>')
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vitlab.record import RunRecord
from vitlab.report.figures import thumbnail_uri

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["e", "SECTIONS", "SectionRenderer", "register_section", "TASK_SECTIONS", "TaskRenderer",
           "register_task_section", "task_of", "RenderContext", "image_note"]

e = html.escape

SectionRenderer = Callable[[list[RunRecord], "RenderContext"], str]
TaskRenderer = Callable[[str, RunRecord, "RenderContext"], str]
SECTIONS: dict[str, tuple[str, SectionRenderer]] = {}
TASK_SECTIONS: dict[str, TaskRenderer] = {}


def register_section(kind: str, heading: str) -> Callable[[SectionRenderer], SectionRenderer]:
    """Register ``fn(records_of_that_kind, ctx) -> html`` as the section for ``record.kind == kind``.

    Example:
        >>> @register_section("my-kind", "My runs")
        ... def _mine(records, ctx):
        ...     return "<p>" + e(str(len(records))) + " runs</p>"
        >>> _ = SECTIONS.pop("my-kind")  # unregister
    """
    def deco(fn: SectionRenderer) -> SectionRenderer:
        SECTIONS[kind] = (heading, fn)
        return fn
    return deco


def register_task_section(task: str) -> Callable[[TaskRenderer], TaskRenderer]:
    """Register ``fn(protocol, record, ctx) -> html``: the block an eval run shows for a protocol of ``task``.

    Example:
        >>> @register_task_section("my-task")
        ... def _block(proto, record, ctx):
        ...     return "<h3>" + e(proto) + "</h3>"
        >>> TASK_SECTIONS["my-task"]("p<1>", None, None)
        '<h3>p&lt;1&gt;</h3>'
        >>> _ = TASK_SECTIONS.pop("my-task")
    """
    def deco(fn: TaskRenderer) -> TaskRenderer:
        TASK_SECTIONS[task] = fn
        return fn
    return deco


def task_of(record: RunRecord, proto: str) -> str:
    """The task of ``proto`` in an eval record: ``details[proto]["task"]``, else the protocol config's, else
    ``"classification"`` (records written before protocols declared a task).

    Example:
        >>> task_of(RunRecord("eval", {}, {}, details={"retrieval": {"task": "retrieval"}}), "retrieval")
        'retrieval'
        >>> task_of(RunRecord("eval", {}, {}), "knn")
        'classification'
    """
    d = record.details.get(proto)
    if isinstance(d, dict) and isinstance(d.get("task"), str):
        return d["task"]
    pc = (record.config.get("protocol_config") or {}).get(proto)
    if isinstance(pc, dict) and isinstance(pc.get("task"), str):
        return pc["task"]
    return "classification"


@dataclass
class RenderContext:
    """Shared state while rendering: options and opened data sources (``uri → (source, id index, error)``).

    Example:
        >>> ctx = RenderContext([], load_images=False)
        >>> ctx.thumb_size
        84
    """

    records: list[RunRecord]
    load_images: bool = True
    thumb_size: int = 84
    _sources: dict[str, tuple[Any, dict[str, int], str | None]] = field(default_factory=dict)
    _fingerprints: dict[str, str | None] = field(default_factory=dict)

    def source(self, uri: str) -> tuple[Any, dict[str, int], str | None]:
        """``(source, {id: index}, error)`` for the data source at ``uri`` (opened once)."""
        if uri not in self._sources:
            from vitlab.data import load_source

            try:
                src = load_source(uri)
                self._sources[uri] = (src, {str(i): k for k, i in enumerate(src.ids)}, None)
            except Exception as err:  # noqa: BLE001 - any failure becomes a note in the report
                self._sources[uri] = (None, {}, f"{type(err).__name__}: {err}")
        return self._sources[uri]

    def fingerprint(self, uri: str) -> str | None:
        """The current fingerprint of the source at ``uri`` (``None`` if it cannot be opened or hashed)."""
        if uri not in self._fingerprints:
            src = self.source(uri)[0]
            try:
                self._fingerprints[uri] = None if src is None else str(src.fingerprint)
            except Exception:  # noqa: BLE001
                self._fingerprints[uri] = None
        return self._fingerprints[uri]

    def pil_image(self, uri: str, sample_id: str) -> "Image.Image | None":
        """The image ``sample_id`` of the source at ``uri`` as PIL, or ``None`` when it cannot be loaded."""
        src, index, _ = self.source(uri)
        if src is None or sample_id not in index:
            return None
        try:
            return src.load_image(index[sample_id])
        except Exception:  # noqa: BLE001 - one unreadable image must not sink the report
            return None

    def image(self, uri: str, sample_id: str, size: int | None = None) -> str | None:
        """A thumbnail ``data:`` URI for ``sample_id`` (longest side ``size``, default :attr:`thumb_size`),
        or ``None`` when it cannot be loaded."""
        img = self.pil_image(uri, sample_id)
        if img is None:
            return None
        try:
            return thumbnail_uri(img, size or self.thumb_size)
        except Exception:  # noqa: BLE001
            return None


def image_note(ctx: RenderContext, uri: str, fingerprint: str | None = None, what: str = "ids and labels") -> \
        tuple[bool, str]:
    """``(show_images, note_html)`` for images re-opened from the data source at ``uri``.

    Images are not shown with ``load_images=False`` or when the source cannot be opened (the note says
    why); a source whose fingerprint changed since the run is shown with a warning.

    Example:
        >>> image_note(RenderContext([], load_images=False), "sample:x")[0]
        False
    """
    if not ctx.load_images:
        return False, f'<p class="note">Images not embedded (<code>load_images=False</code>); {e(what)} only.</p>'
    err = ctx.source(uri)[2]
    if err is not None:
        return False, (f'<p class="note">Images not shown: the data source <code>{e(uri)}</code> could not be opened '
                       f"({e(err)}). It may have moved; the {e(what)} below come from the record.</p>")
    if fingerprint and ctx.fingerprint(uri) not in (None, fingerprint):
        return True, (f'<p class="note">The data at <code>{e(uri)}</code> has changed since this run (fingerprint '
                      "differs): the images shown may not be the ones that were evaluated.</p>")
    return True, ""


# ---------------------------------------------------------------- small HTML helpers
def _table(head: list[str], rows: list[list[str]], caption: str = "") -> str:
    """``rows`` hold pre-rendered ``<td>`` cells (escape user text with :func:`_td`); ``head`` is escaped."""
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    cap = f"<caption>{caption}</caption>" if caption else ""
    return f'<div class="scroll"><table>{cap}<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def _td(text: Any) -> str:
    return f"<td>{e(str(text))}</td>"


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v:.3g}" if isinstance(v, float) else f"{k} = {v}" for k, v in d.items())


def _label(classes: list[str], i: Any) -> str:
    return str(classes[i]) if isinstance(i, int) and 0 <= i < len(classes) else str(i)


def data_fingerprint(record: RunRecord) -> str | None:
    """The data fingerprint recorded by the run (``None`` when absent).

    Example:
        >>> data_fingerprint(RunRecord("eval", {}, {}, fingerprints={"data": {"fingerprint": "ab12"}}))
        'ab12'
    """
    fp = record.fingerprints.get("data")
    return fp.get("fingerprint") if isinstance(fp, dict) else None
