"""Segmentation data: seg:<dir> folders, csv mask columns, Sample.mask, the bundled mosaic sample."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

import vitlab
from vitlab.data.base import Sample
from vitlab.data.sample import MOSAIC_IGNORE, MOSAIC_THRESHOLD, SampleSource
from vitlab.errors import DataError

W, H = 12, 10


def _mask(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.asarray(values, np.uint8), "L")


def write_seg(root, stems=("a", "b", "c"), *, classes=("background", "cat", "dog"), ext=".png", seed=0):
    """images/<stem><ext> (RGB 12x10) + masks/<stem>.png (values 0..2, a 255 top row) [+ classes.txt]."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for s in stems:
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / "images" / f"{s}{ext}")
        m = rng.integers(0, 3, (H, W))
        m[1, :3] = [0, 1, 2]  # every class occurs
        m[0, :] = 255
        _mask(m).save(root / "masks" / f"{s}.png")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


# -- seg:<dir> ----------------------------------------------------------------------------
def test_seg_folder_pairs_images_and_masks(tmp_path):
    root = write_seg(tmp_path / "d")
    src = vitlab.load_source(f"seg:{root}")
    assert src.kind == "seg" and src.has_masks and src.ignore_index == 255
    assert src.classes == ["background", "cat", "dog"] and src.labels is None
    assert src.ids == ["a.png", "b.png", "c.png"]
    m = src.mask(1)
    assert m.dtype == np.int64 and m.shape == (H, W)
    assert np.array_equal(m, np.asarray(Image.open(root / "masks" / "b.png")))
    s = src[1]
    assert s.image.size == (W, H) and s.label is None and np.array_equal(s.mask, m)
    d = src.describe()
    assert d["has_masks"] and d["mask_classes"] == 3 and d["ignore_index"] == 255


def test_seg_folder_classes_json_list_and_dict(tmp_path):
    root = write_seg(tmp_path / "d", classes=None)
    (root / "classes.json").write_text(json.dumps({"2": "dog", "0": "bg", "1": "cat"}))
    assert vitlab.load_source(f"seg:{root}").classes == ["bg", "cat", "dog"]
    (root / "classes.json").write_text(json.dumps(["x", "y", "z"]))
    assert vitlab.load_source(f"seg:{root}").classes == ["x", "y", "z"]


def test_seg_folder_without_classes_file_reads_the_masks(tmp_path):
    root = write_seg(tmp_path / "d", classes=None)
    assert vitlab.load_source(f"seg:{root}").classes == ["0", "1", "2"]


def test_seg_folder_classes_option_names_another_file(tmp_path):
    root = write_seg(tmp_path / "d", classes=None)
    (root / "names.txt").write_text("sky\nroad\ncar\n")
    src = vitlab.load_source(f"seg:{root}?classes=names.txt")
    assert src.classes == ["sky", "road", "car"] and "classes=names.txt" in src.uri


def test_seg_folder_split_subfolders_give_the_split_column(tmp_path):
    root = tmp_path / "d"
    for split, stems in (("training", ["a", "b"]), ("validation", ["c"])):
        sub = write_seg(tmp_path / "tmp" / split, stems)
        for kind in ("images", "masks"):
            (root / kind).mkdir(parents=True, exist_ok=True)
            (sub / kind).rename(root / kind / split)
    (root / "classes.txt").write_text("bg\ncat\ndog\n")
    src = vitlab.load_source(f"seg:{root}")
    assert src.ids == ["training/a.png", "training/b.png", "validation/c.png"]
    assert src.splits().tolist() == ["train", "train", "val"]
    assert src.mask(2).shape == (H, W)


def test_seg_folder_other_ignore_index(tmp_path):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True), (root / "masks").mkdir()
    Image.new("RGB", (4, 4)).save(root / "images" / "a.png")
    _mask(np.array([[0, 1, 2, 3]] * 4)).save(root / "masks" / "a.png")
    (root / "classes.txt").write_text("unlabelled\nsky\nroad\ncar\n")
    with pytest.raises(DataError, match=r"ignore_index 0 is also the label of class 'unlabelled' \(classes 0\.\.3\)"):
        vitlab.load_source(f"seg:{root}?ignore_index=0")
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    _mask(np.array([[0, 1, 2, 3]] * 4) % 3 + 1).save(root / "masks" / "a.png")  # values 1..3; 3 = ignore
    src = vitlab.load_source(f"seg:{root}?ignore_index=3")
    assert src.ignore_index == 3 and "ignore_index=3" in src.uri
    assert sorted(np.unique(src.mask(0)).tolist()) == [1, 2, 3]


