"""Dense probes: patch labels, logit upsampling, the linear segmentation probe, kNN label transfer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vitlab.neighbors
import vitlab.protocols.dense_knn as dense_knn
import vitlab.protocols.linear as linear
from vitlab.errors import ConfigError, DataError
from vitlab.metrics.segmentation import per_image_confusion, seg_metrics
from vitlab.protocols.dense import LinearSegProbe, patch_labels, scores_to_label_maps, upsample_logits
from vitlab.protocols.dense_knn import knn_label_transfer, knn_patch_scores

GRID = (4, 4)
SIZE = (16, 16)
N_CLASSES = 4


def synthetic(n, seed=0, dim=24, noise=0.05):
    """Masks made of 2x2-patch blocks with random labels (some 255 patches); tokens encode the patch label."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, N_CLASSES, (n, 2, 2))
    masks = np.kron(blocks, np.ones((8, 8), np.int64))                    # [n, 16, 16]
    masks[:, :4, :4][rng.random(n) < 0.3] = 255                          # some top-left patches unlabelled
    y = patch_labels(masks, GRID, N_CLASSES)
    proto = rng.normal(size=(N_CLASSES + 1, dim))                          # one prototype per class (+ ignore)
    tokens = proto[np.where(y == 255, N_CLASSES, y)] + noise * rng.normal(size=(n, 16, dim))
    return masks, y, tokens


def pixel_accuracy(masks, pred):
    return seg_metrics(per_image_confusion(masks, pred, N_CLASSES).sum(0))["pixel_accuracy"]


# -- patch_labels ------------------------------------------------------------------------------
def test_patch_labels_by_hand():
    m = np.array([[0, 0, 1, 1],
                  [0, 2, 1, 255],
                  [255, 255, 2, 2],
                  [255, 255, 2, 1]])
    # patch 0: 0,0,0,2 -> 0; patch 1: 1,1,1 (255 left out) -> 1; patch 2: all ignored -> 255; patch 3: 2,2,2,1 -> 2
    assert patch_labels(m[None], (2, 2), 3).tolist() == [[0, 1, 255, 2]]
    tie = np.array([[0, 2], [2, 0]])
    assert patch_labels(tie[None], (1, 1), 3).tolist() == [[0]]           # tie -> smaller class
    assert patch_labels(m[None], (2, 2), 256, ignore_index=None)[0, 2] == 255  # 255 is a class here


def test_patch_labels_uneven_sizes():
    # 5 rows on 2 patch rows: rows 0-2 -> patch row 0 (floor(r*2/5)), rows 3-4 -> row 1; same for columns
    m = np.zeros((5, 5), np.int64)
    m[3:, :] = 1
    m[:, 3:] = 2
    assert patch_labels([m], (2, 2), 3).tolist() == [[0, 2, 1, 2]]
    sizes = patch_labels([np.zeros((6, 4)), np.ones((9, 9))], (2, 2), 2)   # masks of different sizes
    assert sizes.tolist() == [[0] * 4, [1] * 4]


def test_patch_labels_bad_input():
    with pytest.raises(DataError, match=r"mask 1 holds label 5, outside 0\.\.2 and not the ignore index 255"):
        patch_labels(np.stack([np.zeros((4, 4)), np.full((4, 4), 5)]).astype(int), (2, 2), 3)
    with pytest.raises(DataError, match=r"mask 0 has shape \(1, 4\); expected an \[H, W\] label map with H >= 2"):
        patch_labels([np.zeros((1, 4), int)], (2, 2), 3)


# -- upsampling -------------------------------------------------------------------------------
def test_upsample_logits_matches_torch_bilinear():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 3)).astype(np.float32)             # grid 2 x 3
    up = upsample_logits(logits, (2, 3), (8, 9))
    ref = torch.nn.functional.interpolate(torch.from_numpy(logits).reshape(2, 2, 3, 3).permute(0, 3, 1, 2),
                                          size=(8, 9), mode="bilinear", align_corners=False)
    assert up.shape == (2, 3, 8, 9) and np.allclose(up, ref.numpy())
    assert np.allclose(up[:, :, 0, 0], logits[:, 0])                    # the corner copies the corner patch
    t = upsample_logits(torch.from_numpy(logits), (2, 3), (4, 6))
    assert isinstance(t, torch.Tensor) and t.shape == (2, 3, 4, 6)
    with pytest.raises(DataError, match=r"logits have 6 patches but grid 2x2 has 4"):
        upsample_logits(logits, (2, 2), (8, 8))


