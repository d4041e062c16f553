"""Embedding store: hit, miss, mismatch, resume, corruption, skipped images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import vitlab
from tests.conftest import Interrupt, interrupt_after, truncated_jpeg, write_images
from vitlab.errors import ConfigError, DataError
from vitlab.store import EmbeddingStore

KW = dict(num_workers=0, progress=False, batch_size=4)




def _count_batches(store_call):
    seen = []
    emb = store_call(on_batch=seen.append)
    return emb, len(seen)


def test_miss_then_hit(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)
    first, n_first = _count_batches(lambda **k: store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW, **k))
    second, n_second = _count_batches(lambda **k: store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW, **k))
    assert not first.from_cache and second.from_cache
    assert n_first == 5 and n_second == 0
    assert isinstance(second.get(), np.memmap)
    np.testing.assert_array_equal(first.get(), second.get())
    assert second.stats["images"] == 18 and second.stats["images_per_s"] > 0
    assert second.stats["peak_memory_mb"] > 0


def test_embeddings_match_a_direct_forward(tiny_backbone, image_folder, cache_dir):
    emb = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, layers=[-1, 0],
                       pool="cls+mean", **KW)
    src = vitlab.load_source(f"folder:{image_folder}")
    tf = tiny_backbone.spec.preprocessing.build_transform()
    x = torch.stack([tf(src.load_image(i)) for i in (0, 5, 17)])
    with torch.inference_mode():
        out = tiny_backbone.forward_tokens(x, [-1, 0])
    np.testing.assert_allclose(emb.get(-1)[[0, 5, 17]], out.pooled(2, "cls+mean").numpy(), atol=1e-5)
    np.testing.assert_allclose(emb.get(0, "mean")[[0, 5, 17]], out.pooled(0, "mean").numpy(), atol=1e-5)
    assert emb.ids[5] == src.ids[5] and emb.labels.tolist() == src.labels.tolist()
    with pytest.raises(ConfigError, match=r"layer 1 was not extracted; these embeddings hold layers \[0, 2\]"):
        emb.get(1)


def test_pool_is_not_part_of_the_key_but_layers_are(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)
    a = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", pool="cls", **KW)
    b = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", pool="mean", **KW)
    assert b.from_cache and b.digest == a.digest and b.get().shape == a.get().shape
    c = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", layers=[-1, -2], **KW)
    assert not c.from_cache and c.digest != a.digest
    assert store.get_or_compute(tiny_backbone, f"folder:{image_folder}", layers=[2], **KW).digest == a.digest


def test_any_changed_input_is_a_new_key(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)
    src = vitlab.load_source(f"folder:{image_folder}")
    base = store.key_for(tiny_backbone, src, -1).digest
    other_weights = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, seed=5, img_size=32,
                                         patch_size=8, embed_dim=32, depth=3, num_heads=2)
    assert store.key_for(other_weights, src, -1).digest != base
    prep = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                embed_dim=32, depth=3, num_heads=2)
    prep.spec = type(prep.spec)(**{**prep.spec.__dict__,
                                   "preprocessing": prep.spec.preprocessing.replace(interpolation="bilinear")})
    assert store.key_for(prep, src, -1).digest != base
    assert store.key_for(tiny_backbone, src, -1, precision="bf16").digest != base
    accel = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                 embed_dim=32, depth=3, num_heads=2)
    accel.accel = {"name": "tome", "r": 2}
    assert store.key_for(accel, src, -1).digest != base
    Image.new("RGB", (28, 28), (9, 9, 9)).save(image_folder / "coat" / "coat_00.png")
    assert store.key_for(tiny_backbone, vitlab.load_source(f"folder:{image_folder}"), -1).digest != base


def test_changed_data_recomputes_not_reuses(tiny_backbone, image_folder, cache_dir):
    a = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, **KW)
    Image.new("RGB", (28, 28), (250, 0, 0)).save(image_folder / "bag" / "bag_00.png")
    b = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, **KW)
    assert not b.from_cache and not np.allclose(a.get()[0], b.get()[0])
    np.testing.assert_allclose(a.get()[1:], b.get()[1:], atol=1e-6)


def test_resume_after_interruption_computes_only_missing_shards(tiny_backbone, tmp_path, cache_dir):
    root = write_images(tmp_path / "many", n_per_class=10)  # 30 images, shards of 8 → 4 shards
    store = EmbeddingStore(cache_dir)
    kw = dict(KW, shard_size=8)
    with pytest.raises(Interrupt):
        store.get_or_compute(tiny_backbone, f"folder:{root}", on_batch=interrupt_after(18), **kw)
    shards = sorted(p.name for p in next((cache_dir / "embeddings").iterdir()).glob("shards/*.safetensors"))
    assert shards == ["shard-0000000000.safetensors", "shard-0000000008.safetensors"]
    resumed, n_batches = _count_batches(lambda **k: store.get_or_compute(tiny_backbone, f"folder:{root}", **kw, **k))
    assert n_batches == 4  # shards 2 (8 rows → 2 batches) and 3 (6 rows → 2 batches) only
    fresh = vitlab.embed(tiny_backbone, f"folder:{root}", cache_dir=tmp_path / "fresh", **kw)
    np.testing.assert_allclose(resumed.get(), fresh.get(), atol=1e-6)
    assert json.loads((resumed.path / "manifest.json").read_text())["resumed"] is True


def test_corrupt_shard_is_detected_and_recomputed(tiny_backbone, tmp_path, cache_dir):
    root = write_images(tmp_path / "many", n_per_class=10)
    store = EmbeddingStore(cache_dir)
    kw = dict(KW, shard_size=8)
    with pytest.raises(Interrupt):
        store.get_or_compute(tiny_backbone, f"folder:{root}", on_batch=interrupt_after(18), **kw)
    shard = next((cache_dir / "embeddings").iterdir()) / "shards" / "shard-0000000008.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-10:] = b"\x00" * 10
    shard.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="partial or corrupt shard; recomputing"):
        emb, n_batches = _count_batches(lambda **k: store.get_or_compute(tiny_backbone, f"folder:{root}", **kw, **k))
    assert n_batches == 6
    fresh = vitlab.embed(tiny_backbone, f"folder:{root}", cache_dir=tmp_path / "fresh", **kw)
    np.testing.assert_allclose(emb.get(), fresh.get(), atol=1e-6)


def test_truncated_array_and_bit_flip_are_detected(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)
    emb = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)
    ref = np.array(emb.get())
    arr = emb.path / "L2.cls.npy"
    arr.write_bytes(arr.read_bytes()[:-64])
    with pytest.warns(UserWarning, match=r"is corrupt \(.*\); recomputing"):
        again = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)
    assert not again.from_cache
    np.testing.assert_allclose(again.get(), ref, atol=1e-6)
    raw = bytearray(arr.read_bytes())
    raw[-1] ^= 0xFF
    arr.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="checksum mismatch in L2.cls.npy"):
        fixed = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", verify=True, **KW)
    assert not fixed.from_cache
    np.testing.assert_allclose(fixed.get(), ref, atol=1e-6)


def test_bad_image_raises_with_its_path(tiny_backbone, image_folder, cache_dir):
    truncated_jpeg(image_folder / "coat" / "zz_cut.jpg")
    with pytest.raises(DataError, match=r"zz_cut\.jpg: cannot decode image \(truncated file\)\. .*--on-error skip"):
        vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, **KW)


def test_skip_lists_skipped_images_everywhere(tiny_backbone, image_folder, cache_dir):
    truncated_jpeg(image_folder / "coat" / "zz_cut.jpg")
    Image.new("RGB", (5, 5)).save(image_folder / "shoe" / "zz_tiny.png")
    emb = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, on_error="skip", **KW)
    assert len(emb) == 18 and emb.get().shape[0] == 18
    reasons = {s["id"]: s["reason"] for s in emb.skipped}
    assert set(reasons) == {"coat/zz_cut.jpg", "shoe/zz_tiny.png"}
    assert "smaller than one 8x8 px patch" in reasons["shoe/zz_tiny.png"]
    assert "coat/zz_cut.jpg" not in emb.ids
    manifest = json.loads((emb.path / "manifest.json").read_text())
    assert {s["id"] for s in manifest["skipped"]} == set(reasons)
    # a later strict call must not silently accept the cached skips
    with pytest.raises(DataError, match=r"2 image\(s\) could not be embedded"):
        vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, **KW)


def test_user_files_are_never_modified(tiny_backbone, image_folder, cache_dir):
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in image_folder.rglob("*") if p.is_file()}
    vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, **KW)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in image_folder.rglob("*") if p.is_file()}
    assert before == after


def test_cache_dir_from_environment(tiny_backbone, image_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("VITLAB_CACHE_DIR", str(tmp_path / "envcache"))
    emb = vitlab.embed(tiny_backbone, f"folder:{image_folder}", **KW)
    assert str(emb.path).startswith(str(tmp_path / "envcache"))


def test_workers_give_the_same_numbers(tiny_backbone, image_folder, tmp_path):
    a = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=tmp_path / "a", **KW)
    b = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=tmp_path / "b",
                     **{**KW, "num_workers": 2, "batch_size": 5})
    np.testing.assert_allclose(a.get(), b.get(), atol=1e-5)


def test_bad_options(tiny_backbone, image_folder, cache_dir):
    with pytest.raises(ConfigError, match="on_error must be one of raise, skip"):
        vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, on_error="ignore")
    with pytest.raises(ConfigError, match="unknown pooling 'max'; choose one of cls, mean, cls\\+mean"):
        vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, pool="max")
    with pytest.raises(ConfigError, match="unknown precision 'int4'"):
        vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, precision="int4", **KW)


def test_store_listing_and_clear(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)
    store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)
    [entry] = store.entries()
    assert entry["complete"] and entry["n"] == 18 and entry["backbone"] == "random:timm:vit_tiny_patch16_224"
    assert store.clear() == 1 and store.entries() == []
