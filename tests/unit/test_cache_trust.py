"""The cache must not silently serve wrong numbers (issue 8 part 4) and store-side bad inputs (part 5).

Hit checks on consolidated arrays, data fingerprints that see in-place rewrites, a weights id that
follows in-place weight changes, honest precision, read-only caches, clear vs a running embed,
truthful Ctrl-C hints, small resumable shards, full source URIs.
"""

from __future__ import annotations

import fcntl
import gzip
import importlib.util
import json
import os
import shutil
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitlab
from tests.conftest import write_images
from vitlab.errors import CacheError, ConfigError, Interrupted, WriteError
from vitlab.store import EmbeddingStore, shards
from vitlab._io import stat_key
from vitlab.store import entry as entry_mod

KW = dict(num_workers=0, progress=False, batch_size=4)


def _tiny(seed: int = 0):
    """A fresh tiny backbone (tests that change weights must not touch the session fixture)."""
    return vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, seed=seed, img_size=32,
                                patch_size=8, embed_dim=32, depth=3, num_heads=2)


def _flip_in_place(path: Path, offset: int) -> None:
    """Flip one byte in place (no truncation, same size), as a disk error or a stray write would."""
    time.sleep(0.02)  # let a coarse filesystem clock tick: the write must get a new ctime
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def _npy_data_offset(path: Path) -> int:
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return f.tell()


def _sha_calls(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = entry_mod.hash_file

    def counting(path, *a, **k):
        calls.append(Path(path).name)
        return real(path, *a, **k)

    monkeypatch.setattr(entry_mod, "hash_file", counting)
    return calls


# -- 1. consolidated arrays: a cheap stat check on every hit --------------------------------------
@pytest.mark.parametrize("name", ["L2.cls.npy", "labels.npy", "index.npy"])
def test_in_place_byte_flip_is_caught_on_a_plain_hit(tiny_backbone, image_folder, cache_dir, name):
    store = EmbeddingStore(cache_dir)
    emb = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)
    ref, ref_labels = np.array(emb.get()), np.array(emb.labels)
    path = emb.path / name
    _flip_in_place(path, _npy_data_offset(path) + 3)  # in the data, not the header
    with pytest.warns(UserWarning, match=rf"is corrupt \(checksum mismatch in {name}\); recomputing"):
        again = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)
    assert not again.from_cache
    np.testing.assert_array_equal(again.get(), ref)
    np.testing.assert_array_equal(again.labels, ref_labels)


def test_flip_with_mtime_put_back_is_still_caught_by_ctime(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)
    emb = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)
    path = emb.path / "L2.cls.npy"
    before = path.stat()
    _flip_in_place(path, _npy_data_offset(path))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_size == before.st_size
    with pytest.warns(UserWarning, match=r"checksum mismatch in L2\.cls\.npy"):
        assert not store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW).from_cache


def test_corruption_no_stat_can_see_needs_verify(tiny_backbone, image_folder, cache_dir):
    """Bit rot under an unchanged stat (simulated by re-recording the stat): only --verify sees it."""
    store = EmbeddingStore(cache_dir)
    emb = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)
    ref = np.array(emb.get())
    path = emb.path / "L2.cls.npy"
    _flip_in_place(path, _npy_data_offset(path))
    mf = emb.path / "manifest.json"
    manifest = json.loads(mf.read_text())
    manifest["stat"]["L2.cls.npy"] = stat_key(path)
    mf.write_text(json.dumps(manifest))
    served = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)
    assert served.from_cache and not np.array_equal(served.get(), ref)  # the documented limit
    with pytest.warns(UserWarning, match=r"checksum mismatch in L2\.cls\.npy"):
        fixed = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", verify=True, **KW)
    assert not fixed.from_cache
    np.testing.assert_array_equal(fixed.get(), ref)


