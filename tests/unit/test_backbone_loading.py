"""Loading by name: aliases, prefixes, file checkpoints, errors with suggestions."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import vitlab
from vitlab.backbones.base import hash_state_dict
from vitlab.backbones import resolve_name
from vitlab.backbones.demo import demo_info
from vitlab.errors import BackboneError, ConfigError, UnknownNameError


def test_aliases_resolve():
    assert resolve_name("dinov2-s") == "timm:vit_small_patch14_dinov2.lvd142m"
    assert resolve_name("clip-b16") == "open_clip:ViT-B-16/openai"
    assert resolve_name("mae-b").startswith("timm:") and resolve_name("dinov2-b-reg").endswith("reg4_dinov2.lvd142m")


def test_unknown_alias_suggests_close_matches():
    with pytest.raises(UnknownNameError, match=r"unknown backbone 'dinov2-m'\. Did you mean: dinov2-"):
        resolve_name("dinov2-m")


def test_unknown_source_prefix_suggests():
    with pytest.raises(UnknownNameError, match=r"unknown backbone source 'tim'\. Did you mean: timm"):
        vitlab.load_backbone("tim:vit_small_patch16_224", pretrained=False)


def test_unknown_timm_model_suggests():
    with pytest.raises(UnknownNameError, match=r"unknown timm model 'vit_tiny_patch16_22'.*vit_tiny_patch16_224"):
        vitlab.load_backbone("timm:vit_tiny_patch16_22", pretrained=False)


def test_non_vit_timm_model_is_refused():
    with pytest.raises(BackboneError, match="not a ViT-family model with patch tokens"):
        vitlab.load_backbone("timm:resnet18", pretrained=False)


def test_no_pretrained_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1)
    assert torch.rand(1) == before  # caller's RNG stream untouched
    b = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1)
    assert a.weights_id == b.weights_id


def test_cuda_request_without_gpu_is_clear():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="no CUDA GPU is available here; use --device cpu"):
        vitlab.load_backbone("demo:fmnist-vit", device="cuda")


def _tiny_state(tmp_path, **kw):
    bb = vitlab.load_backbone("timm:vit_small_patch16_224", pretrained=False, img_size=32, patch_size=8,
                              embed_dim=32, depth=2, num_heads=2)
    p = tmp_path / "w.safetensors"
    save_file(bb.model.state_dict(), str(p), **kw)
    return bb, p


def test_file_checkpoint_with_arch_in_query(tmp_path):
    bb, p = _tiny_state(tmp_path)
    loaded = vitlab.load_backbone(f"file:{p}?arch=vit_small_patch16_224", img_size=32, patch_size=8, embed_dim=32,
                                  depth=2, num_heads=2)
    assert hash_state_dict(loaded.model) == hash_state_dict(bb.model)  # the same weights...
    assert loaded.weights_id != bb.weights_id  # ...identified by the checkpoint's content, not re-hashed


def test_a_known_checkpoint_loads_deferred_and_its_id_follows_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("VITLAB_CACHE_DIR", str(tmp_path / "cache"))
    bb, p = _tiny_state(tmp_path)
    kw = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    first = vitlab.load_backbone(f"file:{p}?arch=vit_small_patch16_224", **kw)
    second = vitlab.load_backbone(f"file:{p}?arch=vit_small_patch16_224", **kw)
    assert first.model_loaded and not second.model_loaded  # the spec was remembered: nothing built
    assert second.weights_id == first.weights_id and second.spec == first.spec
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(second.forward_tokens(x).tokens[1], first.forward_tokens(x).tokens[1])
    assert second.model_loaded and second.weights_id == first.weights_id
    with torch.no_grad():
        next(second.model.parameters()).add_(1.0)  # changed in place after the deferred build
    assert second.weights_id != first.weights_id
    save_file({k: v + 1 for k, v in bb.model.state_dict().items()}, str(p))  # new bytes, new id
    assert vitlab.load_backbone(f"file:{p}?arch=vit_small_patch16_224", **kw).weights_id != first.weights_id


def test_file_checkpoint_pth_with_nested_state_dict_and_prefix(tmp_path):
    bb, _ = _tiny_state(tmp_path)
    p = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in bb.model.state_dict().items()}}, p)
    p.with_suffix(".json").write_text(json.dumps({"arch": "vit_small_patch16_224", "model_kwargs": dict(
        img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)}))
    assert hash_state_dict(vitlab.load_backbone(f"file:{p}").model) == hash_state_dict(bb.model)


def test_file_checkpoint_without_arch_says_how(tmp_path):
    _, p = _tiny_state(tmp_path)
    with pytest.raises(BackboneError, match=r"architecture is unknown\. Pass it as file:.*\?arch="):
        vitlab.load_backbone(f"file:{p}")


def test_file_checkpoint_arch_mismatch_lists_keys(tmp_path):
    _, p = _tiny_state(tmp_path)
    with pytest.raises(BackboneError, match=r"does not match timm arch 'vit_small_patch16_224'.*shape mismatches"):
        vitlab.load_backbone(f"file:{p}?arch=vit_small_patch16_224", img_size=32, patch_size=8, embed_dim=64,
                             depth=2, num_heads=2)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(BackboneError, match=r"no such checkpoint file\. It is a directory: for a transformers"):
        vitlab.load_backbone(f"file:{tmp_path}")


def test_hf_unsupported_model_type(tmp_path):
    import transformers

    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32).save_pretrained(tmp_path)
    with pytest.raises(BackboneError, match=r"is a 'bert' model; vitlab's hf: source supports"):
        vitlab.load_backbone(f"hf:{tmp_path}", pretrained=False)


def test_open_clip_needs_a_tag_when_pretrained():
    with pytest.raises(BackboneError, match=r"open_clip:ViT-B-32 needs a pretrained tag, e\.g\. open_clip:ViT-B-32/"):
        vitlab.load_backbone("open_clip:ViT-B-32")


def test_demo_is_small_and_documents_its_accuracy():
    info = demo_info()
    path = vitlab.backbones.demo.demo_path("fmnist-vit")
    assert path.stat().st_size <= 5 * 1024 * 1024
    assert 0.80 <= info["test_accuracy"] <= 1.0
    assert "Fashion-MNIST train split" in info["recipe"]["data"]
    bb = vitlab.load_backbone("demo:fmnist-vit")
    assert bb.spec.preprocessing.input_size == (28, 28) and bb.spec.grid_size == (7, 7)


def test_random_prefix_gives_a_seeded_random_copy():
    trained = vitlab.load_backbone("demo:fmnist-vit")
    rand = vitlab.load_backbone("random:demo:fmnist-vit")
    assert rand.spec.name == "random:demo:fmnist-vit" and not rand.spec.pretrained
    assert rand.weights_id != trained.weights_id
    assert rand.weights_id == vitlab.load_backbone("random:fmnist-vit").weights_id  # aliases work inside random:


def test_no_pretrained_does_not_discard_local_weights():
    assert vitlab.load_backbone("demo:fmnist-vit", pretrained=False).weights_id == \
        vitlab.load_backbone("demo:fmnist-vit").weights_id


def test_pixels_baseline():
    bb = vitlab.load_backbone("pixels")
    assert bb.spec.name == "pixels:28" and bb.spec.embed_dim == 3 * 28 * 28 and not bb.spec.has_cls_token


def test_no_pretrained_hub_backbones_are_named_random():
    a = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1)
    b = vitlab.load_backbone("random:timm:vit_tiny_patch16_224", img_size=32, depth=1)
    assert a.name == b.name == "random:timm:vit_tiny_patch16_224" and a.weights_id == b.weights_id


def test_same_weights_holds_for_a_deferred_backbone_not_yet_built():
    """A deferred backbone (built on first use) keeps its pinned id through a value-preserving change made
    before anything built its model (found by the same_weights doctest)."""
    from vitlab.backbones.timm import TimmBackbone

    demo = vitlab.load_backbone("demo:fmnist-vit")
    bb = TimmBackbone.deferred(lambda: demo.model, demo.spec, "ab12")
    assert not bb.model_loaded
    with bb.same_weights():
        bb.model.to(memory_format=torch.channels_last)
    assert bb.weights_id == "ab12"