def test_scores_to_label_maps_per_image_sizes():
    s = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]])
    maps = scores_to_label_maps(s, (1, 2), [(2, 4), (3, 2)])
    assert [m.shape for m in maps] == [(2, 4), (3, 2)]
    assert maps[0].tolist() == [[0, 0, 1, 1]] * 2 and (maps[1] == 1).all()
    same = scores_to_label_maps(s, (1, 2), (2, 4), image_block=1)
    assert same.shape == (2, 2, 4) and np.array_equal(same[0], maps[0])


# -- LinearSegProbe ---------------------------------------------------------------------------
def test_linear_probe_segments_synthetic_images(monkeypatch):
    seen = []
    real_split = linear.holdout

    def spy(y, groups, val_fraction, seed):
        tr, va = real_split(y, groups, val_fraction, seed)
        seen.append((np.asarray(groups), tr, va))
        return tr, va

    monkeypatch.setattr(linear, "holdout", spy)
    masks, y, tokens = synthetic(40)
    probe = LinearSegProbe(N_CLASSES, Cs=[0.01, 1.0], seed=0).fit(tokens[:30], y[:30])
    # patches of one image are never split across train and validation
    groups, tr, va = seen[0]
    assert not set(groups[tr]) & set(groups[va]) and len(set(groups[va])) >= 2
    assert probe.n_train_patches_ == int((y[:30] != 255).sum())
    labelled = y[30:] != 255
    assert np.array_equal(probe.predict_patches(tokens[30:])[labelled], y[30:][labelled])
    pred = probe.predict(tokens[30:], GRID, SIZE)
    assert pred.shape == (10, 16, 16) and pred.dtype == np.int64
    assert pixel_accuracy(masks[30:], pred) >= 0.97  # bilinear upsampling may flip a few block corners
    blocked = probe.predict(tokens[30:], GRID, SIZE, image_block=3)
    assert np.array_equal(blocked, pred)
    per_image = probe.predict(tokens[30:32], GRID, [SIZE, (8, 8)])
    assert per_image[0].shape == SIZE and per_image[1].shape == (8, 8)


def test_linear_probe_multi_layer_tokens_and_absent_class():
    masks, y, tokens = synthetic(30, seed=1)
    ms = np.concatenate([tokens, 2 * tokens + 1, tokens[..., ::-1]], axis=2)  # "4 layers" -> C_total
    y_train = np.where(y == 3, 255, y)                                      # class 3 never in training
    probe = LinearSegProbe(N_CLASSES, Cs=[1.0]).fit(ms, y_train)
    assert probe.classes_.tolist() == [0, 1, 2]
    z = probe.decision_function(ms[:2])
    assert z.shape == (2, 16, N_CLASSES) and np.isneginf(z[..., 3]).all()
    assert 3 not in np.unique(probe.predict(ms, GRID, SIZE))


def test_linear_probe_bad_input():
    masks, y, tokens = synthetic(10)
    with pytest.raises(DataError, match=r"train patch labels have shape \(10, 15\) but the tokens are \(10, 16\)"):
        LinearSegProbe(N_CLASSES).fit(tokens, y[:, :15])
    with pytest.raises(DataError, match=r"must be patch tokens \[n, N, C\]; got shape \(10, 24\)"):
        LinearSegProbe(N_CLASSES).fit(tokens.mean(1), y)
    with pytest.raises(DataError, match=r"every labelled train patch is class 2"):
        LinearSegProbe(N_CLASSES, Cs=[1.0]).fit(tokens, np.full_like(y, 2))
    with pytest.raises(ConfigError, match=r"not fitted yet"):
        LinearSegProbe(N_CLASSES).predict(tokens, GRID, SIZE)
    probe = LinearSegProbe(N_CLASSES, Cs=[1.0]).fit(tokens, y)
    with pytest.raises(DataError, match=r"tokens have C=12 channels but the probe was fitted on 24"):
        probe.predict(tokens[..., :12], GRID, SIZE)
    with pytest.raises(DataError, match=r"tokens have 16 patches but grid 3x3 has 9"):
        probe.predict(tokens, (3, 3), SIZE)


def test_linear_probe_max_train_patches_is_seeded():
    masks, y, tokens = synthetic(20)
    a = LinearSegProbe(N_CLASSES, Cs=[1.0], max_train_patches=100, seed=3).fit(tokens, y)
    b = LinearSegProbe(N_CLASSES, Cs=[1.0], max_train_patches=100, seed=3).fit(tokens, y)
    assert a.n_train_patches_ == 100 and np.array_equal(a.probe_.coef_, b.probe_.coef_)


