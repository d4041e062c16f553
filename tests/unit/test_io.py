"""``vitlab._io``: the one file hasher, stat key, atomic write and link-safe removal; ``vitlab._cache``'s rule."""

from __future__ import annotations

import errno
import hashlib
import os

import numpy as np
import pytest

from vitlab._cache import NAMESPACES, entry_path, scan
from vitlab._io import (atomic_path, atomic_write, atomic_write_json, cache_root, hash_file, open_lock, remove_tree,
                        stat_key, use_cache_root)
from vitlab.data.base import file_content_key, file_stat_key
from vitlab.errors import WriteError


def test_one_hasher_gives_the_digests_the_old_four_gave(tmp_path):
    """Cache keys and manifests do not change: blake2b-128 (data, checkpoints) and sha256 (cache checksums)."""
    p = tmp_path / "x.bin"
    data = np.random.default_rng(0).bytes(5 << 20)  # > one 4 MiB block
    p.write_bytes(data)
    assert hash_file(p) == hashlib.blake2b(data, digest_size=16).hexdigest() == file_content_key([p])[0]
    assert hash_file(p, "sha256") == hashlib.sha256(data).hexdigest()
    with pytest.raises(ValueError, match="unknown hash algorithm 'md5'"):
        hash_file(p, "md5")


def test_stat_key_follows_a_rewrite_and_a_broken_link_has_one(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(b"x")
    before = stat_key(p)
    st = p.stat()
    p.write_bytes(b"y")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back: ctime still moves
    assert stat_key(p) != before and file_stat_key([p]) == [stat_key(p)]
    (tmp_path / "dead.png").symlink_to(tmp_path / "nowhere")
    assert len(stat_key(tmp_path / "dead.png")) == 4


def test_atomic_write_keeps_the_old_file_and_leaves_no_temporary_on_failure(tmp_path, monkeypatch):
    p = atomic_write(tmp_path / "r.json", "old")
    import vitlab._io as io_mod

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(io_mod.os, "replace", full)
    with pytest.raises(WriteError, match=r"^cannot write .*/r\.json \(no space left on device: 8 B needed, .* free\)\. "
                                         r"Free some space or write it somewhere else\.$") as e:
        atomic_write_json(p, {"n": 1})
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["r.json"]


def test_atomic_path_removes_its_temporary_on_any_error(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "x.npz") as tmp:
            tmp.write_bytes(b"half")
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_permission_and_read_only_messages_name_the_fix(tmp_path):
    from vitlab._io import write_error

    assert "permission denied). Fix the permissions of" in str(write_error(tmp_path / "a", OSError(13, "x")))
    assert "(read-only file system). Pass --out" in str(write_error(tmp_path / "a", OSError(30, "x"),
                                                                     elsewhere="pass --out"))


def test_remove_tree_never_follows_a_link(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "f").write_text("mine")
    (tmp_path / "link").symlink_to(keep, target_is_directory=True)
    with pytest.raises(OSError, match="not a real directory"):
        remove_tree(tmp_path / "link")
    entry = tmp_path / "entry"
    entry.mkdir()
    (entry / "inner").symlink_to(keep, target_is_directory=True)
    remove_tree(entry)
    assert not entry.exists() and (keep / "f").read_text() == "mine"


def test_open_lock_creates_nothing_through_a_link(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "entry").symlink_to(target, target_is_directory=True)
    with pytest.raises(OSError):
        open_lock(tmp_path / "entry")
    real = tmp_path / "real"
    real.mkdir()
    (real / ".lock").symlink_to(tmp_path / "victim")
    with pytest.raises(OSError):
        open_lock(real)
    assert list(target.iterdir()) == [] and not (tmp_path / "victim").exists()
    with open_lock(tmp_path) as f:
        assert f.name is not None and (tmp_path / ".lock").is_file()


def test_cache_root_order_override_context_env(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLAB_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    with use_cache_root(tmp_path / "ctx"):
        assert cache_root() == tmp_path / "ctx" and cache_root(tmp_path / "flag") == tmp_path / "flag"
        assert entry_path("specs", "a" * 32 + ".json") == tmp_path / "ctx" / "specs" / ("a" * 32 + ".json")
    assert cache_root() == tmp_path / "env"


def test_entry_path_refuses_a_name_the_namespace_would_not_own():
    with pytest.raises(ValueError, match="is not an entry name of cache namespace 'text'"):
        entry_path("text", "../../etc/passwd", "/c")


def test_every_namespace_declares_its_shape():
    for e in NAMESPACES:
        ns = e.target
        assert ns.entry in ("dir", "file") and ns.describe.count(":") == 1
        assert (ns.marker is not None) == (ns.entry == "dir")


def test_a_file_where_a_namespace_folder_belongs_is_reported(tmp_path):
    (tmp_path / "text").write_text("mine")
    [f] = scan(tmp_path, ["text"])
    assert not f.entry and f.reason == "a file where the text/ folder belongs"
