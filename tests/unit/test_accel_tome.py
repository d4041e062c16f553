"""Token merging (ToMe): matching math against an independent oracle, end-to-end against a naive forward."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import vitlab
from vitlab.accel import apply_accel
from vitlab.accel.runner import ReducedBackbone, TimmOps
from vitlab.accel.tome import ToMe, bipartite_soft_matching, max_merge, merge_wavg, r_schedule
from vitlab.backbones.base import pool_tokens
from vitlab.errors import BackboneError, ConfigError


# -- oracle -----------------------------------------------------------------------------------
def oracle_match(metric: np.ndarray, r: int, protected: int) -> list[list[int]]:
    """ToMe's bipartite soft matching for ONE sample, written as plain loops (independent oracle).

    Follows facebookresearch/ToMe ``tome/merge.py::bipartite_soft_matching``: A = even positions,
    B = odd positions; cosine similarity; protected tokens can neither be merged (A rows) nor be
    merged into (B columns); each A token proposes its best B token; the r best proposals merge.
    Returns the merged groups (lists of input positions) in output order: protected tokens in
    their original order, then unmerged A tokens, then B tokens. For protected = 1 (class_token)
    and 2 (class_token + distill_token) this is exactly the reference's output order.
    """
    T = metric.shape[0]
    m = metric / np.linalg.norm(metric, axis=1, keepdims=True)
    A, Bs = list(range(0, T, 2)), list(range(1, T, 2))
    best = {}
    for a in A:
        if a < protected:
            continue
        sims = [(float(m[a] @ m[b]), b) for b in Bs if b >= protected]
        best[a] = max(sims)
    src = sorted(best, key=lambda a: -best[a][0])[:r]
    groups = {b: [b] for b in Bs}
    for a in src:
        groups[best[a][1]].append(a)
    out = [[p] for p in range(protected)]
    out += [[a] for a in A if a >= protected and a not in src]
    out += [sorted(groups[b]) for b in Bs if b >= protected]
    return out


def _groups_of(metric: torch.Tensor, r: int, protected: int) -> list[list[list[int]]]:
    """Groups produced by vitlab's merge (via merging one-hot position indicators)."""
    merge, _ = bipartite_soft_matching(metric, r, protected)
    B, T, _ = metric.shape
    eye = torch.eye(T).expand(B, T, T)
    src = merge(eye, mode="amax")  # [B, T - r, T]
    return [[torch.nonzero(row).flatten().tolist() for row in src[b]] for b in range(B)]


@pytest.mark.parametrize("T,r,protected", [(17, 5, 0), (17, 8, 1), (20, 6, 2), (21, 8, 5), (30, 3, 5)])
def test_matching_matches_the_reference_algorithm(T, r, protected):
    g = torch.Generator().manual_seed(T * 100 + r)
    metric = torch.randn(3, T, 8, generator=g)
    ours = _groups_of(metric, r, protected)
    for b in range(3):
        ref = oracle_match(metric[b].double().numpy(), r, protected)
        if protected == 0:  # the reference keeps unmerged tokens in score order; compare as sets
            assert sorted(map(tuple, ours[b])) == sorted(map(tuple, ref))
        else:
            assert ours[b] == ref
    x = torch.randn(3, T, 4, generator=g)
    merge, unmerge = bipartite_soft_matching(metric, r, protected)
    y = merge(x)
    for b in range(3):  # "mean" merge = group mean, in output order
        want = torch.stack([x[b, grp].mean(0) for grp in ours[b]])
        torch.testing.assert_close(y[b], want)
    back = unmerge(y)
    assert back.shape == x.shape
    for b in range(3):
        for k, grp in enumerate(ours[b]):
            for p in grp:
                torch.testing.assert_close(back[b, p], y[b, k])
    assert torch.equal(y[:, :protected], x[:, :protected])  # prefix tokens untouched and first


def test_merge_wavg_weights_by_size_and_sizes_sum():
    g = torch.Generator().manual_seed(1)
    metric, x = torch.randn(2, 11, 6, generator=g), torch.randn(2, 11, 3, generator=g)
    size = torch.randint(1, 4, (2, 11, 1), generator=g).float()
    merge, _ = bipartite_soft_matching(metric, 4, 1)
    groups = _groups_of(metric, 4, 1)
    y, s = merge_wavg(merge, x, size)
    assert torch.allclose(s.sum(1), size.sum(1))
    for b in range(2):
        for k, grp in enumerate(groups[b]):
            w = size[b, grp]
            torch.testing.assert_close(y[b, k], (x[b, grp] * w).sum(0) / w.sum())


def test_r_too_large_for_one_step():
    assert max_merge(17, 1) == 8
    with pytest.raises(ConfigError, match=r"cannot merge r=9 of 17 tokens with 1 protected: at most 8"):
        bipartite_soft_matching(torch.randn(1, 17, 4), 9, 1)


