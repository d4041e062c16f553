"""The explorer's report section: what the record says, escaped; a static map; the link to the page."""

from __future__ import annotations

import html

from vitlab.record import RunRecord
from vitlab.report import render_html

BAD = "<script>alert(1)</script>"


def _record(page_path: str) -> RunRecord:
    return RunRecord("explore", {"backbone": f"demo{BAD}", "data": f"csv:{BAD}.csv", "layer": 5, "pool": "cls",
                                 "layout": {"method": "pca", "metric": "cosine", "seed": 0}, "k": 8, "seed": 0},
                     {"linear": {"top1": {"value": 0.8, "low": 0.7, "high": 0.9}}},
                     details={"data": {"classes": [f"cat{BAD}", "dog"]},
                              "layout": {"method": "pca", "fitted": 3, "transformed": 0, "library": "scikit-learn"},
                              "probe": {"protocol": "linear", "n_test": 1, "split_origin": "seeded"},
                              "map_sample": {"n": 3, "of": 3, "x": [0.0, 1.0, 2.0], "y": [1.0, 0.0, 1.0],
                                             "label": [0, 1, 0]},
                              "page": {"path": page_path, "bytes": 1234567, "n_points": 3, "n_thumbnails": 3}})


def test_section_escapes_and_links_the_page(tmp_path):
    page = tmp_path / 'e<b>&"x.html'  # a file name cannot hold "/"
    page.write_text("x")
    out = render_html([_record(str(page))], tmp_path / "r.html").read_text()
    assert "<h2 id=sec-explore>Embedding explorer</h2>" in out
    assert BAD not in out and html.escape(f"demo{BAD}") in out and '<b>&"x' not in out
    assert html.escape(page.resolve().as_uri()) in out and "1.2 MB" in out
    assert "3 of 3 points (seeded sample)" in out and 'alt="map of the embeddings" src="data:image/png;base64,' in out
    assert "top-1 0.800 [0.700, 0.900]" in out


def test_a_moved_page_is_said(tmp_path):
    out = render_html([_record(str(tmp_path / "gone.html"))], tmp_path / "r.html").read_text()
    assert "(not found where it was written)" in out
