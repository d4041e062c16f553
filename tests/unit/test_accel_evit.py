"""Attentive token pruning (EViT): pure pieces, end-to-end against a naive forward, errors."""

from __future__ import annotations

import math

import pytest
import torch

import vitlab
from vitlab.accel import apply_accel
from vitlab.accel.evit import EViT, cls_attention, default_layers, evit_prune, keep_count
from vitlab.errors import BackboneError, ConfigError


@pytest.fixture(scope="module")
def dino_reg():
    bb = vitlab.load_backbone("timm:vit_small_patch14_reg4_dinov2.lvd142m", pretrained=False, img_size=56,
                              embed_dim=64, depth=4, num_heads=2)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for blk in bb.model.blocks:
            for ls in (blk.ls1, blk.ls2):
                ls.gamma.copy_(0.5 + torch.rand(ls.gamma.shape, generator=g))
    bb.__dict__.pop("weights_id", None)
    return bb


def _x(bb, n=2, seed=0):
    h, w = bb.spec.preprocessing.input_size
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_cls_attention_is_row_zero_of_full_attention():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 7, 4, generator=g), torch.randn(2, 3, 7, 4, generator=g)
    full = ((q @ k.transpose(-1, -2)) / 2.0).softmax(-1)  # sqrt(4) = 2
    torch.testing.assert_close(cls_attention(q, k), full[:, :, 0].mean(1))


@pytest.mark.parametrize("fuse", ["wavg", "sum"])
def test_prune_keeps_top_tokens_and_fuses_the_rest(fuse):
    g = torch.Generator().manual_seed(2)
    B, P, N, C = 2, 3, 10, 4
    x, attn = torch.randn(B, P + N, C, generator=g), torch.rand(B, P + N, generator=g)
    size = torch.randint(1, 3, (B, P + N), generator=g).float()
    y, s, m = evit_prune(x, attn, 0.7, P, size, fuse)
    k = keep_count(N, 0.7)
    assert k == 7 and y.shape == (B, P + k + 1, C)
    for b in range(B):
        order = sorted(range(N), key=lambda i: -float(attn[b, P + i]))
        top, rest = sorted(order[:k]), order[k:]
        torch.testing.assert_close(y[b, :P], x[b, :P])
        torch.testing.assert_close(y[b, P:P + k], x[b, [P + i for i in top]])
        w = attn[b, [P + i for i in rest]]
        w = w / w.sum() if fuse == "wavg" else w
        torch.testing.assert_close(y[b, -1], (x[b, [P + i for i in rest]] * w[:, None]).sum(0))
        assert float(s[b, -1]) == float(size[b, [P + i for i in rest]].sum())
        assert m[b, [P + i for i in rest]].tolist() == [P + k] * len(rest)
        assert m[b, [P + i for i in top]].tolist() == list(range(P, P + k))
    assert torch.equal(s.sum(1), size.sum(1))


def test_keep_one_prunes_nothing_and_defaults():
    x = torch.randn(1, 5, 2)
    y, s, m = evit_prune(x, torch.rand(1, 5), 1.0, 1, torch.ones(1, 5))
    assert torch.equal(y, x) and m.tolist() == [[0, 1, 2, 3, 4]]
    assert default_layers(12) == (3, 6, 9) and default_layers(4) == (1, 2, 3)
    assert keep_count(196, 0.7) == 138


def naive_evit_forward(model, x, prune_at, keep, P):
    """EViT on a timm DINOv2 written out per sample from the raw block parameters (wavg fusion)."""
    F = torch.nn.functional
    ln = lambda n, v: F.layer_norm(v, (v.shape[-1],), n.weight.double(), n.bias.double(), n.eps)  # noqa: E731
    outs = []
    with torch.no_grad():
        for t in model.norm_pre(model._pos_embed(model.patch_embed(x))).double():
            members = [[p] for p in range(t.shape[0])]
            for i, blk in enumerate(model.blocks):
                a = blk.attn
                H, D = a.num_heads, a.head_dim
                q, k, v = (ln(blk.norm1, t) @ a.qkv.weight.double().T + a.qkv.bias.double()).view(-1, 3, H, D).permute(1, 2, 0, 3)
                att = (q @ k.transpose(-1, -2) / math.sqrt(D)).softmax(-1)
                o = (att @ v).permute(1, 0, 2).reshape(-1, H * D)
                t = t + blk.ls1.gamma.double() * (o @ a.proj.weight.double().T + a.proj.bias.double())
                if i in prune_at:
                    cls = att[:, 0].mean(0)
                    n = t.shape[0] - P
                    kk = math.ceil(keep * n - 1e-9)
                    order = sorted(range(P, P + n), key=lambda j: -float(cls[j]))
                    top, rest = sorted(order[:kk]), order[kk:]
                    w = cls[rest] / cls[rest].sum()
                    t = torch.cat([t[:P], t[top], (t[rest] * w[:, None]).sum(0, keepdim=True)])
                    members = members[:P] + [members[j] for j in top] + [sum((members[j] for j in rest), [])]
                h = ln(blk.norm2, t)
                mlp = F.gelu(h @ blk.mlp.fc1.weight.double().T + blk.mlp.fc1.bias.double())
                t = t + blk.ls2.gamma.double() * (mlp @ blk.mlp.fc2.weight.double().T + blk.mlp.fc2.bias.double())
            t = ln(model.norm, t)
            full = torch.empty(sum(map(len, members)), t.shape[1], dtype=torch.float64)
            for j, m in enumerate(members):
                full[m] = t[j]
            outs.append(full)
    return torch.stack(outs).float()


