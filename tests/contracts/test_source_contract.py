"""One contract suite over the data-source kinds of :data:`vitlab.data.KINDS`: metadata, samples, fingerprint,
URI round trip, pickling.

Every kind gets a tiny fixture written in a temporary folder (or a bundled sample) by a factory in
``SOURCE_FACTORIES``, keyed ``<kind>[-variant]``; :func:`test_every_registered_kind_has_a_factory` fails when a
kind is registered without one, so a new kind cannot go untested.
"""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pandas as pd
import pytest

import vitlab
from tests.conftest import write_images
from vitlab.data import KINDS, DataSource, Sample


def _folder(t):
    return f"folder:{write_images(t.mktemp('folder'), n_per_class=3)}"


def _csv(t):
    root = write_images(t.mktemp('csv'), n_per_class=6)
    files = sorted(root.rglob("*.png"))
    pd.DataFrame({"path": [f.relative_to(root).as_posix() for f in files], "label": [f.parent.name for f in files],
                  "group": [f"p{i // 2}" for i in range(len(files))]}).to_csv(root / "m.csv", index=False)
    return f"csv:{root / 'm.csv'}"


def _wds(t):
    from tests.unit.test_wds import write_shards

    return f"wds:{write_shards(t.mktemp('wds'), n_shards=2, per_shard=4)}"


def _wds_json(t):
    from tests.unit.test_wds import write_shards

    return f"wds:{write_shards(t.mktemp('wdsj'), n_shards=2, per_shard=3, cls=False)}/{{00000..00001}}.tar?label=name"


def _hfds(t):
    pytest.importorskip("datasets")
    from tests.unit.test_hfds import write_hf

    return f"hfds:{write_hf(t.mktemp('hf'), n=9)}?split=train"


def _idx(t):
    """MNIST-style IDX files (gzipped, as distributed): 5 train and 3 test images."""
    d = t.mktemp("idx")
    rng = np.random.default_rng(0)
    for name, arr in {"train-images-idx3-ubyte": rng.integers(0, 255, (5, 28, 28)),
                      "train-labels-idx1-ubyte": np.array([0, 1, 2, 1, 0]),
                      "t10k-images-idx3-ubyte": rng.integers(0, 255, (3, 28, 28)),
                      "t10k-labels-idx1-ubyte": np.array([2, 1, 0])}.items():
        header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
        with gzip.open(d / f"{name}.gz", "wb") as f:
            f.write(header + arr.astype(np.uint8).tobytes())
    return f"idx:{d}"


def _seg(t):
    """images/<stem>.png + masks/<stem>.png + classes.txt."""
    from PIL import Image

    d = t.mktemp("seg")
    rng = np.random.default_rng(0)
    (d / "images").mkdir()
    (d / "masks").mkdir()
    for s in ("a", "b", "c", "d"):
        Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(d / "images" / f"{s}.png")
        Image.fromarray(rng.integers(0, 3, (12, 10)).astype(np.uint8), "L").save(d / "masks" / f"{s}.png")
    (d / "classes.txt").write_text("background\ncat\ndog\n")
    return f"seg:{d}"


def _bags(t):
    """An image-bag manifest: 3 bags of 2-3 instance images, with patients and a split."""
    root = write_images(t.mktemp("bags"), n_per_class=3, flat=True)
    files = sorted(p.name for p in root.glob("*.png"))[:7]
    bags = ["b1", "b1", "b2", "b2", "b2", "b3", "b3"]
    lines = [f"{b},{'pos' if b != 'b2' else 'neg'},{f},p{b[-1]},{'test' if b == 'b3' else 'train'}"
             for b, f in zip(bags, files)]
    (root / "bags.csv").write_text("bag_id,label,path,patient_id,split\n" + "\n".join(lines) + "\n")
    return f"bags:{root / 'bags.csv'}"


SOURCE_FACTORIES = {"folder": _folder, "csv": _csv, "sample": lambda t: "sample:fashion-mnist", "wds": _wds,
                    "wds-json-label": _wds_json, "hfds": _hfds, "idx": _idx, "seg": _seg, "bags": _bags,
                    "photos": lambda t: "photos:china,flower", "sample-digits": lambda t: "sample:digits?limit=40",
                    "sample-bags": lambda t: "sample:fashion-mnist-bags"}


def test_every_registered_kind_has_a_factory():
    missing = sorted(set(KINDS.names()) - {key.split("-")[0] for key in SOURCE_FACTORIES})
    assert not missing, (f"data source kind(s) {missing} have no factory in SOURCE_FACTORIES "
                         "(tests/contracts/test_source_contract.py): add a tiny offline fixture for each")


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    """Sources that remember things under the cache root (wds: shard indexes) keep them in a temporary folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VITLAB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module", params=sorted(SOURCE_FACTORIES))
def any_source(request, tmp_path_factory) -> DataSource:
    return vitlab.load_source(SOURCE_FACTORIES[request.param](tmp_path_factory))


def _some(src: DataSource) -> list[int]:
    return sorted({0, len(src) // 2, len(src) - 1})


def test_metadata_is_consistent(any_source):
    src = any_source
    n = len(src)
    assert n > 0 and len(src.ids) == n and len(set(src.ids)) == n and all(isinstance(i, str) for i in src.ids)
    if src.labels is not None:
        assert src.labels.dtype == np.int64 and src.labels.shape == (n,)
        assert src.labels.min() >= 0 and src.labels.max() < len(src.classes)
    for col in (src.groups, src.split_column):
        assert col is None or len(col) == n
    assert src.splits(seed=0).shape == (n,)
    json.dumps(src.describe())  # run records take it as is


def test_samples_are_rgb_with_their_metadata_and_deterministic(any_source):
    src = any_source
    for i in _some(src):
        s = src[i]
        assert isinstance(s, Sample) and s.image.mode == "RGB" and s.id == src.ids[i]
        assert s.label == (None if src.labels is None else int(src.labels[i]))
        np.testing.assert_array_equal(np.asarray(src.load_image(i)), np.asarray(s.image))
        assert isinstance(src.describe_item(i), str) and src.describe_item(i)


def test_fingerprint_is_stable_and_the_uri_reopens_the_same_source(any_source):
    src = any_source
    fp = src.fingerprint
    assert isinstance(fp, str) and len(fp) == 32 and src.fingerprint == fp
    again = vitlab.load_source(src.uri)
    assert type(again) is type(src) and again.ids == src.ids and again.fingerprint == fp


def test_pickles_for_dataloader_workers(any_source):
    src = any_source
    back = pickle.loads(pickle.dumps(src))
    i = _some(src)[-1]
    assert back.fingerprint == src.fingerprint
    np.testing.assert_array_equal(np.asarray(back.load_image(i)), np.asarray(src.load_image(i)))