# -- kNN label transfer ----------------------------------------------------------------------------
def test_knn_scores_are_the_softmax_weighted_vote_by_hand():
    bank = np.array([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]])                # cos with q: 1.0, 0.6, 0.0
    lab = np.array([[0, 1, 1]])
    q = np.array([[[1.0, 0.0]]])
    s = knn_patch_scores(bank, lab, q, 2, k=3, temperature=0.5)
    w = np.exp(np.array([1.0, 0.6, 0.0]) / 0.5)
    w /= w.sum()
    assert np.allclose(s[0, 0], [w[0], w[1] + w[2]], atol=1e-6)
    assert np.allclose(knn_patch_scores(bank, lab, q, 2, k=2, temperature=0.5)[0, 0].sum(), 1.0)
    # ignored bank patches are not in the memory bank; k larger than the bank is capped
    s_ign = knn_patch_scores(bank, np.array([[255, 1, 1]]), q, 2, k=30)
    assert s_ign[0, 0].tolist() == [0.0, pytest.approx(1.0)]


def test_knn_ties_go_to_the_lower_bank_index():
    bank = np.array([[[1.0, 0.0], [1.0, 0.0]]])                           # identical features, labels 1 and 0
    s = knn_patch_scores(bank, np.array([[1, 0]]), np.array([[[2.0, 0.0]]]), 2, k=1)
    assert s[0, 0].tolist() == [0.0, 1.0]


def test_knn_label_transfer_segments_synthetic_images():
    masks, y, tokens = synthetic(40, seed=2)
    pred = knn_label_transfer(tokens[:30], y[:30], tokens[30:], N_CLASSES, grid=GRID, out_size=SIZE)
    assert pred.shape == (10, 16, 16) and pred.dtype == np.int64
    assert pixel_accuracy(masks[30:], pred) >= 0.97
    scores = knn_patch_scores(tokens[:30], y[:30], tokens[30:], N_CLASSES)
    labelled = y[30:] != 255
    assert np.array_equal(scores.argmax(2)[labelled], y[30:][labelled])


def test_knn_label_transfer_stays_blocked(monkeypatch):
    masks, y, tokens = synthetic(24, seed=4)
    calls = []
    real = vitlab.neighbors.search

    def spy(query, ref, k, **kw):
        calls.append((np.shape(query), kw["block"]))
        return real(query, ref, k, **kw)

    monkeypatch.setattr(dense_knn, "search", spy)
    full = knn_label_transfer(tokens[:16], y[:16], tokens[16:], N_CLASSES, grid=GRID, out_size=SIZE, k=5)
    assert len(calls) == 1 and calls[0][0] == (8 * 16, 24)
    calls.clear()
    small = knn_label_transfer(tokens[:16], y[:16], tokens[16:], N_CLASSES, grid=GRID, out_size=SIZE, k=5,
                               image_block=3, block=7)
    assert [c[0][0] for c in calls] == [48, 48, 32] and all(c[1] == 7 for c in calls)  # query chunks, GEMM tiles
    assert np.array_equal(small, full)


def test_knn_bad_input():
    masks, y, tokens = synthetic(6)
    with pytest.raises(ConfigError, match=r"k must be a positive integer, got 0"):
        knn_label_transfer(tokens, y, tokens, N_CLASSES, grid=GRID, out_size=SIZE, k=0)
    with pytest.raises(ConfigError, match=r"temperature=0 must be > 0"):
        knn_patch_scores(tokens, y, tokens, N_CLASSES, temperature=0)
    with pytest.raises(DataError, match=r"test tokens have C=5 channels but the train tokens 24"):
        knn_patch_scores(tokens, y, tokens[..., :5], N_CLASSES)
    with pytest.raises(DataError, match=r"test tokens have 16 patches but grid 2x2 has 4"):
        knn_label_transfer(tokens, y, tokens, N_CLASSES, grid=(2, 2), out_size=SIZE)
    with pytest.raises(DataError, match=r"every train patch is ignore_index"):
        knn_patch_scores(tokens, np.full_like(y, 255), tokens, N_CLASSES)
    with pytest.raises(DataError, match=r"train patch labels hold 7, outside 0\.\.3"):
        knn_patch_scores(tokens, np.full_like(y, 7), tokens, N_CLASSES)
