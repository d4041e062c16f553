"""seg-linear's per-pixel loss (issue 20 part 3): bilinear taps, pixel features, the reference fit, the fix.

Checks, each against a reference:
- the upsampled features of sampled pixels equal ``torch.nn.functional.interpolate`` (bilinear) of the tokens;
- upsampling the logits equals the head applied to upsampled features (a linear head commutes with it);
- ``fit_pixels`` is scikit-learn's ``LogisticRegression`` on those pixel features at the same C;
- on a boundary-heavy synthetic set, the per-pixel loss segments the thin class the per-patch majority labels
  never see (the defect of the earlier recipe).
"""

from __future__ import annotations

import numpy as np
import pytest

from vitlab.errors import ConfigError, DataError
from vitlab.metrics.segmentation import per_image_confusion, seg_metrics
from vitlab.protocols.dense import LinearSegProbe, patch_labels, upsample_logits
from vitlab.protocols.dense_pixels import bilinear_taps, pixel_features, sample_pixels


@pytest.mark.parametrize("grid,size", [((4, 4), (16, 16)), ((2, 3), (7, 11)), ((3, 3), (3, 3)), ((5, 2), (9, 64))])
def test_pixel_features_are_torch_bilinear_interpolation(grid, size):
    rng = np.random.default_rng(0)
    tok = rng.normal(size=(3, grid[0] * grid[1], 5)).astype(np.float32)
    ref = upsample_logits(tok, grid, size)                                     # torch, [n, C, H, W]
    img, ys, xs = np.repeat(np.arange(3), size[0] * size[1]), *np.divmod(np.tile(np.arange(size[0] * size[1]), 3),
                                                                         size[1])
    got = pixel_features(tok, grid, img, ys, xs, [size] * 3)
    np.testing.assert_allclose(got, ref[img, :, ys, xs], atol=2e-6)
    i0, i1, w1 = bilinear_taps(size[0], grid[0])
    assert ((0 <= w1) & (w1 < 1)).all() and (i1 - i0 <= 1).all()


def test_per_image_sizes_and_seeded_uniform_sampling():
    rng = np.random.default_rng(1)
    masks = [rng.integers(0, 3, (8, 12)), rng.integers(0, 3, (16, 4)), np.full((4, 4), 255)]
    masks[0][0, :5] = 255
    img, ys, xs, lab = sample_pixels(masks, None)
    assert len(img) == 8 * 12 - 5 + 16 * 4 and 2 not in img                    # every labelled pixel, none ignored
    assert np.array_equal(lab, np.concatenate([masks[0].ravel()[5:], masks[1].ravel()]))
    a, b = sample_pixels(masks, 50, seed=3), sample_pixels(masks, 50, seed=3)
    assert all(np.array_equal(u, v) for u, v in zip(a, b)) and len(a[0]) == 50
    assert not np.array_equal(a[1], sample_pixels(masks, 50, seed=4)[1])
    assert all(m[y, x] == v for m, y, x, v in zip([masks[i] for i in a[0]], a[1], a[2], a[3]))
    tok = rng.normal(size=(3, 4, 2)).astype(np.float32)
    sizes = [m.shape for m in masks]
    got = pixel_features(tok, (2, 2), img, ys, xs, sizes)
    for i in (0, 1):
        ref = upsample_logits(tok[i:i + 1], (2, 2), sizes[i])[0]
        np.testing.assert_allclose(got[img == i], ref[:, ys[img == i], xs[img == i]].T, atol=2e-6)
    with pytest.raises(DataError, match="every training pixel is ignore_index"):
        sample_pixels([np.full((4, 4), 255)], 10)


def test_upsampling_logits_equals_the_head_on_upsampled_features():
    rng = np.random.default_rng(2)
    tok = rng.normal(size=(2, 6, 4))
    W, b = rng.normal(size=(4, 3)), rng.normal(size=3)
    up_logits = upsample_logits(tok @ W + b, (2, 3), (10, 7)).astype(np.float64)        # [n, K, H, W]
    up_feats = upsample_logits(tok, (2, 3), (10, 7)).astype(np.float64)                 # [n, C, H, W]
    np.testing.assert_allclose(np.einsum("nchw,ck->nkhw", up_feats, W) + b[:, None, None], up_logits, atol=1e-5)


