"""Tuned artefacts: the adapted model is a backbone (own weights_id, loads, embeds, merged == unmerged LoRA),
and the user's base model is never modified."""

import numpy as np
import pytest
import torch

import vitlab
from vitlab.backbones.base import hash_state_dict
from vitlab.errors import BackboneError
from vitlab.store import EmbeddingStore
from vitlab.tune.artefact import load_artefact, read_meta, save_artefact

DATA = "sample:digits?limit=150"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    base = vitlab.load_backbone("demo:fmnist-vit")
    before = hash_state_dict(base.model)
    res = vitlab.tune(base, DATA, methods="linear,lora:r=2,targets=[qkv,mlp],vpt:prompts=2", seeds=1, seed=1,
                      epochs=1, max_steps=3, batch_size=32, lr=5e-2, n_resamples=50, out=out, progress=False)
    return base, before, res, out


def test_base_model_unchanged(run):
    base, before, res, _ = run
    assert hash_state_dict(base.model) == before
    assert not any(p.requires_grad for p in base.model.parameters())


def test_artefacts_load_as_backbones_with_their_own_id(run):
    base, _, res, out = run
    assert set(res.artefacts) == {"linear", "lora", "vpt"}
    ids = set()
    for label, path in res.artefacts.items():
        assert path.parent.parent == out / "tune" and path.suffix == ".vitlab"
        bb = vitlab.load_backbone(str(path))
        assert bb.name == f"demo:fmnist-vit+{label}" and bb.spec.extra["tuned"]["method"] == label
        assert bb.weights_id != base.weights_id and bb.weights_id == res.backbones[label].weights_id
        meta = read_meta(path)
        assert meta["base"]["weights_id"] == base.weights_id and meta["data"]["uri"] == DATA
        assert meta["data"]["fingerprint"] == vitlab.load_source(DATA).fingerprint
        ids.add(bb.weights_id)
    assert len(ids) == 3


def test_merged_lora_equals_unmerged(run):
    path = run[2].artefacts["lora"]
    merged, unmerged = load_artefact(path), load_artefact(path, merge=False)
    lora_b = [p for n, p in unmerged.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # the adapters did train
    assert not any("lora_" in n for n, _ in merged.model.named_parameters())
    x = torch.randn(4, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = merged.forward_tokens(x, [-1, 1]), unmerged.forward_tokens(x, [-1, 1])
    for layer in (1, 5):
        torch.testing.assert_close(a.tokens[layer], b.tokens[layer], rtol=1e-4, atol=1e-5)
    base = run[0]
    with torch.no_grad():
        assert not torch.allclose(base.forward_tokens(x, -1).tokens[5], a.tokens[5], atol=1e-4)


@pytest.mark.parametrize("label", ["lora", "vpt"])
def test_loaded_head_reproduces_the_test_predictions(run, label):
    _, _, res, _ = run
    bb = vitlab.load_backbone(str(res.artefacts[label]))
    src = vitlab.load_source(DATA)
    r = res.results[1][label]
    rows = [src.ids.index(u) for u in r.units]
    tf = bb.spec.preprocessing.build_transform()
    x = torch.stack([tf(src.load_image(i)) for i in rows])
    w, b = bb.tuned_head
    with torch.no_grad():
        feats = bb.pool(bb.forward_tokens(x, -1), 5, "cls")
        proba = torch.softmax((feats @ w.T + b).double(), 1).numpy()
    np.testing.assert_allclose(proba, r.outputs["proba"], atol=1e-5)


def test_artefact_embeds_through_the_store(run, tmp_path):
    base, _, res, _ = run
    store = EmbeddingStore(tmp_path / "cache")
    src = vitlab.load_source("sample:digits?limit=20")
    e_base = store.get_or_compute(base, src, progress=False)
    e_tuned = store.get_or_compute(vitlab.load_backbone(str(res.artefacts["lora"])), src, progress=False)
    assert e_tuned.digest != e_base.digest and not e_tuned.from_cache
    assert not np.allclose(np.asarray(e_tuned.get()), np.asarray(e_base.get()))
    again = store.get_or_compute(vitlab.load_backbone(str(res.artefacts["lora"])), src, progress=False)
    assert again.from_cache and again.digest == e_tuned.digest


def test_bad_artefacts_one_line(run, tmp_path):
    bad = tmp_path / "x.vitlab"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(BackboneError, match="not a readable .vitlab artefact"):
        vitlab.load_backbone(str(bad))
    with pytest.raises(BackboneError, match="no such tuned artefact"):
        vitlab.load_backbone(str(tmp_path / "missing.vitlab"))
    from safetensors.torch import load_file

    path = run[2].artefacts["lora"]
    meta = read_meta(path)
    meta["base"]["weights_id"] = "0" * 32
    other = save_artefact(tmp_path / "other.vitlab", load_file(str(path)), meta)
    with pytest.raises(BackboneError, match="now has other weights"):
        load_artefact(other)
