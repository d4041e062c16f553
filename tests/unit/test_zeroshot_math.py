"""Zero-shot math: templates, prompts, prompt-ensemble weights (parity with open_clip), logits, proba."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vitlab
from vitlab.backbones._seed import seeded
from vitlab.errors import ConfigError, DataError, UnknownNameError
from vitlab.protocols.zeroshot_math import (TEMPLATE_SETS, class_prompts, read_templates, templates,
                                            zeroshot_logits, zeroshot_proba, zeroshot_weights)
from vitlab.protocols.text_cache import text_embeddings

open_clip = pytest.importorskip("open_clip")


# -- templates -----------------------------------------------------------------------------------
def test_named_sets_match_open_clips_published_templates():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    assert templates("openai") == [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    assert len(templates("openai")) == 80 and len(set(templates("openai"))) == 80
    assert templates("openai7") == [t("{}") for t in SIMPLE_IMAGENET_TEMPLATES]
    assert templates("simple") == ["a photo of a {}."]
    assert templates() == templates("openai")  # the default
    assert all("{}" in t for ts in TEMPLATE_SETS.values() for t in ts)


def test_template_file_precedence_and_parsing(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text("# my prompts\n  a sketch of a {}.  \n\nart of the {}\n", encoding="utf-8")
    assert read_templates(p) == ["a sketch of a {}.", "art of the {}"]
    assert templates("simple", file=p) == read_templates(p)  # explicit file > named set
    assert templates(str(p)) == read_templates(p)  # a name that is a file
    assert templates(None, file=p) == read_templates(p)


def test_template_file_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("a photo of a {}.\n# fine\na photo of a cat.\n")
    with pytest.raises(DataError, match=rf"{p}, line 3: template 'a photo of a cat\.' has no '\{{\}}'"):
        templates(file=p)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(DataError, match=r"empty\.txt holds no prompt template"):
        templates(file=empty)
    with pytest.raises(DataError, match=r"cannot read prompt templates from .*missing\.txt"):
        templates(file=tmp_path / "missing.txt")


def test_unknown_template_set_suggests():
    with pytest.raises(UnknownNameError, match=r"unknown prompt template set 'opnai'\. Did you mean: openai"):
        templates("opnai")


def test_class_prompts_order_and_checks():
    assert class_prompts(["cat", "{odd} name"], ["a {}.", "{} and {}"]) == [
        ["a cat.", "cat and cat"], ["a {odd} name.", "{odd} name and {odd} name"]]
    with pytest.raises(ConfigError, match=r"template 'a photo' has no '\{\}'"):
        class_prompts(["cat"], ["a photo"])
    with pytest.raises(ConfigError, match=r"at least one class name and one template; got 0 class names"):
        class_prompts([], ["a {}."])
    with pytest.raises(ConfigError, match=r"not a single string"):
        class_prompts("cat", ["a {}."])


# -- weights: parity with open_clip ----------------------------------------------------------------
TINY = dict(embed_dim=16,
            vision_cfg={"image_size": 64, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16},
            text_cfg={"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2})


def test_weights_match_open_clip_build_zero_shot_classifier(tmp_path):
    from open_clip.zero_shot_classifier import build_zero_shot_classifier, build_zero_shot_classifier_legacy

    bb = vitlab.load_backbone("open_clip:ViT-S-32", pretrained=False, **TINY)
    ref = seeded(lambda: open_clip.create_model("ViT-S-32", pretrained=None, **TINY), 0).eval()
    tok = open_clip.get_tokenizer("ViT-S-32")
    names, tmpl = ["cat", "dog", "red fox", "airliner"], templates("openai7")
    W = zeroshot_weights(text_embeddings(bb, names, tmpl, tmp_path))
    want = build_zero_shot_classifier(ref, tok, names, tmpl, num_classes_per_batch=3).numpy()
    legacy = build_zero_shot_classifier_legacy(ref, tok, names, tmpl).numpy()
    assert W.shape == (16, 4)
    np.testing.assert_allclose(W, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(W, legacy, atol=1e-5, rtol=0)
    # and the logits: open_clip's 100 * normalised image features @ W
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        img = bb.embed_image(bb.forward_tokens(x, -1))
        want_logits = 100.0 * ref.encode_image(x, normalize=True) @ torch.from_numpy(want)
    np.testing.assert_allclose(zeroshot_logits(img, W), want_logits.numpy(), atol=1e-3, rtol=1e-5)


def test_weights_are_unit_columns_and_ignore_prompt_norms():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(5, 3, 8))
    W = zeroshot_weights(t)
    assert W.shape == (8, 5)
    np.testing.assert_allclose(np.linalg.norm(W, axis=0), 1.0, atol=1e-12)
    scaled = t * rng.uniform(0.1, 10.0, size=(5, 3, 1))
    np.testing.assert_allclose(zeroshot_weights(scaled), W, atol=1e-12)
    np.testing.assert_allclose(zeroshot_weights(torch.from_numpy(t).float()), W, atol=1e-6)


def test_weights_input_checks():
    with pytest.raises(DataError, match=r"must be \[n_classes, n_templates, D\].*shape \(2, 3\)"):
        zeroshot_weights(np.ones((2, 3)))
    with pytest.raises(DataError, match=r"all-zero embedding"):
        zeroshot_weights(np.zeros((1, 1, 3)))
    with pytest.raises(DataError, match=r"NaN or inf"):
        zeroshot_weights(np.full((1, 1, 3), np.nan))


# -- logits / proba ---------------------------------------------------------------------------------
def test_logits_are_scaled_cosines_and_proba_a_softmax():
    rng = np.random.default_rng(1)
    W = zeroshot_weights(rng.normal(size=(4, 2, 6)))
    x = rng.normal(size=(10, 6))
    z = zeroshot_logits(x, W, scale=50.0)
    want = 50.0 * (x / np.linalg.norm(x, axis=1, keepdims=True)) @ W
    assert z.shape == (10, 4) and z.dtype == np.float32
    np.testing.assert_allclose(z, want, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(zeroshot_logits(3.7 * x, W, scale=50.0), z, rtol=1e-6, atol=1e-5)  # norm-invariant
    np.testing.assert_allclose(zeroshot_logits(x, W, scale=50.0, block=3), z)  # blocking changes nothing
    assert (zeroshot_logits(x, W, scale=1.0).argmax(1) == z.argmax(1)).all()  # scale keeps the ranking
    p = zeroshot_proba(x, W, scale=50.0)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
    e = np.exp(want - want.max(1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), atol=1e-5)


def test_logits_input_checks():
    W = np.eye(3)
    with pytest.raises(DataError, match=r"image embeddings \(2, 4\) and zero-shot weights \(3, 3\)"):
        zeroshot_logits(np.ones((2, 4)), W)
    with pytest.raises(DataError, match=r"image embeddings contains an all-zero embedding"):
        zeroshot_logits(np.zeros((1, 3)), W)
    with pytest.raises(ConfigError, match=r"logit scale -1.0 must be a positive number"):
        zeroshot_logits(np.ones((1, 3)), W, scale=-1.0)
