"""Issue 18 part 1: ``vitlab cache clear`` removes vitlab's own entries and nothing else, in every namespace.

Each case builds what a user may have (a project folder under ``--cache-dir``, a symlinked ``embeddings/``,
a symlinked entry, a stray file), runs ``cache ls`` / ``cache clear`` through the CLI and checks that the
user's files are byte-identical afterwards.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import vitlab
from tests.reliability.conftest import tree
from vitlab._cache import NAMESPACES, scan
from vitlab.cli import app
from vitlab.errors import CacheError
from vitlab.store import EmbeddingStore
from vitlab.store.admin import cache_clear

runner = CliRunner()
DIGEST = "0123456789abcdef01234567"  # a name of the shape of an embeddings entry


def _user_folder(root: Path) -> Path:
    (root / "photos2019").mkdir(parents=True)
    (root / "photos2019" / "a.jpg").write_bytes(b"\xff\xd8 my photo")
    (root / "thesis").mkdir()
    (root / "thesis" / "chapter1.tex").write_text("\\chapter{One}")
    np.save(root / "thesis" / "feats.npy", np.arange(6.0))
    return root


def _clear(cache: Path, *extra: str, input: str | None = None):
    return runner.invoke(app, ["cache", "clear", "--cache-dir", str(cache), *extra], input=input)


@pytest.fixture
def embedded(tmp_path):
    """A cache with one real embeddings entry (pixels on 12 images: fast)."""
    cache = tmp_path / "cache"
    emb = vitlab.embed("pixels:8", "sample:digits?limit=12", cache_dir=cache, progress=False, num_workers=0, pool="mean")
    return cache, emb.path


def test_a_project_folder_under_cache_dir_is_listed_and_never_removed(tmp_path):
    cache = tmp_path / "project"
    (cache / "embeddings" / "clip_run1").mkdir(parents=True)
    np.save(cache / "embeddings" / "clip_run1" / "feats.npy", np.ones((3, 4)))
    before = tree(cache)
    ls = runner.invoke(app, ["cache", "ls", "--cache-dir", str(cache), "--json"])
    doc = json.loads(ls.stdout)
    assert doc["entries"] == [] and [x["name"] for x in doc["left_alone"]] == ["clip_run1"]
    res = _clear(cache, "--yes")
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "removed 0 entr(ies)" in out
    assert "left alone:" in out and "clip_run1: its name is not that of an entry of embeddings/" in out
    assert tree(cache) == before
    res = _clear(cache, input="y\n")  # through the prompt: nothing to confirm, nothing removed
    assert res.exit_code == 0 and tree(cache) == before


def test_a_digest_named_folder_without_key_json_is_not_an_entry(tmp_path):
    cache = tmp_path / "c"
    user = cache / "embeddings" / DIGEST
    user.mkdir(parents=True)
    (user / "manifest.json").write_text('{"mine": true}')  # looks a bit like an entry, but no key.json
    before = tree(cache)
    res = _clear(cache, "--yes")
    assert res.exit_code == 0 and "no key.json: not a vitlab embeddings entry" in " ".join(res.output.split())
    assert tree(cache) == before


def test_a_symlinked_embeddings_folder_is_not_followed(tmp_path, embedded):
    cache, entry = embedded
    user = _user_folder(tmp_path / "home" / "me")
    (user / DIGEST).mkdir()  # even a vitlab-looking entry behind the link stays
    (user / DIGEST / "key.json").write_text(json.dumps({"digest": DIGEST, "key": {}, "uri": "x"}))
    real = cache / "embeddings"
    real.rename(tmp_path / "moved")
    real.symlink_to(user, target_is_directory=True)
    before = tree(user)
    res = _clear(cache, "--yes")
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "the embeddings/ folder is a symbolic link" in out and "not followed" in out
    assert tree(user) == before and real.is_symlink()
    assert not (user / ".lock").exists() and not (user / DIGEST / ".lock").exists()


def test_a_symlinked_entry_is_left_alone_without_a_lock_file_or_traceback(tmp_path, embedded):
    cache, entry = embedded
    user = _user_folder(tmp_path / "data")
    link = cache / "embeddings" / DIGEST
    link.symlink_to(user, target_is_directory=True)
    before = tree(user)
    res = _clear(cache, "--yes")
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "Traceback" not in res.output
    assert "removed 1 entr(ies)" in out and f"{DIGEST}: a symbolic link" in out
    assert not entry.exists() and link.is_symlink() and tree(user) == before and not (user / ".lock").exists()


def test_a_symlinked_lock_file_is_never_followed(tmp_path, embedded):
    cache, entry = embedded
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (entry / ".lock").unlink(missing_ok=True)
    (entry / ".lock").symlink_to(victim)
    res = _clear(cache, "--yes")
    assert res.exit_code == 0 and "holds or became a symbolic link" in " ".join(res.output.split())
    assert victim.read_text() == "precious" and entry.exists()


def test_a_stray_file_gives_an_honest_line_not_not_writable(tmp_path, embedded):
    cache, entry = embedded
    (cache / "embeddings" / "notes.txt").write_text("mine")
    res = _clear(cache, "--yes")
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "not writable" not in out
    assert "notes.txt: a file, not a embeddings entry folder" in out
    assert (cache / "embeddings" / "notes.txt").read_text() == "mine" and not entry.exists()


def test_embedding_into_a_symlinked_entry_is_one_line_and_writes_nothing_there(tmp_path):
    cache = tmp_path / "c"
    store = EmbeddingStore(cache)
    src = vitlab.load_source("sample:digits?limit=12")
    bb = vitlab.load_backbone("pixels:8")
    target = _user_folder(tmp_path / "data")
    store.entry_dir(store.key_for(bb, src, -1)).symlink_to(target, target_is_directory=True)
    before = tree(target)
    with pytest.raises(CacheError, match=r"is a symbolic link; vitlab never writes through a link in its cache"):
        store.get_or_compute(bb, src, progress=False, num_workers=0, pool="mean")
    assert tree(target) == before


def test_an_abandoned_lock_only_entry_is_vitlab_s_and_removed(tmp_path):
    cache = tmp_path / "c"
    (cache / "embeddings" / DIGEST).mkdir(parents=True)
    (cache / "embeddings" / DIGEST / ".lock").touch()  # a run stopped before writing key.json
    assert _clear(cache, "--yes").exit_code == 0 and not (cache / "embeddings" / DIGEST).exists()


# -- every namespace, one rule --------------------------------------------------------------------------
def _valid_entries(cache: Path) -> dict[str, Path]:
    """One genuine entry in every namespace, written by the code that owns it."""
    from vitlab._cache import entry_path, open_entry
    from vitlab.backbones.file import _remember_spec
    from vitlab.data.wds import _cached_scan
    from vitlab.inspect.pca import PatchPCA
    from vitlab.protocols.text_cache import _save, text_cache_path
    from vitlab._io import use_cache_root
    import tarfile
    import torch

    out = {}
    vitlab.embed("pixels:8", "sample:digits?limit=12", cache_dir=cache, progress=False, num_workers=0, pool="mean")
    out["embeddings"] = next((cache / "embeddings").iterdir())
    key = {"schema": 1, "backbone": "b", "text_weights_id": "t", "templates": ["{}"], "classnames": ["cat"]}
    out["text"] = text_cache_path(cache, key)
    _save(out["text"], key, np.zeros((1, 1, 4), np.float32))
    with use_cache_root(cache):
        _remember_spec("ab" * 16, vitlab.load_backbone("pixels:8").spec)
        out["specs"] = entry_path("specs", "ab" * 16 + ".json")
        tar = cache.parent / "shard.tar"
        with tarfile.open(tar, "w") as tf:
            tf.add(Path(vitlab.__file__), arcname="000.txt")
        _cached_scan(tar, None)
        out["wds-index"] = next((cache / "wds-index").iterdir())
        out["pca"] = PatchPCA(backbone_id="w", layer=1).fit(torch.randn(2, 4, 8), (2, 2)).save(
            entry_path("pca", "cd" * 16 + ".npz"))
        out["tune-resume"] = open_entry("tune-resume", "0123456789ab", None, {"backbone": "demo"})
        from vitlab.exploration.cache import load_or_compute_layout
        from vitlab.exploration.layout import LayoutConfig

        lay = load_or_compute_layout(cache, np.random.default_rng(0).normal(size=(12, 3)).astype(np.float32),
                                     LayoutConfig(method="pca"), embeddings="e", layer=1, pool="cls")
        out["layouts"] = Path(lay.info["cache_file"])
    return out


def test_every_namespace_lists_its_entries_and_leaves_look_alikes_alone(tmp_path):
    cache = tmp_path / "c"
    entries = _valid_entries(cache)
    assert sorted(entries) == sorted(e.name for e in NAMESPACES)
    fakes = {  # right folder, right name shape, not vitlab's content (or not its shape)
        "text": cache / "text" / ("e" * 24 + ".npz"), "specs": cache / "specs" / ("e" * 32 + ".json"),
        "wds-index": cache / "wds-index" / ("e" * 32 + ".json"), "pca": cache / "pca" / ("e" * 32 + ".npz"),
        "layouts": cache / "layouts" / ("e" * 24 + ".npz"), "tune-resume": cache / "tune-resume" / ("e" * 12),
    }
    for ns, p in fakes.items():
        if ns == "tune-resume":
            p.mkdir()
            (p / "run.json").write_text('{"my": "notes"}')
        else:
            p.write_text('{"my": "notes"}')
    (cache / "specs" / "README").write_text("mine")
    user_before = {ns: tree(p) if p.is_dir() else p.read_bytes() for ns, p in fakes.items()}
    found = scan(cache)
    listed = {f.namespace for f in found if f.entry}
    assert listed == set(entries), [f.to_dict() for f in found]
    left = {f.path for f in found if not f.entry}
    assert set(fakes.values()) | {cache / "specs" / "README"} <= left
    res = cache_clear(cache)
    assert sorted(Path(p) for p in res["removed"]) == sorted(entries.values())
    assert not any(p.exists() for p in entries.values())
    assert {ns: tree(p) if p.is_dir() else p.read_bytes() for ns, p in fakes.items()} == user_before
    assert (cache / "specs" / "README").read_text() == "mine"


def test_cache_clear_namespace_option_limits_what_goes(tmp_path):
    cache = tmp_path / "c"
    entries = _valid_entries(cache)
    res = _clear(cache, "--namespace", "text", "-n", "specs", "--yes")
    assert res.exit_code == 0 and "removed 2 entr(ies) (text 1, specs 1)" in " ".join(res.output.split())
    assert not entries["text"].exists() and not entries["specs"].exists() and entries["embeddings"].exists()
    bad = _clear(cache, "-n", "embedding", "--yes")
    assert bad.exit_code == 2 and "unknown cache namespace 'embedding'. Did you mean: embeddings" in bad.output


def test_cache_dir_governs_specs_and_wds_index(tmp_path, monkeypatch):
    """specs/ (file: checkpoints) and wds-index/ follow --cache-dir, not $VITLAB_CACHE_DIR / ~/.cache."""
    import tarfile

    from PIL import Image

    default = tmp_path / "default"
    monkeypatch.setenv("VITLAB_CACHE_DIR", str(default))
    shards = tmp_path / "wds"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w") as tf:
        for i in range(4):
            p = tmp_path / f"{i:03d}.png"
            Image.new("RGB", (16, 16), (i * 40, 0, 0)).save(p)
            tf.add(p, arcname=p.name)
    cache = tmp_path / "mine"
    res = runner.invoke(app, ["embed", "-b", "demo:fmnist-vit", "-d", f"wds:{shards}", "--cache-dir", str(cache),
                              "--num-workers", "0", "--json"])
    assert res.exit_code == 0, res.output
    assert list((cache / "wds-index").glob("*.json")) and list((cache / "specs").glob("*.json"))
    assert not default.exists()


def test_an_index_of_the_older_wds_format_is_still_vitlab_s_to_clear(tmp_path):
    cache = tmp_path / "c"
    old = cache / "wds-index" / ("f" * 32 + ".json")
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps([["000", {"png": [512, 100]}, None]]))  # INDEX_VERSION 1: a bare list of rows
    [found] = scan(cache, ["wds-index"])
    assert found.entry and found.info["status"] == "format 1, no longer read"
    assert cache_clear(cache)["removed"] == [str(old)] and not old.exists()
