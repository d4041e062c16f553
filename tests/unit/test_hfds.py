"""hfds: Hugging Face datasets saved with save_to_disk: splits, columns, labels, fingerprint, errors, embedding."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vitlab
from vitlab.data.images import ImageDecodeError
from vitlab.data.sample import SampleSource
from vitlab.errors import DataError

datasets = pytest.importorskip("datasets")
CLASSES = ["shirt", "shoe", "bag"]


def _png(a: np.ndarray) -> bytes:
    b = io.BytesIO()
    Image.fromarray(a).save(b, format="PNG")
    return b.getvalue()


def write_hf(root: Path, n: int = 12, *, dict_splits: bool = True, folder: Path | None = None) -> Path:
    """Bundled Fashion-MNIST images as a DatasetDict (train / test) with a ClassLabel and a text column.

    With ``folder``, the train images are also written as PNGs in class folders (a reference source).
    """
    imgs = SampleSource("fashion-mnist").images[:n]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES),
                               "name": datasets.Value("string"), "kind": datasets.Value("string")})
    rows = {"image": [{"bytes": _png(a), "path": None} for a in imgs], "label": [i % 3 for i in range(n)],
            "name": [f"item-{i:03d}" for i in range(n)], "kind": [CLASSES[i % 3] for i in range(n)]}
    ds = datasets.Dataset.from_dict(rows, features=feats)
    if folder is not None:
        for i, a in enumerate(imgs):
            (folder / CLASSES[i % 3]).mkdir(parents=True, exist_ok=True)
            (folder / CLASSES[i % 3] / f"item-{i:03d}.png").write_bytes(_png(a))
    out = datasets.DatasetDict({"train": ds, "test": ds.select(range(n // 2))}) if dict_splits else ds
    out.save_to_disk(str(root))
    return root


def test_datasetdict_split_classlabel_and_ids(tmp_path):
    root = write_hf(tmp_path / "hf")
    src = vitlab.load_source(f"hfds:{root}?split=train&id=name")
    assert len(src) == 12 and src.classes == CLASSES and src.labels.tolist() == [i % 3 for i in range(12)]
    assert src.ids[:2] == ["item-000", "item-001"] and src.uri.endswith("?split=train&id=name")
    np.testing.assert_array_equal(np.asarray(src[5].image)[..., 0], SampleSource("fashion-mnist").images[5])
    test = vitlab.load_source(f"hfds:{root}?split=test")
    assert len(test) == 6 and test.ids[:2] == ["0", "1"]  # default ids: row numbers
    assert test.fingerprint != vitlab.load_source(f"hfds:{root}?split=train").fingerprint


def test_text_label_column_and_single_dataset(tmp_path):
    root = write_hf(tmp_path / "hf", dict_splits=False)
    src = vitlab.load_source(f"hfds:{root}?label=kind")
    assert src.classes == ["bag", "shirt", "shoe"]
    assert [src.classes[v] for v in src.labels] == [CLASSES[i % 3] for i in range(12)]
    with pytest.raises(DataError, match=r"holds one Dataset, not a DatasetDict, so it has no splits; drop \?split=x"):
        vitlab.load_source(f"hfds:{root}?split=x")


def test_bad_options_each_give_one_line(tmp_path):
    root = write_hf(tmp_path / "hf")
    with pytest.raises(DataError, match=r"a DatasetDict with splits train, test: choose one with \?split="):
        vitlab.load_source(f"hfds:{root}")
    with pytest.raises(DataError, match=r"no split 'val'; choose \(e\.g\. hfds:.*\?split=train\)"):
        vitlab.load_source(f"hfds:{root}?split=val")
    with pytest.raises(DataError, match=r"no column 'img' \(columns: image, label, name, kind\)\. Pass \?image="):
        vitlab.load_source(f"hfds:{root}?split=train&image=img")
    datasets.Dataset.from_dict({"path": ["a.png", "b.png"]}).save_to_disk(str(tmp_path / "noimg"))
    with pytest.raises(DataError, match=r"no column of type Image \(columns: path\)\. Pass \?image=<column>"):
        vitlab.load_source(f"hfds:{tmp_path / 'noimg'}")
    with pytest.raises(DataError, match=r"not a dataset saved with save_to_disk"):
        (tmp_path / "empty").mkdir()
        vitlab.load_source(f"hfds:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match=r"ids in column 'kind' are not unique \('shirt' repeats\)"):
        vitlab.load_source(f"hfds:{root}?split=train&id=kind")


def test_without_datasets_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(DataError, match=r"^hfds: sources need the Hugging Face datasets package: "
                                        r"pip install 'vitlab\[hfds\]'\.$"):
        vitlab.load_source(f"hfds:{tmp_path}")


def test_corrupt_image_names_the_row(tmp_path):
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    ok = _png(np.zeros((8, 8), np.uint8))
    ds = datasets.Dataset.from_dict({"image": [{"bytes": ok, "path": None}, {"bytes": ok[:20], "path": None}],
                                     "label": [0, 1]}, features=feats)
    ds.save_to_disk(str(tmp_path / "hf"))
    src = vitlab.load_source(f"hfds:{tmp_path / 'hf'}")
    with pytest.raises(ImageDecodeError, match=r"hfds:.*hf row 1 \(id 1\): cannot decode image"):
        src.load_image(1)


def test_embeds_like_the_same_images_in_a_folder(tmp_path):
    """Through the store with demo:fmnist-vit: the same numbers as folder:, and a cache hit the second time."""
    root = write_hf(tmp_path / "hf", folder=tmp_path / "ref")
    cache = tmp_path / "cache"
    emb = vitlab.embed("demo:fmnist-vit", f"hfds:{root}?split=train&id=name", cache_dir=cache, progress=False,
                       num_workers=1, batch_size=5)
    ref = vitlab.embed("demo:fmnist-vit", f"folder:{tmp_path / 'ref'}", cache_dir=cache, progress=False,
                       num_workers=0)
    pos = [[Path(i).stem for i in ref.ids].index(k) for k in emb.ids]
    np.testing.assert_array_equal(emb.get(), ref.get()[pos])
    assert emb.classes == CLASSES and [emb.classes[v] for v in emb.labels] == [ref.classes[ref.labels[p]] for p in pos]
    again = vitlab.embed("demo:fmnist-vit", f"hfds:{root}?split=train&id=name", cache_dir=cache, progress=False,
                         num_workers=0)
    assert again.from_cache and again.digest == emb.digest
