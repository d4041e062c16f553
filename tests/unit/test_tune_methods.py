"""Adaptation methods: parameter counts (LoRA/DoRA), VPT identities, layer-wise lr decay, bad input."""

import copy

import pytest
import torch

import vitlab
from vitlab.errors import BackboneError, ConfigError, UnknownNameError
from vitlab.tuning.methods import check_dependencies, clone_backbone, layer_id, lora_targets, parse_methods
from vitlab.tuning.vpt import PromptedViT, VPTBackbone


@pytest.fixture(scope="module")
def demo():
    return vitlab.load_backbone("demo:fmnist-vit")


def _added(bb, spec):
    m = parse_methods(spec)[0]
    out = m.apply(clone_backbone(bb), torch.Generator().manual_seed(0))
    return sum(p.numel() for p in out.model.parameters() if p.requires_grad), out


@pytest.mark.parametrize("r", [1, 4])
def test_lora_adds_r_times_in_plus_out_per_target(demo, r):
    # demo: C = 96, qkv 96 -> 288, fc1 96 -> 384, fc2 384 -> 96, 6 blocks
    n, _ = _added(demo, f"lora:r={r},targets=[qkv,mlp]")
    assert n == 6 * r * ((96 + 288) + (96 + 384) + (384 + 96))
    n_proj, _ = _added(demo, f"lora:r={r},targets=[proj]")
    assert n_proj == 6 * r * (96 + 96)


def test_dora_adds_a_magnitude_per_output(demo):
    n, _ = _added(demo, "dora:r=2")
    assert n == 6 * (2 * (96 + 288) + 288)


def test_full_bitfit_linear_trainable_sets(demo):
    total = sum(p.numel() for p in demo.model.parameters())
    assert _added(demo, "full")[0] == total
    assert _added(demo, "linear")[0] == 0
    n_bias, bb = _added(demo, "bitfit")
    assert n_bias == sum(p.numel() for n, p in demo.model.named_parameters() if n.endswith("bias"))
    assert all(n.endswith("bias") for n, p in bb.model.named_parameters() if p.requires_grad)


def test_vpt_counts_and_frozen_rest(demo):
    n, bb = _added(demo, "vpt:prompts=5,deep=true")
    assert n == 6 * 5 * 96
    assert [k for k, p in bb.model.named_parameters() if p.requires_grad] == ["prompts"]
    assert _added(demo, "vpt:prompts=5,deep=false")[0] == 5 * 96


@pytest.mark.parametrize("deep", [False, True])
def test_vpt_with_zero_prompts_is_the_frozen_model(demo, deep):
    vpt = VPTBackbone(PromptedViT(copy.deepcopy(demo.model), 0, deep), demo.spec)
    x = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = demo.forward_tokens(x, [-1, 2]), vpt.forward_tokens(x, [-1, 2])
    for layer in (2, 5):
        torch.testing.assert_close(a.tokens[layer], b.tokens[layer], rtol=0, atol=0)


def test_vpt_prompts_follow_cls_and_registers():
    bb = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, reg_tokens=4, depth=2)
    base_in, prompted_in = {}, {}
    pv = PromptedViT(copy.deepcopy(bb.model), num_prompts=3, deep=True, generator=torch.Generator().manual_seed(0))
    bb.model.blocks[0].register_forward_hook(lambda m, i, o: base_in.setdefault("x", i[0]))
    pv.vit.blocks[0].register_forward_hook(lambda m, i, o: prompted_in.setdefault("x", i[0]))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        bb.forward_tokens(x, -1)
        out = VPTBackbone(pv, bb.spec).forward_tokens(x, [0, 1])
    p = bb.spec.num_prefix_tokens
    assert p == 5  # CLS + 4 registers
    a, b = base_in["x"], prompted_in["x"]
    torch.testing.assert_close(b[:, :p], a[:, :p])                      # CLS + registers untouched, first
    torch.testing.assert_close(b[:, p:p + 3], pv.prompts[0].expand(2, -1, -1))  # then the prompts
    torch.testing.assert_close(b[:, p + 3:], a[:, p:])                  # then the patches
    assert out.tokens[1].shape == (2, p + 4, 192)                       # prompts removed from the outputs


