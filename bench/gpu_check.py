"""One GPU check: exercise every CUDA path vitlab has, compare each with the CPU result, print figures.

Paths (each timed, each checked against the same computation on the CPU where a reference exists):

  * ``embed``: the demo ViT and a random-init ViT-S/16 at 224 embedded through the store under bf16
    autocast (channels-last on CUDA), images/s with data-path and forward time, cosine to fp32 features;
  * ``knn``: the one nearest-neighbour search (:func:`vitlab.neighbors.search`) on the device, same
    neighbours as on the CPU;
  * ``linear``: the L-BFGS logistic probe (:func:`vitlab.protocols.linear.fit_logistic`) on the device,
    weights against the CPU float64 fit;
  * ``fd``: ``tr sqrt(S1 S2)`` (the Fréchet distance's eigh path) on the device against the CPU;
  * ``accel``: ToMe and EViT copies of the ViT-S/16 embedded under autocast, feature cosine to the base;
  * ``mil``: an ABMIL head trained and applied on the device (:func:`vitlab.mil.train.fit_head`);
  * ``tune``: a few LoRA steps under bf16 autocast (:func:`vitlab.tune`);
  * ``ray``: the Ray engine with one actor (a GPU actor on CUDA), byte-identical to the local engine;
  * ``decode``: ``torchvision.io.decode_jpeg`` of a batch on the device (nvJPEG on CUDA).

``--device cpu`` runs the same script on the CPU (CI runs it with ``--quick`` so it cannot rot); a
path that fails prints ``FAILED`` with the reason and the script exits 1. Under 8 minutes on one GPU.

Example:
    python bench/gpu_check.py --device cuda
    python bench/gpu_check.py --device cpu --quick --skip ray
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import time
import traceback
from datetime import date
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import vitlab

CHECKS = ("embed", "knn", "linear", "fd", "accel", "mil", "tune", "ray", "decode")


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12
    return float(np.min(num / den))


class Checker:
    """Runs the checks, keeps one row of figures per check."""

    def __init__(self, dev: str, quick: bool, cache: Path) -> None:
        self.dev, self.quick, self.cache = dev, quick, cache
        self.rows: list[dict[str, Any]] = []
        self.n = 200 if quick else 2000
        self.data = f"sample:digits?limit={self.n}" if quick else "sample:fashion-mnist"

    def photos(self, n: int) -> str:
        """A folder of ``n`` 256 x 256 JPEG crops of scikit-learn's bundled photographs (real pixels, offline)."""
        from PIL import Image
        from sklearn.datasets import load_sample_images

        root = self.cache / f"photos{n}"
        if not root.exists():
            root.mkdir(parents=True)
            imgs = load_sample_images().images
            rng = np.random.default_rng(0)
            for i in range(n):
                im = imgs[i % len(imgs)]
                y, x = rng.integers(0, im.shape[0] - 256), rng.integers(0, im.shape[1] - 256)
                Image.fromarray(im[y:y + 256, x:x + 256]).save(root / f"{i:05d}.jpg", quality=90)
        return f"folder:{root}"

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        try:
            figures = fn()
            _sync(self.dev)
            row = {"check": name, "status": "ok", **figures}
        except Exception as err:  # noqa: BLE001 - a check script reports every failure and goes on
            row = {"check": name, "status": f"FAILED: {type(err).__name__}: {err}".splitlines()[0],
                   "trace": traceback.format_exc(limit=3)}
        row["seconds"] = round(time.perf_counter() - t0, 2)
        self.rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "trace"}), file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ checks
    def embed(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        ref = vitlab.embed("demo:fmnist-vit", self.data, device="cpu", precision="fp32", cache_dir=self.cache,
                           progress=False)
        emb = vitlab.embed("demo:fmnist-vit", self.data, device=self.dev, precision="bf16", cache_dir=self.cache,
                           progress=False)
        out["demo_images_per_s"] = emb.stats.get("images_per_s")
        out["demo_data_s"], out["demo_forward_s"] = emb.stats.get("data_seconds"), emb.stats.get("forward_seconds")
        out["demo_min_cosine_bf16_vs_fp32_cpu"] = round(_cos(emb.get(), ref.get()), 5)
        if out["demo_min_cosine_bf16_vs_fp32_cpu"] < 0.98:
            raise AssertionError(f"bf16 features drift: min cosine {out['demo_min_cosine_bf16_vs_fp32_cpu']}")
        size, n = (64, 32) if self.quick else (224, 512)
        bb = vitlab.load_backbone("timm:vit_small_patch16_224", pretrained=False, img_size=size)
        big = vitlab.embed(bb, self.photos(n), device=self.dev, precision="bf16", cache_dir=self.cache,
                           progress=False, batch_size=64)
        out[f"vits16_{size}_images_per_s"] = big.stats.get("images_per_s")
        return out

    def knn(self) -> dict[str, Any]:
        from vitlab.neighbors import search

        rng = np.random.default_rng(0)
        n, d = (500, 64) if self.quick else (50_000, 384)
        ref = rng.standard_normal((n, d)).astype(np.float32)
        q = rng.standard_normal((min(n, 2000), d)).astype(np.float32)
        cpu = search(q, ref, 10, device="cpu")
        t0 = time.perf_counter()
        dev = search(q, ref, 10, device=self.dev)
        _sync(self.dev)
        dt = time.perf_counter() - t0
        same = float(np.mean(np.asarray(cpu.indices) == np.asarray(dev.indices)))
        if same < 0.999:
            raise AssertionError(f"device neighbours differ from the CPU's on {1 - same:.4f} of entries")
        return {"queries_per_s": round(len(q) / dt, 1), "same_neighbours_as_cpu": same}

    def linear(self) -> dict[str, Any]:
        from vitlab.protocols.linear import fit_logistic

        rng = np.random.default_rng(1)
        n, d, k = (400, 32, 5) if self.quick else (20_000, 384, 10)
        y = rng.integers(0, k, n)
        X = rng.standard_normal((n, d)) + np.eye(k, d)[y] * 2
        W0, b0 = fit_logistic(X, y, 1.0, device="cpu")
        t0 = time.perf_counter()
        W1, b1 = fit_logistic(X, y, 1.0, device=self.dev)
        dt = time.perf_counter() - t0
        diff = float(np.max(np.abs(np.asarray(W0) - np.asarray(W1))))
        if diff > 1e-3:
            raise AssertionError(f"device probe weights differ from the CPU fit by {diff:.2e}")
        return {"fit_s": round(dt, 3), "max_weight_diff_vs_cpu": diff}

    def fd(self) -> dict[str, Any]:
        from vitlab.metrics.fd import trace_sqrt_product

        rng = np.random.default_rng(2)
        d = 64 if self.quick else 1024
        a, b = rng.standard_normal((2 * d, d)), rng.standard_normal((2 * d, d))
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        ref = trace_sqrt_product(s1, s2)
        t0 = time.perf_counter()
        got = trace_sqrt_product(s1, s2, device=self.dev)
        dt = time.perf_counter() - t0
        rel = abs(got - ref) / abs(ref)
        if rel > 1e-8:
            raise AssertionError(f"tr sqrt(S1 S2) on the device differs by {rel:.2e} (relative)")
        return {"dim": d, "seconds": round(dt, 3), "relative_diff_vs_cpu": rel}

    def accel(self) -> dict[str, Any]:
        from vitlab.accel import apply_accel

        size, n = (64, 32) if self.quick else (224, 256)
        bb = vitlab.load_backbone("timm:vit_small_patch16_224", pretrained=False, img_size=size)
        data = self.photos(n)
        base = vitlab.embed(bb, data, device=self.dev, precision="bf16", cache_dir=self.cache, progress=False)
        out: dict[str, Any] = {"base_images_per_s": base.stats.get("images_per_s")}
        for spec in ("tome:r=1" if self.quick else "tome:r=8", "evit:keep=0.7"):
            fast = apply_accel(bb, spec)
            e = vitlab.embed(fast, data, device=self.dev, precision="bf16", cache_dir=self.cache, progress=False)
            out[f"{spec}_images_per_s"] = e.stats.get("images_per_s")
            out[f"{spec}_min_cosine_to_base"] = round(_cos(e.get(), base.get()), 4)
        return out

    def mil(self) -> dict[str, Any]:
        from vitlab.mil.train import fit_head, predict

        rng = np.random.default_rng(3)
        nb, ni = (12, 50) if self.quick else (100, 2000)
        bags = [rng.standard_normal((ni, 384), dtype=np.float32) for _ in range(nb)]
        y = np.arange(nb) % 2
        for b, yi in zip(bags, y):
            if yi:
                b[0] += 4
        t0 = time.perf_counter()
        fit = fit_head(bags, y, None, None, head="abmil", n_classes=2, seed=0, device=self.dev, epochs=3,
                       min_epochs=3)
        proba, _ = predict(fit, bags)
        _sync(self.dev)
        return {"train_s_3_epochs": round(time.perf_counter() - t0, 3), "train_auroc": float(
            __import__("sklearn.metrics", fromlist=["roc_auc_score"]).roc_auc_score(y, proba[:, 1]))}

    def tune(self) -> dict[str, Any]:
        res = vitlab.tune("demo:fmnist-vit", "sample:digits?limit=200", methods="linear,lora", epochs=1,
                          max_steps=3, n_resamples=20, device=self.dev, probe=False, progress=False)
        c = res.record.details["cost"]["lora"]
        return {"lora_images_per_s": c.get("images_per_s"), "lora_peak_mb": c.get("peak_memory_mb"),
                "precision": res.record.config["recipe"].get("precision")}

    def ray(self) -> dict[str, Any]:
        n = 128 if self.quick else 2000
        data = f"sample:digits?limit={n}"
        local = vitlab.embed("demo:fmnist-vit", data, device=self.dev, cache_dir=self.cache / "local",
                             progress=False)
        t0 = time.perf_counter()
        viaray = vitlab.embed("demo:fmnist-vit", data, device=self.dev, cache_dir=self.cache / "ray",
                              engine="ray", progress=False)
        dt = time.perf_counter() - t0
        same = np.array_equal(np.asarray(local.get()), np.asarray(viaray.get()))
        if not same:
            raise AssertionError("Ray engine arrays differ from the local engine's")
        return {"ray_wall_s": round(dt, 2), "byte_identical_to_local": same}

    def decode(self) -> dict[str, Any]:
        from PIL import Image
        from sklearn.datasets import load_sample_image
        from torchvision.io import decode_jpeg

        img = Image.fromarray(load_sample_image("china.jpg")).resize((2000, 1500))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        raw = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        batch = [raw] * (4 if self.quick else 64)
        decode_jpeg(batch[:1], device=self.dev)  # warm-up (nvJPEG handle)
        _sync(self.dev)
        t0 = time.perf_counter()
        out = decode_jpeg(batch, device=self.dev)
        _sync(self.dev)
        dt = time.perf_counter() - t0
        ref = decode_jpeg(raw).float()
        diff = float((out[0].float().cpu() - ref).abs().mean())
        if diff > 2.0:
            raise AssertionError(f"device JPEG decode differs from the CPU's by {diff:.2f} grey levels on average")
        return {"images_per_s_2000x1500": round(len(batch) / dt, 1), "mean_abs_diff_vs_cpu": round(diff, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CI: checks the script still runs)")
    ap.add_argument("--skip", default="", help=f"comma-separated checks to skip, from {','.join(CHECKS)}")
    ap.add_argument("--json", action="store_true", help="print the rows as one JSON document on stdout")
    a = ap.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device; run with --device cpu.", file=sys.stderr)
        return 2
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    unknown = skip - set(CHECKS)
    if unknown:
        print(f"error: unknown check(s) {', '.join(sorted(unknown))}; choose from {', '.join(CHECKS)}.",
              file=sys.stderr)
        return 2
    header = {"date": date.today().isoformat(), "device": a.device, "quick": a.quick,
              "gpu": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else None,
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "vitlab": vitlab.__version__}
    print(json.dumps(header), file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        chk = Checker(a.device, a.quick, Path(tmp))
        for name in CHECKS:
            if name not in skip:
                chk.run(name, getattr(chk, name))
    failed = [r for r in chk.rows if r["status"] != "ok"]
    if a.json:
        print(json.dumps({**header, "rows": [{k: v for k, v in r.items() if k != "trace"} for r in chk.rows]}))
    else:
        print(f"# gpu_check {header['date']} device={a.device} gpu={header['gpu']} torch {header['torch']}")
        for r in chk.rows:
            figs = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("check", "status", "trace"))
            print(f"{r['check']:8s} {r['status']}  {figs}")
    for r in failed:
        print(f"--- {r['check']}\n{r['trace']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