# -- bad input ----------------------------------------------------------------------------------
def test_image_without_mask(tmp_path):
    root = write_seg(tmp_path / "d")
    os.remove(root / "masks" / "c.png")
    with pytest.raises(DataError, match=r"1 image\(s\) have no mask: images/c\.png \(expected masks/c\.png\)\. "
                                        r"Add the masks, or remove those images\."):
        vitlab.load_source(f"seg:{root}")


def test_mask_without_image(tmp_path):
    root = write_seg(tmp_path / "d")
    os.remove(root / "images" / "b.png")
    with pytest.raises(DataError, match=r"1 mask\(s\) have no image: masks/b\.png \(expected images/b\.<ext>\)"):
        vitlab.load_source(f"seg:{root}")


def test_missing_masks_folder(tmp_path):
    root = write_seg(tmp_path / "d")
    for f in (root / "masks").iterdir():
        f.unlink()
    (root / "masks").rmdir()
    with pytest.raises(DataError, match=r"seg:.*: no masks/ folder\. Expected <dir>/images/<stem>\.<ext> and "):
        vitlab.load_source(f"seg:{root}")


def test_missing_directory(tmp_path):
    with pytest.raises(DataError, match=r"seg:.*nope: no such directory"):
        vitlab.load_source(f"seg:{tmp_path / 'nope'}")


def test_mask_size_differs_from_its_image(tmp_path):
    root = write_seg(tmp_path / "d")
    _mask(np.zeros((4, 5))).save(root / "masks" / "b.png")
    src = vitlab.load_source(f"seg:{root}")  # size is checked on first load, not at construction
    with pytest.raises(DataError, match=r"masks/b\.png: mask is 5x4 px but its image .*images/b\.png is 12x10 px\. "
                                        r"Masks must have their image's size"):
        src.mask(1)
    with pytest.raises(DataError, match=r"masks/b\.png: mask is 5x4 px"):
        src[1]


def test_mask_value_outside_the_classes(tmp_path):
    root = write_seg(tmp_path / "d")
    m = np.zeros((H, W)); m[3, 4] = 7
    _mask(m).save(root / "masks" / "a.png")
    src = vitlab.load_source(f"seg:{root}")
    with pytest.raises(DataError, match=r"masks/a\.png: mask value 7 is neither a class index \(0\.\.2, 3 classes from "
                                        r"classes\.txt\) nor the ignore index 255\. .*set \?ignore_index=7\."):
        src.mask(0)


def test_mask_not_single_channel(tmp_path):
    root = write_seg(tmp_path / "d")
    Image.new("RGB", (W, H)).save(root / "masks" / "c.png")
    src = vitlab.load_source(f"seg:{root}")
    with pytest.raises(DataError, match=r"masks/c\.png: mask has 3 channels \(RGB\); a mask must be single-channel"):
        src.mask(2)


def test_palette_and_16_bit_masks_are_single_channel(tmp_path):
    root = write_seg(tmp_path / "d")
    vals = np.array([[0, 1, 2] * 4] * H, np.uint8)
    p = Image.fromarray(vals, "P"); p.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    p.save(root / "masks" / "a.png")
    Image.fromarray(vals.astype(np.uint16)).save(root / "masks" / "b.png")
    src = vitlab.load_source(f"seg:{root}")
    assert np.array_equal(src.mask(0), vals) and np.array_equal(src.mask(1), vals)


def test_jpeg_mask_is_refused(tmp_path):
    root = write_seg(tmp_path / "d")
    Image.new("L", (W, H)).save(root / "masks" / "c.jpg")
    with pytest.raises(DataError, match=r"masks/c\.jpg is not a PNG; masks must be lossless PNG"):
        vitlab.load_source(f"seg:{root}")


def test_two_images_with_one_stem(tmp_path):
    root = write_seg(tmp_path / "d")
    Image.new("RGB", (W, H)).save(root / "images" / "a.jpg")
    with pytest.raises(DataError, match=r"images/a\.(jpg|png) and images/a\.(jpg|png) share the stem"):
        vitlab.load_source(f"seg:{root}")


def test_bad_ignore_index_and_classes_files(tmp_path):
    root = write_seg(tmp_path / "d")
    with pytest.raises(DataError, match=r"ignore_index must be an integer such as 255, got 'x'"):
        vitlab.load_source(f"seg:{root}?ignore_index=x")
    (root / "classes.json").write_text('["a", "b", "c"]')
    with pytest.raises(DataError, match=r"both classes\.txt and classes\.json are in .*; keep one"):
        vitlab.load_source(f"seg:{root}")
    (root / "classes.json").unlink()
    (root / "classes.txt").write_text("bg\n\ndog\n")
    with pytest.raises(DataError, match=r"classes\.txt: line 2 is blank"):
        vitlab.load_source(f"seg:{root}")
    (root / "classes.txt").write_text("bg\ncat\nbg\n")
    with pytest.raises(DataError, match=r"classes\.txt: class name 'bg' appears more than once"):
        vitlab.load_source(f"seg:{root}")


