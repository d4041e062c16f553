"""Start-up cost of a cache hit from the CLI, as a ratio to the ``import torch`` floor.

Runs, interleaved ``--repeats`` times in fresh processes: ``python -c "import torch"`` and
``vitlab embed --backbone demo:fmnist-vit --data sample:fashion-mnist`` on a warm cache, and
prints the median wall time of each and their ratio (target: at most 2x).

    python bench/bench_startup.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def _time(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    cache = tempfile.mkdtemp(prefix="vitlab-startup-")
    env = {**os.environ, "VITLAB_CACHE_DIR": cache}
    embed = [sys.executable, "-m", "vitlab.cli", "embed", "--backbone", "demo:fmnist-vit", "--data",
             "sample:fashion-mnist", "--quiet"]
    torch_only = [sys.executable, "-c", "import torch"]
    _time(embed, env)  # cold: compute, remember the demo's spec
    _time(embed, env)
    t_torch, t_hit = [], []
    for _ in range(args.repeats):
        t_torch.append(_time(torch_only, env))
        t_hit.append(_time(embed, env))
    mt, mh = statistics.median(t_torch), statistics.median(t_hit)
    print(f"# {platform.machine()} {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, {args.repeats} interleaved runs")
    print("| command | median s | min s | max s |")
    print("|---|---|---|---|")
    print(f"| python -c 'import torch' | {mt:.2f} | {min(t_torch):.2f} | {max(t_torch):.2f} |")
    print(f"| vitlab embed (cache hit) | {mh:.2f} | {min(t_hit):.2f} | {max(t_hit):.2f} |")
    print(f"ratio (cache hit / import torch): {mh / mt:.2f}")


if __name__ == "__main__":
    main()