def test_schedules():
    assert r_schedule(8, 12) == [8] * 12
    assert r_schedule([4, 2], 4) == [4, 2, 0, 0]
    assert r_schedule(13, 12, "decrease")[0] == 26 and r_schedule(13, 12, "decrease")[-1] == 0
    with pytest.raises(ConfigError, match="r has 5 entries but the backbone has 4 blocks"):
        r_schedule([1] * 5, 4)


# -- models -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dino_reg():
    """DINOv2 + 4 registers, LayerScale gammas made random so skipping them would show."""
    bb = vitlab.load_backbone("timm:vit_small_patch14_reg4_dinov2.lvd142m", pretrained=False, img_size=56,
                              embed_dim=64, depth=4, num_heads=2)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for blk in bb.model.blocks:
            for ls in (blk.ls1, blk.ls2):
                ls.gamma.copy_(0.5 + torch.rand(ls.gamma.shape, generator=g))
    bb.__dict__.pop("weights_id", None)
    return bb


def _x(bb, n=2, seed=0):
    h, w = bb.spec.preprocessing.input_size
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def naive_tome_forward(model, x, rs, protected, prop_attn=True):
    """ToMe on a timm DINOv2 written out by hand, per sample, from the block's raw parameters."""
    F = torch.nn.functional
    outs = []
    with torch.no_grad():
        t_all = model.norm_pre(model._pos_embed(model.patch_embed(x))).double()
        for t in t_all:
            T0 = t.shape[0]
            size = torch.ones(T0, dtype=torch.float64)
            members = [[p] for p in range(T0)]
            for blk, r in zip(model.blocks, rs):
                a = blk.attn
                ln = lambda n, v: F.layer_norm(v, (v.shape[-1],), n.weight.double(), n.bias.double(), n.eps)  # noqa: E731
                qkv = ln(blk.norm1, t) @ a.qkv.weight.double().T + a.qkv.bias.double()
                H, D = a.num_heads, a.head_dim
                q, k, v = qkv.view(-1, 3, H, D).permute(1, 2, 0, 3)
                logits = q @ k.transpose(-1, -2) / math.sqrt(D) + (size.log() if prop_attn else 0)
                o = (logits.softmax(-1) @ v).permute(1, 0, 2).reshape(-1, H * D)
                t = t + blk.ls1.gamma.double() * (o @ a.proj.weight.double().T + a.proj.bias.double())
                if r:
                    groups = oracle_match(k.mean(0).numpy(), r, protected)
                    t = torch.stack([(t[g] * size[g, None]).sum(0) / size[g].sum() for g in groups])
                    members = [sum((members[i] for i in g), []) for g in groups]
                    size = torch.tensor([float(len(m)) for m in members], dtype=torch.float64)
                h = ln(blk.norm2, t)
                mlp = F.gelu(h @ blk.mlp.fc1.weight.double().T + blk.mlp.fc1.bias.double())
                t = t + blk.ls2.gamma.double() * (mlp @ blk.mlp.fc2.weight.double().T + blk.mlp.fc2.bias.double())
            t = ln(model.norm, t)
            full = torch.empty(T0, t.shape[1], dtype=torch.float64)
            for i, m in enumerate(members):
                full[m] = t[i]
            outs.append(full)
    return torch.stack(outs).float()


@pytest.mark.parametrize("prop_attn", [True, False])
def test_tome_matches_a_naive_forward_with_layerscale_and_registers(dino_reg, prop_attn):
    x = _x(dino_reg)
    acc = apply_accel(dino_reg, ToMe(r=[3, 2, 2, 1], prop_attn=prop_attn))
    got = acc.forward_tokens(x, -1).tokens[3]
    want = naive_tome_forward(dino_reg.model, x, [3, 2, 2, 1], protected=5, prop_attn=prop_attn)
    torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)


def test_r0_equals_original_and_skipping_layerscale_would_fail(dino_reg):
    x = _x(dino_reg)
    ref = dino_reg.forward_tokens(x, [0, 1, 2, 3])
    out = apply_accel(dino_reg, "tome:r=0").forward_tokens(x, [0, 1, 2, 3])
    for i in range(4):
        torch.testing.assert_close(out.tokens[i], ref.tokens[i], atol=1e-5, rtol=1e-5)

    class SkipLayerScale(TimmOps):  # the classic ToMe-on-DINOv2 bug
        def attn_residual(self, blk, a):
            return blk.drop_path1(a)

        def mlp_residual(self, blk, m):
            return blk.drop_path2(m)

    buggy = ReducedBackbone(copy.deepcopy(dino_reg.model), dino_reg.spec, ops=SkipLayerScale(), reducer=ToMe(r=0))
    assert not torch.allclose(buggy.forward_tokens(x, -1).tokens[3], ref.tokens[3], atol=1e-3)


@pytest.mark.parametrize("name", ["timm-vit", "hf-dinov2-reg", "hf-vit"])
def test_r0_equals_original_other_sources(name, tmp_path_factory):
    from tests.conftest import BACKBONE_FACTORIES

    bb = BACKBONE_FACTORIES[name](tmp_path_factory)
    x = _x(bb)
    layers = list(range(bb.spec.depth))
    ref, out = bb.forward_tokens(x, layers), apply_accel(bb, "tome:r=0").forward_tokens(x, layers)
    for i in layers:
        torch.testing.assert_close(out.tokens[i], ref.tokens[i], atol=1e-5, rtol=1e-5)
    merged = apply_accel(bb, "tome:r=2").forward_tokens(x, layers)
    assert merged.tokens[layers[-1]].shape == ref.tokens[layers[-1]].shape


