"""Robustness: patch corruptions, PGD patch and feature attacks, deletion/insertion, robust_eval end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vitlab
from vitlab.errors import ConfigError, DataError, UnknownNameError
from vitlab.inspect.attacks import check_eps, feature_attack, patch_mask, pgd_patch
from vitlab.inspect.corrupt import cells, corrupt
from vitlab.inspect.images import embed_raw, fit_probe_head, load_raw, normalize


@pytest.fixture(scope="module")
def demo():
    bb = vitlab.load_backbone("demo:fmnist-vit")
    src = vitlab.load_source("sample:fashion-mnist")
    idx = np.arange(0, 2000, 20)  # 100 images, 10 per class
    raw = load_raw(bb, src, idx)
    f = embed_raw(bb, raw, pool="cls").numpy()
    head, _ = fit_probe_head(f[:84], src.labels[idx[:84]], seed=0, num_classes=10)
    return bb, raw[84:], torch.as_tensor(src.labels[idx[84:]]), head


def _logits(bb, head):
    return lambda r: head(bb.forward_tokens(normalize(bb, r), [5]).pooled(5, "cls"))


# -- corruptions ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["patch-drop", "patch-shuffle", "patch-noise", "patch-mean"])
@pytest.mark.parametrize("aligned", [True, False])
def test_corruptions_change_only_the_chosen_cells(kind, aligned):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 24, generator=g)
    y = corrupt(x, kind, 2, (4, 4), aligned=aligned, seed=1)
    assert torch.equal(corrupt(x, kind, 0, (4, 4), aligned=aligned), x)
    changed = (y != x).any(1)  # [B, H, W]
    cs = cells((16, 24), (4, 4), aligned)
    allowed = torch.zeros(16, 24, dtype=torch.bool)
    for r, c in cs:
        allowed[r:r + 4, c:c + 4] = True
    assert not (changed & ~allowed).any()
    n_cells = [sum(bool(changed[b, r:r + 4, c:c + 4].any()) for r, c in cs) for b in range(3)]
    assert all(n <= 2 for n in n_cells) and any(n > 0 for n in n_cells)
    if kind == "patch-shuffle":  # the same pixels, permuted between cells
        assert torch.allclose(y.sum(), x.sum())
    assert torch.equal(corrupt(x, kind, 2, (4, 4), aligned=aligned, seed=1), y)  # seeded


def test_misaligned_cells_straddle_the_grid_and_bad_counts_fail():
    assert cells((8, 8), (4, 4), aligned=False) == [(2, 2)]
    with pytest.raises(ConfigError, match="do not fit"):
        corrupt(torch.rand(1, 3, 8, 8), "patch-drop", 5, (4, 4))
    with pytest.raises(UnknownNameError, match="patch-drop"):
        corrupt(torch.rand(1, 3, 8, 8), "patch-dorp", 1, (4, 4))


# -- attacks ----------------------------------------------------------------------------------------------------
def test_eps_out_of_range_is_one_clear_line():
    with pytest.raises(ConfigError, match="epsilon 2 is out of range.*8/255"):
        check_eps([0.0, 2.0])
    with pytest.raises(ConfigError, match="epsilon -0.1 is out of range"):
        pgd_patch(lambda r: r.flatten(1)[:, :2], torch.rand(1, 3, 4, 4), torch.tensor([0]),
                  torch.ones(1, 1, 4, 4), eps=-0.1)


def test_pgd_patch_leaves_pixels_outside_the_mask_unchanged(demo):
    bb, raw, y, head = demo
    mask = patch_mask(tuple(raw.shape), bb.spec.patch_size, 2, seed=0)
    adv = pgd_patch(_logits(bb, head), raw, y, mask, eps=16 / 255, steps=5)
    out = ~mask.bool().expand_as(raw)
    assert torch.equal(adv[out], raw[out])
    assert (adv - raw).abs().max() <= 16 / 255 + 1e-6 and (adv != raw).any()
    assert adv.min() >= 0 and adv.max() <= 1


def test_attack_success_is_zero_at_eps0_and_grows_with_eps(demo):
    bb, raw, y, head = demo
    mask = torch.ones(raw.shape[0], 1, *raw.shape[-2:])
    f = _logits(bb, head)
    with torch.no_grad():
        ok = f(raw).argmax(1) == y
    assert ok.sum() >= 6
    rates = []
    for eps in (0.0, 4 / 255, 32 / 255):
        adv = pgd_patch(f, raw, y, mask, eps=eps, steps=6)
        if eps == 0:
            assert torch.equal(adv, raw)
        with torch.no_grad():
            rates.append(float((ok & (f(adv).argmax(1) != y)).sum() / ok.sum()))
    assert rates[0] == 0.0
    assert all(b >= a for a, b in zip(rates, rates[1:])), rates  # raw PGD, not the union
    assert rates[-1] > 0.5


def test_feature_attack_moves_features_within_budget(demo):
    bb, raw, _, _ = demo
    feat = lambda r: bb.forward_tokens(normalize(bb, r), [5]).pooled(5, "cls")  # noqa: E731
    assert torch.equal(feature_attack(feat, raw, eps=0.0), raw)
    adv = feature_attack(feat, raw, eps=8 / 255, steps=5)
    assert (adv - raw).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(feat(adv), feat(raw)).mean()
    assert cos < 0.99


def test_user_model_unchanged_by_attacks(demo):
    bb, raw, y, head = demo
    before = bb.weights_id
    pgd_patch(_logits(bb, head), raw[:2], y[:2], torch.ones(2, 1, 28, 28), eps=0.03, steps=2)
    assert bb.weights_id == before and not any(p.requires_grad for p in bb.model.parameters())


# -- deletion / insertion and robust_eval --------------------------------------------------------------------------
def test_deletion_insertion_curves_and_intervals(demo):
    from vitlab.inspect.sanity import deletion_insertion

    bb, raw, y, head = demo
    sal = torch.rand(raw.shape[0], 7, 7, generator=torch.Generator().manual_seed(0))

    def score(imgs):
        with torch.no_grad():
            return torch.softmax(_logits(bb, head)(imgs), 1).gather(1, y[:, None])[:, 0]

    r = deletion_insertion(bb, raw, sal, score, steps=4, n_resamples=200)
    assert r["fractions"][0] == 0 and r["fractions"][-1] == 1
    d, i = r["deletion"], r["insertion"]
    assert d["curve"][0] == pytest.approx(float(score(raw).double().mean()))
    assert d["curve"][-1] == pytest.approx(i["curve"][0])  # all deleted = nothing inserted
    for e in (d["auc"], i["auc"], d["auc_random"]):
        assert e["low"] <= e["value"] <= e["high"]
    assert d["vs_random"]["low"] <= d["vs_random"]["diff"] <= d["vs_random"]["high"]


def test_robust_eval_end_to_end_two_backbones(tmp_path):
    from vitlab.inspect.robust import robust_eval

    tiny = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=28, patch_size=7,
                                embed_dim=32, depth=2, num_heads=2)
    res = robust_eval(["demo:fmnist-vit", tiny], "sample:fashion-mnist", corrupt_kinds="patch-drop",
                      counts=[0, 4], aligned=(True,), attack="pgd-patch", eps=[0, 4 / 255], steps=2, n_train=60,
                      n_test=20, n_attack=4, n_resamples=100, out=tmp_path)
    m = res.record.metrics["demo:fmnist-vit"]
    cur = m["patch-drop|aligned"]
    assert cur["counts"] == [0, 4]
    assert cur["linear"][0]["value"] == m["clean"]["linear"]["value"]  # 0 patches = clean
    for e in cur["linear"] + cur["knn"]:
        assert e["low"] <= e["value"] <= e["high"]
    att = m["attacks"]["pgd-patch"]
    assert att["success"][0] == 0.0 and att["success"][1] >= att["success"][0]
    assert res.record.details["paired"] and res.path.exists()
    assert {p["condition"] for p in res.record.details["paired"]} >= {"clean|linear", "patch-drop|aligned|4|knn"}


def test_robust_needs_labels_and_valid_inputs():
    from vitlab.inspect.robust import robust_eval

    with pytest.raises(DataError, match="has no labels"):
        robust_eval("demo:fmnist-vit", "photos:china", attack=None)
    with pytest.raises(UnknownNameError, match="pgd-patch"):
        robust_eval("demo:fmnist-vit", "sample:fashion-mnist", attack="pgd")
    with pytest.raises(ConfigError, match="out of range"):
        robust_eval("demo:fmnist-vit", "sample:fashion-mnist", eps=[1.5])
