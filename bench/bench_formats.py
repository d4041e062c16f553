"""Benchmark (issue 13 parts 2, 3, 7): the wds: read rate, the Parquet export, and gen-stats memory.

1. ``wds``: N synthetic photos (JPEG, ``--size`` WxH) written as img2dataset-style shards and as a
   folder; header index rate (ustar walk vs stdlib tarfile, same index), source open time (first,
   and again with the remembered index), raw
   byte reads/s by offset, and read + decode images/s through ``WdsSource.load_image`` against
   ``FolderSource.load_image`` on the same files (ratio).
2. ``export``: a synthetic ``[n, d]`` float32 set in a cache-like memmap, exported with
   ``to_parquet`` (zstd, snappy, uncompressed) after one warm-up export: seconds, rows/s, MB on
   disk, Arrow's peak buffer memory, pyarrow read-back time.
3. ``stats``: reference statistics of an ``[n, d]`` float32 memmap, the previous path (whole
   matrix: float32 view, then ``gaussian_stats``' float64 copy and centred copy) against
   :func:`chunked_moments` (8,192-row chunks), each in a fresh process: seconds, peak heap
   (tracemalloc, which counts numpy buffers; memory-mapped file pages are not heap: the kernel
   can drop them) and the largest difference between the two results. (Peak RSS is no use here:
   importing vitlab loads torch, whose ~0.9 GB start-up peak hides both.)

Usage:
    python bench/bench_formats.py [--what wds export stats] [--n-images 2000] [--export-n 1000000]
                                  [--stats-n 200000] [--dim 768] [--tmp DIR]

Timings are wall-clock on whatever else the machine runs; the ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _photo(rng: np.random.Generator, w: int, h: int) -> bytes:
    from PIL import Image

    # smooth gradients + noise: compresses like a photo, not like white noise
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * rng.uniform(0.1, 0.5) + yy * rng.uniform(0.1, 0.5) + rng.uniform(0, 255)) % 256
                     for _ in range(3)], axis=-1)
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    b = io.BytesIO()
    Image.fromarray(img).save(b, format="JPEG", quality=90)
    return b.getvalue()


def bench_wds(tmp: Path, n: int, size: tuple[int, int], shards: int) -> dict:
    from vitlab.data.folder import FolderSource
    from vitlab.data.wds import WdsSource

    rng = np.random.default_rng(0)
    blobs = [_photo(rng, *size) for _ in range(min(n, 64))]  # 64 distinct photos, reused
    (tmp / "wds").mkdir()
    (tmp / "folder" / "c").mkdir(parents=True)
    per = -(-n // shards)
    for s in range(shards):
        with tarfile.open(tmp / "wds" / f"{s:05d}.tar", "w") as tf:
            for j in range(s * per, min(n, (s + 1) * per)):
                key, data = f"{j:09d}", blobs[j % len(blobs)]
                for ext, payload in (("jpg", data), ("json", json.dumps({"key": key, "label": j % 10}).encode()),
                                     ("cls", str(j % 10).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
                (tmp / "folder" / "c" / f"{key}.jpg").write_bytes(data)
    from vitlab.data.tar_index import _with_tarfile, scan_tar

    tars = sorted((tmp / "wds").glob("*.tar"))
    t0 = time.perf_counter()
    walked = [scan_tar(t) for t in tars]
    t_walk = time.perf_counter() - t0
    t0 = time.perf_counter()
    stdlib = []
    for t in tars:
        with open(t, "rb") as f:
            stdlib.append(_with_tarfile(t, f.fileno(), os.fstat(f.fileno()).st_size))
    t_tarfile = time.perf_counter() - t0
    assert walked == stdlib
    members = sum(len(w) for w in walked)
    os.environ["VITLAB_CACHE_DIR"] = str(tmp / "cache")  # the remembered shard indexes go here, not to ~/.cache
    t0 = time.perf_counter()
    src = WdsSource(str(tmp / "wds"))
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    WdsSource(str(tmp / "wds"))  # again: the remembered index, no header walk
    t_reopen = time.perf_counter() - t0
    t0 = time.perf_counter()
    nbytes = sum(len(src.read_bytes(i)) for i in range(len(src)))
    t_raw = time.perf_counter() - t0
    folder = FolderSource(tmp / "folder")
    order = np.argsort(folder.ids)  # same files in the same order
    res = {}
    for name, load in (("wds", lambda i: src.load_image(i)), ("folder", lambda i: folder.load_image(int(order[i])))):
        load(0)
        t0 = time.perf_counter()
        for i in range(len(src)):
            load(i)
        res[name] = len(src) / (time.perf_counter() - t0)
    return {"n": len(src), "shards": shards, "size": list(size), "members": members,
            "walk_members_per_s": members / t_walk, "tarfile_members_per_s": members / t_tarfile,
            "ratio_walk_over_tarfile": t_tarfile / t_walk, "index_s": t_index, "reopen_s": t_reopen,
            "reopen_rows_per_s": len(src) / t_reopen,
            "index_rows_per_s": len(src) / t_index, "raw_reads_per_s": len(src) / t_raw,
            "raw_MB_per_s": nbytes / t_raw / 1e6, "decode_img_per_s_wds": res["wds"],
            "decode_img_per_s_folder": res["folder"], "ratio_wds_over_folder": res["wds"] / res["folder"]}


def _synthetic_memmap(path: Path, n: int, d: int, seed: int = 0) -> np.ndarray:
    """Gaussian features with a per-dimension offset and scale (cheap to make: no d x d mixing)."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(seed)
    off = rng.normal(0, 3, d).astype(np.float32)
    scale = rng.uniform(0.2, 2.0, d).astype(np.float32)
    for s in range(0, n, 65_536):
        e = min(n, s + 65_536)
        mm[s:e] = rng.standard_normal((e - s, d), dtype=np.float32) * scale + off
    mm.flush()
    return np.load(path, mmap_mode="r")


