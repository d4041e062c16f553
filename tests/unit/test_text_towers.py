"""Text towers of image–text backbones (open_clip, hf CLIP/SigLIP) and the text-embedding cache.

All models are random-init and tiny (except one ViT-S-32 end-to-end check); nothing is downloaded.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import vitlab
from vitlab.backbones._seed import seeded
from vitlab.errors import BackboneError, ConfigError
from vitlab.protocols import text_cache
from vitlab.protocols.text_cache import text_cache_path, text_cache_key, text_embeddings

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

TEXTS = ["a photo of a cat.", "dog", "a rather long prompt about a tabby cat sitting on a mat " * 6]
# A tiny CLIP: its own vision/text configs, OpenAI's bundled BPE tokenizer (offline, 49408 tokens).
TINY = dict(embed_dim=16,
            vision_cfg={"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
            text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2})


def _images(n=2, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _features(out):  # transformers 5 returns an output object, 4 a tensor
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _tiny_open_clip(arch="ViT-S-32", **kw):
    kw = {**TINY, **kw}
    bb = vitlab.load_backbone(f"open_clip:{arch}", pretrained=False, **kw)
    ref = seeded(lambda: open_clip.create_model(arch, pretrained=None, **kw), 0).eval()
    return bb, ref


# -- open_clip ------------------------------------------------------------------------------------
def test_open_clip_vit_s32_embed_and_text_match_the_model():
    bb = vitlab.load_backbone("open_clip:ViT-S-32", pretrained=False)
    ref = seeded(lambda: open_clip.create_model("ViT-S-32", pretrained=None), 0).eval()
    x = _images(2, 224)
    with torch.no_grad():
        img, want_img = bb.embed_image(bb.forward_tokens(x, -1)), ref.encode_image(x)
        want_txt = ref.encode_text(open_clip.get_tokenizer("ViT-S-32")(TEXTS))
    txt = bb.encode_text(TEXTS)
    assert bb.has_text and img.shape == (2, 384) and txt.shape == (3, 384)
    assert torch.allclose(img, want_img, atol=1e-5, rtol=0)
    assert torch.allclose(txt, want_txt, atol=1e-5, rtol=0)


def test_open_clip_embed_pooling_and_stored_pools():
    bb, ref = _tiny_open_clip()
    x = _images()
    out = bb.forward_tokens(x, [0, -1])
    assert bb.stored_pools == ("cls", "mean", "embed")
    with torch.no_grad():
        assert torch.allclose(bb.pool(out, 1, "embed"), ref.encode_image(x), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match=r"pooling 'embed' .* only for the last block \(1\)"):
        bb.pool(out, 0, "embed")
    with pytest.raises(ConfigError, match=r"needs the tokens of the last block \(1\).*layers=-1"):
        bb.embed_image(bb.forward_tokens(x, 0))


def test_open_clip_avg_pool_tower_embed_matches():
    bb, ref = _tiny_open_clip(vision_cfg={**TINY["vision_cfg"], "pool_type": "avg"})
    x = _images()
    with torch.no_grad():
        assert torch.allclose(bb.embed_image(bb.forward_tokens(x, -1)), ref.encode_image(x), atol=1e-5, rtol=0)


def test_open_clip_final_ln_after_avg_pool_has_no_text_and_says_why():
    bb, _ = _tiny_open_clip(vision_cfg={**TINY["vision_cfg"], "pool_type": "avg", "final_ln_after_pool": True})
    assert not bb.has_text and "embed" not in bb.stored_pools
    with pytest.raises(BackboneError, match=r"final_ln_after_pool"):
        bb.encode_text(["a cat"])
    with pytest.raises(BackboneError, match=r"final_ln_after_pool"):
        bb.embed_image(bb.forward_tokens(_images(), -1))


def test_open_clip_weights_ids_split_image_and_text():
    bb, ref = _tiny_open_clip()
    assert bb.weights_id == vitlab.backbones.base.hash_state_dict(ref.visual)  # image tower only, as before
    assert not any(k.startswith("visual.") for k in bb.text_model.state_dict())
    img_id, txt_id = bb.weights_id, bb.text_weights_id
    with torch.no_grad():
        bb.text_model.text_projection.add_(1e-3)
    assert bb.text_weights_id != txt_id and bb.weights_id == img_id
    txt_id = bb.text_weights_id
    bb.model.proj.data.mul_(2.0)  # the image projection is part of the image tower's weights
    assert bb.weights_id != img_id and bb.text_weights_id == txt_id
    assert bb.to("cpu").text_weights_id == txt_id


def test_open_clip_timm_tower_with_projection_head():
    kw = dict(embed_dim=24, vision_cfg={"image_size": 224, "timm_model_name": "vit_tiny_patch16_224",
                                        "timm_pool": "avg", "timm_proj": "linear"},
              text_cfg={"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1,
                        "no_causal_mask": True, "proj_bias": True, "pool_type": "last"})
    bb, ref = _tiny_open_clip("ViT-B-16-SigLIP", **kw)
    assert isinstance(bb, vitlab.backbones.timm.TimmBackbone) and bb.has_text
    assert "open_clip_head.proj.weight" in bb.model.state_dict()  # weights_id covers the projection
    x = _images(2, 224)
    with torch.no_grad():
        assert torch.allclose(bb.embed_image(bb.forward_tokens(x, -1)), ref.encode_image(x), atol=1e-5, rtol=0)
    ids = torch.randint(0, 100, (3, 16), generator=torch.Generator().manual_seed(1))
    bb._tokenizer = lambda texts: ids[:len(texts)]  # SigLIP's HF tokenizer needs the network
    with torch.no_grad():
        assert torch.allclose(bb.encode_text(["a", "b", "c"]), ref.encode_text(ids), atol=1e-5, rtol=0)


def test_encode_text_rejects_a_bare_string():
    bb, _ = _tiny_open_clip()
    with pytest.raises(ConfigError, match=r"non-empty list of strings"):
        bb.encode_text("a photo of a cat.")


def test_backbones_without_text_tower_say_so():
    bb = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1)
    assert not bb.has_text and bb.stored_pools == ("cls", "mean")
    with pytest.raises(BackboneError, match=r"has no text tower: zero-shot classification needs an image–text"):
        bb.encode_text(["a cat"])
    with pytest.raises(BackboneError, match=r"has no text tower"):
        text_embeddings(bb, ["cat"], ["a {}."])


def test_hf_vision_only_clip_has_no_text(tmp_path):
    transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                  image_size=32, patch_size=8).save_pretrained(tmp_path)
    bb = vitlab.load_backbone(f"hf:{tmp_path}", pretrained=False)
    assert not bb.has_text
    with pytest.raises(BackboneError, match=r"has no text tower"):
        bb.encode_text(["a cat"])


# -- hf CLIP / SigLIP ---------------------------------------------------------------------------------
def _clip_tokenizer_dir(path):
    """A real CLIPTokenizer, written offline: byte-level characters only (no merges)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars + [c + "</w>" for c in chars]:
        vocab.setdefault(c, len(vocab))
    transformers.CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(path)
    return len(vocab)