def _boundary_set(n, seed):
    """2x2 patch grid, 8x8 masks: class 2 is a 3-px band along the vertical centre line, so it covers 3/8 of
    the two patches it touches (never their majority); classes 0 / 1 fill the rest. Tokens carry each patch's
    class fractions (plus noise), as real patch features carry their content."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, 8, 8), np.int64)
    masks[:, :, 4:] = 1
    band = rng.random(n) < 0.6
    masks[band, :, 3:6] = 2                                                     # straddles columns 3 | 4
    frac = np.stack([[np.bincount(m[r:r + 4, c:c + 4].ravel(), minlength=3) / 16
                      for r in (0, 4) for c in (0, 4)] for m in masks])         # [n, 4, 3]
    return masks, frac + 0.02 * rng.normal(size=frac.shape)


def test_the_pixel_loss_segments_what_majority_patch_labels_never_see():
    masks, tok = _boundary_set(120, 0)
    y = patch_labels(masks, (2, 2), 3)
    assert 2 not in y                                                            # no patch is mostly class 2
    patch = LinearSegProbe(3, Cs=[10.0]).fit(tok[:80], y[:80])
    pixel = LinearSegProbe(3, Cs=[10.0]).fit_pixels(tok[:80], masks[:80], (2, 2))
    score = {}
    for name, probe in (("patch", patch), ("pixel", pixel)):
        pred = probe.predict(tok[80:], (2, 2), (8, 8))
        score[name] = seg_metrics(per_image_confusion(masks[80:], pred, 3).sum(0))
    assert patch.classes_.tolist() == [0, 1] and score["patch"]["iou"][2] == 0.0
    assert pixel.classes_.tolist() == [0, 1, 2] and score["pixel"]["iou"][2] > 0.5
    assert score["pixel"]["miou"] > score["patch"]["miou"] + 0.2


def test_fit_pixels_is_scikit_learn_logistic_regression_on_the_pixel_features():
    from sklearn.linear_model import LogisticRegression

    masks, tok = _boundary_set(40, 1)
    probe = LinearSegProbe(3, Cs=[1.0], dtype="float64", tol=1e-10, max_train_pixels=1500, seed=5)
    probe.fit_pixels(tok, masks, (2, 2))
    img, ys, xs, lab = sample_pixels(list(masks), 1500, seed=5)
    X = pixel_features(tok, (2, 2), img, ys, xs, [(8, 8)] * 40).astype(np.float64)
    X = (X - X.mean(0)) / X.std(0)
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(X, lab)
    assert probe.n_train_pixels_ == 1500
    np.testing.assert_allclose(probe.probe_.coef_, ref.coef_, atol=2e-5)
    np.testing.assert_allclose(probe.probe_.intercept_ - probe.probe_.intercept_.mean(),
                               ref.intercept_ - ref.intercept_.mean(), atol=2e-5)


def test_fit_pixels_bad_input_and_the_protocol_option():
    masks, tok = _boundary_set(6, 2)
    with pytest.raises(DataError, match=r"5 training masks for 6 token rows"):
        LinearSegProbe(3).fit_pixels(tok, masks[:5], (2, 2))
    with pytest.raises(DataError, match=r"mask 0 has shape \(1, 8\); expected an \[H, W\] label map with H >= 2"):
        LinearSegProbe(3).fit_pixels(tok, [masks[0][:1]] + list(masks[1:]), (2, 2))
    with pytest.raises(DataError, match=r"a training mask holds label 2, outside 0\.\.1"):
        LinearSegProbe(2, Cs=[1.0]).fit_pixels(tok, masks, (2, 2))
    with pytest.raises(DataError, match=r"train tokens have 4 patches but grid 3x3 has 9"):
        LinearSegProbe(3).fit_pixels(tok, masks, (3, 3))
    with pytest.raises(ConfigError, match=r"max_train_pixels=0 must be >= 1"):
        LinearSegProbe(3, max_train_pixels=0)
    from vitlab.protocols.base import parse_protocols

    assert parse_protocols("seg-linear")[0].config.loss == "pixel"
    assert parse_protocols("seg-linear:loss=patch")[0].config.loss == "patch"
    with pytest.raises(ConfigError, match=r"loss='pixels'; choose pixel"):
        parse_protocols("seg-linear:loss=pixels")


def test_the_protocol_records_its_loss_and_training_samples():
    from vitlab.protocols.base import Split, parse_protocols

    masks, tok = _boundary_set(30, 3)
    s = Split(None, None, np.arange(30), tokens=tok, grid=(2, 2), masks=list(masks), extra={"ignore_index": 255})
    for spec, key in (("seg-linear:Cs=[1.0]", "n_train_pixels"), ("seg-linear:Cs=[1.0],loss=patch", "n_train_patches")):
        res = parse_protocols(spec)[0].run(s, s, seed=0, n_classes=3)
        loss = res.hparams["loss"]
        assert res.details[key] == (30 * 64 if loss == "pixel" else 30 * 4)
        assert f"val_{loss}_miou_by_C" in res.details


def _imbalanced_set(n, seed):
    """4x4 grid, 16x16 masks: mostly background (0), with small objects of classes 1-3 whose patch tokens carry
    a weak, noisy signal, so the background dominates accuracy while the C grid moves the small classes' IoU."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, 16, 16), np.int64)
    for i in range(n):
        for _ in range(2):
            r, c, k = rng.integers(0, 12), rng.integers(0, 12), rng.integers(1, 4)
            masks[i, r:r + 4, c:c + 4] = k
    frac = np.stack([[np.bincount(m[r:r + 4, c:c + 4].ravel(), minlength=4) / 16
                      for r in range(0, 16, 4) for c in range(0, 16, 4)] for m in masks])   # [n, 16, 4]
    return masks, frac @ rng.normal(size=(4, 6)) + 0.6 * rng.normal(size=(n, 16, 6))


