"""The pretraining losses and updates against the papers' formulas on fixed tensors; feature-health math against
NumPy / SciPy; the collapse rule."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.distance import cdist

pytest.importorskip("lightly")

from vitlab.pretraining.health import effective_rank, mean_entropy, normalized_std  # noqa: E402
from vitlab.pretraining.losses import (ema_update, feature_loss, interpolate_grid, mae_loss, momentum_at,  # noqa: E402
                                    patchify, teacher_probs)
from vitlab.pretraining.monitor import collapsed  # noqa: E402


def _dino_reference(t_views, s_views, center, t_temp, s_temp):
    """DINO (Caron et al. 2021, Algorithm 1 / main_dino.py DINOLoss): mean over pairs of different views
    (teacher view i, student view j, i != j) of the batch-mean of  -sum_k P_t(i)_k log P_s(j)_k."""
    total, n = 0.0, 0
    for i, t in enumerate(t_views):
        pt = np.exp((t - center) / t_temp)
        pt /= pt.sum(1, keepdims=True)
        for j, s in enumerate(s_views):
            if i == j:
                continue
            z = s / s_temp
            logp = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
            total += float(-(pt * logp).sum(1).mean())
            n += 1
    return total / n


def test_dino_loss_is_the_papers_formula_and_updates_the_centre():
    from lightly.loss import DINOLoss

    g = torch.Generator().manual_seed(0)
    t = [torch.randn(5, 16, generator=g, dtype=torch.float64) for _ in range(2)]
    s = [torch.randn(5, 16, generator=g, dtype=torch.float64) for _ in range(4)]
    loss_fn = DINOLoss(16, warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=1,
                       student_temp=0.1, center_momentum=0.9).double()
    c0 = torch.randn(1, 1, 16, generator=g, dtype=torch.float64)
    loss_fn.center.copy_(c0)
    got = float(loss_fn(t, s, teacher_temp=0.04))
    want = _dino_reference([x.numpy() for x in t], [x.numpy() for x in s], c0[0].numpy(), 0.04, 0.1)
    assert got == pytest.approx(want, rel=1e-10)
    new_center = 0.9 * c0 + 0.1 * torch.stack(t).mean(dim=(0, 1), keepdim=True)
    assert torch.allclose(loss_fn.center, new_center, rtol=0, atol=1e-15)


def test_koleo_is_minus_mean_log_nearest_neighbour_distance():
    """KoLeo (Sablayrolles et al. 2019; DINOv2): -1/n sum_i log min_{j != i} ||x_i - x_j|| on L2-normalised rows."""
    from lightly.loss import KoLeoLoss

    x = torch.randn(12, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = (x / x.norm(dim=1, keepdim=True)).numpy()
    d = cdist(z, z)
    np.fill_diagonal(d, np.inf)
    want = -np.log(d.min(1) + 1e-8).mean()
    assert float(KoLeoLoss()(x)) == pytest.approx(want, rel=1e-6)


def test_ibot_patch_loss_weights_each_image_by_its_masked_patches():
    """iBOT (Zhou et al. 2022; DINOv2's ibot_patch_loss): per image, the mean over its masked patches of the
    cross-entropy, then the mean over images."""
    from lightly.loss import IBOTPatchLoss

    g = torch.Generator().manual_seed(2)
    mask = torch.zeros(3, 2, 2, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 1, 1] = mask[2, 0, 1] = True
    m = int(mask.sum())
    t, s = torch.randn(m, 8, generator=g, dtype=torch.float64), torch.randn(m, 8, generator=g, dtype=torch.float64)
    got = float(IBOTPatchLoss(8, teacher_temp=0.07, student_temp=0.1).double()(t, s, mask=mask))
    ce = -(torch.softmax(t / 0.07, -1) * torch.log_softmax(s / 0.1, -1)).sum(-1).numpy()
    want = (ce[:2].mean() + ce[2:].mean()) / 3  # image 1 has no masked patch: it counts 0 in the mean over 3 images
    assert got == pytest.approx(want, rel=1e-10)


def test_ema_update_is_exact():
    g = torch.Generator().manual_seed(3)
    t, s = torch.nn.Linear(4, 3).double(), torch.nn.Linear(4, 3).double()
    for p in [*t.parameters(), *s.parameters()]:
        p.data.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    before = [p.clone() for p in t.parameters()]
    ema_update(t, s, 0.75)
    for tp, sp, b in zip(t.parameters(), s.parameters(), before):
        assert torch.equal(tp, b * 0.75 + sp * 0.25)  # m * teacher + (1 - m) * student, bit for bit
    same = [p.clone() for p in t.parameters()]
    ema_update(t, s, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(t.parameters(), same))  # m = 1: untouched
    ema_update(t, s, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(t.parameters(), s.parameters()))  # m = 0: a copy


def test_momentum_follows_dinos_cosine():
    """DINO: m_t = 1 - (1 - m0) (cos(pi t / T) + 1) / 2 (lightly's cosine_schedule divides by T - 1)."""
    total, m0 = 11, 0.99
    for t in range(total):
        want = 1 - (1 - m0) * (math.cos(math.pi * t / (total - 1)) + 1) / 2
        assert momentum_at(t, total, m0) == pytest.approx(want, abs=1e-12)


def test_teacher_probs_and_entropy():
    logits, center = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.5, 0.0, 0.0]])
    p = teacher_probs(logits, center, 0.5).numpy()
    z = (np.array([1.0, 2.0, 3.0]) - [0.5, 0, 0]) / 0.5
    ref = np.exp(z) / np.exp(z).sum()
    assert np.allclose(p[0], ref, atol=1e-12)
    assert mean_entropy(p) == pytest.approx(float(-(ref * np.log(ref)).sum()), rel=1e-12)


