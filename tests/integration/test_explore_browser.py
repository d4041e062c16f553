"""The explorer page in a real browser: headless Chromium driven by Playwright.

Runs where Playwright's Python package and a Chromium binary exist (Debian: ``apt-get install chromium``; or set
``VITLAB_CHROMIUM`` to a Chrome/Chromium executable); ``playwright install`` is never needed. Skipped, with the
reason, anywhere else.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import vitlab
from tests.integration.explore_helpers import QUOTE_ID, SCRIPT_ID, hostile_manifest
from vitlab.neighbors import search

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """A Chromium/Chrome executable: ``$VITLAB_CHROMIUM``, else the first of :data:`CANDIDATES` on ``PATH``."""
    env = os.environ.get("VITLAB_CHROMIUM")
    if env and Path(env).is_file():
        return env
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright)")
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium found: install one (Debian: apt-get install chromium) or set VITLAB_CHROMIUM")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        except Exception as err:  # noqa: BLE001 - a browser that cannot start here is an environment matter
            pytest.skip(f"Chromium at {exe} could not start: {str(err).splitlines()[0]}")
        yield b
        b.close()


class Page:
    """One loaded explorer page, with every JavaScript error, console error and dialog it raised."""

    def __init__(self, browser, path: Path):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        self.pg = self.ctx.new_page()
        self.pg.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.pg.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.pg.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.pg.goto(path.resolve().as_uri())
        self.pg.wait_for_selector("body[data-ready='1']", timeout=60_000)
        self.box = self.pg.locator("#map").bounding_box()

    def js(self, expr: str):
        return self.pg.evaluate(expr)

    def isolated_point(self, min_px: float = 2.0) -> int:
        """The point farthest from every other on screen (at least ``min_px``), so the mouse, placed on it, can only
        mean it (the page picks the nearest point). A dense UMAP of 2,000 items may have no point 10 px clear."""
        pos = np.asarray(self.js("Array.from({length: vitlabExplorer.n}, (_, i) => vitlabExplorer.screenPos(i))"))
        d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        inside = (pos[:, 0] > 20) & (pos[:, 1] > 20) & (pos[:, 0] < self.box["width"] - 280) & \
                 (pos[:, 1] < self.box["height"] - 220)
        clear = np.where(inside, d.min(1), -np.inf)
        best = int(np.argmax(clear))
        assert clear[best] > min_px, f"no point on the map is {min_px} px clear of the others"
        return best

    def at(self, i: int) -> tuple[float, float]:
        x, y = self.js(f"vitlabExplorer.screenPos({i})")
        return self.box["x"] + x, self.box["y"] + y


def _payload(path: Path) -> dict:
    import json

    return json.loads(path.read_text(encoding="utf-8").split('id="vitlab-data">')[1].split("</script>")[0])


def check_page(browser, path: Path, X: np.ndarray, ids: list[str], source, index: np.ndarray) -> Page:
    """The checks of issue 23 part 4 on one page; returns the open page for more."""
    from vitlab.report.explore_page import _thumb

    page = Page(browser, path)
    n, k = page.js("vitlabExplorer.n"), page.js("vitlabExplorer.k")
    assert n == len(ids) == len(X)
    assert page.js("vitlabExplorer.drawn") == n and page.pg.locator("#map").get_attribute("data-drawn") == str(n)
    i = page.isolated_point()
    page.pg.mouse.move(*page.at(i))
    tip = page.pg.locator("#tip")
    tip.wait_for(state="visible")
    assert tip.get_attribute("data-row") == str(i)
    assert ids[i] in tip.inner_text()
    if i in _payload(path)["thumbRows"]:
        assert tip.locator("img").get_attribute("src") == _thumb(source.load_image(int(index[i])), 64)
    page.pg.mouse.click(*page.at(i))
    rows = page.pg.locator("#neighbours li").evaluate_all("els => els.map(e => Number(e.dataset.row))")
    ref = search(X, X, k, metric="cosine", exclude_self=True).indices[i]
    assert rows == ref.tolist()
    shown = page.pg.locator("#neighbours .nbid").all_inner_texts()
    assert shown == [ids[j] for j in ref]
    assert not page.errors, page.errors
    return page


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    manifest = hostile_manifest(root)
    cache = root / "cache"
    res = vitlab.explore("demo:fmnist-vit", f"csv:{manifest}", page=root / "explore.html", layout="pca", k=6,
                         n_resamples=100, cache_dir=cache, progress=False, num_workers=0)
    from vitlab.report.explore_page import write_explore_page

    write_explore_page(res)
    X = np.array(vitlab.embed("demo:fmnist-vit", f"csv:{manifest}", cache_dir=cache, progress=False,
                              num_workers=0).get(), np.float32)
    return res, X


def test_page_in_chromium_hover_click_escape_filter_export(browser, hostile, tmp_path):
    res, X = hostile
    d = res.data
    page = check_page(browser, res.page, X, d.ids, d.source, d.index)
    pg = page.pg
    # an id that is markup is shown as text and never run
    pg.fill("#find", SCRIPT_ID)
    pg.press("#find", "Enter")
    item = pg.locator("#item")
    assert SCRIPT_ID in item.inner_text()
    assert pg.evaluate("document.querySelectorAll('#item script, #tip script').length") == 0
    assert not page.dialogs and not page.errors
    pg.fill("#find", "no-such-id")
    pg.press("#find", "Enter")
    assert 'no item with id "no-such-id"' in pg.locator("#found").inner_text()
    # filter by class: hiding one class removes exactly its points
    pg.click("#fit")
    pg.evaluate("vitlabExplorer.redrawNow()")
    assert page.js("vitlabExplorer.drawn") == len(d)
    pg.locator('#classes input[value="2"]').uncheck()
    pg.evaluate("vitlabExplorer.redrawNow()")
    assert page.js("vitlabExplorer.drawn") == len(d) - int((d.labels == 2).sum())
    # select the visible points, export them: a csv: manifest vitlab reads back
    pg.click("#sel-visible")
    with pg.expect_download() as dl:
        pg.click("#export")
    out = tmp_path / "selection.csv"
    dl.value.save_as(out)
    with open(out, newline="") as fh:
        head = next(csv.reader(fh))
    assert head == ["path", "label", "split", "id"]
    back = vitlab.load_source(f"csv:{out}")
    keep = [i for i in range(len(d)) if d.labels[i] != 2]
    assert back.ids == [d.ids[i] for i in keep] and QUOTE_ID in back.ids and SCRIPT_ID in back.ids
    assert [back.classes[c] for c in back.labels] == [d.classes[d.labels[i]] for i in keep]
    assert not page.errors, page.errors
    page.ctx.close()


@pytest.mark.slow
def test_the_documented_command_passes_in_chromium(browser, tmp_path):
    """``vitlab explore --backbone demo:fmnist-vit --data sample:fashion-mnist --output explore.html`` (UMAP: slow)."""
    pytest.importorskip("umap", reason="umap-learn not installed (pip install 'vitlab[explore]')")
    from vitlab.cli import app

    page, cache = tmp_path / "explore.html", tmp_path / "cache"
    res = CliRunner().invoke(app, ["explore", "--backbone", "demo:fmnist-vit", "--data", "sample:fashion-mnist", "--output",
                                   str(page), "--cache-dir", str(cache), "--num-workers", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    emb = vitlab.embed("demo:fmnist-vit", "sample:fashion-mnist", cache_dir=cache, progress=False, num_workers=0)
    opened = check_page(browser, page, np.array(emb.get(), np.float32), list(emb.ids),
                        vitlab.load_source("sample:fashion-mnist"), np.asarray(emb.index))
    assert opened.js("vitlabExplorer.n") == 2000
    for mode in ("split", "pred", "correct", "label"):
        opened.js(f"vitlabExplorer.setColour('{mode}')")
        opened.js("vitlabExplorer.redrawNow()")
        assert opened.js("vitlabExplorer.drawn") == 2000
    assert not opened.errors, opened.errors
    opened.ctx.close()


def test_unlabelled_page_draws_every_point(browser, tmp_path):
    from vitlab.report.explore_page import write_explore_page

    m = hostile_manifest(tmp_path / "u", n_per_class=4, labelled=False)
    res = vitlab.explore("demo:fmnist-vit", f"csv:{m}", page=tmp_path / "u.html", layout="pca", k=3,
                         cache_dir=tmp_path / "c", progress=False, num_workers=0)
    write_explore_page(res)
    page = Page(browser, res.page)
    assert page.js("vitlabExplorer.drawn") == 12 and not page.errors, page.errors
    pg = page.pg
    pg.fill("#find", SCRIPT_ID)
    pg.press("#find", "Enter")
    assert SCRIPT_ID in pg.locator("#item").inner_text() and not page.dialogs
    assert pg.locator("#neighbours li").count() == 3 and not page.errors
    page.ctx.close()


def test_duplicate_and_issue_colours_draw_every_point(browser, hostile, tmp_path):
    import dataclasses

    from vitlab.report.explore_page import write_explore_page

    res, _ = hostile
    n = len(res.data)
    dup = np.full(n, -1)
    dup[[0, 1, 2]], dup[[7, 9]] = 0, 1
    score = np.linspace(0, 1, n)
    issues = {"score": score, "self_confidence": 1 - score, "suggested": np.zeros(n, int), "given": res.data.labels,
              "is_issue": score > 0.9, "rank": np.where(score > 0.9, np.arange(n)[::-1] - (n - 4), -1)}
    data = dataclasses.replace(res.data, dup=dup, dup_kinds=["exact", "semantic"], issues=issues)
    other = dataclasses.replace(res, data=data, page=tmp_path / "colours.html")
    write_explore_page(other)
    page = Page(browser, other.page)
    for mode, text in (("dup", "group 0 (exact) (3)"), ("issue", "4 flagged by cleanlab")):
        page.js(f"vitlabExplorer.setColour('{mode}')")
        page.js("vitlabExplorer.redrawNow()")
        assert page.js("vitlabExplorer.drawn") == n and text in page.pg.locator("#legend").inner_text()
    page.pg.mouse.click(*page.at(page.isolated_point()))
    assert "label issue" in page.pg.locator("#item").inner_text()
    assert not page.errors, page.errors
    page.ctx.close()
