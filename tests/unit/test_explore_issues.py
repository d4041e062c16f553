"""The explorer's label-issue adapter (vitlab.exploration.issues): checks before any work, and the page's columns.

The real cross-fitting lives in vitlab.curation.label_issues; its test here runs only where that module exists.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from vitlab.errors import ConfigError, DataError
from vitlab.exploration import issues


def _result(n=4, **over):
    base = dict(given=np.array([0, 1, 1, 0][:n]), suggested=np.array([0, 0, 1, 1][:n]),
                self_confidence=np.array([0.95, 0.1, 0.8, 0.3][:n]), is_issue=np.array([False, True, False, True][:n]),
                rank=np.array([-1, 0, -1, 1][:n]))
    base.update(over)
    return SimpleNamespace(**base)


def test_columns_score_is_one_minus_self_confidence():
    cols = issues.issue_columns(_result(), 4)
    np.testing.assert_allclose(cols["score"], [0.05, 0.9, 0.2, 0.7])
    assert cols["is_issue"].dtype == bool and cols["rank"].tolist() == [-1, 0, -1, 1]
    assert cols["suggested"].tolist() == [0, 0, 1, 1] and cols["given"].tolist() == [0, 1, 1, 0]


def test_columns_refuse_a_result_that_does_not_fit():
    with pytest.raises(DataError, match=r"'rank' has shape \(3,\), not one value per item \(4\)"):
        issues.issue_columns(_result(rank=np.array([0, 1, 2])), 4)
    bad = _result()
    del bad.suggested
    with pytest.raises(DataError, match="the label-issue result has no 'suggested'"):
        issues.issue_columns(bad, 4)


def test_no_labels_is_refused_first():
    with pytest.raises(DataError, match="folder:x has no labels, and --label-issues looks for wrong labels"):
        issues.check_label_issues(None, what="folder:x")


def test_missing_module_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(issues, "label_issues_module", lambda: None)
    with pytest.raises(ConfigError, match=r"--label-issues needs vitlab\.curation\.label_issues\.find_label_issues"):
        issues.check_label_issues(np.array([0, 1]), what="sample:x")


def test_the_modules_own_checks_run_before_any_work(monkeypatch):
    seen = {}

    def check(y, **kw):
        seen.update(kw, y=y)
        raise DataError("class 1 has 1 item(s), fewer than --folds 5")

    monkeypatch.setattr(issues, "label_issues_module",
                        lambda: SimpleNamespace(find_label_issues=None, check_label_issue_inputs=check))
    with pytest.raises(DataError, match="fewer than --folds 5"):
        issues.check_label_issues(np.array([0, 0, 1]), what="sample:x", folds=5, classes=["a", "b"])
    assert seen["folds"] == 5 and seen["where"] == "sample:x" and seen["classes"] == ["a", "b"]


def test_adapter_calls_find_label_issues_and_checks_its_rows(monkeypatch):
    got = {}

    def find(X, y, **kw):
        got.update(kw)
        return _result()

    monkeypatch.setattr(issues, "label_issues_module", lambda: SimpleNamespace(find_label_issues=find))
    y = np.array([0, 1, 1, 0])
    cols, summary = issues.label_issue_columns(np.zeros((4, 2)), y, folds=3, seed=2)
    assert got == {"groups": None, "folds": 3, "seed": 2, "method": "linear"}
    assert summary["n_issues"] == 2 and summary["fraction"] == 0.5 and cols["score"].shape == (4,)
    with pytest.raises(DataError, match="given labels differ"):
        issues.label_issue_columns(np.zeros((4, 2)), np.array([1, 1, 1, 0]))


def test_real_label_issues_find_planted_flips():
    """Only where vitlab.curation.label_issues exists (and cleanlab is installed)."""
    if issues.label_issues_module() is None:
        pytest.skip("vitlab.curation.label_issues is not in this build yet")
    pytest.importorskip("cleanlab")
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (60, 4)) + [6, 0, 0, 0], rng.normal(0, 1, (60, 4)) + [0, 6, 0, 0]])
    y = np.repeat([0, 1], 60)
    y[[5, 70]] = 1 - y[[5, 70]]
    issues.check_label_issues(y, what="blobs", folds=3)
    cols, summary = issues.label_issue_columns(X, y, folds=3, seed=0, method="knn")
    assert {5, 70} <= set(np.flatnonzero(cols["is_issue"]).tolist())
    assert cols["score"][[5, 70]].min() > np.median(cols["score"])
    assert summary["n_issues"] == int(cols["is_issue"].sum())