def test_feature_loss_is_am_radios_formula():
    g = torch.Generator().manual_seed(4)
    sc, tc = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    sp, tp = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    loss, parts = feature_loss(sc, tc, sp, tp)
    cos = lambda a, b: (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))  # noqa: E731
    d = (sp - tp).abs()
    smooth = torch.where(d < 1, 0.5 * d**2, d - 0.5).mean()  # smooth-L1 with beta 1
    want = (1 - cos(sc, tc)).mean() + 0.9 * (1 - cos(sp, tp)).mean() + 0.1 * smooth
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    assert parts["patch_smooth_l1"] == pytest.approx(float(smooth), rel=1e-5)


def test_interpolate_grid_matches_interpolating_the_feature_map():
    tok = torch.randn(2, 16, 3, generator=torch.Generator().manual_seed(5))
    grid = tok.transpose(1, 2).reshape(2, 3, 4, 4)
    want = F.interpolate(grid, size=(2, 2), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(interpolate_grid(tok, (4, 4), (2, 2)), want.flatten(2).transpose(1, 2))
    assert interpolate_grid(tok, (4, 4), (4, 4)) is tok


def test_mae_loss_only_counts_masked_patches():
    img = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    target = patchify(img, (4, 4))
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    pred = target.clone()
    pred[:, 0] += 1.0  # wrong on patch 0 only
    masked = torch.zeros(2, 4, dtype=torch.bool)
    masked[:, 1:] = True
    assert float(mae_loss(pred, img, (4, 4), masked)) == 0.0
    masked[:, 0] = True
    assert float(mae_loss(pred, img, (4, 4), masked)) == pytest.approx(1.0 / 4)
    assert patchify(torch.arange(16.0).view(1, 1, 4, 4).expand(1, 3, 4, 4), (2, 2))[0, 1, :4].tolist() == \
        [2.0, 2.0, 2.0, 3.0]


def test_feature_health_against_numpy_and_scipy():
    from scipy.stats import entropy

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)) * np.arange(1, 9)
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert normalized_std(x) == pytest.approx(float(np.std(z, axis=0).mean()), rel=1e-12)
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    assert effective_rank(x) == pytest.approx(float(np.exp(entropy(s / s.sum()))), rel=1e-10)
    assert effective_rank(np.outer(rng.normal(size=50), np.ones(8))) == pytest.approx(1.0, abs=1e-6)  # one direction
    assert normalized_std(np.tile([1.0, 2.0], (10, 1))) == pytest.approx(0.0, abs=1e-12)  # collapse


def test_collapse_rule():
    base = {"value": 0.9, "low": 0.85, "high": 0.95}
    assert collapsed({"value": 0.5, "low": 0.4, "high": 0.89}, base)
    assert not collapsed({"value": 0.5, "low": 0.4, "high": 0.9}, base)  # the interval still reaches the base
    assert not collapsed({"value": 0.95, "low": 0.9, "high": 1.0}, base)
