"""Inspection maps: token layout, eager capture vs fused forward, rollout / Grad-CAM formulas, PCA, artefacts."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import vitlab
from vitlab.backbones.blocks import TimmOps, token_layout
from vitlab.errors import BackboneError, ConfigError, UnknownNameError
from vitlab.inspect.artefacts import artefact_report, detect_outliers, robust_z
from vitlab.inspect.capture import capture_attention
from vitlab.inspect.images import ProbeHead
from vitlab.inspect.maps import check_maps, compute_maps, grad_rollout, gradcam_from, rollout
from vitlab.inspect.pca import PatchPCA, otsu_threshold, sign_canonical


def _tiny(arch: str, img_size, **kw):
    return vitlab.load_backbone(f"timm:{arch}", pretrained=False, img_size=img_size, embed_dim=32, depth=3,
                                num_heads=2, **kw)


def _head(bb, k=3, seed=0):
    g = np.random.default_rng(seed)
    C = bb.spec.embed_dim
    return ProbeHead(g.normal(size=(k, C)), np.zeros(k), np.zeros(C), np.ones(C))


def _x(hw, n=2, seed=0):
    return torch.randn(n, 3, *hw, generator=torch.Generator().manual_seed(seed))


# -- grid shapes for patch 14/16/32, 0 and 4 registers, non-square ----------------------------------------
CASES = [
    ("vit_small_patch14_dinov2", (28, 42), {}, 0),
    ("vit_small_patch14_reg4_dinov2", (28, 42), {}, 4),
    ("vit_tiny_patch16_224", (32, 48), {}, 0),
    ("vit_base_patch32_224", (64, 96), {}, 0),
    ("vit_base_patch16_siglip_224", (32, 48), {}, 0),  # no class token
]


@pytest.mark.parametrize("arch,hw,kw,regs", CASES)
def test_maps_have_the_grid_shape(arch, hw, kw, regs):
    bb = _tiny(arch, hw, **kw)
    ph, pw = bb.spec.patch_size
    grid = (hw[0] // ph, hw[1] // pw)
    lay = bb.token_layout(hw)
    assert lay.grid == grid and lay.num_registers == regs and grid[0] != grid[1]
    pool = "cls" if bb.spec.has_cls_token else "mean"
    m = compute_maps(bb, _x(hw), ["attention", "rollout", "grad-rollout", "gradcam"], head=_head(bb), pool=pool)
    assert m["attention"].shape == (2, 3, 2, *grid)
    for k in ("rollout", "grad-rollout", "gradcam"):
        assert m[k].shape == (2, *grid), k
        assert torch.isfinite(m[k]).all()
    if regs:
        assert m["registers"].shape == (2, 3, regs, 2, *grid)
    else:
        assert "registers" not in m


def test_layout_prefix_slices_and_distillation():
    bb = _tiny("deit_tiny_distilled_patch16_224", 32)
    lay = bb.token_layout()
    assert (lay.num_prefix, lay.has_cls, lay.num_distill, lay.num_registers) == (2, True, 1, 0)
    assert lay.patch_slice == slice(2, 6)


def test_capture_matches_fused_forward_and_keeps_rows_stochastic():
    bb = _tiny("vit_small_patch14_reg4_dinov2", 28)
    x = _x((28, 28))
    cap = capture_attention(bb, x)
    assert cap.max_abs_diff is not None and cap.max_abs_diff < 1e-4
    ref = bb.forward_tokens(x, [2]).tokens[2]
    torch.testing.assert_close(cap.tokens, ref, atol=1e-4, rtol=1e-4)
    for a in cap.attn.values():
        torch.testing.assert_close(a.sum(-1), torch.ones(a.shape[:-1]), atol=1e-5, rtol=0)


def test_capture_fails_loudly_when_the_eager_path_is_wrong():
    bb = _tiny("vit_tiny_patch16_224", 32)

    class Broken(TimmOps):
        def attn_residual(self, blk, a):  # drops the attention branch: not the model
            return 0 * a

    bb.block_ops = lambda: (Broken(), None)
    with pytest.raises(BackboneError, match="eager attention path disagrees"):
        capture_attention(bb, _x((32, 32)))


def test_no_attention_for_pixels_and_no_gradcam_without_head():
    px = vitlab.load_backbone("pixels:16")
    with pytest.raises(BackboneError, match="cannot give the 'attention' map"):
        check_maps("attention", px)
    assert check_maps("pca", px) == ["pca"]
    with pytest.raises(ConfigError, match="needs a probe head"):
        check_maps("gradcam", has_head=False)
    with pytest.raises(UnknownNameError, match="Did you mean: rollout"):
        check_maps("rolout")


def test_image_smaller_than_a_patch_is_one_clear_line():
    bb = _tiny("vit_tiny_patch16_224", 32)
    with pytest.raises(ConfigError, match="smaller than one 16x16 patch"):
        compute_maps(bb, torch.randn(1, 3, 8, 8), ["rollout"])
    with pytest.raises(ConfigError, match="smaller than one 16x16 patch"):
        token_layout(bb.spec, (8, 40))


def test_user_model_unchanged_after_inspection():
    bb = _tiny("vit_small_patch14_reg4_dinov2", 28)
    before_id = bb.weights_id
    state = copy.deepcopy(bb.model.state_dict())
    compute_maps(bb, _x((28, 28)), ["attention", "rollout", "grad-rollout", "gradcam"], head=_head(bb))
    assert bb.weights_id == before_id
    assert all(torch.equal(v, bb.model.state_dict()[k]) for k, v in state.items())
    assert not any(p.requires_grad for p in bb.model.parameters())


# -- formulas -------------------------------------------------------------------------------------------------
def test_rollout_of_identity_and_uniform_attention_is_uniform_over_patches():
    T = 1 + 6
    lay = token_layout(_tiny("vit_tiny_patch16_224", (32, 48)).spec, (32, 48))
    eye = torch.eye(T).expand(4, 2, 3, T, T)
    m = rollout(eye, lay)
    assert torch.equal(m, torch.zeros(2, 2, 3, dtype=torch.float64))  # CLS keeps attending to itself only
    uni = torch.full((4, 2, 3, T, T), 1.0 / T)
    m = rollout(uni, lay)
    assert torch.allclose(m, torch.full_like(m, m.flatten()[0].item())) and m.flatten()[0] > 0


def test_rollout_matches_the_paper_formula():
    g = torch.Generator().manual_seed(0)
    A = torch.softmax(torch.randn(3, 2, 4, 5, 5, generator=g), -1)
    want = np.stack([np.eye(5)] * 2)
    for a in A.double().numpy():
        Ah = 0.5 * a.mean(1) + 0.5 * np.eye(5)
        Ah = Ah / Ah.sum(-1, keepdims=True)
        want = Ah @ want
    np.testing.assert_allclose(rollout(A).numpy(), want, rtol=1e-12)


def test_grad_rollout_and_gradcam_formulas():
    g = torch.Generator().manual_seed(1)
    A, G = torch.rand(2, 1, 3, 4, 4, generator=g), torch.randn(2, 1, 3, 4, 4, generator=g)
    R = np.eye(4)
    for a, gr in zip(A[:, 0].double().numpy(), G[:, 0].double().numpy()):
        R = R + np.maximum(a * gr, 0).mean(0) @ R
    np.testing.assert_allclose(grad_rollout(A, G)[0].numpy(), R, rtol=1e-12)
    lay = token_layout(_tiny("vit_tiny_patch16_224", 32).spec, (32, 48))  # 1 + 6 tokens
    acts, grads = torch.randn(1, 7, 5, generator=g), torch.randn(1, 7, 5, generator=g)
    w = grads[0, 1:].double().mean(0)
    want = np.maximum(acts[0, 1:].double().numpy() @ w.numpy(), 0).reshape(2, 3)
    np.testing.assert_allclose(gradcam_from(acts, grads, lay)[0].numpy(), want, rtol=1e-12)


def test_model_randomisation_changes_the_maps():
    from vitlab.inspect.sanity import randomisation_test

    bb = vitlab.load_backbone("demo:fmnist-vit")
    x = _x((28, 28), n=6)
    r = randomisation_test(bb, x, "rollout", n_resamples=200)
    assert r["changed"], r
    lo, v, hi = (r["spearman"][k] for k in ("low", "value", "high"))
    assert lo <= v <= hi < 0.9


# -- PCA and artefacts -----------------------------------------------------------------------------------------
def test_otsu_matches_the_histogram_definition():
    rng = np.random.default_rng(0)
    v = np.r_[rng.normal(0, 1, 400), rng.normal(6, 1, 200)]
    t = otsu_threshold(v)
    hist, edges = np.histogram(v, 256)
    c = (edges[:-1] + edges[1:]) / 2
    best, arg = -1.0, None
    for k in range(255):  # between-class variance written out for every split
        w1, w2 = hist[: k + 1].sum(), hist[k + 1:].sum()
        m1, m2 = (hist[: k + 1] * c[: k + 1]).sum() / w1, (hist[k + 1:] * c[k + 1:]).sum() / w2
        var = w1 * w2 * (m1 - m2) ** 2
        if var > best:
            best, arg = var, c[k]
    assert t == pytest.approx(arg) and 1.0 < t < 5.0


def test_pca_is_sign_canonical_saved_and_reused(tmp_path):
    assert sign_canonical(np.array([[1.0, -3.0]])).tolist() == [[-1.0, 3.0]]
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(3, 12, 8))
    feats[:, :4] += 5 * rng.normal(size=8)  # a "foreground" cluster
    a = PatchPCA(backbone_id="w1").fit(feats, (3, 4))
    b = PatchPCA(backbone_id="w1").fit(-(-feats), (3, 4))
    np.testing.assert_allclose(a.comp3_, b.comp3_)
    out = a.transform(feats, (3, 4))
    assert out["rgb"].shape == (3, 3, 4, 3) and out["foreground"].any() and (out["rgb"] >= 0).all()
    p = a.save(tmp_path / "pca.npz")
    c = PatchPCA.load(p, backbone_id="w1")
    np.testing.assert_allclose(c.transform(feats, (3, 4))["rgb"], out["rgb"])
    from vitlab.errors import DataError

    with pytest.raises(DataError, match="fitted on weights w1"):
        PatchPCA.load(p, backbone_id="other")


def test_planted_high_norm_token_found_at_its_layer_and_position():
    bb = _tiny("vit_small_patch14_reg4_dinov2", 56)
    bb.model.blocks[1].ls2.register_forward_hook(
        lambda m, i, o: o.index_add(1, torch.tensor([5 + 6]), torch.full((o.shape[0], 1, o.shape[2]), 100.0)))
    cap = capture_attention(bb, _x((56, 56), n=3))
    rep = artefact_report([cap])
    assert rep["outliers"]["first_layer"] == 1
    pos = {(p["layer"], p["image"], p["row"], p["col"]) for p in rep["outliers"]["positions"]}
    assert pos == {(layer, b, 1, 2) for layer in (1, 2) for b in range(3)}  # patch 6 of a 4x4 grid
    assert rep["registers"] is not None and len(rep["attention_share"]) == 3


def test_robust_z_and_detector_on_known_values():
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    med, mad = 3.0, 1.4826 * 1.0
    np.testing.assert_allclose(robust_z(x), (x - med) / mad)
    n = np.ones((1, 2, 4))
    n[0, 1, 2] = 10
    n[0, 0] = [1, 1.1, 0.9, 1.0]
    d = detect_outliers(n, (2, 2))
    assert d["first_layer"] == 1 and d["positions"][0]["row"] == 1 and d["positions"][0]["col"] == 0


@pytest.mark.parametrize("name", ["hf-dinov2-reg", "hf-vit", "file", "demo", "open_clip"])
def test_capture_on_other_sources_matches_their_forward(name, tmp_path_factory):
    from tests.conftest import BACKBONE_FACTORIES

    bb = BACKBONE_FACTORIES[name](tmp_path_factory)
    hw = tuple(bb.spec.preprocessing.input_size)
    cap = capture_attention(bb, _x(hw))
    assert cap.max_abs_diff < 1e-3 and len(cap.attn) == bb.spec.depth
    assert rollout(cap.stacked(), cap.layout).shape == (2, *bb.token_layout(hw).grid)


def test_report_section_renders_maps_and_artefacts(tmp_path):
    from vitlab.inspect.api import inspect_model

    bb = _tiny("vit_small_patch14_reg4_dinov2", 28)
    from vitlab.report import render_html

    res = inspect_model(bb, "sample:fashion-mnist", maps="attention,rollout,pca", artefacts=True, n_images=3,
                        sanity=False, out=tmp_path)
    html = render_html([res.record], tmp_path / "r.html").read_text()  # only vitlab.report renders
    for needle in ('alt="rollout map"', 'alt="pca map"', 'alt="register', "norm histograms", "Artefact tokens"):
        assert needle in html, needle
    saved = Path(res.record.details["pca"]["path"])  # the pca cache namespace, keyed by what the fit saw
    assert saved.exists() and saved.parent.name == "pca"
    notes = []
    again = inspect_model(bb, "sample:fashion-mnist", maps="pca", n_images=3, sanity=False, out=tmp_path, seed=1,
                          pca_path=saved, log=notes.append)
    assert any("reusing the PCA" in n for n in notes)  # fitted on the first run's images, applied to new ones
    np.testing.assert_allclose(again.pca.comp3_, res.pca.comp3_)


def test_position_component_is_unbiased_under_the_null_and_finds_a_planted_term():
    from vitlab.inspect.position import position_component, shifted_crops

    g = torch.Generator().manual_seed(0)
    null = [position_component(torch.randn(64, 9, 16, generator=g), (3, 3))["energy_share"] for _ in range(20)]
    assert abs(np.mean(null)) < 0.005  # split-half estimate: no content-noise inflation
    plant = torch.randn(9, 16, generator=g)
    r = position_component(torch.randn(64, 9, 16, generator=g) + plant, (3, 3))
    want = float((plant - plant.mean(0)).pow(2).sum(-1).mean() / (16 + (plant - plant.mean(0)).pow(2).sum(-1).mean()))
    assert r["energy_share"] == pytest.approx(want, abs=0.05)
    img = torch.rand(2, 3, 16, 16, generator=g)
    crops = shifted_crops(img, (4, 4), 3, max_shift=1)
    assert crops.shape == (3, 2, 3, 16, 16) and torch.equal(crops[0], img)  # the first crop is the image itself


def test_gradcam_explains_a_cls_head_through_the_last_blocks_norm1():
    bb = vitlab.load_backbone("demo:fmnist-vit")
    src = vitlab.load_source("sample:fashion-mnist")
    from vitlab.inspect.images import load_raw, normalize

    x = normalize(bb, load_raw(bb, src, [0, 1, 2, 3]))
    m = compute_maps(bb, x, ["gradcam"], head=_head(bb, k=10))
    # the last block's norm1 output feeds the CLS query through attention: the map must not be blank
    assert (m["gradcam"].flatten(1).amax(1) > 0).all()


def test_the_inspect_package_renders_no_html():
    """Issue 19 part 5: producers return records; only vitlab/report/ renders (the CLI's -o calls it)."""
    import ast
    import inspect as pyinspect
    from pathlib import Path

    import vitlab.inspect
    from vitlab.inspect.api import inspect_model

    assert "report" not in pyinspect.signature(inspect_model).parameters
    for path in Path(vitlab.inspect.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vitlab.report"):
                assert not {a.name for a in node.names} & {"render_html", "html", "inspect_section"}, path.name
