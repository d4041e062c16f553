"""MIL heads and their training loop (vitlab.mil.heads, vitlab.mil.train)."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vitlab.errors import ConfigError, DataError, UnknownNameError
from vitlab.mil import HEADS, build_head, fit_head, predict
from vitlab.mil.heads import TransMIL

SMALL = {"transmil": {"dim": 64, "heads": 4}}  # keep the CPU tests quick
ATTENTION_HEADS = ("abmil", "transmil", "clam_sb")


def _synthetic(seed: int, n_bags: int = 120, d: int = 16):
    """Bag positive iff it holds 1-2 'key' instances from N(mu, I) among N(0, I) background (10-40 per bag)."""
    rng = np.random.default_rng(seed)
    mu = np.zeros(d)
    mu[:2] = 3.0
    bags, y, keys = [], [], []
    for i in range(n_bags):
        n, pos = int(rng.integers(10, 41)), i % 2
        x, k = rng.normal(size=(n, d)), np.zeros(n, bool)
        if pos:
            m = int(rng.integers(1, 3))
            idx = rng.choice(n, m, replace=False)
            x[idx] = rng.normal(size=(m, d)) + mu
            k[idx] = True
        bags.append(x.astype(np.float32))
        y.append(pos)
        keys.append(k)
    return bags, np.array(y), keys


@pytest.fixture(scope="module")
def synthetic():
    return _synthetic(0)


@pytest.mark.parametrize("name", ["mean", "max", "abmil", "transmil", "clam_sb"])
@pytest.mark.parametrize("n", [1, 7, 300])
def test_shapes_and_attention(name, n):
    torch.manual_seed(0)
    head = build_head(name, 32, 3, **SMALL.get(name, {})).eval()
    with torch.no_grad():
        out = head(torch.randn(n, 32))
    assert out.logits.shape == (3,)
    if name in ATTENTION_HEADS:
        assert out.attention.shape == (n,)
        assert torch.all(out.attention >= 0)
        assert out.attention.sum().item() == pytest.approx(1.0, abs=1e-5)
    else:
        assert out.attention is None
    assert out.aux_loss is None  # eval mode / no label: no auxiliary loss


def test_registry_names_and_errors():
    assert HEADS.names() == ["abmil", "clam_sb", "max", "mean", "transmil"]
    with pytest.raises(UnknownNameError, match="abmil"):
        build_head("abmill", 8, 2)
    with pytest.raises(ConfigError, match="n_classes"):
        build_head("abmil", 8, 1)
    with pytest.raises(ConfigError, match="divisible"):
        build_head("transmil", 8, 2, dim=10, heads=4)


def test_transmil_class_attention_matches_multihead_weights():
    """The O(N) class-token attention equals the row torch computes with need_weights=True."""
    torch.manual_seed(0)
    m = TransMIL(8, 2, dim=32, heads=4).eval()
    x = torch.randn(1, 17, 32)
    layer = m.layer2
    with torch.no_grad():
        y = layer.norm(x)
        _, w = layer.attn(y, y, y, need_weights=True, average_attn_weights=True)
        assert torch.allclose(layer.cls_attention(x), w[0, 0], atol=1e-6)


def test_transmil_pads_to_square_by_repeating_tokens():
    torch.manual_seed(0)
    m = TransMIL(8, 2, dim=32, heads=4).eval()
    h = torch.randn(5, 8)  # 5 -> 9 = 3 x 3: tokens 0..3 repeated
    with torch.no_grad():
        a = m(h).attention
        # a bag that *is* the padded grid gives the same logits (same tokens, same grid)
        grid = h[torch.arange(9) % 5]
        assert torch.allclose(m(h).logits, m(grid).logits, atol=1e-5)
    assert a.shape == (5,) and a.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_clam_instance_loss_in_training_only():
    torch.manual_seed(0)
    head = build_head("clam_sb", 32, 2).train()
    out = head(torch.randn(40, 32), y=1)
    assert out.aux_loss is not None and out.aux_loss.ndim == 0 and out.aux_weight == pytest.approx(0.3)
    out.aux_loss.backward()
    assert head.instance_classifiers[1].weight.grad is not None
    assert head.instance_classifiers[0].weight.grad is None  # not subtyping: only the true class's classifier
    assert head(torch.randn(1, 32), y=1).aux_loss is None  # k = n // 2 = 0: nothing to cluster
    sub = build_head("clam_sb", 32, 2, inst_loss="ce", subtyping=True).train()
    assert sub(torch.randn(7, 32), 0).aux_loss.ndim == 0


def test_determinism_same_seed_same_numbers(synthetic):
    bags, y, _ = synthetic
    kw = dict(head="clam_sb", n_classes=2, epochs=2, min_epochs=0, lr=1e-3, max_instances=15)
    runs = [predict(fit_head(bags[:30], y[:30], bags[30:40], y[30:40], seed=s, **kw), bags[40:50])[0]
            for s in (3, 3, 4)]
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    state = torch.random.get_rng_state()
    fit_head(bags[:5], y[:5], None, None, seed=3, **kw)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone


def test_abmil_beats_mean_pooling_and_attends_to_key_instances(synthetic):
    bags, y, keys = synthetic
    tr, va = slice(0, 80), slice(80, 120)
    kw = dict(n_classes=2, seed=0, epochs=40, lr=1e-3, patience=10, min_epochs=0)
    fits = {h: fit_head(bags[tr], y[tr], bags[va], y[va], head=h, **kw) for h in ("mean", "abmil")}
    auc = {}
    for h, fit in fits.items():
        proba, att = predict(fit, bags[va])
        auc[h] = roc_auc_score(y[va], proba[:, 1])
    pos = [i for i in range(80, 120) if y[i]]
    key = np.concatenate([keys[i] for i in pos])
    a = np.concatenate([att[i - 80] for i in pos])
    att_auc = roc_auc_score(key, a)
    print(f"val AUROC abmil {auc['abmil']:.3f} vs mean {auc['mean']:.3f}; attention instance AUROC {att_auc:.3f}")
    assert auc["abmil"] > 0.85
    assert auc["abmil"] >= auc["mean"] + 0.1
    assert att_auc > 0.8


def test_early_stopping_restores_best_epoch(synthetic):
    bags, _, _ = synthetic
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 2, size=len(bags))  # random labels: the head overfits, val loss rises
    fit = fit_head(bags[:40], noise[:40], bags[40:60], noise[40:60], head="abmil", n_classes=2, seed=0,
                   epochs=60, lr=3e-3, patience=4, min_epochs=0)
    val = [h["val_loss"] for h in fit.history]
    assert [h["epoch"] for h in fit.history] == list(range(1, len(val) + 1))
    assert fit.best_epoch == int(np.argmin(val)) + 1
    assert fit.best_val_loss == pytest.approx(min(val))
    assert fit.stopped_early and len(val) == fit.best_epoch + 4
    proba, _ = predict(fit, bags[40:60])  # the module holds the best epoch's weights, not the last
    ce = -np.mean(np.log(proba[np.arange(20), noise[40:60]]))
    assert ce == pytest.approx(fit.best_val_loss, rel=1e-4)
    assert not fit.module.training


def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance on deprecated torch aliases warns
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())


def test_predict_many_bags_keeps_memory_flat():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    bags = [rng.normal(size=(int(rng.integers(1, 60)), 32)).astype(np.float32) for _ in range(200)]
    head = build_head("abmil", 32, 2).train()
    keys = set(head.state_dict())
    attrs = set(vars(head))
    predict(head, bags[:10])
    before = _live_tensors()
    proba, att = predict(head, bags)
    after = _live_tensors()
    assert after <= before  # nothing (outputs, graphs, caches) kept alive per bag
    assert proba.shape == (200, 2) and proba.dtype == np.float32
    assert all(isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == (len(b),)
               for a, b in zip(att, bags))
    assert all(p.grad is None for p in head.parameters())
    assert set(head.state_dict()) == keys and set(vars(head)) == attrs
    assert head.training  # mode restored
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)


def test_bad_bags_are_named():
    good = [np.zeros((3, 8), np.float32)] * 3
    with pytest.raises(DataError, match="bag 2 has 0 instances"):
        fit_head([*good[:2], np.zeros((0, 8))], [0, 1, 0], None, None, n_classes=2, seed=0)
    with pytest.raises(DataError, match="bag 1 has 5 features per instance, expected 8"):
        fit_head([good[0], np.zeros((3, 5))], [0, 1], None, None, n_classes=2, seed=0)
    with pytest.raises(DataError, match="validation bag 0 has 4 features"):
        fit_head(good, [0, 1, 0], [np.zeros((2, 4))], [1], n_classes=2, seed=0)
    with pytest.raises(DataError, match="labels must be in 0..1"):
        fit_head(good, [0, 1, 2], None, None, n_classes=2, seed=0)
    with pytest.raises(DataError, match="expected 8"):
        predict(build_head("mean", 8, 2), [np.zeros((2, 6))])
    with pytest.raises(DataError, match="0 instances"):
        build_head("abmil", 8, 2)(torch.zeros(0, 8))


def test_max_instances_only_subsamples_training(synthetic):
    bags, y, _ = synthetic
    kw = dict(head="transmil", head_cfg=SMALL["transmil"], n_classes=2, seed=0, epochs=1, min_epochs=0)
    fit = fit_head(bags[:10], y[:10], bags[10:14], y[10:14], max_instances=4, **kw)
    _, att = predict(fit, bags[10:14])
    assert [len(a) for a in att] == [len(b) for b in bags[10:14]]  # prediction sees whole bags
    with pytest.raises(ConfigError, match="max_instances"):
        fit_head(bags[:4], y[:4], None, None, max_instances=0, **kw)