def test_clean_hit_hashes_nothing_and_a_touched_file_is_hashed_once(tiny_backbone, image_folder, cache_dir,
                                                                    monkeypatch):
    store = EmbeddingStore(cache_dir)
    emb = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)
    assert set(json.loads((emb.path / "manifest.json").read_text())["stat"]) == \
        {"L2.cls.npy", "L2.mean.npy", "index.npy", "labels.npy", "rows.json"}
    calls = _sha_calls(monkeypatch)
    assert store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW).from_cache
    assert calls == []
    time.sleep(0.02)
    (emb.path / "rows.json").touch()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW).from_cache
    assert not [w for w in caught if "corrupt" in str(w.message)]
    assert calls == ["rows.json"]  # intact: served, and its new stat recorded
    assert store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW).from_cache
    assert calls == ["rows.json"]
    store.get_or_compute(tiny_backbone, f"folder:{image_folder}", verify=True, **KW)
    assert len(calls) == 6  # --verify: every file


# -- 2. data fingerprints see in-place rewrites ------------------------------------------------------
def _rewrite_keeping_mtime(path: Path, image: Image.Image) -> None:
    """Replace a file's bytes in place (same size), then put its mtime back, as cp -p / rsync -t / touch -r do."""
    st = path.stat()
    time.sleep(0.02)
    data = path.read_bytes()
    image.save(path)
    assert path.stat().st_size == len(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_image_replaced_with_its_old_mtime_is_recomputed(tiny_backbone, tmp_path, cache_dir):
    root = tmp_path / "bmp"
    for c, v in (("a", 30), ("b", 200)):
        (root / c).mkdir(parents=True)
        for j in range(2):
            Image.new("RGB", (32, 32), (v, v + j, 7)).save(root / c / f"{j}.bmp")
    first = vitlab.embed(tiny_backbone, f"folder:{root}", cache_dir=cache_dir, **KW)
    _rewrite_keeping_mtime(root / "a" / "0.bmp", Image.new("RGB", (32, 32), (250, 10, 90)))
    again = vitlab.embed(tiny_backbone, f"folder:{root}", cache_dir=cache_dir, **KW)
    assert not again.from_cache and not np.allclose(first.get()[0], again.get()[0])
    np.testing.assert_array_equal(first.get()[1:], again.get()[1:])


@pytest.mark.parametrize("kind", ["folder", "csv"])
def test_stat_fingerprint_covers_ctime_and_inode(image_folder, tmp_path, kind):
    uri = f"folder:{image_folder}"
    if kind == "csv":
        rows = [f"{p.relative_to(image_folder)},{p.parent.name}" for p in sorted(image_folder.rglob("*.png"))]
        (image_folder / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
        uri = f"csv:{image_folder / 'm.csv'}"
    fp = vitlab.load_source(uri).fingerprint
    p = image_folder / "bag" / "bag_00.png"
    raw = bytearray(p.read_bytes())
    raw[-20] ^= 0x01  # same size; mtime put back: only ctime tells
    _st = p.stat()
    time.sleep(0.02)
    with open(p, "r+b") as f:
        f.write(bytes(raw))
    os.utime(p, ns=(_st.st_atime_ns, _st.st_mtime_ns))
    fp2 = vitlab.load_source(uri).fingerprint
    assert fp2 != fp
    copy = p.with_name("copy.tmp")
    shutil.copy2(p, copy)  # same bytes, size and mtime; another inode
    os.replace(copy, p)
    assert vitlab.load_source(uri).fingerprint != fp2


@pytest.mark.parametrize("kind", ["folder", "csv"])
def test_fingerprint_content_query_works_for_folder_and_csv(image_folder, kind):
    uri = f"folder:{image_folder}"
    if kind == "csv":
        rows = [f"{p.relative_to(image_folder)},{p.parent.name}" for p in sorted(image_folder.rglob("*.png"))]
        (image_folder / "m.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
        uri = f"csv:{image_folder / 'm.csv'}"
    src = vitlab.load_source(f"{uri}?fingerprint=content")
    assert src.uri == f"{uri}?fingerprint=content"
    stat_fp, content_fp = vitlab.load_source(uri).fingerprint, src.fingerprint
    time.sleep(0.02)
    os.chmod(image_folder / "bag" / "bag_00.png", 0o600)  # ctime moves: stat sees it (a safe recompute)
    assert vitlab.load_source(uri).fingerprint != stat_fp
    assert vitlab.load_source(f"{uri}?fingerprint=content").fingerprint == content_fp
    Image.new("RGB", (28, 28), (1, 2, 3)).save(image_folder / "bag" / "bag_00.png")
    assert vitlab.load_source(f"{uri}?fingerprint=content").fingerprint != content_fp
    with pytest.raises(vitlab.errors.DataError, match=r"fingerprint must be 'stat' or 'content', got 'bytes'"):
        vitlab.load_source(f"{uri}?fingerprint=bytes")


# -- 3. weights_id follows in-place weight changes ---------------------------------------------------
def _add_data(bb):
    next(bb.model.parameters()).data.add_(1.0)


def _add_no_grad(bb):
    with torch.no_grad():
        next(bb.model.parameters()).add_(1.0)


def _load_state_dict(bb):
    sd = {k: v.clone() for k, v in bb.model.state_dict().items()}
    name = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 1)
    sd[name] = sd[name] * 2
    bb.model.load_state_dict(sd)


def _assign_data(bb):
    p = next(bb.model.parameters())
    p.data = torch.full_like(p, 0.5)


def _write_through_numpy(bb):  # no version bump, same pointer
    next(bb.model.parameters()).detach().numpy().reshape(-1)[0] += 3.0


def _swap_two_weights(bb):  # same multiset of values: only a position-aware checksum sees it
    w = next(p for p in bb.model.parameters() if p.numel() > 1).data.view(-1)
    w[[0, 1]] = w[[1, 0]].clone()


@pytest.mark.parametrize("change", [_add_data, _add_no_grad, _load_state_dict, _assign_data, _write_through_numpy,
                                    _swap_two_weights])
def test_weights_id_and_cache_key_follow_in_place_changes(image_folder, cache_dir, change):
    bb = _tiny()
    store = EmbeddingStore(cache_dir)
    first = store.get_or_compute(bb, f"folder:{image_folder}", **KW)
    wid = bb.weights_id
    change(bb)
    assert bb.weights_id != wid
    again = store.get_or_compute(bb, f"folder:{image_folder}", **KW)
    assert not again.from_cache and again.digest != first.digest
    assert not np.allclose(again.get(), first.get())


def test_weights_id_is_a_content_hash_not_a_change_counter():
    bb = _tiny()
    wid = bb.weights_id
    p = next(bb.model.parameters())
    p.data.mul_(2.0)
    assert bb.weights_id != wid
    p.data.div_(2.0)  # exact for a power of two: the same weights again, so the same id and a cache hit
    assert bb.weights_id == wid
    assert bb.weights_id == _tiny().weights_id  # and equal to a fresh load of the same weights
    bb.to("cpu")
    assert bb.weights_id == wid


@pytest.mark.parametrize("spec", ["none", "tome:r=1", "evit:keep=0.7"])
def test_accelerated_backbones_keep_the_source_id_until_changed(spec):
    from vitlab.accel import apply_accel

    bb = _tiny()
    wid = bb.weights_id
    fast = apply_accel(bb, spec)
    assert fast.weights_id == wid
    next(fast.model.parameters()).data.add_(1.0)
    assert fast.weights_id != wid
    assert bb.weights_id == wid  # the source model is a different object, untouched


# -- 4. precision: what is keyed is what was computed ------------------------------------------------
@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_cpu_autocast_is_honoured_and_keyed(tiny_backbone, image_folder, cache_dir, precision, dtype):
    store = EmbeddingStore(cache_dir)
    fp32 = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)
    half = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", precision=precision, **KW)
    assert half.key["precision"] == precision and half.digest != fp32.digest
    src = vitlab.load_source(f"folder:{image_folder}")
    tf = tiny_backbone.spec.preprocessing.build_transform()
    x = torch.stack([tf(src.load_image(i)) for i in range(4)])  # the first batch
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
        direct = tiny_backbone.forward_tokens(x, [2]).pooled(2, "cls").float().numpy()
    np.testing.assert_array_equal(half.get()[:4], direct)
    assert np.abs(half.get() - fp32.get()).max() > 1e-4  # really not fp32


def test_precision_the_backbone_cannot_run_is_refused_before_embedding(tiny_backbone, image_folder, cache_dir):
    if importlib.util.find_spec("torchao") is not None:
        pytest.skip("torchao's int8 may run under autocast; torch.ao's dynamic int8 does not")
    from vitlab.accel import apply_accel

    q = apply_accel(tiny_backbone, "int8")
    seen = []
    with pytest.raises(ConfigError, match=r"precision 'bf16' does not run on random:timm:vit_tiny_patch16_224 on "
                                          r"cpu \(autocast failed: .*\)\. Use --precision fp32\."):
        EmbeddingStore(cache_dir).get_or_compute(q, f"folder:{image_folder}", precision="bf16", on_batch=seen.append,
                                                 **KW)
    assert seen == [] and not list((cache_dir / "embeddings").glob("*/shards/*"))


def test_unknown_precision_fails_before_anything_is_loaded(image_folder, cache_dir):
    with pytest.raises(ConfigError, match=r"unknown precision 'fp8'; choose one of fp32, bf16, fp16"):
        vitlab.embed("timm:no_such_model_at_all", f"folder:{image_folder}", cache_dir=cache_dir, precision="fp8")


# -- 5. read-only cache dir --------------------------------------------------------------------------
def _read_only(path: Path, monkeypatch) -> None:
    """chmod 555; as root (which ignores mode bits) make the filesystem answer EACCES as it would."""
    os.chmod(path, 0o555)
    if os.geteuid() == 0:
        real_mkdir = Path.mkdir

        def mkdir(self, *a, **k):
            if str(self).startswith(str(path)) and not self.exists():
                raise PermissionError(13, "Permission denied", str(self))
            return real_mkdir(self, *a, **k)

        monkeypatch.setattr(Path, "mkdir", mkdir)


def test_read_only_cache_serves_hits_and_refuses_misses_in_one_line(tiny_backbone, image_folder, cache_dir,
                                                                   monkeypatch):
    store = EmbeddingStore(cache_dir)
    store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)
    _read_only(cache_dir / "embeddings", monkeypatch)
    try:
        assert EmbeddingStore(cache_dir).get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW).from_cache
        seen = []
        with pytest.raises(CacheError, match=rf"^cache dir {cache_dir} is not writable \(.*Permission denied\), and "
                                             r"these embeddings are not cached yet\. Pass --cache-dir <a writable "
                                             r"dir> or set VITLAB_CACHE_DIR\.$"):
            EmbeddingStore(cache_dir).get_or_compute(tiny_backbone, f"folder:{image_folder}", layers=[0],
                                                     on_batch=seen.append, **KW)
        assert seen == []
    finally:
        os.chmod(cache_dir / "embeddings", 0o755)


