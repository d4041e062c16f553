"""Time per image of each inspection map and attack, and the overhead of attention capture, on CPU.

Random-init ViT-S/16 (``timm:vit_small_patch16_224``, no download) at 224 × 224, a batch of
``--batch`` random images, median of ``--repeats`` runs after one warm-up. The baseline is the
plain fused forward (:meth:`Backbone.forward_tokens`) measured in the same run; every row gives its
ratio to it. Attacks run ``--steps`` PGD steps (each a forward and a backward pass).

    python bench/bench_inspect.py --batch 4 --repeats 3 --steps 10
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import vitlab
    from vitlab.inspect.attacks import feature_attack, patch_mask, pgd_patch
    from vitlab.inspect.capture import capture_attention
    from vitlab.inspect.images import ProbeHead, normalize
    from vitlab.inspect.maps import compute_maps
    from vitlab.inspect.pca import PatchPCA

    bb = vitlab.load_backbone("timm:vit_small_patch16_224", pretrained=False)
    B = args.batch
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(B, 3, 224, 224, generator=g)
    x = normalize(bb, raw)
    C = bb.spec.embed_dim
    rng = np.random.default_rng(0)
    head = ProbeHead(rng.normal(size=(10, C)), np.zeros(10), np.zeros(C), np.ones(C))
    y = torch.arange(B) % 10
    lay = bb.token_layout()

    def fused():
        with torch.no_grad():
            bb.forward_tokens(x, [-1])

    def pca():
        with torch.no_grad():
            t = bb.forward_tokens(x, [-1]).patch_tokens(11)
        PatchPCA().fit(t, lay.grid).transform(t, lay.grid)

    feat = lambda r: bb.forward_tokens(normalize(bb, r), [-1]).pooled(11, "cls")  # noqa: E731
    logits = lambda r: head(feat(r))  # noqa: E731
    mask = patch_mask(tuple(raw.shape), bb.spec.patch_size, 4, seed=0)
    rows = [
        ("plain fused forward (baseline)", fused),
        ("attention capture, eager (no self-check)", lambda: capture_attention(bb, x, check=False)),
        ("attention capture, eager + check vs fused", lambda: capture_attention(bb, x)),
        ("map: attention (CLS, all layers/heads)", lambda: compute_maps(bb, x, ["attention"])),
        ("map: rollout", lambda: compute_maps(bb, x, ["rollout"])),
        ("map: grad-rollout", lambda: compute_maps(bb, x, ["grad-rollout"], head=head)),
        ("map: gradcam", lambda: compute_maps(bb, x, ["gradcam"], head=head)),
        ("map: pca (fit + transform on the batch)", pca),
        (f"attack: pgd-patch 4x4 cells, {args.steps} steps", lambda: pgd_patch(logits, raw, y, mask, eps=8 / 255,
                                                                               steps=args.steps)),
        (f"attack: feature, {args.steps} steps", lambda: feature_attack(feat, raw, eps=8 / 255, steps=args.steps)),
    ]
    print(f"# {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{time.strftime('%Y-%m-%d')}; random-init ViT-S/16 at 224, batch {B}, median of {args.repeats}")
    print("| what | s / image | × plain forward |")
    print("|---|---|---|")
    base = None
    for name, fn in rows:
        reps = 1 if name.startswith("attack") else args.repeats
        t = _median_time(fn, reps) / B
        base = base or t
        print(f"| {name} | {t:.3f} | {t / base:.2f} |", flush=True)


if __name__ == "__main__":
    main()