def test_layer_wise_lr_decay(demo):
    m = parse_methods("full")[0]
    bb = m.apply(clone_backbone(demo), torch.Generator())
    scales = m.lr_scales(bb, 0.5)
    assert scales["pos_embed"] == 0.5 ** 7 and scales["blocks.0.attn.qkv.weight"] == 0.5 ** 6
    assert scales["blocks.5.mlp.fc2.bias"] == 0.5 and scales["norm.weight"] == 1.0
    assert layer_id("encoder.layer.3.attention.attention.query.weight", 12) == 4
    assert layer_id("embeddings.cls_token", 12) == 0


def _small(cls_name, cfg_name):
    import transformers

    cfg = getattr(transformers, cfg_name)(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                          intermediate_size=64, image_size=32, patch_size=8)
    return getattr(transformers, cls_name)(cfg)


@pytest.mark.parametrize("cls_name,cfg_name", [("ViTModel", "ViTConfig"), ("Dinov2Model", "Dinov2Config"),
                                               ("CLIPVisionModel", "CLIPVisionConfig"),
                                               ("SiglipVisionModel", "SiglipVisionConfig")])
def test_lora_targets_on_hf_vits(cls_name, cfg_name):
    m = _small(cls_name, cfg_name)
    qkv, proj, mlp = (lora_targets(m, [t], cls_name) for t in ("qkv", "proj", "mlp"))
    assert len(qkv) == 3 * 2 and len(proj) == 2 and len(mlp) == 2 * 2   # 2 blocks
    assert not set(qkv) & set(proj) and not set(proj) & set(mlp)
    assert not any(n.startswith("head.") for n in qkv + proj + mlp)     # SigLIP's pooling head is not a block
    assert all(isinstance(m.get_submodule(n), torch.nn.Linear) for n in qkv + proj + mlp)


def test_bad_methods_one_line_each(demo):
    with pytest.raises(UnknownNameError, match="Did you mean: lora"):
        parse_methods("lorra")
    with pytest.raises(ConfigError, match="listed twice"):
        parse_methods("lora,lora")
    with pytest.raises(ConfigError, match="has no parameter 'rank'"):
        parse_methods("lora:rank=4")
    with pytest.raises(ConfigError, match="matches no Linear layer of demo:fmnist-vit; its Linear layers are: "
                                          "blocks.N.attn.proj"):
        parse_methods("lora:targets=[attn_out]")[0].check(demo)
    pixels = vitlab.load_backbone("pixels")
    with pytest.raises(BackboneError, match="method 'vpt' inserts prompt tokens into a timm ViT; pixels:28"):
        parse_methods("vpt")[0].check(pixels)
    with pytest.raises(ConfigError, match="LoRA target 'qkv' matches no Linear layer of pixels:28"):
        parse_methods("lora")[0].check(pixels)
    with pytest.raises(BackboneError, match="no weights to fine-tune"):
        parse_methods("full")[0].check(pixels)
    with pytest.raises(BackboneError, match="no bias terms"):
        parse_methods("bitfit")[0].check(pixels)


def test_lora_on_an_hf_backbone_counts_and_merges(tmp_path):
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=28,
              patch_size=4).save_pretrained(tmp_path / "vit")
    hf = vitlab.load_backbone(f"hf:{tmp_path / 'vit'}", pretrained=False)
    m = parse_methods("lora:r=8,targets=[qkv,proj,mlp]")[0]
    bb = m.apply(clone_backbone(hf), torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in bb.model.parameters() if p.requires_grad) == 2 * 8 * (3 * 64 + 64 + 96 + 96)
    with torch.no_grad():
        for n, p in bb.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(1))
    x = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        unmerged = bb.forward_tokens(x, -1).tokens[1]
        merged = m.finalize(bb).forward_tokens(x, -1).tokens[1]
        base = hf.forward_tokens(x, -1).tokens[1]
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(base, merged, atol=1e-3)


def test_a_missing_optional_package_stops_tune_before_any_work(monkeypatch):
    import importlib
    import sys

    plan = importlib.import_module("vitlab.tuning.plan")  # `import vitlab.tuning.x` can meet the function vitlab.tune

    def no_work(*a, **k):
        raise AssertionError("data was loaded before the dependency check")

    monkeypatch.setitem(sys.modules, "peft", None)  # as if `pip install vitlab` without the tune extra
    monkeypatch.setattr(plan, "load_source", no_work)
    with pytest.raises(ConfigError, match=r"^methods lora, dora need the package peft, which is not installed: "
                                          r"pip install 'vitlab\[tune\]'\.$"):
        vitlab.tune("demo:fmnist-vit", "sample:digits", methods="linear,lora,dora")
    check_dependencies(parse_methods("linear,vpt,full,bitfit"))  # these need nothing optional
