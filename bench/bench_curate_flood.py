"""The flooding case of issue 20 §1, rebuilt from bundled data, run through the CLI: what ``vitlab curate`` keeps.

The folder (:func:`tests.integration.curate_folders.build_flood`): 300 distinct 112-px images (280 Fashion-MNIST
sample items upscaled, 20 textured tiles of scikit-learn's china.jpg / flower.jpg) and 20 near-copies of
some of them (shift 1-2 px, brightness x0.9/x1.1, JPEG q85). For each setting the script runs
``python -m vitlab.cli curate --backbone demo:fmnist-vit --data folder:DIR --json ...`` in a subprocess
and reports: the threshold and the fraction of random pairs above it, the recall per edit, items kept and
removed, copies found by the perceptual and semantic steps, distinct originals flagged, and distinct
images lost (an image whose every copy was removed).

Example:
    python bench/bench_curate_flood.py --out /tmp/flood            # default, --edits jpeg, --threshold 0.77
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {"auto": ["--threshold", "auto"], "auto --edits jpeg": ["--threshold", "auto", "--edits", "jpeg"],
            "fixed 0.77": ["--threshold", "0.77"]}


def summarise(rec: dict, copies: list[tuple[str, str, str]]) -> dict:
    d = rec["details"]
    cal = d.get("calibration", {})
    want = {tuple(sorted(c[:2])) for c in copies}
    perc = {tuple(sorted((p["a"], p["b"]))) for p in d["perceptual"]["pairs"]}
    sem = d["semantic"]
    gpairs, removed = set(), set()
    for g in sem.get("groups", []):
        m = g["members"]
        gpairs |= {tuple(sorted((a, b))) for a in m for b in m if a < b}
        removed |= set(m) - {g["keep"]}
    copy_of = {a: b for a, b, _ in copies}
    originals_flagged = [m for m in removed if not m.startswith("zz_")]
    lost = [m for m in originals_flagged if m not in copy_of or copy_of[m] in removed]
    n = d["data"]["n"]
    return {"threshold": round(rec["config"]["threshold_used"], 4), "fpr": cal.get("fpr"),
            "recall_by_edit": cal.get("recall_by_edit"), "separable": cal.get("separable"),
            "kept": d["kept"]["n"], "removed": n - d["kept"]["n"], "n": n,
            "copies_found_perceptual": len(want & perc), "false_perceptual_pairs": len(perc - want),
            "copies_found_semantic": len(want & gpairs), "semantic_pairs_not_copies": len(gpairs - want),
            "distinct_originals_flagged": len(originals_flagged), "distinct_images_lost": len(lost)}


def main() -> None:
    from tests.integration.curate_folders import build_flood

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="/tmp/vitlab-flood")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS))
    args = p.parse_args()
    out = Path(args.out)
    imgs = out / "imgs"
    if not imgs.exists():
        names, copies = build_flood(imgs)
        (out / "copies.json").write_text(json.dumps(copies))
    copies = [tuple(c) for c in json.loads((out / "copies.json").read_text())]
    cache = args.cache_dir or str(out / "cache")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    print("| setting | threshold | random pairs above | recall by edit | kept / 320 | removed | copies found "
          "(perceptual / semantic) | distinct originals flagged | distinct images lost |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for name in args.settings:
        cmd = [sys.executable, "-m", "vitlab.cli", "curate", "--backbone", "demo:fmnist-vit", "--data",
               f"folder:{imgs}", "--dedup", "--json", "-q", "--cache-dir", cache, *SETTINGS[name]]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(f"{name}: exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        s = summarise(json.loads(proc.stdout), copies)
        print(json.dumps({"setting": name, **s}), file=sys.stderr)
        fpr = "–" if s["fpr"] is None else f"{s['fpr']:.4f}"
        rec = "–" if not s["recall_by_edit"] else ", ".join(f"{k} {v:.2f}" for k, v in s["recall_by_edit"].items())
        print(f"| {name} | {s['threshold']} | {fpr} | {rec} | {s['kept']} | {s['removed']} | "
              f"{s['copies_found_perceptual']} / {s['copies_found_semantic']} | {s['distinct_originals_flagged']} | "
              f"{s['distinct_images_lost']} |")


if __name__ == "__main__":
    main()
