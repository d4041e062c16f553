"""Benchmark: MIL head training time per fold and peak memory at slide scale; flat prediction memory.

For each head (mean, max, abmil, transmil, clam_sb) and each scale (100 bags x 1,000 instances and
20 bags x 20,000 instances, synthetic ``d``-dim features: the scale figures need no real slides),
a fresh subprocess builds the bags, then trains one fold (80% of the bags train, 20% validate,
``--epochs`` epochs, no early stopping) with :func:`vitlab.mil.train.fit_head`, after a warm-up fit
on two tiny bags so torch's one-time set-up is not counted. Reported per
(head, scale): seconds per epoch, seconds per fold at the default recipe's 200-epoch cap
(extrapolated: epochs x seconds per epoch), and the peak resident memory *added* by training
(the kernel's peak-RSS mark VmHWM, reset once the bags exist, minus the resident size then). Each
figure runs in a fresh process so that one head's allocations never count against another.

The prediction check runs :func:`vitlab.mil.train.predict` over 50, 100, 200 and 400 bags of
5,000 instances in one process and prints the resident-memory growth during each call; flat
means the peak does not grow with the number of bags (outputs are O(bags), features are read one
bag at a time).

Example:
    python bench/bench_mil.py --epochs 2 --dim 384 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HEADS = ("mean", "max", "abmil", "transmil", "clam_sb")
SCALES = ((100, 1000), (20, 20000))


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux); ``False`` where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mib() -> float:
    """VmHWM (peak resident set since the last reset) in MiB; ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_once(head: str, n_bags: int, n_inst: int, dim: int, epochs: int, threads: int) -> dict:
    import torch

    from vitlab.mil.train import fit_head

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    bags = [rng.standard_normal((n_inst, dim), dtype=np.float32) for _ in range(n_bags)]
    y = np.arange(n_bags) % 2
    for b, yi in zip(bags, y):
        if yi:
            b[0] += 3.0
    n_val = max(2, n_bags // 5)
    # warm-up on two tiny bags: torch's one-time set-up (kernels, optimiser, threads; ~160 MiB) is not the head's
    fit_head([b[:8] for b in bags[:2]], y[:2], None, None, head=head, n_classes=2, seed=0, epochs=1, min_epochs=1)
    _reset_peak()
    before = _rss_mib()
    t0 = time.perf_counter()
    fit_head(bags[n_val:], y[n_val:], bags[:n_val], y[:n_val], head=head, n_classes=2, seed=0, epochs=epochs,
             min_epochs=epochs, patience=epochs + 1)
    wall = time.perf_counter() - t0
    peak = _peak_mib()
    return {"head": head, "bags": n_bags, "instances": n_inst, "dim": dim, "epochs": epochs,
            "s_per_epoch": wall / epochs, "s_per_fold_200_epochs": 200 * wall / epochs,
            "added_peak_mib": max(0.0, peak - before), "features_mib": n_bags * n_inst * dim * 4 / 2**20}


def prediction_memory(dim: int, threads: int) -> list[dict]:
    import torch

    from vitlab.mil.heads import build_head
    from vitlab.mil.train import predict

    torch.set_num_threads(threads)
    head = build_head("abmil", dim, 2)
    rng = np.random.default_rng(1)
    out = []
    for n in (50, 100, 200, 400):
        # bags are generated lazily one at a time, as a reader of per-slide files would hand them over
        class Lazy:
            def __len__(self):
                return n

            def __getitem__(self, i):
                if not 0 <= i < n:
                    raise IndexError(i)
                return rng.standard_normal((5000, dim), dtype=np.float32)

        import psutil

        proc = psutil.Process()
        start = proc.memory_info().rss
        peak = [start]
        import threading

        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.005)

        t = threading.Thread(target=watch)
        t.start()
        proba, att = predict(head, Lazy())
        stop.set()
        t.join()
        out.append({"bags": n, "instances_per_bag": 5000, "rss_growth_mib": (peak[0] - start) / 2**20,
                    "outputs_mib": (proba.nbytes + sum(a.nbytes for a in att if a is not None)) / 2**20})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument("--scales", default="100x1000,20x20000", help="bags x instances, comma-separated")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: head,bags,instances in a fresh process
    a = ap.parse_args()
    if a.one:
        h, nb, ni = a.one.split(",")
        print(json.dumps(train_once(h, int(nb), int(ni), a.dim, a.epochs, a.threads)))
        return
    import torch

    print(f"# bench_mil  {time.strftime('%Y-%m-%d')}  {platform.processor() or platform.machine()}  "
          f"cpus={os.cpu_count()} threads={a.threads} torch {torch.__version__}  dim={a.dim} epochs={a.epochs}")
    print("| head | bags x instances | s / epoch | s / fold (200 epochs) | added peak MiB | features MiB |")
    print("|---|---|---|---|---|---|")
    for nb, ni in [tuple(int(v) for v in sc.split("x")) for sc in a.scales.split(",")]:
        for h in a.heads.split(","):
            r = subprocess.run([sys.executable, __file__, "--one", f"{h},{nb},{ni}", "--dim", str(a.dim),
                                "--epochs", str(a.epochs), "--threads", str(a.threads)],
                               capture_output=True, text=True)
            if r.returncode != 0:  # e.g. killed by the kernel's OOM killer (-9): say so, keep going
                why = f"killed by signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}"
                print(f"| {h} | {nb} x {ni:,} | failed: {why} | | | |", flush=True)
                continue
            d = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"| {h} | {nb} x {ni:,} | {d['s_per_epoch']:.2f} | {d['s_per_fold_200_epochs']:.0f} | "
                  f"{d['added_peak_mib']:.0f} | {d['features_mib']:.0f} |", flush=True)
    print("\nprediction memory (abmil, bags of 5,000 instances, generated one at a time):")
    print("| bags | RSS growth during predict MiB | outputs MiB |")
    print("|---|---|---|")
    for d in prediction_memory(a.dim, a.threads):
        print(f"| {d['bags']} | {d['rss_growth_mib']:.1f} | {d['outputs_mib']:.2f} |")


if __name__ == "__main__":
    main()