def test_r0_equals_original_with_qk_norm():
    bb = vitlab.load_backbone("timm:vit_small_patch16_224", pretrained=False, img_size=32, patch_size=8,
                              embed_dim=32, depth=2, num_heads=2, qk_norm=True)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for blk in bb.model.blocks:
            for n in (blk.attn.q_norm, blk.attn.k_norm):
                n.weight.copy_(torch.rand(n.weight.shape, generator=g) * 3)
    x = _x(bb)
    torch.testing.assert_close(apply_accel(bb, "tome:r=0").forward_tokens(x, -1).tokens[1],
                               bb.forward_tokens(x, -1).tokens[1], atol=1e-5, rtol=1e-5)


def test_token_counts_follow_the_schedule_and_sizes_sum(dino_reg):
    x = _x(dino_reg)
    P, N = 5, 16
    for spec, rs in [("tome:r=2", [2, 2, 2, 2]), ("tome:r=[4,2,1]", [4, 2, 1, 0]),
                     ("tome:r=2,schedule=decrease", r_schedule(2, 4, "decrease"))]:
        red = apply_accel(dino_reg, spec).forward_reduced(x, [0, 1, 2, 3])
        assert red.counts == list(np.cumsum([P + N] + [-r for r in rs])[1:])
        for layer in range(4):
            assert red.tokens[layer].shape[1] == red.counts[layer]
            assert torch.equal(red.size[layer].sum(1), torch.full((2,), float(P + N)))
            assert torch.equal(red.size[layer][:, :P], torch.ones(2, P))
            full = red.unmerged(layer)
            assert full.shape == (2, P + N, 64)
            torch.testing.assert_close(full[:, :P], red.tokens[layer][:, :P])  # prefix stays first
            for mode in ("cls", "mean", "cls+mean"):  # size-weighted pooling == pooling the unmerged grid
                torch.testing.assert_close(red.pooled(layer, mode), pool_tokens(full, mode, P, True))


def test_clamp_and_too_large_r(dino_reg):
    with pytest.raises(ConfigError, match=r"tome: r=4 at block 3 but only 2 of the 9 tokens left there can be merged"):
        apply_accel(dino_reg, "tome:r=4")
    red = apply_accel(dino_reg, "tome:r=4,clamp=true").forward_reduced(_x(dino_reg), -1)
    assert red.counts == [17, 13, 9, 7]


def test_bad_configs():
    with pytest.raises(ConfigError, match="tome: r=-1 must be a non-negative integer"):
        ToMe(r=-1)
    with pytest.raises(ConfigError, match="tome: unknown schedule 'fast'; choose one of constant, decrease"):
        ToMe(r=2, schedule="fast")
    with pytest.raises(ConfigError, match="schedule applies to an integer r"):
        ToMe(r=(2, 2), schedule="decrease")


def test_unsupported_architectures(tmp_path_factory):
    from tests.conftest import BACKBONE_FACTORIES

    with pytest.raises(BackboneError, match=r"accelerator 'tome' cannot be applied to pixels:16: it is a PixelsBackbone"):
        apply_accel(vitlab.load_backbone("pixels:16"), "tome:r=1")
    with pytest.raises(BackboneError, match=r"hf model type 'clip_vision_model' is not supported"):
        apply_accel(BACKBONE_FACTORIES["hf-clip"](tmp_path_factory), "tome:r=1")
    eva = vitlab.load_backbone("timm:eva02_tiny_patch14_224.mim_in22k", pretrained=False, img_size=28, depth=2)
    with pytest.raises(BackboneError, match=r"only timm's standard vision_transformer.Block"):
        apply_accel(eva, "tome:r=1")


def test_user_model_unchanged_and_cache_key_changes(dino_reg):
    x = _x(dino_reg)
    before_state = {k: v.clone() for k, v in dino_reg.model.state_dict().items()}
    before_out = dino_reg.forward_tokens(x, -1).tokens[3].clone()
    fp = dino_reg.fingerprint()
    acc = apply_accel(dino_reg, "tome:r=2")
    acc.forward_tokens(x, -1)
    assert acc.model is not dino_reg.model and dino_reg.accel is None
    after = dino_reg.model.state_dict()
    assert all(torch.equal(before_state[k], after[k]) for k in before_state)
    assert torch.equal(dino_reg.forward_tokens(x, -1).tokens[3], before_out)
    assert type(dino_reg.model.blocks[0]).__name__ == "Block"
    assert acc.fingerprint()["accel"] == {"name": "tome", "r": 2, "schedule": "constant", "prop_attn": True,
                                          "clamp": False}
    assert acc.fingerprint() != fp and acc.weights_id == dino_reg.weights_id
