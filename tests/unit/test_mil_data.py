"""Bag data for MIL: ``bags:`` manifests (images, feature files), importers, ``sample:fashion-mnist-bags``."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from vitlab.data import load_source
from vitlab.data.bag_features import FeatureBagSource, read_feature_file
from vitlab.data.bags import BagSource
from vitlab.data.sample import FashionBagsSource
from vitlab.errors import DataError
from vitlab.mil.data import BagData, BagTable, bag_data
from vitlab.mil.importers import from_clam, from_eva, from_trident


def _write(d: Path, text: str, name: str = "m.csv") -> Path:
    p = d / name
    p.write_text(text)
    return p


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for n in ("a", "b", "c", "d", "e"):
        Image.new("RGB", (6, 6), (10 * len(n), 0, 0)).save(tmp_path / f"{n}.png")
    return tmp_path


@pytest.fixture
def feats(tmp_path: Path) -> Path:
    np.save(tmp_path / "s1.npy", np.ones((3, 4), np.float32))
    torch.save(torch.zeros(5, 4), tmp_path / "s2.pt")
    with h5py.File(tmp_path / "s3.h5", "w") as h:
        h.create_dataset("features", data=np.full((1, 2, 4), 2.0, np.float32))
        h.create_dataset("coords", data=np.arange(4).reshape(2, 2))
    return tmp_path


def _open(d: Path, text: str):
    return load_source(f"bags:{_write(d, text)}")


# ----------------------------------------------------------------------------------------------- image manifests

def test_image_manifest_parses(images: Path) -> None:
    m = _write(images, "bag_id,label,path,patient_id,split,fold,instance_label\n"
                       "b1,pos,a.png,p1,train,0,1\nb1,pos,b.png,p1,train,0,0\n"
                       "b2,neg,c.png,p2,test,1,0\nb3,neg,d.png,p1,train,0,0\n")
    src = load_source(f"bags:{m}")
    assert isinstance(src, BagSource) and len(src) == 4
    assert src.bags == ["b1", "b2", "b3"] and src.groups == ["b1", "b1", "b2", "b3"]
    assert src.bag_ids == src.groups
    assert src.classes == ["neg", "pos"] and src.bag_labels.tolist() == [1, 0, 0]
    assert src.labels.tolist() == [1, 1, 0, 0]
    assert src.bag_patients == ["p1", "p2", "p1"]
    assert src.bag_split == ["train", "test", "train"] and src.split_column == ["train", "train", "test", "train"]
    assert src.bag_fold == ["0", "1", "0"]
    assert src.instance_labels.tolist() == [1, 0, 0, 0]
    assert src.bag_rows("b1").tolist() == [0, 1]
    assert src[0].image.size == (6, 6) and src[0].group == "b1"
    data = bag_data(src, np.arange(8, dtype=np.float32).reshape(4, 2))
    assert data.sizes.tolist() == [2, 1, 1] and data.features[0].tolist() == [[0, 1], [2, 3]]
    assert [x.tolist() for x in data.instance_labels] == [[1, 0], [0], [0]]
    assert data.patients == ["p1", "p2", "p1"] and data.subset([2]).ids == ["b3"]


def test_image_manifest_defaults_patient_to_bag(images: Path) -> None:
    m = _write(images, "bag_id,label,path\nx,1,a.png\ny,0,b.png\n")
    src = load_source(f"bags:{m}")
    assert src.bag_patients == ["x", "y"] and src.bag_split is None and src.bag_fold is None


BAD_IMAGE = [
    ("bag_id,label,path\nb1,1,a.png\nb1,0,b.png\n",
     r"bag 'b1' has label '1' \(line 2\) and '0' \(line 3\); a bag takes one label"),
    ("bag_id,label,path\nb1,1,a.png\nb2,0,\n",
     r"bag 'b2' has no instances \(line 3 has no path\); list its path or drop the bag"),
    ("bag_id,label,path\nb1,1,a.png\nb1,1,\n", r"blank 'path' at line 3; fill it or drop those rows"),
    ("bag_id,label,path,split\nb1,1,a.png,train\nb1,1,b.png,test\n",
     r"bag 'b1' has split 'train' \(line 2\) and 'test' \(line 3\); give every row of a bag the same split"),
    ("bag_id,label,path,patient_id,fold\nb1,1,a.png,p1,0\nb2,0,b.png,p2,1\nb3,0,c.png,p1,2\n",
     r"patient 'p1' is in fold '0' \(bag 'b1', line 2\) and fold '2' \(bag 'b3', line 4\); put all of a patient's "
     r"bags in one fold"),
    ("bag_id,label,path,patient_id,fold_outer\nb1,1,a.png,p1,A\nb2,0,b.png,p1,B\n",
     r"patient 'p1' is in fold_outer 'A' \(bag 'b1', line 2\) and fold_outer 'B' \(bag 'b2', line 3\)"),
    ("bag_id,label,path,patient_id,split\nb1,1,a.png,p1,train\nb2,0,b.png,p1,test\n",
     r"patient 'p1' is in split 'train' \(bag 'b1', line 2\) and split 'test'"),
    ("bag_id,label,path,patient_id\nb1,1,a.png,p1\nb1,1,b.png,p2\n",
     r"bag 'b1' has patient_id 'p1' \(line 2\) and 'p2' \(line 3\); a bag belongs to one patient"),
    ("bag_id,label,path\nb1,1,a.png\nb2,0,missing.png\n",
     r"1 listed file\(s\) do not exist, at line 3 \(first: .*missing.png, bag 'b2'\)\. Paths are relative to"),
    ("bag_id,label,path\n,1,a.png\n", r"blank bag_id at line 2; give every row its bag"),
    ("bag,label,path\nb1,1,a.png\n", r"missing required column 'bag_id' .*did you mean 'bag'\?"),
    ("bag_id,label,path\nb1,1,a.png\nb2,1,a.png\n", r"instance 'a.png' is listed twice, on lines 2 and 3"),
    ("bag_id,label,path,instance_label\nb1,1,a.png,yes\n", r"line 2: instance_label 'yes' is not an integer"),
    ("bag_id,label,path,split\nb1,1,a.png,later\n", r"bag 'b1' line 2: unknown split 'later'"),
    ("bag_id,label,path,patinet_id\nb1,1,a.png,p\n", r"column 'patinet_id' looks like a misspelt 'patient_id'"),
    ("bag_id,label,path\n", r"the manifest has no rows"),
]


@pytest.mark.parametrize("text,match", BAD_IMAGE)
def test_image_manifest_errors(images: Path, text: str, match: str) -> None:
    m = _write(images, text)
    with pytest.raises(DataError, match=match) as e:
        load_source(f"bags:{m}")
    assert "\n" not in str(e.value) and f"bags:{m}" in str(e.value)


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such manifest file"):
        load_source(f"bags:{tmp_path / 'nope.csv'}")


# --------------------------------------------------------------------------------------------- feature manifests

def test_feature_manifest_all_formats(feats: Path) -> None:
    m = _write(feats, "bag_id,label,features,patient_id,split\n"
                      "s1,1,s1.npy,p1,train\ns2,0,s2.pt,p2,test\ns3,1,s3.h5,p3,train\ns3,1,s1.npy,p3,train\n")
    src = load_source(f"bags:{m}")
    assert isinstance(src, FeatureBagSource)
    assert src.ids == src.bags == ["s1", "s2", "s3"] and src.bag_labels.tolist() == [1, 0, 1]
    assert src.groups == ["p1", "p2", "p3"] and src.split_column == ["train", "test", "train"]
    x = src.load_bag_features("s3")
    assert x.dtype == np.float32 and x.shape == (5, 4) and x[:2].tolist() == [[2.0] * 4] * 2
    assert src.coords("s3") is None  # s1.npy has no coords: the concatenation has none
    assert src.load_bag_features(1).shape == (5, 4) and src.dim == 4
    with pytest.raises(DataError, match=r"a feature bag source has no images \(bag 's1'\)"):
        src.load_image(0)
    data = bag_data(src)
    assert isinstance(data, BagData) and data.sizes.tolist() == [3, 5, 5] and data.dim == 4


def test_feature_coords(feats: Path) -> None:
    src = _open(feats, "bag_id,label,features\ns3,1,s3.h5\n")
    assert src.coords("s3").tolist() == [[0, 1], [2, 3]]


def test_feature_dim_mismatch(feats: Path) -> None:
    np.save(feats / "wide.npy", np.ones((2, 7), np.float32))
    src = _open(feats, "bag_id,label,features\ns1,1,s1.npy\nw,0,wide.npy\n")
    src.load_bag_features("s1")
    with pytest.raises(DataError, match=r"feature file .*wide.npy \(bag 'w'\) has dimension 7 but .*s1.npy has 4; "
                                        r"extract every bag with the same backbone"):
        src.load_bag_features("w")


def test_h5_without_features(feats: Path) -> None:
    with h5py.File(feats / "bad.h5", "w") as h:
        h.create_dataset("feats", data=np.ones((2, 4)))
    src = _open(feats, "bag_id,label,features\nb,1,bad.h5\n")
    with pytest.raises(DataError, match=r"feature file .*bad.h5 has no 'features' dataset \(found: feats\); write the "
                                        r"instance features as dataset 'features'"):
        src.load_bag_features("b")


BAD_FEATURES = [
    ("bag_id,label,features\ns1,1,s1.npy\ns2,1,gone.pt\n", r"listed file\(s\) do not exist, at line 3 .*gone.pt, bag 's2'"),
    ("bag_id,label,features\ns1,1,s1.npy\ns1,0,s2.pt\n", r"bag 's1' has label '1' \(line 2\) and '0' \(line 3\)"),
    ("bag_id,label,features\ns1,1,\n", r"bag 's1' has no instances \(line 2 has no features\)"),
    ("bag_id,label,features,path\ns1,1,s1.npy,x.png\n", r"has both 'path' and 'features' columns"),
    ("bag_id,label,features\ns1,1,m.csv\n", r"line 2: feature file .*m.csv is not one of .npy, .pt"),
    ("bag_id,label,features,patient_id,fold\ns1,1,s1.npy,p,1\ns2,0,s2.pt,p,2\n",
     r"patient 'p' is in fold '1' \(bag 's1', line 2\) and fold '2' \(bag 's2', line 3\)"),
]


@pytest.mark.parametrize("text,match", BAD_FEATURES)
def test_feature_manifest_errors(feats: Path, text: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_source(f"bags:{_write(feats, text)}")


def test_empty_feature_file(feats: Path) -> None:
    np.save(feats / "empty.npy", np.zeros((0, 4), np.float32))
    src = _open(feats, "bag_id,label,features\ne,1,empty.npy\n")
    with pytest.raises(DataError, match=r"bag 'e' has no instances: feature file .*empty.npy holds 0 rows"):
        src.load_bag_features("e")


def test_fingerprint_changes_with_feature_file(feats: Path) -> None:
    m = _write(feats, "bag_id,label,features\ns1,1,s1.npy\ns2,0,s2.pt\n")
    fp = load_source(f"bags:{m}").fingerprint
    assert load_source(f"bags:{m}").fingerprint == fp
    fpc = load_source(f"bags:{m}?fingerprint=content").fingerprint
    st = os.stat(feats / "s1.npy")
    np.save(feats / "s1.npy", np.full((3, 4), 9.0, np.float32))
    os.utime(feats / "s1.npy", ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: ctime/inode still differ
    assert load_source(f"bags:{m}").fingerprint != fp
    assert load_source(f"bags:{m}?fingerprint=content").fingerprint != fpc


def test_parquet_and_tsv_manifests(feats: Path) -> None:
    t = BagTable(["s1", "s2"], ["a", "b"], [feats / "s1.npy", feats / "s2.pt"], split=["train", "val"])
    for name in ("bags.tsv", "bags.parquet"):
        src = load_source(f"bags:{t.write_manifest(feats / name)}")
        assert src.bags == ["s1", "s2"] and src.bag_split == ["train", "val"]


# ------------------------------------------------------------------------------------------------------ importers

def _h5(path: Path, n: int, d: int, *, batched: bool) -> None:
    x = np.random.default_rng(n).normal(size=(n, d)).astype(np.float32)
    c = np.arange(2 * n).reshape(n, 2)
    with h5py.File(path, "w") as h:
        h.create_dataset("features", data=x[None] if batched else x)
        h.create_dataset("coords", data=c[None] if batched else c)


def test_from_trident_h5(tmp_path: Path) -> None:
    fdir = tmp_path / "features_uni"
    fdir.mkdir()
    _h5(fdir / "slideA.h5", 4, 8, batched=False)
    _h5(fdir / "slideB.h5", 6, 8, batched=True)
    _h5(fdir / "unlabelled.h5", 2, 8, batched=False)
    labels = _write(tmp_path, "case_id,slide_id,label,split\nc1,slideA,LUAD,train\nc1,slideB.svs,LUAD,train\n",
                    "labels.csv")
    t = from_trident(fdir, labels)
    assert t.bag_id == ["slideA", "slideB"] and t.patient_id == ["c1", "c1"] and t.split == ["train", "train"]
    src = load_source(f"bags:{t.write_manifest(tmp_path / 'out' / 'bags.csv')}")
    assert src.bag_patients == ["c1", "c1"]
    assert src.load_bag_features("slideB").shape == (6, 8) and src.coords("slideB").shape == (6, 2)
    assert src.load_bag_features("slideA").shape == (4, 8)


def test_from_clam_h5_files_and_errors(tmp_path: Path) -> None:
    (tmp_path / "h5_files").mkdir()
    _h5(tmp_path / "h5_files" / "s1.h5", 3, 5, batched=True)
    labels = _write(tmp_path, "case_id,slide_id,label\np1,s1,normal\np2,s2,tumor\n", "labels.csv")
    with pytest.raises(DataError, match=r"slide 's2' \(line 3\) has no feature file among 1 .*on_missing='skip'"):
        from_clam(tmp_path, labels)
    t = from_clam(tmp_path, labels, on_missing="skip")
    assert t.bag_id == ["s1"] and t.label == ["normal"]
    bad = _write(tmp_path, "slide,label\ns1,x\n", "bad.csv")
    with pytest.raises(DataError, match=r"missing column 'slide_id'"):
        from_clam(tmp_path, bad)


def test_from_eva_manifest(tmp_path: Path) -> None:
    emb = tmp_path / "embeddings"
    emb.mkdir()
    torch.save(torch.ones(4, 3), emb / "w1_0.pt")
    torch.save(torch.ones(2, 3), emb / "w1_1.pt")
    torch.save([torch.zeros(1, 3), torch.zeros(2, 3)], emb / "w2.pt")
    m = _write(tmp_path, "origin,path,target,split,wsi_id\n"
                         "w1.tiff,embeddings/w1_0.pt,1,train,w1\nw1.tiff,embeddings/w1_1.pt,1,train,w1\n"
                         "w2.tiff,embeddings/w2.pt,0,val,w2\n", "manifest.csv")
    t = from_eva(m)
    assert t.bag_id == ["w1", "w1", "w2"] and t.label == ["1", "1", "0"] and t.patient_id is None
    src = load_source(f"bags:{t.write_manifest(tmp_path / 'bags.csv')}")
    assert src.bags == ["w1", "w2"] and src.bag_split == ["train", "val"]
    assert src.load_bag_features("w1").shape == (6, 3) and src.load_bag_features("w2").shape == (3, 3)
    bad = _write(tmp_path, "path,target\nembeddings/nope.pt,1\n", "bad.csv")
    with pytest.raises(DataError, match=r"line 2: embeddings file .*nope.pt does not exist"):
        from_eva(bad)


def test_read_feature_file_pt_dict(tmp_path: Path) -> None:
    torch.save({"features": torch.ones(1, 3, 2), "coords": torch.zeros(1, 3, 2)}, tmp_path / "x.pt")
    x, c = read_feature_file(tmp_path / "x.pt")
    assert x.shape == (3, 2) and c.shape == (3, 2)
    torch.save({"feats": torch.ones(3, 2)}, tmp_path / "y.pt")
    with pytest.raises(DataError, match=r"y.pt is a dict without a 'features' entry \(keys: feats\)"):
        read_feature_file(tmp_path / "y.pt")


# --------------------------------------------------------------------------------------- sample:fashion-mnist-bags

def test_fashion_bags_sample() -> None:
    src = load_source("sample:fashion-mnist-bags")
    assert isinstance(src, FashionBagsSource)
    again = FashionBagsSource()
    assert src.fingerprint == again.fingerprint and src.ids == again.ids
    assert np.array_equal(src.items, again.items)
    n = len(src.bags)
    assert 150 <= n <= 300
    sizes = np.bincount([src.bag_index(b) for b in src.bag_ids], minlength=n)
    assert sizes.min() >= 5 and sizes.max() <= 50 and len(set(sizes.tolist())) > 20
    assert 0.4 <= src.bag_labels.mean() <= 0.6
    assert src.classes == ["no-bag", "bag"] and len(src) == sizes.sum() == len(src.instance_labels)
    # a bag is positive iff it holds at least one Fashion-MNIST "Bag" (class 8)
    data = bag_data(src, np.zeros((len(src), 2), np.float32))
    assert [int(il.max()) for il in data.instance_labels] == src.bag_labels.tolist()
    assert np.array_equal(src.instance_labels, (src.instance_classes == 8).astype(int))
    # patients own 1-3 bags, several own more than one
    per_patient = np.unique(src.bag_patients, return_counts=True)[1]
    assert per_patient.min() >= 1 and per_patient.max() <= 3 and (per_patient > 1).sum() > 10
    # instances are the real bundled images
    fm = load_source("sample:fashion-mnist")
    assert np.array_equal(np.asarray(src.load_image(7)), np.asarray(fm.load_image(int(src.items[7]))))
    assert src.groups == src.bag_ids and src.labels.tolist() == [src.bag_labels[src.bag_index(b)] for b in src.bag_ids]
