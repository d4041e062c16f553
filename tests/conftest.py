"""Shared offline fixtures: tiny seeded backbones of every source kind, small image folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from threadpoolctl import threadpool_limits

import vitlab
from vitlab.data.sample import SampleSource

# One torch and one BLAS thread for the whole suite: tests assert behaviour, not speed, and on a
# shared 2-core box multi-threaded OpenMP/BLAS spin-waiting made small ops 5-50x slower.
torch.set_num_threads(1)
threadpool_limits(limits=1)

TINY_OPEN_CLIP = "vitlab-test-tiny"


@pytest.fixture(scope="session", autouse=True)
def _own_cache_root(tmp_path_factory):
    """Tests never read or write the user's cache: calls without a cache dir use one of this session."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VITLAB_CACHE_DIR", str(tmp_path_factory.mktemp("vitlab-cache")))
    yield
    mp.undo()


def _register_tiny_open_clip() -> None:
    from open_clip import factory

    factory._MODEL_CONFIGS[TINY_OPEN_CLIP] = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 3, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }


def _hf_dir(tmp: Path, kind: str) -> Path:
    import transformers as T

    kw = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
              image_size=32, patch_size=8)
    cfg = {"vit": T.ViTConfig, "dinov2": T.Dinov2Config, "dinov2_reg": T.Dinov2WithRegistersConfig,
           "clip": T.CLIPVisionConfig, "mae": T.ViTMAEConfig, "siglip": T.SiglipVisionConfig}[kind](**kw)
    d = tmp / f"hf-{kind}"
    cfg.save_pretrained(d)
    return d


def _file_ckpt(tmp: Path) -> Path:
    from safetensors.torch import save_file

    bb = vitlab.load_backbone("timm:vit_small_patch16_224", pretrained=False, seed=7, img_size=32, patch_size=8,
                              embed_dim=32, depth=3, num_heads=2)
    path = tmp / "tiny_vit.safetensors"
    save_file(bb.model.state_dict(), str(path))
    path.with_suffix(".json").write_text(json.dumps({"arch": "vit_small_patch16_224", "model_kwargs": {
        "img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 3, "num_heads": 2}}))
    return path


def _tuned(tmp: Path):
    """A ``.vitlab`` tune artefact (method bitfit on the demo, biases shifted) loaded as ``tuned:<file>``."""
    from vitlab.backbones.artefact import base_meta
    from vitlab.tuning.artefact import save_tuned
    from vitlab.tuning.methods import clone_backbone, parse_methods

    base = vitlab.load_backbone("demo:fmnist-vit")
    bb = parse_methods("bitfit")[0].apply(clone_backbone(base), torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    body = {f"body.{n}": (p.detach() + 0.01 * torch.randn(p.shape, generator=g)).contiguous()
            for n, p in bb.model.named_parameters() if p.requires_grad}
    head = {"head.weight": torch.zeros(10, base.spec.embed_dim), "head.bias": torch.zeros(10)}
    path = save_tuned(tmp / "bitfit.vitlab", {**body, **head}, {"base": base_meta(base), "method": {"spec": "bitfit"}})
    return vitlab.load_backbone(str(path))


# name → factory(tmp_path_factory) returning a Backbone; every source kind of vitlab.backbones.SOURCES (the part of
# the name before "-" is the source: tests/contracts/test_backbone_contract.py fails for a source with no factory)
BACKBONE_FACTORIES = {
    "timm-vit": lambda t: vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32,
                                               patch_size=8, embed_dim=32, depth=3, num_heads=2),
    "timm-dinov2-reg": lambda t: vitlab.load_backbone("timm:vit_small_patch14_reg4_dinov2.lvd142m", pretrained=False,
                                                      img_size=28, embed_dim=32, depth=3, num_heads=2),
    "timm-siglip-nocls": lambda t: vitlab.load_backbone("timm:vit_base_patch16_siglip_224", pretrained=False,
                                                        img_size=32, patch_size=8, embed_dim=32, depth=3,
                                                        num_heads=2),
    "hf-vit": lambda t: vitlab.load_backbone(f"hf:{_hf_dir(t.mktemp('h'), 'vit')}", pretrained=False),
    "hf-dinov2": lambda t: vitlab.load_backbone(f"hf:{_hf_dir(t.mktemp('h'), 'dinov2')}", pretrained=False),
    "hf-dinov2-reg": lambda t: vitlab.load_backbone(f"hf:{_hf_dir(t.mktemp('h'), 'dinov2_reg')}", pretrained=False),
    "hf-clip": lambda t: vitlab.load_backbone(f"hf:{_hf_dir(t.mktemp('h'), 'clip')}", pretrained=False),
    "hf-mae": lambda t: vitlab.load_backbone(f"hf:{_hf_dir(t.mktemp('h'), 'mae')}", pretrained=False),
    "open_clip": lambda t: (_register_tiny_open_clip(), vitlab.load_backbone(f"open_clip:{TINY_OPEN_CLIP}",
                                                                             pretrained=False))[1],
    "file": lambda t: vitlab.load_backbone(f"file:{_file_ckpt(t.mktemp('f'))}"),
    "demo": lambda t: vitlab.load_backbone("demo:fmnist-vit"),
    "pixels": lambda t: vitlab.load_backbone("pixels:16"),
    "inception": lambda t: vitlab.load_backbone("inception:fid", pretrained=False),  # seeded random init, no download
    "random-demo": lambda t: vitlab.load_backbone("random:demo:fmnist-vit"),
    "tuned": lambda t: _tuned(t.mktemp("tuned")),
}


@pytest.fixture(scope="session", params=sorted(BACKBONE_FACTORIES))
def any_backbone(request, tmp_path_factory):
    """Each source kind once per session."""
    return BACKBONE_FACTORIES[request.param](tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_backbone():
    """A 3-block timm ViT on 32x32 inputs (fast)."""
    return BACKBONE_FACTORIES["timm-vit"](None)


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


def write_images(root: Path, n_per_class: int = 6, classes=("bag", "coat", "shoe"), size: int = 28,
                 flat: bool = False, start: int = 0, jitter: int = 0) -> Path:
    """Write real Fashion-MNIST PNGs (bundled sample images ``start..``) into a class-folder tree.

    ``jitter`` adds seeded integer noise in ``[-jitter, jitter]`` (a stand-in for generated images).
    """
    src = SampleSource("fashion-mnist")
    rng = np.random.default_rng(start)
    root.mkdir(parents=True, exist_ok=True)
    k = start
    for c in classes:
        d = root if flat else root / c
        d.mkdir(exist_ok=True)
        for j in range(n_per_class):
            a = src.images[k].astype(np.int16)
            if jitter:
                a = np.clip(a + rng.integers(-jitter, jitter + 1, a.shape), 0, 255)
            Image.fromarray(a.astype(np.uint8)).resize((size, size)).save(d / f"{c}_{j:02d}.png")
            k += 1
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return write_images(tmp_path / "imgs")


def truncated_jpeg(path: Path) -> Path:
    """A JPEG cut in half."""
    arr = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(path, format="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


class Interrupt(Exception):
    """Raised by :func:`interrupt_after` to stop an embedding run midway (tests of resume)."""


def interrupt_after(rows: int):
    """An ``on_batch`` callback that raises :class:`Interrupt` once ``rows`` rows are done."""
    def hook(done: int) -> None:
        if done >= rows:
            raise Interrupt()
    return hook

