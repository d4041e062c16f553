"""wds: WebDataset shards (img2dataset layout) read in place: index, labels, fingerprint, bad shards, embedding."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vitlab
from vitlab.data.images import ImageDecodeError
from vitlab.data.sample import SampleSource
from vitlab.data.tar_index import scan_tar
from vitlab.data.wds import WdsSource, expand_braces
from vitlab.errors import DataError

NAMES = ("shirt", "shoe", "bag")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Shard indexes are remembered under the cache root: keep them in this test's folder."""
    monkeypatch.setenv("VITLAB_CACHE_DIR", str(tmp_path / "default-cache"))


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _png(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, format="PNG")
    return b.getvalue()


def write_shards(root: Path, n_shards: int = 2, per_shard: int = 5, *, cls: bool = True, skip_image: str | None = None,
                 corrupt: str | None = None, folder: Path | None = None) -> Path:
    """img2dataset-like shards of bundled Fashion-MNIST images: <key>.png + .json (+ .cls + .txt).

    With ``folder``, the same images are also written as PNGs in class folders (a reference source).
    """
    imgs = SampleSource("fashion-mnist").images
    root.mkdir(parents=True, exist_ok=True)
    k = 0
    for s in range(n_shards):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tf:
            for j in range(per_shard):
                key = f"{s:05d}{j:04d}"
                c = k % 3
                if key != skip_image:
                    data = _png(imgs[k])
                    _add(tf, f"{key}.png", data[: len(data) // 3] if key == corrupt else data)
                    if folder is not None:
                        (folder / NAMES[c]).mkdir(parents=True, exist_ok=True)
                        (folder / NAMES[c] / f"{key}.png").write_bytes(data)
                _add(tf, f"{key}.json", json.dumps({"key": key, "status": "success", "name": NAMES[c]}).encode())
                _add(tf, f"{key}.txt", b"a caption")
                if cls:
                    _add(tf, f"{key}.cls", str(c).encode())
                k += 1
    return root


def test_index_ids_and_cls_labels(tmp_path):
    root = write_shards(tmp_path / "wds")
    src = vitlab.load_source(f"wds:{root}")
    assert len(src) == 10 and src.ids[:2] == ["000000000", "000000001"] and src.ids[5] == "000010000"
    assert src.classes == ["0", "1", "2"] and src.labels.tolist() == [i % 3 for i in range(10)]
    s = src[6]
    ref = SampleSource("fashion-mnist").images[6]
    assert s.id == "000010001" and s.label == 0
    np.testing.assert_array_equal(np.asarray(s.image)[..., 0], ref)  # bytes read by offset decode to the original
    assert src.describe_item(6).endswith("00001.tar:000010001.png")


def test_label_from_a_json_field_and_unlabelled(tmp_path):
    root = write_shards(tmp_path / "wds", cls=False)
    src = vitlab.load_source(f"wds:{root}?label=name")
    assert src.classes == ["bag", "shirt", "shoe"]
    assert [src.classes[v] for v in src.labels] == [NAMES[i % 3] for i in range(10)]
    assert src.uri.endswith("?label=name")
    assert vitlab.load_source(f"wds:{root}").labels is None  # no .cls members, no ?label=: unlabelled
    with pytest.raises(DataError, match=r"00000\.tar key '000000000': no field 'colour' in its \.json"):
        vitlab.load_source(f"wds:{root}?label=colour")
    with tarfile.open(root / "00001.tar", "a") as tf:  # one key with a .cls among keys without
        _add(tf, "000019999.png", _png(np.zeros((28, 28), np.uint8)))
        _add(tf, "000019999.cls", b"1")
    with pytest.raises(DataError, match=r"00000\.tar key '000000000': no \.cls member, while 1 of 11 keys have one"):
        vitlab.load_source(f"wds:{root}")


def test_directory_file_brace_and_glob_select_the_same_samples(tmp_path):
    root = write_shards(tmp_path / "wds", n_shards=3, per_shard=2)
    whole = vitlab.load_source(f"wds:{root}")
    brace = vitlab.load_source(f"wds:{root}/{{00000..00002}}.tar")
    glob_ = vitlab.load_source(f"wds:{root}/0000*.tar")
    assert whole.ids == brace.ids == glob_.ids and whole.fingerprint == brace.fingerprint == glob_.fingerprint
    one = vitlab.load_source(f"wds:{root}/00001.tar")
    assert one.ids == ["000010000", "000010001"]
    assert expand_braces("a/{08..11}.tar") == ["a/08.tar", "a/09.tar", "a/10.tar", "a/11.tar"]


def test_fingerprint_follows_the_bytes(tmp_path):
    root = write_shards(tmp_path / "wds")
    fp = vitlab.load_source(f"wds:{root}").fingerprint
    assert vitlab.load_source(f"wds:{root}").fingerprint == fp
    content = vitlab.load_source(f"wds:{root}?fingerprint=content").fingerprint
    write_shards(root)  # rewritten with the same bytes: stat changes, content does not
    assert vitlab.load_source(f"wds:{root}").fingerprint != fp
    assert vitlab.load_source(f"wds:{root}?fingerprint=content").fingerprint == content
    with tarfile.open(root / "00001.tar", "a") as tf:  # one more sample
        _add(tf, "000019999.png", _png(np.zeros((28, 28), np.uint8)))
        _add(tf, "000019999.cls", b"1")
    assert vitlab.load_source(f"wds:{root}?fingerprint=content").fingerprint != content


def test_bad_shards_each_give_one_line(tmp_path):
    root = write_shards(tmp_path / "a", skip_image="000010002")
    with pytest.raises(DataError, match=r"00001\.tar key '000010002': has no image member \(found \.json, \.txt, "
                                        r"\.cls\)"):
        vitlab.load_source(f"wds:{root}")
    root = write_shards(tmp_path / "b")
    with pytest.raises(DataError, match=r"shard '.*/00002\.tar' does not exist \(6 of 8 missing\)"):
        vitlab.load_source(f"wds:{root}/{{00000..00007}}.tar")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.tar.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"no \.tar shards in this directory \(found x\.tar\.gz: compressed\)"):
        vitlab.load_source(f"wds:{tmp_path / 'c'}")
    data = (root / "00000.tar").read_bytes()
    with tarfile.open(root / "00000.tar") as tf:
        boundary = tf.getmembers()[4].offset  # a cut exactly between two members: no partial header at all
    for cut in (len(data) // 2, boundary, boundary + 100):
        (tmp_path / "cut.tar").write_bytes(data[:cut])
        with pytest.raises(DataError, match=r"cut\.tar: the shard is truncated or damaged at byte [\d,]+ \((member "
                                            r".* runs past the end of the file|no end-of-archive marker|header "
                                            r"checksum mismatch)\)"):
            vitlab.load_source(f"wds:{tmp_path / 'cut.tar'}")
    (tmp_path / "notes.tar").write_text("just text, named .tar\n" * 40)
    with pytest.raises(DataError, match=r"notes\.tar: not a tar archive"):
        vitlab.load_source(f"wds:{tmp_path / 'notes.tar'}")
    (tmp_path / "d").mkdir()
    for s in ("00000", "00001"):  # the same key in two shards
        with tarfile.open(tmp_path / "d" / f"{s}.tar", "w") as tf:
            _add(tf, "k1.png", _png(np.zeros((8, 8), np.uint8)))
    with pytest.raises(DataError, match=r"00001\.tar key 'k1': the same key is also in .*00000\.tar"):
        vitlab.load_source(f"wds:{tmp_path / 'd'}")


def test_corrupt_image_names_the_member_and_can_be_skipped(tmp_path):
    root = write_shards(tmp_path / "wds", corrupt="000000003")
    src = vitlab.load_source(f"wds:{root}")
    with pytest.raises(ImageDecodeError, match=r"00000\.tar:000000003\.png: cannot decode image"):
        src.load_image(3)
    emb = vitlab.embed("demo:fmnist-vit", src, cache_dir=tmp_path / "cache", progress=False, num_workers=0,
                       on_error="skip")
    assert len(emb) == 9 and [s["id"] for s in emb.skipped] == ["000000003"]
    assert "00000.tar:000000003.png" in emb.skipped[0]["reason"]


def test_embeds_like_the_same_images_in_a_folder(tmp_path):
    """Through the store with demo:fmnist-vit (DataLoader workers included): the same numbers as folder:."""
    root = write_shards(tmp_path / "wds", folder=tmp_path / "ref")
    cache = tmp_path / "cache"
    src = vitlab.load_source(f"wds:{root}?label=name")
    emb = vitlab.embed("demo:fmnist-vit", src, cache_dir=cache, progress=False, num_workers=1, batch_size=4)
    ref = vitlab.embed("demo:fmnist-vit", f"folder:{tmp_path / 'ref'}", cache_dir=cache, progress=False,
                       num_workers=0)
    ref_keys = [Path(i).stem for i in ref.ids]  # folder ids are <class>/<key>.png
    pos = [ref_keys.index(k) for k in emb.ids]
    np.testing.assert_array_equal(emb.get(), ref.get()[pos])
    assert [emb.classes[v] for v in emb.labels] == [ref.classes[ref.labels[p]] for p in pos]
    assert len(emb) == len(ref) == 10
    again = vitlab.embed("demo:fmnist-vit", f"wds:{root}?label=name", cache_dir=cache, progress=False, num_workers=0)
    assert again.from_cache and again.digest == emb.digest


def _tarfile_index(path: Path) -> list[tuple[str, int, int]]:
    with tarfile.open(path) as tf:
        return [(m.name, m.offset_data, m.size) for m in tf if m.isfile()]


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_header_walk_matches_tarfile(tmp_path, fmt):
    """The ustar walk and stdlib tarfile give the same index (GNU/pax long names fall back to tarfile)."""
    long_key = "d/" + "x" * 120  # > 100 chars: a ustar prefix, a GNU 'L' record or a pax header
    p = tmp_path / "s.tar"
    with tarfile.open(p, "w", format=fmt) as tf:
        for key in ("a", "sub/b", long_key if fmt != tarfile.USTAR_FORMAT else "d/" + "x" * 90):
            _add(tf, f"{key}.png", _png(np.full((4, 4), 7, np.uint8)))
            _add(tf, f"{key}.cls", b"1")
    assert scan_tar(p) == _tarfile_index(p) and len(scan_tar(p)) == 6
    index = scan_tar(p)
    data = bytearray(p.read_bytes())
    data[index[0][1] + 10] ^= 0xFF  # inside the first member's data: not a header, still readable
    p.write_bytes(bytes(data))
    assert scan_tar(p) == _tarfile_index(p) == index
    data[index[2][1] - 512 + 1] ^= 0xFF  # the third member's header (its name): checksum mismatch
    p.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"truncated or damaged at byte .*header checksum mismatch"):
        WdsSource(str(p))


def test_the_index_is_remembered_and_redone_when_a_shard_changes(tmp_path, monkeypatch):
    root = write_shards(tmp_path / "wds", cls=False)
    first = vitlab.load_source(f"wds:{root}?label=name")
    remembered = sorted((tmp_path / "default-cache" / "wds-index").glob("*.json"))
    assert len(remembered) == 2  # one per shard
    scans = []
    real = WdsSource._scan
    monkeypatch.setattr(WdsSource, "_scan", staticmethod(lambda tar, label: scans.append(tar) or real(tar, label)))
    again = vitlab.load_source(f"wds:{root}?label=name")
    assert scans == [] and again.ids == first.ids and again.fingerprint == first.fingerprint
    assert [again.classes[v] for v in again.labels] == [first.classes[v] for v in first.labels]
    np.testing.assert_array_equal(np.asarray(again.load_image(7)), np.asarray(first.load_image(7)))
    vitlab.load_source(f"wds:{root}")  # another label mode is another index
    assert len(scans) == 2
    with tarfile.open(root / "00001.tar", "a") as tf:  # a changed shard is indexed again, the other is not
        _add(tf, "000019999.png", _png(np.zeros((28, 28), np.uint8)))
        _add(tf, "000019999.json", json.dumps({"name": "bag"}).encode())
    changed = vitlab.load_source(f"wds:{root}?label=name")
    assert [t.name for t in scans[2:]] == ["00001.tar"] and changed.ids[-1] == "000019999" and len(changed) == 11