# -- fingerprints --------------------------------------------------------------------------
def test_fingerprint_covers_images_and_masks(tmp_path):
    root = write_seg(tmp_path / "d")
    fp = vitlab.load_source(f"seg:{root}").fingerprint
    assert vitlab.load_source(f"seg:{root}").fingerprint == fp
    m = root / "masks" / "a.png"
    st = m.stat()
    _mask(np.ones((H, W))).save(m)
    os.utime(m, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back: ctime/inode/size still differ
    fp_mask = vitlab.load_source(f"seg:{root}").fingerprint
    assert fp_mask != fp
    Image.new("RGB", (W, H), (1, 2, 3)).save(root / "images" / "b.png")
    assert vitlab.load_source(f"seg:{root}").fingerprint != fp_mask
    assert vitlab.load_source(f"seg:{root}?ignore_index=254").fingerprint != vitlab.load_source(f"seg:{root}").fingerprint


def test_content_fingerprint_hashes_mask_bytes(tmp_path):
    root = write_seg(tmp_path / "d")
    fp = vitlab.load_source(f"seg:{root}?fingerprint=content").fingerprint
    os.utime(root / "masks" / "a.png", ns=(1, 1))
    assert vitlab.load_source(f"seg:{root}?fingerprint=content").fingerprint == fp  # a touch changes nothing
    _mask(np.ones((H, W))).save(root / "masks" / "a.png")
    assert vitlab.load_source(f"seg:{root}?fingerprint=content").fingerprint != fp


# -- csv: with a mask column ------------------------------------------------------------------
def write_manifest(tmp_path, rows=None, header="path,mask,split"):
    root = write_seg(tmp_path / "d")
    rows = rows or ["d/images/a.png,d/masks/a.png,train", "d/images/b.png,d/masks/b.png,train",
                    "d/images/c.png,d/masks/c.png,test"]
    man = tmp_path / "m.csv"
    man.write_text(header + "\n" + "\n".join(rows) + "\n")
    return man, root


def test_csv_mask_column_with_classes_file(tmp_path):
    man, root = write_manifest(tmp_path)
    (tmp_path / "names.txt").write_text("bg\ncat\ndog\n")
    src = vitlab.load_source(f"csv:{man}?classes=names.txt")
    assert src.has_masks and src.classes == ["bg", "cat", "dog"] and src.ignore_index == 255
    assert src.labels is None and src.splits().tolist() == ["train", "train", "test"]
    assert np.array_equal(src.mask(2), np.asarray(Image.open(root / "masks" / "c.png")))
    assert np.array_equal(src[0].mask, src.mask(0))
    assert "classes=names.txt" in src.uri


def test_csv_mask_classes_list_and_inferred(tmp_path):
    man, _ = write_manifest(tmp_path)
    from vitlab.data.manifest import ManifestSource

    assert ManifestSource(man, classes=["x", "y", "z"]).classes == ["x", "y", "z"]
    assert vitlab.load_source(f"csv:{man}").classes == ["0", "1", "2"]  # read from the masks


def test_csv_without_mask_column_is_unchanged(tmp_path):
    man, _ = write_manifest(tmp_path, ["d/images/a.png,cat", "d/images/b.png,dog"], header="path,label")
    src = vitlab.load_source(f"csv:{man}")
    assert not src.has_masks and src[0].mask is None and src.classes == ["cat", "dog"]
    with pytest.raises(DataError, match=r"has no segmentation masks\. Use seg:<dir>"):
        src.mask(0)
    with pytest.raises(DataError, match=r"classes= and ignore_index= describe segmentation masks, but the manifest "
                                        r"has no 'mask' column"):
        vitlab.load_source(f"csv:{man}?ignore_index=0")


def test_csv_mask_bad_input(tmp_path):
    man, _ = write_manifest(tmp_path, ["d/images/a.png,d/masks/a.png,train", "d/images/b.png,d/masks/zz.png,test"])
    with pytest.raises(DataError, match=r"1 mask file\(s\) do not exist, at line 3 \(first: .*zz\.png\)\. "
                                        r"Mask paths are relative to"):
        vitlab.load_source(f"csv:{man}")
    man.write_text("path,mask\nd/images/a.png,d/masks/a.png\nd/images/b.png,\n")
    with pytest.raises(DataError, match=r"blank 'mask' in row\(s\) at line 3"):
        vitlab.load_source(f"csv:{man}")
    man.write_text("path,mask,label\nd/images/a.png,d/masks/a.png,cat\n")
    with pytest.raises(DataError, match=r"has both a 'label' and a 'mask' column"):
        vitlab.load_source(f"csv:{man}")
    man.write_text("path,mask\nd/images/a.png,d/masks/b.png\n")
    m = np.zeros((H, W)); m[0, 0] = 9
    _mask(m).save(tmp_path / "d" / "masks" / "b.png")
    src = vitlab.load_source(f"csv:{man}?classes=d/classes.txt")
    with pytest.raises(DataError, match=r"masks/b\.png: mask value 9 is neither a class index \(0\.\.2, 3 classes from "
                                        r"classes\.txt\) nor the ignore index 255"):
        src.mask(0)


def test_csv_fingerprint_covers_masks(tmp_path):
    man, root = write_manifest(tmp_path)
    fp = vitlab.load_source(f"csv:{man}").fingerprint
    _mask(np.full((H, W), 2)).save(root / "masks" / "c.png")
    assert vitlab.load_source(f"csv:{man}").fingerprint != fp


# -- Sample -------------------------------------------------------------------------------
def test_sample_mask_field_is_optional():
    s = Sample(Image.new("RGB", (2, 2)), 1, "x", None, "train")  # positional construction as before
    assert s.mask is None
    src = SampleSource("fashion-mnist")
    assert not src.has_masks and src[0].mask is None and src.ignore_index is None


# -- sample:fashion-mnist-mosaic ------------------------------------------------------------------
@pytest.fixture(scope="module")
def mosaic():
    return vitlab.load_source("sample:fashion-mnist-mosaic")


def test_mosaic_is_deterministic(mosaic):
    again = vitlab.load_source("sample:fashion-mnist-mosaic")
    assert again.fingerprint == mosaic.fingerprint
    assert np.array_equal(again.images, mosaic.images) and np.array_equal(again.masks, mosaic.masks)
    assert again.ids[:2] == ["mosaic-0000", "mosaic-0001"]
    assert mosaic.fingerprint != vitlab.load_source("sample:fashion-mnist").fingerprint


def test_mosaic_shape_classes_and_splits(mosaic):
    assert len(mosaic) == 1000 and mosaic.has_masks and mosaic.ignore_index == MOSAIC_IGNORE
    assert mosaic.classes[0] == "background" and mosaic.classes[1:] == SampleSource("fashion-mnist").classes
    assert mosaic.labels is None
    s = mosaic[5]
    assert s.image.size == (56, 56) and s.mask.shape == (56, 56) and s.mask.dtype == np.int64
    splits = mosaic.splits()
    assert (splits == "train").sum() == 800 and (splits == "test").sum() == 200
    tr_items = set(mosaic.layout[splits == "train"].ravel()) - {-1}
    te_items = set(mosaic.layout[splits == "test"].ravel()) - {-1}
    assert tr_items and te_items and not tr_items & te_items  # no item in both train and test mosaics
    assert ((mosaic.layout >= 0).sum(1) >= 1).all()
    counts = np.bincount(mosaic.masks.ravel(), minlength=256)
    assert (counts[1:11] > 0).all() and set(np.flatnonzero(counts)) <= set(range(11)) | {255}


def test_mosaic_masks_match_the_pixels(mosaic):
    fm = SampleSource("fashion-mnist")
    for i in (0, 1, 2, 417, 999):
        img = np.asarray(mosaic.load_image(i))[..., 0]
        m = mosaic.mask(i)
        for q in range(4):
            r, c = 28 * (q // 2), 28 * (q % 2)
            tile, mt = img[r:r + 28, c:c + 28], m[r:r + 28, c:c + 28]
            item = mosaic.layout[i, q]
            if item < 0:
                assert not tile.any() and not mt.any()
                continue
            assert np.array_equal(tile, fm.images[item])
            lab = fm.labels[item] + 1
            assert np.array_equal(mt == lab, tile >= MOSAIC_THRESHOLD)
            assert np.array_equal(mt == MOSAIC_IGNORE, (tile > 0) & (tile < MOSAIC_THRESHOLD))
            assert np.array_equal(mt == 0, tile == 0)


def test_unknown_sample_name_lists_the_mosaic():
    with pytest.raises(vitlab.errors.UnknownNameError, match=r"fashion-mnist-mosaic"):
        vitlab.load_source("sample:fashion-mnist-mosaik")