def test_a_full_disk_while_writing_shards_is_one_cache_error_line(tiny_backbone, image_folder, cache_dir,
                                                                   monkeypatch):
    real_open = open

    def full(file, mode="r", *a, **k):  # the disk fills on the first shard's temporary file
        if "shard-" in str(file) and "w" in mode:
            raise OSError(28, "No space left on device", str(file))
        return real_open(file, mode, *a, **k)

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(WriteError, match=r"^cannot write .*/shards/shard-0000000000\.safetensors \(no space "
                                         r"left on device: .* needed, .* free\)\. Free some space or pass "
                                         r"--cache-dir <another dir>; finished shards are kept\.$"):
        EmbeddingStore(cache_dir).get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW)


# -- 6. clear vs a running embed ---------------------------------------------------------------------
def test_clear_skips_the_entry_a_running_embed_holds(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)
    done = vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, layers=[0], **KW)
    results = []

    def clear_midway(rows):
        if rows == 4:
            with pytest.warns(UserWarning, match=r"1 cache entry is in use by a running embed and was kept "
                                                 r"\([0-9a-f]{12}\); run clear again once it has finished"):
                results.append(EmbeddingStore(cache_dir).clear())

    emb = store.get_or_compute(tiny_backbone, f"folder:{image_folder}", on_batch=clear_midway, **KW)
    assert results == [1]  # the finished entry went, the running one stayed
    assert not done.path.exists() and (emb.path / "manifest.json").exists()
    assert store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW).from_cache
    assert store.clear_entries() == {"removed": 1, "in_use": [], "left_alone": []}


