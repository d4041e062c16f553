"""Views are a function of (seed, epoch, image) only: independent of the batch they are drawn in, hence of how a
batch is split over processes and of where a run resumes."""

import numpy as np
import pytest
import torch

pytest.importorskip("lightly")

from vitlab.pretraining.loop import batch_rows, lr_factor  # noqa: E402
from vitlab.pretraining.views import block_masks, crop_box, dino_specs, keep_indices, make_views  # noqa: E402

IMGS = torch.randint(0, 256, (6, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
SPECS = dino_specs((28, 28), (12, 12), n_local=2)


def test_views_depend_on_the_image_not_the_batch():
    full = make_views(IMGS, np.arange(6), SPECS, seed=3, epoch=1)
    halves = [make_views(IMGS[s], np.arange(6)[s], SPECS, seed=3, epoch=1) for s in (slice(0, 3), slice(3, 6))]
    for k in range(len(SPECS)):
        assert torch.equal(full[k], torch.cat([halves[0][k], halves[1][k]]))
    other = make_views(IMGS, np.arange(6), SPECS, seed=3, epoch=2)
    assert not torch.equal(full[0], other[0])  # a new epoch draws new views
    assert [tuple(v.shape) for v in full] == [(6, 3, 28, 28)] * 2 + [(6, 3, 12, 12)] * 2
    assert all(float(v.min()) >= 0.0 and float(v.max()) <= 1.0 for v in full)


def test_a_full_crop_without_augmentation_is_the_image():
    from vitlab.pretraining.views import ViewSpec

    spec = ViewSpec((28, 28), (1.0, 1.0), hflip=0.0, jitter=0.0, gray=0.0, ratio=(1.0, 1.0))
    v = make_views(IMGS, np.arange(6), [spec], seed=0, epoch=0)[0]
    assert torch.allclose(v, IMGS.float() / 255.0, atol=1e-6)


def test_crop_boxes_stay_inside_the_image():
    rng = np.random.default_rng(0)
    for _ in range(200):
        t, l, h, w = crop_box(rng, 28, 20, (0.05, 1.0), (3 / 4, 4 / 3))
        assert 0 <= t and 0 <= l and t + h <= 28 and l + w <= 20 and h >= 1 and w >= 1


def test_masks_and_kept_patches_are_seeded_per_image():
    a = block_masks(np.array([4, 9]), (7, 7), seed=0, epoch=0, view=0, probability=1.0)
    b = block_masks(np.array([9]), (7, 7), seed=0, epoch=0, view=0, probability=1.0)
    assert torch.equal(a[1], b[0]) and a.shape == (2, 7, 7)
    share = a.flatten(1).float().mean(1)
    assert bool(((share > 0) & (share <= 0.5 + 1e-9)).all())
    k = keep_indices(np.array([1, 2]), 49, 12, seed=0, epoch=0)
    assert k.shape == (2, 12) and torch.equal(k[1], keep_indices(np.array([2]), 49, 12, seed=0, epoch=0)[0])
    assert len(set(k[0].tolist())) == 12


def test_ranks_split_the_global_batch_in_order():
    rows, epoch = batch_rows(5, 40, 8, seed=1)
    parts = [batch_rows(5, 40, 8, seed=1, rank=r, world=2)[0] for r in (0, 1)]
    assert epoch == 1 and np.array_equal(np.concatenate(parts), rows)
    first_epoch = np.concatenate([batch_rows(s, 40, 8, seed=1)[0] for s in range(5)])
    assert sorted(first_epoch.tolist()) == list(range(40))  # each image once per epoch


def test_lr_schedule():
    assert lr_factor(4, total=20, start=5, warmup=2) == 0.0  # backbone frozen during the head warm-up
    assert lr_factor(5, total=20, start=5, warmup=2) == 0.5
    assert lr_factor(6, total=20, start=5, warmup=2) == 1.0
    assert lr_factor(19, total=20, start=5, warmup=2, min_fraction=0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (
        1 + np.cos(np.pi * 12 / 13)))
