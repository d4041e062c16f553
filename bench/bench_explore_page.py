"""Benchmark: the explorer page's size and load time in headless Chromium at 1e4 and 1e5 points.

Synthetic but structured embeddings: ``--classes`` class centres in a 16-d latent space, each item its centre plus
noise, mapped to ``--dim`` (96, the demo ViT's width) by a fixed random linear map, float32, seeded. Thumbnails are
real: item ``i`` shows bundled Fashion-MNIST image ``i mod 2000`` (``sample:fashion-mnist``; the IDX files were not
on the machine), so thumbnail bytes are those of 28x28 grey images. For each size the script

* computes what :func:`vitlab.exploration.explore` computes for the page: the layout (``--layout``, default PCA: the
  page does not depend on the method), each item's 8 nearest neighbours (``vitlab.neighbors.search``, cosine),
  and a probe-like prediction column (random for 20% "test" items, so every colour mode has data);
* renders the page (:func:`vitlab.report.explore_page.render_explore_page`, default ``max_thumbs`` 10,000) and
  reports its size;
* opens it ``--repeats`` times in a fresh headless Chromium page (Playwright, ``--browser`` executable) and
  reports the median time from navigation start to the page's ready mark (JSON parse, base64 decode, grid,
  colours, first draw of every point: ``performance.now()`` at ready), and the median time of a full redraw
  (5 redraws per load, each forced to finish rasterising).

With ``--umap``, also the time of UMAP at that size under the default ``fit_sample`` (20,000 fitted, the rest
transformed; umap-learn's JIT compilation is warmed up first on 500 rows and not counted).

Example:
    python bench/bench_explore_page.py --sizes 10000 100000 --repeats 3 --browser /usr/bin/chromium
    python bench/bench_explore_page.py --sizes 2000 --repeats 1        # a quick version
    python bench/bench_explore_page.py --measure old.html new.html --repeats 5   # pages already written, interleaved

Prints one JSON line per size and a Markdown table. Timings on a shared machine are noisy: say so.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_data(n: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3.0, (classes, 16))
    y = rng.integers(0, classes, n)
    Z = centres[y] + rng.normal(0, 1.0, (n, 16))
    A = rng.normal(0, 1.0, (16, d)) / 4.0
    return (Z @ A + rng.normal(0, 0.05, (n, d))).astype(np.float32), y.astype(np.int64)


class CycledSample:
    """A stand-in data source: row ``i`` is bundled Fashion-MNIST image ``i mod 2000``."""

    def __init__(self) -> None:
        import vitlab

        self.src = vitlab.load_source("sample:fashion-mnist")

    def load_image(self, i: int):
        return self.src.load_image(int(i) % len(self.src))


def build(n: int, args: argparse.Namespace):
    from vitlab.exploration.layout import LayoutConfig, compute_layout
    from vitlab.exploration.run import ExploreData, ExploreResult
    from vitlab.neighbors import search
    from vitlab.record import start_record

    X, y = make_data(n, args.dim, args.classes, args.seed)
    t0 = time.perf_counter()
    lay = compute_layout(X, LayoutConfig(method=args.layout, seed=args.seed))
    layout_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    nn = search(X, X, 8, metric="cosine", exclude_self=True)
    search_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    split = np.where(rng.random(n) < 0.2, "test", "train")
    pred = np.where(split == "test", np.where(rng.random(n) < 0.85, y, rng.integers(0, args.classes, n)), -1)
    data = ExploreData(ids=[f"item-{i:06d}" for i in range(n)], index=np.arange(n), source=CycledSample(),
                       classes=[f"class {c}" for c in range(args.classes)], labels=y, split=split, xy=lay.xy,
                       nn_idx=nn.indices, nn_sim=nn.scores.astype(np.float32), pred=pred)
    rec = start_record("explore", {"backbone": "synthetic", "data": f"synthetic:{n}", "layer": 0, "pool": "cls",
                                   "layout": lay.config.params(), "k": 8, "seed": args.seed})
    rec.details = {"layout": {**lay.info, "params": lay.config.params()}}
    res = ExploreResult(rec, data, lay, max_thumbs=args.max_thumbs, thumb_size=64)
    return res, layout_s, search_s


#: Median of 5 full redraws, each forced to finish rasterising (``getImageData`` of one pixel flushes the canvas).
REDRAW = """(() => {
  const c = document.getElementById("map").getContext("2d"), t = [];
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    vitlabExplorer.redrawNow(); c.getImageData(0, 0, 1, 1); t.push(performance.now() - t0);
  }
  t.sort((a, b) => a - b); return t[2] / 1000;
})()"""


def load_times(path: Path, args: argparse.Namespace) -> tuple[list[float], list[float], int]:
    from playwright.sync_api import sync_playwright

    loads, draws, drawn = [], [], -1
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=args.browser, args=["--no-sandbox", "--disable-gpu"])
        for _ in range(args.repeats):
            ctx = b.new_context(viewport={"width": 1400, "height": 900})
            pg = ctx.new_page()
            errors = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.goto(path.resolve().as_uri(), timeout=300_000)
            pg.wait_for_selector("body[data-ready='1']", timeout=300_000)
            loads.append(pg.evaluate("performance.now()") / 1000.0)
            draws.append(pg.evaluate(REDRAW))
            drawn = pg.evaluate("vitlabExplorer.drawn")
            if errors:
                raise SystemExit(f"JavaScript errors: {errors}")
            ctx.close()
        b.close()
    return loads, draws, drawn


def umap_time(n: int, args: argparse.Namespace) -> dict:
    from vitlab.exploration.layout import LayoutConfig, compute_layout

    X, _ = make_data(n, args.dim, args.classes, args.seed)
    compute_layout(X[:500], LayoutConfig(method="umap", seed=0))  # JIT warm-up, not counted
    lay = compute_layout(X, LayoutConfig(method="umap", seed=args.seed))
    return {"umap_fit_s": lay.info["fit_s"], "umap_transform_s": lay.info["transform_s"],
            "umap_fitted": lay.info["fitted"], "umap_transformed": lay.info["transformed"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=96)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--layout", default="pca")
    ap.add_argument("--max-thumbs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--browser", default=shutil.which("chromium") or shutil.which("google-chrome"))
    ap.add_argument("--umap", action="store_true", help="also time UMAP (fit_sample 20,000 + transform)")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the pages in")
    ap.add_argument("--measure", type=Path, nargs="+", default=None,
                    help="only load these pages (one repeat of each in turn, --repeats rounds)")
    args = ap.parse_args()
    if not args.browser:
        raise SystemExit("no Chromium: pass --browser /path/to/chromium")
    if args.measure:
        rounds = {str(p): ([], []) for p in args.measure}
        reps, args.repeats = args.repeats, 1
        for _ in range(reps):  # interleaved: each page once per round
            for p in args.measure:
                lo, dr, drawn = load_times(p, args)
                rounds[str(p)][0].extend(lo)
                rounds[str(p)][1].extend(dr)
        for p, (lo, dr) in rounds.items():
            print(json.dumps({"page": p, "mb": Path(p).stat().st_size / 1e6, "load_s_median": statistics.median(lo),
                              "load_s": lo, "redraw_s_median": statistics.median(dr), "redraw_s": dr}), flush=True)
        return
    from vitlab.report.explore_page import render_explore_page

    out_dir = args.keep or Path(tempfile.mkdtemp(prefix="explore-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        res, layout_s, search_s = build(n, args)
        html, info = render_explore_page(res)
        path = out_dir / f"explore-{n}.html"
        path.write_text(html, encoding="utf-8")
        loads, draws, drawn = load_times(path, args)
        row = {"n": n, "mb": info["bytes"] / 1e6, "thumbnails": info["n_thumbnails"], "render_s": info["render_s"],
               "layout_s": round(layout_s, 3), "neighbours_s": round(search_s, 3),
               "load_s_median": statistics.median(loads), "load_s": loads,
               "redraw_s_median": statistics.median(draws), "drawn": drawn,
               "machine": f"{platform.machine()} {platform.python_version()}"}
        if args.umap:
            row.update(umap_time(n, args))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| points | page MB | thumbnails | render s | load s (median) | full redraw s | drawn |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']:,} | {r['mb']:.1f} | {r['thumbnails']:,} | {r['render_s']:.1f} | {r['load_s_median']:.2f} | "
              f"{r['redraw_s_median']:.3f} | {r['drawn']:,} |")


if __name__ == "__main__":
    main()