def test_entry_deleted_under_a_running_embed_is_a_cache_error(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)

    def rm_midway(rows):
        if rows == 4:
            shutil.rmtree(next((cache_dir / "embeddings").iterdir()))

    with pytest.raises(CacheError, match=r"cache entry .* was deleted while this run was writing it .* Run the same "
                                         r"command again to recompute it\."):
        store.get_or_compute(tiny_backbone, f"folder:{image_folder}", on_batch=rm_midway, **KW)
    assert not store.get_or_compute(tiny_backbone, f"folder:{image_folder}", **KW).from_cache


def test_embed_waiting_on_a_cleared_entry_takes_a_fresh_lock(tiny_backbone, image_folder, cache_dir):
    store = EmbeddingStore(cache_dir)
    key = store.key_for(tiny_backbone, vitlab.load_source(f"folder:{image_folder}"), -1)
    entry = store.entry_dir(key)
    entry.mkdir(parents=True)
    holder = open(entry / ".lock", "a")
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process computing it
    out: list = []
    t = threading.Thread(target=lambda: out.append(_try(store.get_or_compute, tiny_backbone,
                                                        f"folder:{image_folder}", **KW)))
    t.start()
    time.sleep(0.5)  # the embed now waits on the lock
    shutil.rmtree(entry)  # ... which a clear removes (it holds the lock while deleting)
    fcntl.flock(holder, fcntl.LOCK_UN)
    holder.close()
    t.join(60)
    assert not isinstance(out[0], BaseException), out[0]
    assert not out[0].from_cache and (entry / "manifest.json").exists()


