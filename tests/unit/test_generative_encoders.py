"""Encoders for generative evaluation build offline and record their protocol; clean-fid resize; FID Inception."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vitlab
from vitlab.backbones.inception import FID_WEIGHTS_URL, InceptionBackbone
from vitlab.backbones.preprocessing import CleanResize, Preprocessing
from vitlab.errors import BackboneError, ConfigError, UnknownNameError
from vitlab.generative import DGM_EVAL_DINOV2, load_encoder
from vitlab.store import EmbeddingStore


def _dgm_eval_pil_resize(img: Image.Image, size_wh: tuple[int, int]) -> torch.Tensor:
    """dgm-eval's ``resizer.pil_resize`` (clean-fid's PIL float resize), written out as reference."""
    x = np.asarray(img.convert("RGB")).astype(np.float32)
    chans = []
    for c in range(3):
        ch = Image.fromarray(x[:, :, c]).resize(size_wh, resample=Image.BICUBIC)  # float32 → mode "F"
        chans.append(np.asarray(ch).clip(0, 255).reshape(size_wh[1], size_wh[0], 1))
    return torch.from_numpy(np.concatenate(chans, axis=2).transpose(2, 0, 1).copy()) / 255


def test_dinov2_encoder_has_dgm_eval_preprocessing_and_its_own_cache_key(tmp_path):
    enc = load_encoder("dinov2-s", pretrained=False, depth=1)
    prep = enc.backbone.spec.preprocessing
    assert prep == DGM_EVAL_DINOV2
    assert (prep.input_size, prep.resize, prep.interpolation, prep.mean) == ((224, 224), "stretch", "bicubic",
                                                                             (0.485, 0.456, 0.406))
    assert enc.pool == "cls" and enc.layer == -1 and not enc.supports_is
    d = enc.describe()
    assert d["encoder"] == "dinov2-s" and d["backbone"] == "random:timm:vit_small_patch14_dinov2.lvd142m"
    assert d["preprocessing"]["resize"] == "stretch" and d["weights_id"] == enc.backbone.weights_id
    plain = vitlab.load_backbone("dinov2-s", pretrained=False, depth=1, img_size=224)
    assert plain.spec.preprocessing != prep  # timm's own config (bicubic shorter side + crop_pct)
    store, src = EmbeddingStore(tmp_path), vitlab.load_source("sample:fashion-mnist")
    assert store.key_for(enc.backbone, src, -1).digest != store.key_for(plain, src, -1).digest


def test_clean_resize_is_recorded_and_matches_dgm_eval():
    enc = load_encoder("dinov2-s", resize="clean", pretrained=False, depth=1)
    prep = enc.backbone.spec.preprocessing
    assert (prep.resize, prep.input_size, prep.interpolation) == ("clean", (224, 224), "bicubic")
    assert enc.describe()["resize"] == "clean"
    img = Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8))
    torch.testing.assert_close(CleanResize((20, 30))(img), _dgm_eval_pil_resize(img, (30, 20)), rtol=0, atol=0)
    x = Preprocessing(input_size=(20, 30), resize="clean").build_transform()(img)
    assert x.shape == (3, 20, 30) and x.dtype == torch.float32
    with pytest.raises(ConfigError, match="antialias=False is not supported"):
        Preprocessing(resize="clean", antialias=False)


def test_existing_resize_modes_are_unchanged():
    img = Image.fromarray((np.random.default_rng(1).random((30, 40, 3)) * 255).astype(np.uint8))
    from torchvision import transforms as T

    ref = T.Compose([T.Resize(16, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop((16, 16)), T.ToTensor(),
                     T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])(img)
    torch.testing.assert_close(Preprocessing(input_size=(16, 16)).build_transform()(img), ref)


def test_any_backbone_name_and_user_backbones_are_not_mutated():
    bb = vitlab.load_backbone("pixels:4")
    enc = load_encoder(bb, resize="clean")
    assert enc.pool == "mean" and enc.backbone.spec.preprocessing.resize == "clean"
    assert bb.spec.preprocessing.resize == "stretch" and enc.backbone.model is bb.model
    assert load_encoder("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=1).pool == "cls"
    with pytest.raises(ConfigError, match="unknown resize mode 'cleaner'; choose one of default, clean"):
        load_encoder("pixels:4", resize="cleaner")
    with pytest.raises(UnknownNameError, match="unknown backbone 'dinov3-l'"):
        load_encoder("dinov3-l", pretrained=False)


def test_inception_encoder_pool3_tokens_and_class_probs():
    enc = load_encoder("inception", pretrained=False)
    bb = enc.backbone
    assert isinstance(bb, InceptionBackbone) and enc.supports_is and enc.pool == "mean"
    d = enc.describe()
    assert d["backbone"] == "random:inception:fid" and d["preprocessing"]["input_size"] == [299, 299]
    assert d["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and d["preprocessing"]["interpolation"] == "bilinear"
    x = torch.randn(1, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = bb.forward_tokens(x, -1)
        pool3 = torch.nn.functional.adaptive_avg_pool2d(bb.model(x), 1).flatten(1)
    assert out.tokens[0].shape == (1, 64, 2048) and out.grid == bb.spec.grid_size == (8, 8)
    feats = out.pooled(0, "mean")
    torch.testing.assert_close(feats, pool3)
    assert torch.isfinite(feats).all() and feats.abs().mean() > 1e-3  # He init: not vanishing
    p = enc.class_probs(feats.numpy())
    assert p.shape == (1, 1008) and abs(p.sum() - 1) < 1e-9
    w = bb.model.net.fc.weight.double().numpy()
    logits = feats.double().numpy() @ w.T  # no bias, as TF's IS code and dgm-eval
    np.testing.assert_allclose(p, np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum(), rtol=1e-9)
    with pytest.raises(ConfigError, match="the Inception Score needs the FID Inception's classifier"):
        load_encoder("pixels:4").class_probs(np.zeros((1, 48)))


def test_inception_weights_download_failure_says_how_to_fix(monkeypatch):
    seen = {}

    def fail(url, **kw):
        seen["url"] = url
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    with pytest.raises(BackboneError, match="could not download the FID Inception weights.*--no-pretrained"):
        vitlab.load_backbone("inception:fid")
    assert seen["url"] == FID_WEIGHTS_URL and "pt_inception-2015-12-05" in FID_WEIGHTS_URL
    with pytest.raises(UnknownNameError, match="unknown inception variant 'tf'"):
        vitlab.load_backbone("inception:tf", pretrained=False)
