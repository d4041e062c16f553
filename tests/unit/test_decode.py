"""Faster data paths (decoder option): within the stated tolerance of the reference, in the cache key,
and embed's data-path / forward split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitlab
from vitlab.backbones.preprocessing import DECODERS, TOLERANCE, Preprocessing
from vitlab.data.images import jpeg_draft, open_rgb
from vitlab.errors import ConfigError
from vitlab.store import EmbeddingStore

REF = Preprocessing(input_size=(224, 224), crop_pct=0.875, interpolation="bicubic")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """scikit-learn's two bundled photographs re-encoded as JPEG at 2000x1500 and 500x375."""
    from sklearn.datasets import load_sample_image

    root = tmp_path_factory.mktemp("photos")
    out = []
    for name in ("china.jpg", "flower.jpg"):
        img = Image.fromarray(load_sample_image(name))
        for w, h in ((2000, 1500), (500, 375)):
            p = root / f"{name[:-4]}_{w}.jpg"
            img.resize((w, h), Image.Resampling.BICUBIC).save(p, quality=90)
            out.append(p)
    return out


def _tensor(prep: Preprocessing, path: Path) -> torch.Tensor:
    with jpeg_draft(prep.draft_size if prep.decoder.endswith("draft") else None):
        return prep.build_transform()(open_rgb(path))


@pytest.mark.parametrize("decoder", [d for d in DECODERS if d != "pil"])
def test_fast_paths_stay_within_the_stated_tolerance(photos, decoder):
    prep = REF.replace(decoder=decoder)
    tol = TOLERANCE["draft" if decoder.endswith("draft") else "tensor"]
    std = torch.tensor(REF.std).view(3, 1, 1)
    devs = []
    for p in photos:
        x, ref = _tensor(prep, p), _tensor(REF, p)
        assert x.shape == ref.shape == (3, 224, 224) and x.dtype == ref.dtype == torch.float32
        devs.append(((x - ref).abs() * std * 255.0).double())
    d = torch.stack(devs)
    assert float(d.mean()) <= tol["mean"] and float(d.max()) <= tol["max"]
    assert float(d.max()) > 0  # the path really differs (so the check is not vacuous)


def test_draft_decodes_large_jpegs_smaller_but_never_below_twice_the_target(photos):
    prep = REF.replace(decoder="pil-draft")
    big, small = photos[0], photos[1]  # 2000x1500, 500x375
    with jpeg_draft(prep.draft_size):
        w, h = open_rgb(big).size
        assert open_rgb(small).size == (500, 375)  # 1/2 would go below 2x the 256-px resize: full decode
    assert (w, h) == (1000, 750) and min(w, h) >= 2 * prep.resize_size
    assert open_rgb(big).size == (2000, 1500)  # outside the block: full decode
    png = big.with_suffix(".png")
    Image.open(big).save(png)
    with jpeg_draft(prep.draft_size):
        assert open_rgb(png).size == (2000, 1500)  # other formats decode in full


def test_the_default_decoder_keeps_existing_keys_and_others_change_them(tmp_path):
    assert "decoder" not in REF.to_dict()  # keys made before the option existed stay the same
    fast = REF.replace(decoder="tensor-draft")
    assert fast.to_dict()["decoder"] == "tensor-draft" and Preprocessing.from_dict(fast.to_dict()) == fast
    bb = vitlab.load_backbone("demo:fmnist-vit")
    src = vitlab.load_source("sample:fashion-mnist")
    from vitlab.store.store import with_decoder

    store = EmbeddingStore(tmp_path)
    keys = {store.key_for(b, src, -1).digest for b in (bb, *(with_decoder(bb, d) for d in DECODERS if d != "pil"))}
    assert len(keys) == len(DECODERS)
    assert bb.spec.preprocessing.decoder == "pil"  # the user's backbone is not changed


def test_bad_decoder_options_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown decoder 'turbo'"):
        vitlab.embed("demo:fmnist-vit", "sample:fashion-mnist", decoder="turbo", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="does not apply to resize='clean'"):
        Preprocessing(resize="clean", decoder="pil-draft")
    with pytest.raises(ConfigError, match="supports bilinear and bicubic only, not 'lanczos'"):
        Preprocessing(interpolation="lanczos", decoder="tensor")


def test_embed_with_a_fast_decoder_is_its_own_entry_and_close(photos, tmp_path):
    root = tmp_path / "imgs" / "a"
    root.mkdir(parents=True)
    for i, p in enumerate(photos):
        Image.open(p).resize((400, 300)).save(root / f"{i}.jpg", quality=90)
    kw = dict(cache_dir=tmp_path / "c", num_workers=0, progress=False)
    ref = vitlab.embed("demo:fmnist-vit", f"folder:{root.parent}", **kw)
    fast = vitlab.embed("demo:fmnist-vit", f"folder:{root.parent}", decoder="tensor-draft", **kw)
    assert fast.path != ref.path and not fast.from_cache
    a, b = ref.get().astype(np.float64), fast.get().astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(a, b)
    again = vitlab.embed("demo:fmnist-vit", f"folder:{root.parent}", decoder="tensor-draft", **kw)
    assert again.from_cache and again.path == fast.path
    manifest = json.loads((fast.path / "manifest.json").read_text())
    assert manifest["key"]["backbone"]["preprocessing"]["decoder"] == "tensor-draft"
    assert "decoder" not in json.loads((ref.path / "manifest.json").read_text())["key"]["backbone"]["preprocessing"]


def test_embed_reports_data_path_and_forward_time_separately(image_folder, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from vitlab.cli import app

    args = ["embed", "-b", "demo:fmnist-vit", "-d", f"folder:{image_folder}", "--cache-dir", str(tmp_path),
            "--num-workers", "0", "--batch-size", "4"]
    res = CliRunner().invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    stats = json.loads(res.stdout)["stats"]
    assert stats["data_seconds"] > 0 and stats["forward_seconds"] > 0 and stats["engine"] == "local"
    assert stats["data_seconds"] + stats["forward_seconds"] <= stats["seconds"]
    manifest = next((tmp_path / "embeddings").iterdir()) / "manifest.json"
    assert json.loads(manifest.read_text())["stats"]["data_seconds"] == stats["data_seconds"]
    shutil.rmtree(tmp_path / "embeddings")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "data path" in res.output and "forward" in res.output and "limits" in res.output