def _try(fn, *a, **k):
    try:
        return fn(*a, **k)
    except BaseException as e:  # noqa: BLE001 - reported to the main thread
        return e


# -- 7. Ctrl-C says truthfully what is kept ------------------------------------------------------------
def _ctrl_c_after(rows):
    def hook(done):
        if done >= rows:
            raise KeyboardInterrupt
    return hook


def test_ctrl_c_before_any_shard_says_nothing_is_kept(tiny_backbone, tmp_path, cache_dir):
    root = write_images(tmp_path / "many", n_per_class=10)
    with pytest.raises(Interrupted, match=r"^no shard was finished yet; nothing is kept\.$") as e:
        EmbeddingStore(cache_dir).get_or_compute(tiny_backbone, f"folder:{root}", shard_size=8,
                                                 on_batch=_ctrl_c_after(4), **KW)
    assert isinstance(e.value, KeyboardInterrupt) and e.value.resume_hint == str(e.value)


def test_ctrl_c_after_shards_counts_rows_and_shards(tiny_backbone, tmp_path, cache_dir):
    root = write_images(tmp_path / "many", n_per_class=10)  # 30 rows, shards of 8
    store = EmbeddingStore(cache_dir)
    with pytest.raises(Interrupted, match=r"^16 of 30 rows \(2 shards\) are kept: run the same command again to "
                                          r"resume\.$"):
        store.get_or_compute(tiny_backbone, f"folder:{root}", shard_size=8, on_batch=_ctrl_c_after(20), **KW)
    with pytest.raises(Interrupted, match=r"^24 of 30 rows \(3 shards\) are kept"):  # earlier shards count too
        store.get_or_compute(tiny_backbone, f"folder:{root}", shard_size=8, on_batch=_ctrl_c_after(8), **KW)