def test_evit_matches_a_naive_forward_with_layerscale_and_registers(dino_reg):
    x = _x(dino_reg)
    acc = apply_accel(dino_reg, "evit:keep=0.6,layers=[1,2]")
    red = acc.forward_reduced(x, [0, 1, 2, 3])
    assert red.counts == [21, 5 + 10 + 1, 5 + 7 + 1, 13]  # ceil(.6*16)=10, ceil(.6*11)=7
    torch.testing.assert_close(acc.forward_tokens(x, -1).tokens[3],
                               naive_evit_forward(dino_reg.model, x, {1, 2}, 0.6, 5), atol=2e-4, rtol=2e-4)
    for layer in range(4):
        assert torch.equal(red.size[layer].sum(1), torch.full((2,), 21.0))
        assert red.unmerged(layer).shape == (2, 21, 64)


def test_keep_one_equals_original(dino_reg, tmp_path_factory):
    from tests.conftest import BACKBONE_FACTORIES

    for bb in (dino_reg, BACKBONE_FACTORIES["hf-dinov2"](tmp_path_factory)):
        x = _x(bb)
        layers = list(range(bb.spec.depth))
        ref, out = bb.forward_tokens(x, layers), apply_accel(bb, "evit:keep=1.0").forward_tokens(x, layers)
        for i in layers:
            torch.testing.assert_close(out.tokens[i], ref.tokens[i], atol=1e-5, rtol=1e-5)


def test_errors(dino_reg, tmp_path_factory):
    from tests.conftest import BACKBONE_FACTORIES

    for bad in (0, 0.0, 1.5, -0.2):
        with pytest.raises(ConfigError, match=r"evit: keep=.* must be in \(0, 1\]"):
            EViT(keep=bad)
    with pytest.raises(ConfigError, match=r"evit: keep=.* must be in \(0, 1\]"):
        apply_accel(dino_reg, "evit:keep=1.2")
    with pytest.raises(ConfigError, match=r"evit: layers=\[1, 7\] but the backbone has 4 blocks"):
        apply_accel(dino_reg, "evit:keep=0.5,layers=[1,7]")
    with pytest.raises(ConfigError, match="evit: unknown fuse 'max'"):
        EViT(fuse="max")
    siglip = BACKBONE_FACTORIES["timm-siglip-nocls"](tmp_path_factory)
    with pytest.raises(BackboneError, match="it has no class token, and EViT ranks patches by CLS attention"):
        apply_accel(siglip, "evit:keep=0.5")
    with pytest.raises(BackboneError, match="cannot be applied to pixels:16"):
        apply_accel(vitlab.load_backbone("pixels:16"), "evit:keep=0.5")
    tome = apply_accel(dino_reg, "tome:r=1")
    with pytest.raises(BackboneError, match="already accelerated by tome; apply token pruning first"):
        apply_accel(tome, "evit:keep=0.5")


def test_user_model_unchanged(dino_reg):
    x = _x(dino_reg)
    state = {k: v.clone() for k, v in dino_reg.model.state_dict().items()}
    out = dino_reg.forward_tokens(x, -1).tokens[3].clone()
    acc = apply_accel(dino_reg, "evit:keep=0.5")
    acc.forward_tokens(x, -1)
    assert all(torch.equal(state[k], v) for k, v in dino_reg.model.state_dict().items())
    assert torch.equal(dino_reg.forward_tokens(x, -1).tokens[3], out)
    assert acc.accel == {"name": "evit", "keep": 0.5, "layers": [1, 2, 3], "fuse": "wavg"}
    assert dino_reg.accel is None
