"""Data sources: folder, manifest, IDX, bundled sample; fingerprints; bad input messages."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import vitlab
from tests.conftest import truncated_jpeg, write_images
from vitlab.data.images import ImageDecodeError, open_rgb
from vitlab.errors import DataError, UnknownNameError


# -- folder ----------------------------------------------------------------------------
def test_folder_with_class_subfolders(image_folder):
    src = vitlab.load_source(f"folder:{image_folder}")
    assert src.classes == ["bag", "coat", "shoe"] and len(src) == 18
    assert src.labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert src.ids[0] == "bag/bag_00.png"
    s = src[7]
    assert s.image.mode == "RGB" and s.label == 1 and s.id == "coat/coat_01.png"


def test_flat_folder_is_unlabeled(tmp_path):
    root = write_images(tmp_path / "flat", flat=True)
    src = vitlab.load_source(f"folder:{root}")
    assert src.labels is None and len(src) == 18 and src[0].label is None


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=r"folder:.*nope: no such directory"):
        vitlab.load_source(f"folder:{tmp_path / 'nope'}")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"no images found \(looked for .*\.jpg"):
        vitlab.load_source(f"folder:{tmp_path / 'empty'}")


def test_loose_images_beside_class_folders(image_folder):
    Image.new("RGB", (8, 8)).save(image_folder / "stray.png")
    with pytest.raises(DataError, match=r"1 image\(s\) at the top level \(e\.g\. stray\.png\)"):
        vitlab.load_source(f"folder:{image_folder}")


def test_empty_class_folder_is_named(image_folder):
    (image_folder / "dress").mkdir()
    with pytest.raises(DataError, match=r"class folder\(s\) dress contain no images"):
        vitlab.load_source(f"folder:{image_folder}")


def test_fingerprint_changes_when_a_file_changes(image_folder):
    fp = vitlab.load_source(f"folder:{image_folder}").fingerprint
    assert vitlab.load_source(f"folder:{image_folder}").fingerprint == fp
    p = image_folder / "bag" / "bag_00.png"
    Image.new("RGB", (30, 30), (255, 0, 0)).save(p)
    assert vitlab.load_source(f"folder:{image_folder}").fingerprint != fp
    content = vitlab.load_source(f"folder:{image_folder}", fingerprint="content").fingerprint
    p.touch()  # new mtime, same bytes: content fingerprint is unchanged
    assert vitlab.load_source(f"folder:{image_folder}", fingerprint="content").fingerprint == content


# -- images ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    img = Image.new(mode, (10, 12))
    path = tmp_path / f"x.{'tiff' if mode in ('I;16', 'CMYK') else 'png'}"
    img.save(path)
    out = open_rgb(path)
    assert out.mode == "RGB" and out.size == (10, 12)


def test_16bit_grayscale_is_rescaled_not_clipped(tmp_path):
    a = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    out = np.asarray(open_rgb(tmp_path / "g16.png"))
    assert out[0, 1, 0] == 255 and out[1, 0, 0] == 128 and out[0, 0, 0] == 0


def test_truncated_jpeg_is_named(tmp_path):
    p = truncated_jpeg(tmp_path / "cut.jpg")
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg: cannot decode image \(truncated file\)"):
        open_rgb(p)


def test_not_an_image(tmp_path):
    p = tmp_path / "fake.png"
    p.write_text("hello")
    with pytest.raises(ImageDecodeError, match=r"fake\.png: cannot decode image \(not an image"):
        open_rgb(p)


# -- manifest ---------------------------------------------------------------------------
def _manifest(tmp_path, rows, name="m.csv", header="path,label"):
    p = tmp_path / name
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    return p


def test_manifest_basic_with_split_and_group(image_folder, tmp_path):
    rows = [f"imgs/bag/bag_0{i}.png,bag,{'train' if i < 4 else 'validation'},p{i % 3}" for i in range(6)]
    p = _manifest(tmp_path, rows, header="path,label,split,group")
    src = vitlab.load_source(f"csv:{p}")
    assert len(src) == 6 and src.classes == ["bag"] and src.groups[:3] == ["p0", "p1", "p2"]
    assert src.splits().tolist() == ["train"] * 4 + ["val"] * 2


def test_manifest_parquet_and_integer_labels_sort_numerically(image_folder, tmp_path):
    df = pd.DataFrame({"path": [str(image_folder / "bag" / f"bag_0{i}.png") for i in range(3)],
                       "label": ["10", "2", "2"]})
    df.to_parquet(tmp_path / "m.parquet")
    src = vitlab.load_source(f"csv:{tmp_path / 'm.parquet'}")
    assert src.classes == ["2", "10"] and src.labels.tolist() == [1, 0, 0]


def test_manifest_missing_path_column(tmp_path):
    p = _manifest(tmp_path, ["a.png,cat"], header="file,label")
    with pytest.raises(DataError, match=r"missing required column 'path' \(found: file, label\)"):
        vitlab.load_source(f"csv:{p}")


def test_manifest_misspelt_column(image_folder, tmp_path):
    p = _manifest(tmp_path, ["imgs/bag/bag_00.png,bag"], header="path,lable")
    with pytest.raises(DataError, match=r"column 'lable' looks like a misspelt 'label'"):
        vitlab.load_source(f"csv:{p}")


def test_manifest_blank_label_names_the_line(image_folder, tmp_path):
    p = _manifest(tmp_path, ["imgs/bag/bag_00.png,bag", "imgs/bag/bag_01.png,", "imgs/bag/bag_02.png,bag"])
    with pytest.raises(DataError, match=r"blank 'label' in row\(s\) at line 3\. Fill every label"):
        vitlab.load_source(f"csv:{p}")


def test_manifest_unknown_split(image_folder, tmp_path):
    p = _manifest(tmp_path, ["imgs/bag/bag_00.png,bag,trian"], header="path,label,split")
    with pytest.raises(DataError, match=r"line 2: unknown split 'trian'; allowed: train, val, test"):
        vitlab.load_source(f"csv:{p}")


def test_manifest_missing_file_names_the_line(image_folder, tmp_path):
    p = _manifest(tmp_path, ["imgs/bag/bag_00.png,bag", "imgs/bag/nope.png,bag"])
    with pytest.raises(DataError, match=r"1 listed file\(s\) do not exist, at line 3 \(first: .*nope\.png\)"):
        vitlab.load_source(f"csv:{p}")


def test_manifest_duplicate_ids(image_folder, tmp_path):
    p = _manifest(tmp_path, ["imgs/bag/bag_00.png,bag", "imgs/bag/bag_00.png,bag"])
    with pytest.raises(DataError, match="ids are not unique"):
        vitlab.load_source(f"csv:{p}")


# -- IDX + sample ----------------------------------------------------------------------------
def _write_idx(path, arr, gz):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_source(tmp_path, gz):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    _write_idx(tmp_path / f"train-images-idx3-ubyte{sfx}", rng.integers(0, 255, (5, 28, 28)), gz)
    _write_idx(tmp_path / f"train-labels-idx1-ubyte{sfx}", np.array([0, 1, 2, 1, 0]), gz)
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", rng.integers(0, 255, (3, 28, 28)), gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", np.array([2, 1, 0]), gz)
    src = vitlab.load_source(f"idx:{tmp_path}")
    assert len(src) == 8 and src.split_column.count("test") == 3 and src.classes == ["0", "1", "2"]
    assert src[0].image.mode == "RGB" and src[0].image.size == (28, 28)
    assert len(vitlab.load_source(f"idx:{tmp_path}?split=test")) == 3


def test_truncated_idx_file(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((5, 28, 28)), False)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5), False)
    data = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(data[:-100])
    with pytest.raises(DataError, match=r"truncated\?\)\. Re-download it"):
        vitlab.load_source(f"idx:{tmp_path}")


def test_bundled_sample_is_stratified():
    src = vitlab.load_source("sample:fashion-mnist")
    assert len(src) == 2000 and np.bincount(src.labels).tolist() == [200] * 10
    assert src.classes[9] == "Ankle boot" and src[0].image.size == (28, 28)


def test_unknown_kind_suggests():
    with pytest.raises(UnknownNameError, match=r"unknown data source kind 'foldr'\. Did you mean: folder"):
        vitlab.load_source("foldr:./x")
    with pytest.raises(UnknownNameError, match=r"Write it as <kind>:<path>"):
        vitlab.load_source("./my_images")


def test_uri_keeps_every_option_that_selects_rows(tmp_path, image_folder):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28)), False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1, 0, 1]), False)
    assert vitlab.load_source(f"idx:{tmp_path}?split=test&limit=3").uri == f"idx:{tmp_path}?split=test&limit=3"
    assert vitlab.load_source(f"idx:{tmp_path}", limit=2).uri == f"idx:{tmp_path}?limit=2"
    assert vitlab.load_source(f"folder:{image_folder}?fingerprint=content").uri == \
        f"folder:{image_folder}?fingerprint=content"
    assert vitlab.load_source(f"folder:{image_folder}").uri == f"folder:{image_folder}"