def _hf_clip(path, with_tokenizer=True):
    n_vocab = _clip_tokenizer_dir(path) if with_tokenizer else 600
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=n_vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=40, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    cfg.save_pretrained(path)
    bb = vitlab.load_backbone(f"hf:{path}", pretrained=False)
    return bb, seeded(lambda: transformers.CLIPModel(cfg), 0).eval()


def test_hf_clip_embed_and_text_match_the_model(tmp_path):
    bb, ref = _hf_clip(tmp_path)
    assert bb.has_text and bb.stored_pools == ("cls", "mean", "embed")
    x = _images(2, 32)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    with torch.no_grad():
        want_img = _features(ref.get_image_features(pixel_values=x))
        want_txt = _features(ref.get_text_features(**tok(TEXTS, padding=True, truncation=True, max_length=40,
                                                          return_tensors="pt")))
        img = bb.pool(bb.forward_tokens(x, -1), 1, "embed")
    txt = bb.encode_text(TEXTS)
    assert img.shape == (2, 16) and txt.shape == (3, 16)
    assert torch.allclose(img, want_img, atol=1e-5, rtol=0)
    assert torch.allclose(txt, want_txt, atol=1e-5, rtol=0)


def test_hf_clip_weights_ids_cover_projections(tmp_path):
    bb, _ = _hf_clip(tmp_path)
    assert "visual_projection.weight" in bb.model.state_dict()
    assert "text_projection.weight" in bb.text_model.state_dict() and "logit_scale" in bb.text_model.state_dict()
    img_id, txt_id = bb.weights_id, bb.text_weights_id
    bb.model.visual_projection.weight.data.add_(1.0)
    assert bb.weights_id != img_id and bb.text_weights_id == txt_id
    bb.text_model.text_projection.weight.data.add_(1.0)
    assert bb.text_weights_id != txt_id


def test_hf_clip_without_tokenizer_files_fails_clearly(tmp_path):
    bb, _ = _hf_clip(tmp_path, with_tokenizer=False)
    assert bb.has_text  # the tokenizer is loaded on first use
    with pytest.raises(BackboneError, match=r"cannot load its text tokenizer"):
        bb.encode_text(["a cat"])


def test_hf_siglip_embed_and_text_match_the_model(tmp_path):
    cfg = transformers.SiglipConfig(
        text_config=dict(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=12, projection_size=32),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8))
    cfg.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bb = vitlab.load_backbone(f"hf:{tmp_path}", pretrained=False)
        ref = seeded(lambda: transformers.SiglipModel(cfg), 0).eval()
    assert bb.has_text and bb.stored_pools == ("mean", "embed")
    x = _images(2, 32)
    with torch.no_grad():
        assert torch.allclose(bb.embed_image(bb.forward_tokens(x, -1)),
                              _features(ref.get_image_features(pixel_values=x)), atol=1e-5, rtol=0)
    calls = []

    def fake_tokenizer(texts, **kw):  # sentencepiece is not installed here: a deterministic stand-in
        calls.append(kw)
        n = kw["max_length"]
        return {"input_ids": torch.tensor([[2 + ord(c) % 40 for c in t[:n]] + [1] * (n - len(t[:n])) for t in texts])}

    bb._tokenizer = fake_tokenizer
    txt = bb.encode_text(TEXTS)
    with torch.no_grad():
        want = _features(ref.get_text_features(**fake_tokenizer(TEXTS, max_length=12)))
    assert torch.allclose(txt, want, atol=1e-5, rtol=0)
    assert calls[0] == {"padding": "max_length", "truncation": True, "max_length": 12, "return_tensors": "pt"}