# -- 8. small, time-bounded shards; resume is bit-for-bit ----------------------------------------------
def test_interrupted_and_resumed_is_bit_identical(tiny_backbone, tmp_path, cache_dir):
    root = write_images(tmp_path / "many", n_per_class=10)
    store = EmbeddingStore(cache_dir)
    with pytest.raises(KeyboardInterrupt):
        store.get_or_compute(tiny_backbone, f"folder:{root}", shard_size=8, on_batch=_ctrl_c_after(12), **KW)
    with pytest.raises(KeyboardInterrupt):
        store.get_or_compute(tiny_backbone, f"folder:{root}", shard_size=8, on_batch=_ctrl_c_after(8), **KW)
    resumed = store.get_or_compute(tiny_backbone, f"folder:{root}", shard_size=8, **KW)
    fresh = EmbeddingStore(tmp_path / "fresh").get_or_compute(tiny_backbone, f"folder:{root}", shard_size=8, **KW)
    assert resumed.from_cache is False and json.loads((resumed.path / "manifest.json").read_text())["resumed"]
    for name in fresh.arrays:
        assert np.array_equal(resumed.arrays[name], fresh.arrays[name]), name
    assert np.array_equal(resumed.index, fresh.index) and resumed.ids == fresh.ids


def test_default_shards_are_flushed_by_time_and_resume_exactly(tiny_backbone, tmp_path, cache_dir, monkeypatch):
    root = write_images(tmp_path / "many", n_per_class=10)
    store = EmbeddingStore(cache_dir)
    monkeypatch.setattr(shards, "FLUSH_SECONDS", 0.0)  # every batch "takes" 30 s
    with pytest.raises(Interrupted, match=r"^12 of 30 rows \(3 shards\) are kept"):
        store.get_or_compute(tiny_backbone, f"folder:{root}", on_batch=_ctrl_c_after(12), **KW)
    entry = next((cache_dir / "embeddings").iterdir())
    sides = sorted(json.loads(p.read_text())["start"] for p in (entry / "shards").glob("*.json"))
    assert sides == [0, 4, 8]
    assert json.loads((entry / "key.json").read_text())["layout"] == {"shard_size": 4096, "flush_seconds": 0.0}
    seen: list[int] = []
    resumed = store.get_or_compute(tiny_backbone, f"folder:{root}", on_batch=seen.append, **KW)
    assert seen == [4, 8, 12, 16, 18]  # rows 12..30 only
    monkeypatch.setattr(shards, "FLUSH_SECONDS", 30.0)
    fresh = vitlab.embed(tiny_backbone, f"folder:{root}", cache_dir=tmp_path / "fresh", shard_size=None, **KW)
    for name in fresh.arrays:  # one shard there, eight here: the same bits
        assert np.array_equal(resumed.arrays[name], fresh.arrays[name]), name


def test_shard_size_is_validated_and_none_means_default(tiny_backbone, image_folder, cache_dir):
    with pytest.raises(ConfigError, match=r"batch_size and shard_size must be >= 1, got 4 and 0"):
        vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, shard_size=0, **KW)
    with pytest.raises(KeyboardInterrupt):
        vitlab.embed(tiny_backbone, f"folder:{image_folder}", cache_dir=cache_dir, shard_size=None,
                     on_batch=_ctrl_c_after(4), **KW)
    key = json.loads(next((cache_dir / "embeddings").glob("*/key.json")).read_text())
    assert key["layout"] == {"shard_size": 4096, "flush_seconds": 30.0}


# -- 9. cache ls keeps the whole source URI ------------------------------------------------------------
def _write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_entries_keep_the_query_of_the_source_uri(tiny_backbone, tmp_path, cache_dir):
    rng = np.random.default_rng(0)
    d = tmp_path / "idx"
    d.mkdir()
    _write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (6, 28, 28)))
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 0, 1, 2]))
    store = EmbeddingStore(cache_dir)
    for limit in (3, 5):
        src = vitlab.load_source(f"idx:{d}?split=test&limit={limit}")
        assert src.uri == f"idx:{d}?split=test&limit={limit}"
        store.get_or_compute(tiny_backbone, src, **KW)
    assert sorted(e["source"] for e in store.entries()) == [f"idx:{d}?split=test&limit=3",
                                                           f"idx:{d}?split=test&limit=5"]
