"""The offline demonstrations of ``vitlab pretrain`` / ``vitlab distill`` (issue 22 §4): run them and print the
measured figures as Markdown (never run as a test).

(a) ``pretrain``: continue DINO pretraining of ``demo:fmnist-vit`` on ``sample:digits`` (images only), monitored
    with the digits labels; the verdict: kNN and linear top-1 of adapted vs base on ``vitlab eval --seed 0``'s
    test split, paired bootstrap and McNemar.
(b) ``distill``: distil ``demo:fmnist-vit`` into a random-init student of its own architecture and into a smaller
    one (3 blocks, C = 64), on unlabelled Fashion-MNIST training images (IDX files of Debian's
    ``dataset-fashion-mnist``), monitored on ``sample:fashion-mnist`` (2,000 Fashion-MNIST *test* images): the
    student against the teacher and against its random start, and its speed-up (``vitlab bench``'s timing code).

Usage:
    OMP_NUM_THREADS=1 python bench/bench_pretrain.py pretrain runs/bench_pretrain --epochs 5
    OMP_NUM_THREADS=1 python bench/bench_pretrain.py distill runs/bench_pretrain --max-steps 300
    python bench/bench_pretrain.py show runs/bench_pretrain      # the tables of records already written

Accuracies do not depend on the machine's load; wall times on a shared machine do.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FMNIST = "idx:/usr/share/datasets/fashion-mnist?split=train"


def _ci(m: dict | None) -> str:
    if not m:
        return "–"
    lo, hi = m.get("low"), m.get("high")
    return f"{m['value']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")


def _p(p: float | None) -> str:
    return "–" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def show(records: list[dict]) -> None:
    """Markdown tables of pretrain / distill records."""
    for r in records:
        c, d, m = r["config"], r["details"], r["metrics"]
        who = c.get("backbone") or f"{', '.join(c['teachers'])} -> {c['student']} {c.get('student_kwargs') or ''}"
        print(f"\n### {r['kind']}: {who} on {c['data']} (monitor {c['monitor']})\n")
        st = d["steps"]
        print(f"steps {st['done']} of {st['total']} (head warm-up {st['head_warmup']}), lr {c['resolved']['lr']}, "
              f"layer decay {c['resolved']['layer_decay']}, artefact: {d['selected']} (step {d['selected_step']}), "
              f"train {r['timings']['train_s']:.0f} s ({r['timings']['images_per_s']:.1f} images/s)"
              + (f"; STOPPED: {d['stop']['message']}" if d.get("stop") else ""))
        print("\n| protocol | model | test top-1 [95% CI] | Δ top-1 vs it [95% CI] | p bootstrap (Holm) | "
              "p McNemar (Holm) |\n|---|---|---|---|---|---|")
        for proto, rows in d.get("verdict", {}).items():
            a = rows[0]["a"]
            print(f"| {proto} | {a} | {_ci(m[a][proto]['top1'])} | – | – | – |")
            for p in rows:
                print(f"| | vs {p['b']} | {_ci(m[p['b']][proto]['top1'])} | {p['diff']:+.3f} [{p['low']:+.3f}, "
                      f"{p['high']:+.3f}] | {_p(p.get('p_bootstrap_holm'))} | {_p(p.get('p_mcnemar_holm'))} |")
        print("\nmonitored kNN top-1 (validation part) by step: " + ", ".join(
            f"{h['step']}: {_ci(h['metrics']['knn']['top1'])}" for h in d.get("monitor_curve", [])))
        print("feature health (std of normalised / effective rank / teacher entropy): " + ", ".join(
            f"{h['step']}: {h['health']['normalized_std']:.3f} / {h['health']['effective_rank']:.1f} / "
            + ("–" if h.get("teacher_entropy") is None else f"{h['teacher_entropy']:.2f}")
            for h in d.get("monitor_curve", [])))
        for label, s in d.get("speedup", {}).items():
            sp = s["speedup"]
            print(f"\nspeed-up over {label}: {sp['value']:.2f}x (range {sp['low']:.2f}-{sp['high']:.2f} over paired "
                  f"repeats; {s['teacher']['images_per_s']:.0f} vs {s['student']['images_per_s']:.0f} images/s, "
                  f"batch {s['batch_size']}; params {s['teacher']['params']:,} vs {s['student']['params']:,}, "
                  f"FLOPs/image {s['teacher']['flops']:,} vs {s['student']['flops']:,})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["pretrain", "distill", "show"])
    ap.add_argument("out", nargs="?", default="runs/bench_pretrain")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--cache-dir", default=None)
    a = ap.parse_args()
    if a.what == "show":
        recs = [json.loads(p.read_text()) for p in sorted(Path(a.out).glob("*.json"))]
        show([r for r in recs if r.get("kind") in ("pretrain", "distill")])
        return
    import vitlab

    if a.what == "pretrain":
        res = vitlab.pretrain("demo:fmnist-vit", "sample:digits", monitor="sample:digits", method="dino",
                              epochs=a.epochs, out=a.out, cache_dir=a.cache_dir)
        show([res.record.to_dict()])
        return
    for kw in ({}, {"student_kwargs": {"depth": 3, "embed_dim": 64, "num_heads": 2}}):
        res = vitlab.distill("demo:fmnist-vit", "random:demo:fmnist-vit", FMNIST, monitor="sample:fashion-mnist",
                             max_steps=a.max_steps, out=a.out, cache_dir=a.cache_dir, **kw)
        show([res.record.to_dict()])


if __name__ == "__main__":
    main()
