"""Run every verb on the bundled samples and keep the numbers of its record, to show a refactor changed none.

Usage:
    python scripts/snapshot_records.py run before.json [--cache-dir DIR] [--only eval,mil]
    python scripts/snapshot_records.py diff before.json after.json [--tol 0]

``run`` calls each case through the CLI with ``--json`` (in a subprocess, so every case starts cold except
for the shared embedding cache) and stores the JSON document of each. ``diff`` flattens both documents to
``path -> value`` leaves and lists every numeric leaf that differs (and leaves present on one side only),
ignoring what changes from run to run by nature: timings, throughput, memory, dates, paths, versions, git.
Exit code 1 when a number differs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

B, F = "demo:fmnist-vit", "sample:fashion-mnist"
CASES: dict[str, list[str]] = {
    "eval": ["eval", "-b", B, "-d", F, "--protocol", "knn,linear,fewshot,retrieval"],
    "eval-seg": ["eval", "-b", B, "-d", "sample:fashion-mnist-mosaic", "--protocol", "seg-linear,seg-knn"],
    "eval-leak": ["eval", "-b", B, "-d", F, "--protocol", "knn", "--exclude-leaked"],
    "compare": ["compare", "-b", f"{B},pixels", "-d", F, "--protocol", "knn,linear"],
    "mil": ["mil", "-b", B, "-d", "sample:fashion-mnist-bags", "--head", "abmil,mean", "--epochs", "20"],
    "compare-mil": ["compare", "-b", f"{B},pixels", "-d", "sample:fashion-mnist-bags", "--protocol", "mil-mean"],
    "tune": ["tune", "-b", B, "-d", "sample:digits", "--method", "linear,lora", "--max-steps", "40"],
    "curate": ["curate", "-b", B, "-d", F, "--threshold", "0.95"],
    "gen-eval": ["gen-eval", "--real", F, "--fake", "sample:digits", "--encoder", B, "--n-resamples", "20"],
    "tradeoff": ["tradeoff", "-b", B, "-d", F, "--protocol", "knn", "--accel", "none,tome:r=2", "--repeats", "1"],
    "inspect": ["inspect", "-b", B, "-d", F, "--artefacts", "--n-images", "4", "--n-resamples", "100"],
    "robust": ["robust", "-b", B, "-d", F, "--counts", "0,4", "--attack", "feature", "--eps", "0,2/255",
               "--n-train", "200", "--n-test", "50", "--n-attack", "16", "--n-resamples", "100"],
}
# leaves whose key names one of these vary from run to run by nature (or are provenance), not by the math
VOLATILE = re.compile(r"(^|_)(s|ms|seconds|time|timings|created|git|versions|path|paths|file|files|per_s|"
                      r"images_per_s|latency|memory|mb|peak|throughput|speed|speedup|rate|stats|device|"
                      r"embedding_stats|from_cache|embeddings_from_cache|artefact|run_id|cache|digest|"
                      r"resumed|elapsed|wall|report|plot|uri|png|svg|img|thumbnail|thumbnails)$|_s$|_ms$",
                      re.IGNORECASE)


def run(out: Path, cache_dir: Path, only: set[str] | None) -> None:
    docs = json.loads(out.read_text()) if out.exists() else {}
    for name, argv in CASES.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "vitlab.cli", *argv, "--json", "--cache-dir", str(cache_dir),
                               *([] if name in ("tune",) else [])], capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"{name}: exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            docs[name] = {"error": proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]}
        else:
            docs[name] = json.loads(proc.stdout)
            print(f"{name}: ok ({dt:.0f} s)", file=sys.stderr)
        out.write_text(json.dumps(docs, indent=1))


def leaves(obj, prefix: str = ""):
    """``path -> value`` for every scalar leaf, skipping volatile keys."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if VOLATILE.search(str(k)):
                continue
            yield from leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def diff(a: Path, b: Path, tol: float) -> int:
    A, Bd = json.loads(a.read_text()), json.loads(b.read_text())
    bad = 0
    for case in sorted(set(A) | set(Bd)):
        la, lb = dict(leaves(A.get(case, {}))), dict(leaves(Bd.get(case, {})))
        rows = []
        for k in sorted(set(la) | set(lb)):
            va, vb = la.get(k, "<absent>"), lb.get(k, "<absent>")
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
                same = va == vb or (math.isfinite(va) and math.isfinite(vb) and abs(va - vb) <= tol * max(1.0, abs(va)))
                if not same:
                    rows.append(f"  {k}: {va} -> {vb}")
            elif va != vb and (isinstance(va, (int, float)) or isinstance(vb, (int, float))):
                rows.append(f"  {k}: {va} -> {vb}")
        n_num = sum(isinstance(v, (int, float)) for v in la.values())
        print(f"{case}: {n_num} numbers, {len(rows)} differ")
        for r in rows[:40]:
            print(r)
        if len(rows) > 40:
            print(f"  ... and {len(rows) - 40} more")
        bad += len(rows)
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--cache-dir", type=Path, default=None)
    r.add_argument("--only", default=None)
    d = sub.add_parser("diff")
    d.add_argument("a", type=Path)
    d.add_argument("b", type=Path)
    d.add_argument("--tol", type=float, default=0.0)
    args = ap.parse_args()
    if args.cmd == "run":
        cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="vitlab-snapshot-"))
        run(args.out, cache, set(args.only.split(",")) if args.only else None)
        return 0
    return diff(args.a, args.b, args.tol)


if __name__ == "__main__":
    raise SystemExit(main())