def bench_export(tmp: Path, n: int, d: int) -> list[dict]:
    import pyarrow.parquet as pq

    from vitlab.store.embeddings import Embeddings
    from vitlab.store.export import to_parquet

    x = _synthetic_memmap(tmp / "L11.cls.npy", n, d)
    labels = (np.arange(n) % 1000).astype(np.int64)
    emb = Embeddings(digest="synthetic", path=tmp, key={"backbone": {"name": "synthetic"}, "source": {"n": n}},
                     layers=(11,), depth=12, arrays={"L11.cls": x}, index=np.arange(n),
                     ids=[f"{i:09d}" for i in range(n)], labels=labels, classes=[str(c) for c in range(1000)])
    import pyarrow as pa

    to_parquet(emb, tmp / "warm.parquet", progress=False)  # imports and codecs, and the memmap pages read once
    out = []
    for comp in ("zstd", "snappy", "none"):
        t0 = time.perf_counter()
        info = to_parquet(emb, tmp / f"emb-{comp}.parquet", compression=comp, progress=False)
        sec = time.perf_counter() - t0
        peak = pa.default_memory_pool().max_memory()  # Arrow's peak so far in this process: exports only
        out.append({"compression": comp, "rows": n, "dim": d, "seconds": sec, "rows_per_s": n / sec,
                    "MB": info["bytes"] / 1e6, "raw_MB": n * d * 4 / 1e6, "arrow_pool_peak_MB": peak / 1e6})
    for row in out:  # read back after every export, so the reads do not count in the peaks above
        target = tmp / f"emb-{row['compression']}.parquet"
        t0 = time.perf_counter()
        tab = pq.read_table(target, columns=["embedding"])
        back = tab["embedding"].combine_chunks().flatten().to_numpy().reshape(-1, d)
        row["pyarrow_read_s"] = time.perf_counter() - t0
        row["roundtrip_equal"] = bool(np.array_equal(back[:1000], x[:1000]) and np.array_equal(back[-1000:], x[-1000:]))
        del tab, back
        target.unlink()
    return out


_STATS_CHILD = r"""
import json, sys, time, tracemalloc
import numpy as np
sys.path.insert(0, sys.argv[3])
from vitlab.metrics._validate import check_features
from vitlab.metrics.fd import gaussian_stats
from vitlab.metrics.moments import chunked_moments
mode, path = sys.argv[1], sys.argv[2]
mm = np.load(path, mmap_mode="r")
tracemalloc.start()
t0 = time.perf_counter()
if mode == "whole":  # the previous gen-stats path: FeatureSet X (float32) -> gaussian_stats (float64 copies)
    x = np.asarray(mm, dtype=np.float32)
    check_features(x, "real", dtype=x.dtype)
    mu, sigma = gaussian_stats(x)
else:
    mu, sigma = chunked_moments(mm).gaussian()
sec = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1]
np.save(path + f".{mode}.mu.npy", mu); np.save(path + f".{mode}.sigma.npy", sigma)
print(json.dumps({"mode": mode, "seconds": sec, "peak_heap_MB": peak / 1e6}))
"""


def bench_stats(tmp: Path, n: int, d: int) -> dict:
    path = tmp / "stats.npy"
    _synthetic_memmap(path, n, d, seed=1)
    rows = {}
    for mode in ("whole", "chunked"):
        r = subprocess.run([sys.executable, "-c", _STATS_CHILD, mode, str(path), str(ROOT)], capture_output=True,
                           text=True, check=True)
        rows[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    diff = max(float(np.abs(np.load(f"{path}.whole.{k}.npy") - np.load(f"{path}.chunked.{k}.npy")).max())
               for k in ("mu", "sigma"))
    return {"n": n, "dim": d, "matrix_MB": n * d * 4 / 1e6, **{f"{m}_{k}": v for m, r in rows.items()
                                                              for k, v in r.items() if k != "mode"},
            "heap_ratio_whole_over_chunked": rows["whole"]["peak_heap_MB"] / rows["chunked"]["peak_heap_MB"],
            "max_abs_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--what", nargs="+", default=["wds", "export", "stats"], choices=["wds", "export", "stats"])
    ap.add_argument("--n-images", type=int, default=2000)
    ap.add_argument("--size", type=int, nargs=2, default=[500, 375])
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--export-n", type=int, default=1_000_000)
    ap.add_argument("--stats-n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (needs ~n*d*4 bytes twice)")
    a = ap.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}")
    with tempfile.TemporaryDirectory(dir=a.tmp) as d:
        tmp = Path(d)
        if "wds" in a.what:
            (tmp / "w").mkdir()
            print(json.dumps({"wds": bench_wds(tmp / "w", a.n_images, tuple(a.size), a.shards)}), flush=True)
        if "export" in a.what:
            (tmp / "e").mkdir()
            for row in bench_export(tmp / "e", a.export_n, a.dim):
                print(json.dumps({"export": row}), flush=True)
        if "stats" in a.what:
            (tmp / "s").mkdir()
            print(json.dumps({"stats": bench_stats(tmp / "s", a.stats_n, a.dim)}), flush=True)


if __name__ == "__main__":
    main()