# -- text-embedding cache ------------------------------------------------------------------------------
class FakeText:
    """A stand-in text backbone: deterministic embeddings from the prompt, counting calls."""

    has_text = True

    def __init__(self, name="fake:clip", text_weights_id="w0", dim=4):
        self.name, self.text_weights_id, self.dim, self.calls = name, text_weights_id, dim, 0

    def encode_text(self, texts):
        self.calls += 1
        return torch.tensor([[len(t), sum(map(ord, t)) % 97, 1.0, float(i)][:self.dim] for i, t in enumerate(texts)])


def test_text_cache_second_call_loads_from_disk(tmp_path):
    bb = FakeText()
    a = text_embeddings(bb, ["cat", "dog", "fox"], ["a {}.", "the {}!"], tmp_path)
    assert a.shape == (3, 2, 4) and a.dtype == np.float32 and bb.calls == 1
    b = text_embeddings(bb, ["cat", "dog", "fox"], ["a {}.", "the {}!"], tmp_path)
    assert bb.calls == 1 and np.array_equal(a, b)
    assert a[1, 1, 0] == len("the dog!")  # [class, template] order
    assert len(list((tmp_path / "text").glob("*.npz"))) == 1


@pytest.mark.parametrize("change", ["name", "weights", "templates", "template_order", "classnames", "schema"])
def test_text_cache_key_changes_with_each_input(tmp_path, monkeypatch, change):
    bb, cls, tmpl = FakeText(), ["cat", "dog"], ["a {}.", "the {}!"]
    text_embeddings(bb, cls, tmpl, tmp_path)
    before = text_cache_path(tmp_path, text_cache_key(bb, cls, tmpl))
    if change == "name":
        bb.name = "fake:other"
    elif change == "weights":
        bb.text_weights_id = "w1"
    elif change == "templates":
        tmpl = ["a {}.", "the {}?"]
    elif change == "template_order":
        tmpl = tmpl[::-1]
    elif change == "classnames":
        cls = ["cat", "wolf"]
    else:
        monkeypatch.setattr(text_cache, "TEXT_SCHEMA_VERSION", 2)
    assert text_cache_path(tmp_path, text_cache_key(bb, cls, tmpl)) != before
    text_embeddings(bb, cls, tmpl, tmp_path)
    assert bb.calls == 2  # recomputed, not served from the old entry


def test_text_cache_follows_in_place_text_weight_changes(tmp_path):
    bb, _ = _tiny_open_clip()
    a = text_embeddings(bb, ["cat", "dog"], ["a photo of a {}."], tmp_path)
    with torch.no_grad():
        bb.text_model.text_projection.mul_(2.0)
    b = text_embeddings(bb, ["cat", "dog"], ["a photo of a {}."], tmp_path)
    np.testing.assert_allclose(b, 2 * a, rtol=1e-5, atol=1e-6)
    assert len(list((tmp_path / "text").glob("*.npz"))) == 2


def test_text_cache_recomputes_a_corrupt_entry(tmp_path):
    bb = FakeText()
    a = text_embeddings(bb, ["cat"], ["a {}."], tmp_path)
    path = text_cache_path(tmp_path, text_cache_key(bb, ["cat"], ["a {}."]))
    path.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match=r"unreadable.*recomputing"):
        b = text_embeddings(bb, ["cat"], ["a {}."], tmp_path)
    assert bb.calls == 2 and np.array_equal(a, b)
    assert np.array_equal(text_embeddings(bb, ["cat"], ["a {}."], tmp_path), a) and bb.calls == 2


def test_text_cache_without_cache_dir_and_with_an_unwritable_one(tmp_path):
    bb = FakeText()
    text_embeddings(bb, ["cat"], ["a {}."], None)
    text_embeddings(bb, ["cat"], ["a {}."], None)
    assert bb.calls == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the cache dir should be
    with pytest.warns(UserWarning, match=r"the text-embedding cache is not written, continuing without it: cannot "
                                         r"write .*/file/text/[0-9a-f]{24}\.npz"):
        out = text_embeddings(bb, ["cat"], ["a {}."], blocker)
    assert out.shape == (1, 1, 4)


def test_text_cache_rejects_a_wrong_text_tower_shape(tmp_path):
    bb = FakeText()
    bb.encode_text = lambda texts: torch.zeros(len(texts) + 1, 4)
    with pytest.raises(vitlab.errors.DataError, match=r"encode_text returned shape \(3, 4\).*expected finite \[2, D\]"):
        text_embeddings(bb, ["cat", "dog"], ["a {}."], tmp_path)
