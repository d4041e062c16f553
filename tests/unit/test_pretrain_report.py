"""The report renders pretrain and distill records: the verdict table, the curves and the artefact."""

import pytest

pytest.importorskip("lightly")

from vitlab.record import RunRecord  # noqa: E402
from vitlab.report import render_html  # noqa: E402


def _record(kind: str) -> RunRecord:
    top = lambda v: {"value": v, "low": v - 0.05, "high": v + 0.05, "n_resamples": 100, "n_skipped": 0,  # noqa: E731
                     "method": "percentile"}
    point = lambda s, v: {"step": s, "metrics": {"knn": {"top1": top(v)}}, "teacher_entropy": 3.0 if s else None,  # noqa: E731
                          "health": {"normalized_std": 0.08, "normalized_std_ideal": 0.1, "effective_rank": 30.0}}
    a, b = ("adapted", "base") if kind == "pretrain" else ("student", "start")
    row = {"a": a, "b": b, "metric": "top1", "diff": 0.04, "low": 0.01, "high": 0.07, "p_bootstrap_holm": 0.01,
           "p_mcnemar_holm": 0.02, "significant": True}
    details = {"verdict": {"knn": [row]}, "monitor_curve": [point(0, 0.8), point(10, 0.84)],
               "curve": [{"step": i, "loss": 5.0 - 0.1 * i} for i in range(1, 11)], "best": {"step": 10, "value": 0.84},
               "stop": {"reason": "collapse", "step": 10, "message": "stopped at step 10: the monitored <knn> fell"},
               "steps": {"total": 20, "done": 10, "head_warmup": 2}, "warmup_check": {"backbone_unchanged": True},
               "selected": "best monitored point", "selected_step": 10, "artefact": "runs/x/model.vitlab"}
    if kind == "distill":
        details["speedup"] = {"teacher": {"speedup": {"value": 2.5, "low": 2.0, "high": 3.0}, "batch_size": 32,
                                          "device": "cpu", "teacher": {"images_per_s": 100.0},
                                          "student": {"images_per_s": 250.0}}}
    config = {"backbone": "demo:fmnist-vit", "data": "sample:digits", "monitor": "sample:digits", "seed": 0,
              "method": {"name": "dino", "spec": "dino"}, "resolved": {"lr": 5e-5, "layer_decay": 0.9}}
    if kind == "distill":
        config = {**config, "backbone": None, "teachers": ["demo:fmnist-vit"], "student": "random:demo:fmnist-vit"}
    return RunRecord(kind, config, {a: {"knn": {"top1": top(0.84)}}, b: {"knn": {"top1": top(0.8)}}},
                     details=details)


def test_report_shows_the_verdict_curves_and_artefact(tmp_path):
    html = render_html([_record("pretrain"), _record("distill")], tmp_path / "r.html").read_text()
    assert "Continued pretraining" in html and "Distillation" in html
    assert "+0.040" in html and "[+0.010, +0.070]" in html and "0.840 [0.790, 0.890]" in html
    assert html.count("data:image/png;base64,") >= 2 and "Curves unavailable" not in html
    assert "stopped at step 10: the monitored &lt;knn&gt; fell" in html  # escaped
    assert "runs/x/model.vitlab" in html and "2.50x" in html
