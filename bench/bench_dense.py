"""Benchmark: dense probes (seg-linear, seg-linear-ms, seg-knn) on the mosaic sample: time, peak memory, mIoU.

Data: ``sample:fashion-mnist-mosaic`` (1,000 56x56 mosaics of Fashion-MNIST digits with per-pixel
masks). For each backbone (default ``demo:fmnist-vit`` and its seeded random-init copy
``random:demo:fmnist-vit``), in a fresh temporary cache:

1. embedding the patch-token view: ``vitlab.embed(backbone, data, view="tokens")`` (last layer)
   cold, then the identical call again (cached), with the cache entry's size;
2. each dense protocol through ``vitlab.evaluate(..., protocols=P)`` in its own subprocess (so the
   peak RSS, ``resource.getrusage`` high-water mark, is that run's own), all sharing the cache:
   from the run record's ``timings``, ``P_inputs_s`` (building the token view: a cache hit for the
   last layer, a cold embedding of the last four layers for seg-linear-ms, plus reading the masks)
   and ``P_s`` (the protocol itself: probe fit + prediction, or kNN label transfer); mIoU with its
   seeded bootstrap 95% CI (``--n-resamples``), and the chosen hyper-parameters.

``--protocols`` takes comma-separated protocol specs of one parameter each, e.g.
``seg-linear:loss=patch`` for the per-patch recipe (``seg-linear`` trains on sampled pixels,
DINOv2's per-pixel loss).

``pixels`` is tried too: it has no patch tokens (its one "token" is the whole image), so the dense
protocols refuse it; the message is printed.

Example:
    python bench/bench_dense.py
    python bench/bench_dense.py --backbones demo:fmnist-vit --protocols seg-knn --n-resamples 200   # quick

Prints a Markdown table (and each run's raw JSON with ``--json``). Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = "sample:fashion-mnist-mosaic"


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def worker_embed(backbone: str, cache: str, threads: int) -> dict:
    import torch

    import vitlab

    torch.set_num_threads(threads)
    bb = vitlab.load_backbone(backbone)
    rss0 = _maxrss_mib()
    out = {"backbone": backbone, "rss_loaded_mib": rss0}
    for what in ("cold", "cached"):
        t0 = time.perf_counter()
        emb = vitlab.embed(bb, DATA, cache_dir=cache, view="tokens", progress=False)
        out[f"{what}_s"] = time.perf_counter() - t0
        out[f"{what}_from_cache"] = bool(emb.from_cache)
    tok = emb.tokens()
    out.update({"tokens_shape": list(tok.shape), "grid": list(emb.grid), "entry_bytes": _dir_bytes(str(emb.path)),
                "forward_s": emb.stats.get("forward_seconds"), "peak_rss_mib": _maxrss_mib()})
    return out


def worker_eval(backbone: str, protocol: str, cache: str, threads: int, n_resamples: int) -> dict:
    import torch

    import vitlab

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        res = vitlab.evaluate(backbone, DATA, protocols=protocol, cache_dir=cache, n_resamples=n_resamples,
                              progress=False)
    except Exception as e:  # noqa: BLE001 -- pixels: report the refusal
        return {"backbone": backbone, "protocol": protocol, "error": f"{type(e).__name__}: {e}"}
    wall = time.perf_counter() - t0
    rec = res.record
    spec, protocol = protocol, protocol.split(":", 1)[0]  # one protocol per run: the record keys it by name
    m = rec.metrics[protocol]["miou"]
    return {"backbone": backbone, "protocol": spec, "wall_s": wall, "embed_s": rec.timings["embed_s"],
            "inputs_s": rec.timings[f"{protocol}_inputs_s"], "protocol_s": rec.timings[f"{protocol}_s"],
            "miou": m["value"], "low": m["low"], "high": m["high"],
            "mdice": rec.metrics[protocol].get("mdice", {}).get("value"),
            "pixel_accuracy": rec.metrics[protocol].get("pixel_accuracy", {}).get("value"),
            "hparams": rec.hparams[protocol], "n_train": rec.details["data"]["n_train"],
            "n_test": rec.details["data"]["n_test"],
            "n_train_samples": next((f"{rec.details[protocol][k]:,} {k.split('_')[-1]}" for k in
                                     ("n_train_pixels", "n_train_patches", "memory_bank_patches")
                                     if k in rec.details[protocol]), "?"),
            "peak_rss_mib": _maxrss_mib(), "load_avg": os.getloadavg()[0]}


def _sub(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True)
    if out.returncode:
        print(out.stderr, file=sys.stderr)
        raise SystemExit(f"worker {args} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="demo:fmnist-vit,random:demo:fmnist-vit")
    ap.add_argument("--protocols", default="seg-linear,seg-linear-ms,seg-knn")
    ap.add_argument("--n-resamples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--no-pixels", action="store_true", help="skip the pixels refusal check")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker-embed", nargs=2, metavar=("BACKBONE", "CACHE"), help=argparse.SUPPRESS)
    ap.add_argument("--worker-eval", nargs=3, metavar=("BACKBONE", "PROTOCOL", "CACHE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker_embed:
        print(json.dumps(worker_embed(*args.worker_embed, args.threads)))
        return
    if args.worker_eval:
        b, p, c = args.worker_eval
        print(json.dumps(worker_eval(b, p, c, args.threads, args.n_resamples)))
        return

    import torch

    print(f"# {platform.machine()} {os.cpu_count()} CPUs, {args.threads} torch threads, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average at start {os.getloadavg()[0]:.2f}", flush=True)
    common = ["--threads", str(args.threads), "--n-resamples", str(args.n_resamples)]
    embeds, evals = [], []
    for bb in args.backbones.split(","):
        cache = tempfile.mkdtemp(prefix="vitlab-bench-dense-")
        try:
            e = _sub(["--worker-embed", bb, cache, *common])
            embeds.append(e)
            if args.json:
                print(json.dumps(e), flush=True)
            for p in args.protocols.split(","):
                r = _sub(["--worker-eval", bb, p, cache, *common])
                evals.append(r)
                print(json.dumps(r) if args.json else f"# {bb} {p}: {r.get('protocol_s', r.get('error'))}",
                      flush=True)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    if not args.no_pixels:
        cache = tempfile.mkdtemp(prefix="vitlab-bench-dense-")
        try:
            r = _sub(["--worker-eval", "pixels", args.protocols.split(",")[0], cache, *common])
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        print(f"# pixels: {r.get('error', r)}")

    print("\n| backbone | tokens view | cache entry | embed tokens cold s | cached s | cached / cold | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for e in embeds:
        print(f"| {e['backbone']} | {e['tokens_shape']} (grid {e['grid'][0]}×{e['grid'][1]}) "
              f"| {e['entry_bytes'] / 2**20:.1f} MiB | {e['cold_s']:.2f} | {e['cached_s']:.3f} "
              f"| {e['cached_s'] / e['cold_s']:.4f} | {e['peak_rss_mib']:.0f} MiB |")
    print("\n| backbone | protocol | mIoU | 95% CI | mDice | pixel acc. | chosen | train samples | inputs s "
          "| protocol s | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in evals:
        if "error" in r:
            print(f"| {r['backbone']} | {r['protocol']} | {r['error']} |||||||||")
            continue
        hp = {k: v for k, v in r["hparams"].items() if k != "layers"}
        print(f"| {r['backbone']} | {r['protocol']} | {r['miou']:.4f} | [{r['low']:.4f}, {r['high']:.4f}] "
              f"| {r['mdice']:.4f} | {r['pixel_accuracy']:.4f} | {hp} | {r['n_train_samples']} "
              f"| {r['inputs_s']:.2f} | {r['protocol_s']:.2f} | {r['peak_rss_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
