"""The report-section contract: every section of :data:`vitlab.report.base.SECTIONS` (one per record kind) and
every task block of :data:`~vitlab.report.base.TASK_SECTIONS` renders a minimal record of its kind, and a user
string holding ``<script>`` comes out escaped (shown, never executed); the whole page holds no script.

Each kind needs a minimal config in ``MINIMAL`` (the fields its section shows, carrying the hostile string): a
registered kind without one fails :func:`test_every_section_has_a_minimal_record`.
"""

from __future__ import annotations

import pytest

from vitlab.record import RunRecord
from vitlab.report.base import SECTIONS, TASK_SECTIONS, RenderContext
from vitlab.report.html import render_html

EVIL = "<script>alert(1)</script>"
_NAMES = {"backbone": EVIL, "backbones": [EVIL], "source": EVIL, "data": EVIL, "datasets": [EVIL]}
MINIMAL = {kind: _NAMES for kind in ("bench", "compare", "curate", "distill", "eval", "explore", "inspect",
                                     "pretrain", "robust", "tradeoff", "tune")}
MINIMAL["gen-eval"] = {"sets": {"real": EVIL, "fake": EVIL}, "encoder": {"encoder": EVIL, "backbone": EVIL}}


def test_every_section_has_a_minimal_record():
    missing = sorted(set(SECTIONS) - set(MINIMAL))
    assert not missing, (f"report section(s) for {missing} have no minimal record in MINIMAL "
                         "(tests/contracts/test_report_section_contract.py)")


@pytest.mark.parametrize("kind", sorted(SECTIONS))
def test_a_minimal_record_renders_with_user_strings_escaped(kind, tmp_path):
    rec = RunRecord(kind, dict(MINIMAL[kind]), {})
    heading, fn = SECTIONS[kind]
    out = fn([rec], RenderContext([rec], load_images=False))
    assert isinstance(out, str) and out
    assert "<script" not in out.lower() and "&lt;script&gt;" in out, kind
    page = render_html([rec], tmp_path / "r.html", load_images=False).read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page


@pytest.mark.parametrize("task", sorted(TASK_SECTIONS))
def test_a_task_block_escapes_the_protocol_name(task):
    rec = RunRecord("eval", dict(_NAMES), {EVIL: {}}, details={EVIL: {"task": task}})
    out = TASK_SECTIONS[task](EVIL, rec, RenderContext([rec], load_images=False))
    assert isinstance(out, str) and "<script" not in out.lower() and "&lt;script&gt;" in out