@pytest.mark.parametrize("loss", ["pixel", "patch"])
def test_the_probe_trains_on_its_samples_and_chooses_c_by_validation_miou(loss):
    """Reference: scikit-learn's LogisticRegression on the probe's own training samples (standardised with their
    statistics) on the same validation split of images, scored by jaccard_score(average="macro"), per C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, jaccard_score

    from vitlab.data.splits import holdout

    masks, tok = _imbalanced_set(60, 4)
    Cs = [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    probe = LinearSegProbe(4, Cs=Cs, dtype="float64", tol=1e-10, max_train_pixels=4000, patience=None, seed=2)
    if loss == "pixel":
        X, y, groups = probe.pixel_samples(tok, masks, (4, 4))
        probe.fit_pixels(tok, masks, (4, 4))
    else:
        X, y, groups = probe.patch_samples(tok, patch_labels(masks, (4, 4), 4))
        probe.fit(tok, patch_labels(masks, (4, 4), 4))
    X = X.astype(np.float64)
    X = (X - X.mean(0)) / X.std(0)
    tr, va = holdout(y, groups, 0.2, 2)
    miou, acc = [], []
    for C in Cs:
        pred = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X[tr], y[tr]).predict(X[va])
        miou.append(jaccard_score(y[va], pred, average="macro"))
        acc.append(accuracy_score(y[va], pred))
    np.testing.assert_allclose(probe.probe_.val_scores_, miou, atol=1e-6)
    assert probe.probe_.C_ == Cs[int(np.argmax(miou))]
    if loss == "pixel":                                     # accuracy, the old rule, would under-fit here
        assert Cs[int(np.argmax(acc))] < probe.probe_.C_
    ref = LogisticRegression(C=probe.probe_.C_, tol=1e-12, max_iter=10_000).fit(X, y)  # the refit on all samples
    np.testing.assert_allclose(probe.probe_.coef_, ref.coef_, atol=1e-4)
    old = LinearSegProbe(4, Cs=Cs, dtype="float64", tol=1e-10, max_train_pixels=4000, patience=None, seed=2,
                         val_metric="accuracy")
    old = old.fit_pixels(tok, masks, (4, 4)) if loss == "pixel" else old.fit(tok, patch_labels(masks, (4, 4), 4))
    np.testing.assert_allclose(old.probe_.val_scores_, acc, atol=1e-6)


def test_seg_linear_records_its_validation_metric():
    from vitlab.protocols.base import Split, parse_protocols

    masks, tok = _imbalanced_set(40, 5)
    s = Split(None, None, np.arange(40), tokens=tok, grid=(4, 4), masks=list(masks), extra={"ignore_index": 255})
    for spec, key in (("seg-linear:Cs=[0.01,1.0]", "val_pixel_miou_by_C"),
                      ("seg-linear:Cs=[0.01,1.0],val_metric=accuracy", "val_pixel_accuracy_by_C")):
        res = parse_protocols(spec)[0].run(s, s, seed=0, n_classes=4)
        assert set(res.details[key]) == {"0.01", "1"} and res.hparams["val_metric"] == key.split("_")[2]
    with pytest.raises(ConfigError, match=r"val_metric='iou'; choose miou"):
        parse_protocols("seg-linear:val_metric=iou")
    from vitlab.protocols.linear import LinearProbe

    with pytest.raises(ConfigError, match=r"val_metric='f1'; choose one of accuracy, miou"):
        LinearProbe(Cs=[1.0, 2.0], val_metric="f1").fit(np.eye(4), np.array([0, 1, 0, 1]))
