"""Tuned artefacts: the adapted model is a backbone (own weights_id, loads, embeds, merged == unmerged LoRA),
the user's base model is never modified, and an artefact carries its own checksum and names a missing base."""

import json
import shutil
import sys

import numpy as np
import pytest
import torch

import vitlab
from vitlab.backbones.base import hash_state_dict
from vitlab.backbones.artefact import base_meta, read_artefact
from vitlab.errors import BackboneError, ConfigError
from vitlab.store import EmbeddingStore
from vitlab.tuning.artefact import load_artefact, read_meta, save_artefact, save_tuned

DATA = "sample:digits?limit=150"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    base = vitlab.load_backbone("demo:fmnist-vit")
    before = hash_state_dict(base.model)
    res = vitlab.tune(base, DATA, methods="linear,lora:r=2,targets=[qkv,mlp],vpt:prompts=2", seeds=1, seed=1,
                      epochs=1, max_steps=3, batch_size=32, lr=5e-2, n_resamples=50, out=out, progress=False,
                      lp_init=False, lr_grid=(1.0,))  # a random head: the adapters train from step 1 (not kept at 0)
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
    with pytest.raises(BackboneError, match="no such vitlab artefact"):
        vitlab.load_backbone(str(tmp_path / "missing.vitlab"))
    from safetensors.torch import load_file

    path = run[2].artefacts["lora"]
    meta = read_meta(path)
    meta["base"]["weights_id"] = "0" * 32
    other = save_artefact(tmp_path / "other.vitlab", load_file(str(path)), meta, kind="tune")
    with pytest.raises(BackboneError, match="other.vitlab: the artefact's BASE backbone demo:fmnist-vit now has "
                                            "other weights"):
        load_artefact(other)


def _flip_byte(path, offset_from_data_start):
    """Flip one byte of the tensor data of a safetensors file (8-byte header length, JSON header, then data)."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start + offset_from_data_start] ^= 0x01
    path.write_bytes(bytes(raw))


def test_a_flipped_byte_in_a_trained_tensor_is_refused_in_one_line(run, tmp_path):
    copy = tmp_path / "lora.vitlab"
    shutil.copy(run[2].artefacts["lora"], copy)
    assert read_artefact(copy).digest.startswith("blake2b-256:")
    _flip_byte(copy, 100)
    with pytest.raises(BackboneError, match=r"lora.vitlab: checksum mismatch: its tensors or metadata changed since "
                                            r"it was written") as e:
        vitlab.load_backbone(str(copy))
    assert "\n" not in str(e.value)


def test_edited_metadata_is_refused(run, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    src = run[2].artefacts["linear"]
    with safe_open(str(src), framework="pt") as f:
        md = dict(f.metadata())
    meta = json.loads(md["meta"])
    meta["classes"] = list(reversed(meta["classes"]))  # relabel the head: the digest no longer fits
    save_file(load_file(str(src)), str(tmp_path / "edited.vitlab"), metadata={**md, "meta": json.dumps(meta)})
    with pytest.raises(BackboneError, match="edited.vitlab: checksum mismatch"):
        load_artefact(tmp_path / "edited.vitlab")


def test_a_missing_base_is_named_as_the_artefacts_base(tmp_path):
    from transformers import ViTConfig, ViTModel

    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=28,
                    patch_size=4)
    ViTModel(cfg, add_pooling_layer=False).save_pretrained(tmp_path / "my-vit")
    base = vitlab.load_backbone(f"hf:{tmp_path / 'my-vit'}")
    head = {"head.weight": torch.zeros(3, 32), "head.bias": torch.zeros(3)}
    art = save_tuned(tmp_path / "a.vitlab", head, {"base": base_meta(base), "method": {"spec": "linear"}})
    assert vitlab.load_backbone(str(art)).weights_id != base.weights_id  # loads while the base is there
    (tmp_path / "my-vit").rename(tmp_path / "moved")
    with pytest.raises(BackboneError, match=r"a.vitlab: the artefact's BASE backbone is missing: hf:.*my-vit \(.*"
                                            r"my-vit no longer exists\); put the base back where it was"):
        vitlab.load_backbone(str(art))


def test_a_base_loaded_from_an_artefact_is_recorded_by_its_path(run):
    lora = vitlab.load_backbone(str(run[2].artefacts["lora"]))
    b = base_meta(lora)
    assert b["load_name"] == f"tuned:{run[2].artefacts['lora'].resolve()}" and b["weights_id"] == lora.weights_id


def test_legacy_artefact_without_checksum_loads_with_a_warning(run, tmp_path):
    from safetensors.torch import load_file, save_file

    src = run[2].artefacts["linear"]
    save_file(load_file(str(src)), str(tmp_path / "old.vitlab"),
              metadata={"format": "vitlab-tuned/1", "meta": json.dumps(read_meta(src))})
    with pytest.warns(UserWarning, match="old.vitlab: written in the older format vitlab-tuned/1 without a checksum"):
        bb = load_artefact(tmp_path / "old.vitlab")
    assert bb.weights_id == vitlab.load_backbone(str(src)).weights_id


def test_lora_artefact_without_peft_names_the_extra(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ConfigError, match=r"method lora needs the package peft, which is not installed: "
                                          r"pip install 'vitlab\[tune\]'"):
        load_artefact(run[2].artefacts["lora"])
