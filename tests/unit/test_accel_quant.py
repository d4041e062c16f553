"""Quantisation: quantiser math, RepQ-ViT reparameterisation, simulated W8A8 fidelity, real int8."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest
import torch

import vitlab
from vitlab.accel import apply_accel
from vitlab.accel.compare import calibration_images, feature_cosine
from vitlab.accel.ptq import PTQ, QuantLinear
from vitlab.accel.quant import Int8, torchao_available
from vitlab.accel.quantizers import (fake_quant, layernorm_reparam, log2_quant, minmax_params, quantize_weight,
                                     search_act_params)
from vitlab.data.sample import SampleSource
from vitlab.errors import BackboneError, ConfigError


DEMO = Path(str(resources.files("vitlab.backbones") / "assets" / "fmnist_vit.safetensors"))


@pytest.fixture(scope="module")
def fmnist_vit():
    """``demo:fmnist-vit``; until its weights are shipped, a random-init model of the same architecture."""
    if DEMO.exists():
        return vitlab.load_backbone("demo:fmnist-vit")
    return vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=28, patch_size=4,
                                embed_dim=96, depth=6, num_heads=3)


@pytest.fixture(scope="module")
def fmnist_images(fmnist_vit):
    x = calibration_images(SampleSource("fashion-mnist"), fmnist_vit, 48, seed=3)
    return x[:32], x[32:]


def test_uniform_and_log_quantisers():
    s, z = minmax_params(torch.tensor(-1.0), torch.tensor(1.0), 8)
    x = torch.linspace(-1, 1, 101)
    assert float((fake_quant(x, s, z, 8) - x).abs().max()) <= float(s) / 2 + 1e-6
    assert fake_quant(torch.tensor([5.0]), s, z, 8).item() <= 1.0 + float(s)  # clipped
    w = torch.randn(16, 32, generator=torch.Generator().manual_seed(0))
    for bits in (8, 4):
        wq = quantize_weight(w, bits)
        for row, rowq in zip(w, wq):  # per channel: at most 2^bits distinct levels per row
            assert rowq.unique().numel() <= 2 ** bits
        assert float((wq - w).pow(2).mean()) < float(w.var()) * (0.01 if bits == 8 else 0.1)
    a = torch.rand(1000).softmax(0)
    aq = log2_quant(a, 4, sqrt2=False)
    nz = aq[aq > 0]
    assert torch.allclose(torch.log2(nz), torch.log2(nz).round())  # powers of two only
    assert (log2_quant(a, 8) - a).abs().max() < (log2_quant(a, 3) - a).abs().max()
    samp = torch.cat([torch.randn(20000), torch.tensor([50.0])])
    s_mse, _ = search_act_params(samp, 4, float(samp.min()), 50.0, "mse")
    s_mm, _ = search_act_params(samp, 4, float(samp.min()), 50.0, "minmax")
    assert s_mse < s_mm  # the outlier is clipped


def test_layernorm_reparam_is_exact_and_per_tensor_codes_equal_per_channel_codes():
    g = torch.Generator().manual_seed(0)
    C, bits = 8, 4
    gamma, beta = torch.rand(C, generator=g) + 0.5, torch.randn(C, generator=g)
    W, b = torch.randn(5, C, generator=g), torch.randn(5, generator=g)
    n = torch.randn(100, C, generator=g)
    X = n * gamma + beta * 3
    beta = beta * 3
    s, z = minmax_params(X.amin(0), X.amax(0), bits)
    g2, b2, (W2,), (c2,), s_t, z_t = layernorm_reparam(gamma, beta, s, z, [W], [b])
    X2 = n * g2 + b2
    torch.testing.assert_close(X2 @ W2.T + c2, X @ W.T + b, atol=1e-4, rtol=1e-4)
    codes_pc = (torch.round(X / s) + z).clamp(0, 2 ** bits - 1)
    codes_pt = (torch.round(X2 / s_t) + z_t).clamp(0, 2 ** bits - 1)
    assert torch.equal(codes_pc, codes_pt)


def test_w8a8_features_close_to_fp32(fmnist_vit, fmnist_images):
    calib, test = fmnist_images
    q = apply_accel(fmnist_vit, "w8a8", calib=calib)
    assert feature_cosine(fmnist_vit, q, test) > 0.99
    assert feature_cosine(fmnist_vit, q, test, pool="tokens") > 0.99
    blk = q.model.blocks[0]
    assert isinstance(blk.attn.qkv, QuantLinear) and isinstance(blk.mlp.fc2, QuantLinear)
    assert q.accel["name"] == "ptq" and q.accel["w_bits"] == 8 and q.accel["calib"]["n"] == 32
    assert q.weights_id != fmnist_vit.weights_id
    q4 = apply_accel(fmnist_vit, "w4a4,act_calib=mse", calib=calib[:8])
    c8, c4 = feature_cosine(fmnist_vit, q, test), feature_cosine(fmnist_vit, q4, test)
    assert c4 < c8  # fewer bits, lower fidelity


def test_ptq_on_hf_and_on_top_of_tome(tmp_path_factory):
    from tests.conftest import BACKBONE_FACTORIES

    bb = BACKBONE_FACTORIES["hf-dinov2"](tmp_path_factory)
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    q = apply_accel(bb, PTQ(n_calib=8), calib=x)
    assert isinstance(q.model.encoder.layer[0].attention.q_proj, QuantLinear)
    assert feature_cosine(bb, q, x) > 0.98
    tq = apply_accel(bb, "tome:r=2+w8a8", calib=x)
    assert [s["name"] for s in tq.accel["steps"]] == ["tome", "ptq"]
    assert tq.forward_tokens(x, -1).tokens[2].shape == (8, 17, 32)


def test_int8_runs_and_is_close(fmnist_vit, fmnist_images):
    _, test = fmnist_images
    q = apply_accel(fmnist_vit, "int8")
    assert q.accel["name"] == "int8" and q.accel["backend"] in ("torchao", "torch.ao")
    assert q.weights_id == fmnist_vit.weights_id  # same source weights; accel keys the cache
    assert feature_cosine(fmnist_vit, q, test) > 0.99
    assert isinstance(fmnist_vit.model.blocks[0].attn.qkv, torch.nn.Linear)
    assert type(fmnist_vit.model.blocks[0].attn.qkv) is torch.nn.Linear  # the user's model is not quantised


@pytest.mark.skipif(torchao_available(), reason="checks the no-torchao fallback")
def test_int8_weight_only_needs_torchao(fmnist_vit):
    with pytest.raises(BackboneError, match=r"weight_only=true needs torchao \(pip install torchao\)"):
        apply_accel(fmnist_vit, "int8:weight_only=true")


def test_errors(fmnist_vit, fmnist_images):
    with pytest.raises(ConfigError, match="this accelerator needs calibration images"):
        apply_accel(fmnist_vit, "w8a8")
    with pytest.raises(ConfigError, match=r"calibration images must be a float tensor \[n, 3, H, W\]"):
        apply_accel(fmnist_vit, "w8a8", calib=torch.zeros(4, 28, 28))
    with pytest.raises(ConfigError, match="ptq: w_bits=1 must be an integer from 2 to 16"):
        PTQ(w_bits=1)
    with pytest.raises(ConfigError, match="ptq: act_calib='best'; choose one of auto, mse, minmax"):
        PTQ(act_calib="best")
    with pytest.raises(BackboneError, match="cannot be applied to pixels:16: its model has no nn.Linear"):
        apply_accel(vitlab.load_backbone("pixels:16"), Int8())
    q = apply_accel(fmnist_vit, "int8")
    with pytest.raises(BackboneError, match=r"it is already quantised \(int8\)"):
        apply_accel(q, "w8a8", calib=fmnist_images[0])


def test_user_model_unchanged(fmnist_vit, fmnist_images):
    calib, test = fmnist_images
    state = {k: v.clone() for k, v in fmnist_vit.model.state_dict().items()}
    out = fmnist_vit.forward_tokens(test, -1).tokens[5].clone()
    apply_accel(fmnist_vit, PTQ(n_calib=8), calib=calib)
    apply_accel(fmnist_vit, "int8")
    assert all(torch.equal(state[k], v) for k, v in fmnist_vit.model.state_dict().items())
    assert torch.equal(fmnist_vit.forward_tokens(test, -1).tokens[5], out)
    assert fmnist_vit.accel is None


def test_calibration_drawn_from_a_datasource(fmnist_vit):
    src = SampleSource("fashion-mnist")
    q = apply_accel(fmnist_vit, PTQ(n_calib=8, seed=1), calib=src)
    again = apply_accel(fmnist_vit, PTQ(n_calib=8, seed=1), calib=src)
    other = apply_accel(fmnist_vit, PTQ(n_calib=8, seed=2), calib=src)
    assert q.accel["calib"]["n"] == 8 and q.calibration["n_images"] == 8
    assert q.accel["calib"]["digest"] == again.accel["calib"]["digest"] != other.accel["calib"]["digest"]
    assert q.fingerprint() != other.fingerprint()  # different calibration images → different cache key
