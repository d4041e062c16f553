"""Train the small ViT shipped as ``demo:fmnist-vit``.

Recipe: a timm VisionTransformer (patch 4 on 28x28 → 7x7 = 49 patches + CLS,
width 96, depth 6, 3 heads), trained from scratch on the Fashion-MNIST
*training* split (60k images) from Debian's ``dataset-fashion-mnist``; the test
split is never seen. AdamW, cosine schedule with warm-up, label smoothing 0.1,
random-crop (pad 2) + horizontal-flip augmentation. Seeded.

Writes ``vitlab/backbones/assets/fmnist_vit.safetensors`` (fp32 weights) and
``fmnist_vit.json`` (architecture, preprocessing, recipe and the measured test
accuracy of its classifier head on all 10k test images).

Example:
    python scripts/train_demo_vit.py --epochs 12
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vitlab.data.idx_format import read_idx

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "vitlab" / "backbones" / "assets"
FMNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST training-split pixel statistics
ARCH = "vit_tiny_patch16_224"
MODEL_KWARGS = dict(img_size=28, patch_size=4, embed_dim=96, depth=6, num_heads=3, num_classes=10)


def to_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 28, 28] → normalised float [B, 3, 28, 28] (same as the eval transform)."""
    x = x.float().div_(255.0).sub_(MEAN).div_(STD)
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random crop with 2-px zero padding and horizontal flip, on uint8 [B, 28, 28]."""
    b = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2, b), generator=g)
    out = torch.stack([padded[i, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(b)])
    flip = torch.rand(b, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


@torch.inference_mode()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), 1000):
        correct += (model(to_input(x[i:i + 1000])).argmax(1) == y[i:i + 1000]).sum().item()
    return correct / len(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=FMNIST)
    ap.add_argument("--out", type=Path, default=ASSETS)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    xtr = torch.from_numpy(read_idx(args.data / "train-images-idx3-ubyte.gz").copy())
    ytr = torch.from_numpy(read_idx(args.data / "train-labels-idx1-ubyte.gz").astype(np.int64))
    xte = torch.from_numpy(read_idx(args.data / "t10k-images-idx3-ubyte.gz").copy())
    yte = torch.from_numpy(read_idx(args.data / "t10k-labels-idx1-ubyte.gz").astype(np.int64))

    model = timm.create_model(ARCH, pretrained=False, **MODEL_KWARGS)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps_per_epoch = math.ceil(len(xtr) / args.batch_size)
    total, warmup = args.epochs * steps_per_epoch, steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        running = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * args.batch_size:(s + 1) * args.batch_size]
            xb = to_input(augment(xtr[idx], g))
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        acc = evaluate(model, xte, yte) if epoch == args.epochs - 1 else float("nan")
        print(f"epoch {epoch + 1}/{args.epochs} loss {running / steps_per_epoch:.4f} "
              f"elapsed {time.perf_counter() - t0:.0f}s" + (f" test_acc {acc:.4f}" if acc == acc else ""),
              flush=True)
    train_s = time.perf_counter() - t0
    test_acc = evaluate(model, xte, yte)

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / "fmnist_vit.safetensors"), metadata={"arch": ARCH})
    meta = {
        "format": "vitlab-checkpoint/1",
        "name": "demo:fmnist-vit",
        "arch": ARCH,
        "model_kwargs": MODEL_KWARGS,
        "preprocessing": {"input_size": [28, 28], "resize": "shorter", "crop_pct": 1.0,
                          "interpolation": "bilinear", "mean": [MEAN] * 3, "std": [STD] * 3},
        "classes": CLASSES,
        "recipe": {"data": "Fashion-MNIST train split (60,000 images), Debian dataset-fashion-mnist",
                   "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "AdamW",
                   "lr": args.lr, "weight_decay": 0.05, "schedule": "1-epoch linear warm-up + cosine",
                   "label_smoothing": 0.1, "augmentation": "random crop (pad 2) + horizontal flip",
                   "seed": args.seed, "script": "scripts/train_demo_vit.py"},
        "test_accuracy": round(test_acc, 4),
        "test_accuracy_note": "classifier head, all 10,000 Fashion-MNIST test images",
        "num_params": n_params,
        "train_seconds": round(train_s, 1),
        "trained_on": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": dt.date.today().isoformat(),
    }
    (args.out / "fmnist_vit.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({"test_accuracy": test_acc, "num_params": n_params, "train_seconds": train_s}))


if __name__ == "__main__":
    main()
