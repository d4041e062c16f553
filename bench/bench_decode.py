"""Benchmark: decode + preprocess images/s per CPU core on real-size JPEGs, and each path's deviation.

Photographs: scikit-learn's bundled ``china.jpg`` and ``flower.jpg`` (640x427), re-encoded as JPEG
(quality 90) at 500x375 and at 2000x1500. Preprocessing: ImageNet eval, ``input_size=(224, 224)``,
``crop_pct=0.875``, bicubic (vitlab's :class:`Preprocessing`). One process, one torch thread
(``images/s per core``). Paths:

  * ``pil``: the reference, :func:`vitlab.data.images.open_rgb` + ``Preprocessing.build_transform()``.
  * ``pil-draft``: the same with JPEG draft-mode downscaling (``decoder="pil-draft"``), at the
    library's margin (2x the resize target) and at margin 1x (the most PIL allows).
  * ``tensor``, ``tensor-draft``: PIL decode (draft or not), then resize + crop of the uint8 image as
    a tensor (``decoder="tensor"`` / ``"tensor-draft"``).
  * ``tv-cpu``: ``torchvision.io.decode_jpeg`` on CPU, then antialiased bicubic resize, centre crop and
    normalisation on the uint8 tensor (torchvision.transforms.v2).
  * ``tv-cuda`` (``--device cuda``): ``decode_jpeg`` of a batch on the GPU (nvJPEG), resize on the GPU;
    images/s of the whole batch (not per core). Skipped with a note when CUDA is not available.

Deviation from the reference, in 8-bit grey levels of the network input (``|x - ref| * std * 255``):
mean and maximum over every pixel of every image.

Example:
    python bench/bench_decode.py --seconds 3
    python bench/bench_decode.py --device cuda --json
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vitlab.backbones import preprocessing as P
from vitlab.data.images import jpeg_draft, open_rgb

SIZES = ((500, 375), (2000, 1500))
REF = P.Preprocessing(input_size=(224, 224), crop_pct=0.875, interpolation="bicubic")


def write_jpegs(root: Path) -> dict[tuple[int, int], list[Path]]:
    """The two scikit-learn photographs re-encoded at each size (PIL bicubic resize, quality 90)."""
    from sklearn.datasets import load_sample_image

    out: dict[tuple[int, int], list[Path]] = {}
    for w, h in SIZES:
        for name in ("china.jpg", "flower.jpg"):
            img = Image.fromarray(load_sample_image(name)).resize((w, h), Image.Resampling.BICUBIC)
            p = root / f"{Path(name).stem}_{w}x{h}.jpg"
            img.save(p, quality=90)
            out.setdefault((w, h), []).append(p)
    return out


def pil_path(decoder: str = "pil", margin: float | None = None):
    """vitlab's own data path for ``decoder`` (draft at ``margin`` x the resize target, default the library's)."""
    prep = REF.replace(decoder=decoder)
    transform = prep.build_transform()
    draft = prep.draft_size if decoder.endswith("draft") else None

    def run(path: Path) -> torch.Tensor:
        old, P.DRAFT_MARGIN = P.DRAFT_MARGIN, margin or P.DRAFT_MARGIN
        try:
            with jpeg_draft(draft):
                return transform(open_rgb(path))
        finally:
            P.DRAFT_MARGIN = old
    return run


def tv_transform(device: str):
    from torchvision.transforms import v2

    mean = torch.tensor(REF.mean, device=device).view(3, 1, 1)
    std = torch.tensor(REF.std, device=device).view(3, 1, 1)

    def prep(x: torch.Tensor) -> torch.Tensor:  # uint8 [3, H, W] -> normalised float [3, 224, 224]
        if x.device.type != "cpu":  # antialiased uint8 resize is a CPU kernel: resize in float, round like uint8
            x = x.float()
        x = v2.functional.resize(x, REF.resize_size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
        x = v2.functional.center_crop(x, list(REF.input_size)).float().round().clamp(0, 255)
        return (x / 255.0 - mean) / std
    return prep


def tv_cpu_path():
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    prep = tv_transform("cpu")
    return lambda path: prep(decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB))


def rates(fns: dict, paths: list[Path], seconds: float, rounds: int) -> dict[str, float]:
    """Median images/s of each of ``fns`` over ``rounds`` interleaved windows of ``seconds / rounds``
    (interleaving and the median keep a shared machine's load swings out of the ratios)."""
    for fn in fns.values():
        for p in paths:  # warm-up
            fn(p)
    got: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / rounds:
                for p in paths:
                    fn(p)
                n += len(paths)
            got[name].append(n / (time.perf_counter() - t0))
    return {k: float(np.median(v)) for k, v in got.items()}


def deviation(fn, paths: list[Path]) -> tuple[float, float]:
    """(mean, max) |x - reference| in 8-bit levels of the network input."""
    ref = pil_path()
    std = torch.tensor(REF.std).view(3, 1, 1)
    diffs = [((fn(p).cpu().float() - ref(p)).abs() * std * 255.0) for p in paths]
    d = torch.stack(diffs)
    return float(d.mean()), float(d.max())


def cuda_row(paths: list[Path], seconds: float, batch: int = 64) -> dict | None:
    if not torch.cuda.is_available():
        return None
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    prep = tv_transform("cuda")
    datas = [read_file(str(p)) for p in paths] * max(1, batch // len(paths))

    def run_batch() -> list[torch.Tensor]:
        imgs = decode_jpeg(datas, mode=ImageReadMode.RGB, device="cuda")
        return [prep(x) for x in imgs]
    run_batch()
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        run_batch()
        n += len(datas)
    torch.cuda.synchronize()
    r = n / (time.perf_counter() - t0)
    first = run_batch()[:len(paths)]
    ref = pil_path()
    std = torch.tensor(REF.std).view(3, 1, 1)
    d = torch.stack([(x.cpu() - ref(p)).abs() * std * 255.0 for x, p in zip(first, paths)])
    return {"path": "tv-cuda (batch)", "images_per_s": r, "mean_dev": float(d.mean()), "max_dev": float(d.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="timing per path and size (split in rounds)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda to add the nvJPEG path")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = write_jpegs(Path(tmp))
        paths = {"pil (reference)": pil_path(), f"pil-draft (margin {P.DRAFT_MARGIN:g}x)": pil_path("pil-draft"),
                 "pil-draft (margin 1x)": pil_path("pil-draft", 1.0), "tensor": pil_path("tensor"),
                 f"tensor-draft (margin {P.DRAFT_MARGIN:g}x)": pil_path("tensor-draft"),
                 "tv-cpu (decode_jpeg + tensor resize)": tv_cpu_path()}
        for (w, h), ps in files.items():
            got = rates(paths, ps, args.seconds * len(paths), args.rounds)
            base = got["pil (reference)"]
            for name, fn in paths.items():
                mean_dev, max_dev = deviation(fn, ps)
                rows.append({"size": f"{w}x{h}", "path": name, "images_per_s": got[name],
                             "ratio": got[name] / base, "mean_dev": mean_dev, "max_dev": max_dev})
            if args.device.startswith("cuda"):
                row = cuda_row(ps, args.seconds)
                if row is None:
                    print(f"note: --device {args.device}: CUDA is not available here; the nvJPEG path was skipped.",
                          file=sys.stderr)
                else:
                    rows.append({"size": f"{w}x{h}", **row, "ratio": row["images_per_s"] / base})
    if args.json:
        print(json.dumps({"date": str(date.today()), "machine": platform.machine(), "rows": rows}, indent=2))
        return
    print(f"{date.today()}, {platform.machine()}, torch threads 1, {args.seconds:g} s per cell in {args.rounds} "
          "interleaved rounds (median)\n")
    print("| size | path | images/s per core | vs reference | mean dev (levels) | max dev (levels) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['path']} | {r['images_per_s']:.1f} | {r['ratio']:.2f}x | {r['mean_dev']:.3f} "
              f"| {r['max_dev']:.1f} |")


if __name__ == "__main__":
    main()
