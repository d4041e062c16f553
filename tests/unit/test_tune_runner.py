"""The tune runner: only declared parameters change, seeded determinism, schedule, augmentation."""

import math

import numpy as np
import pytest
import torch

import vitlab
from vitlab.tuning.methods import clone_backbone, parse_methods
from vitlab.tuning.recipe import TuneRecipe
from vitlab.tuning.runner import ImageBank, TuneNet, _schedule, fit, predict, shift_augment

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setup():
    bb = vitlab.load_backbone("demo:fmnist-vit")
    src = vitlab.load_source("sample:digits?limit=120")
    return bb, src, ImageBank(src, bb.spec.preprocessing)


def _train(setup, spec, seed=0, steps=1, **recipe):
    bb, src, bank = setup
    m = parse_methods(spec)[0]
    gen = torch.Generator().manual_seed(seed)
    net = TuneNet(m.apply(clone_backbone(bb), gen), 10, "cls", gen)
    net.initial = {k: v.clone() for k, v in net.body.state_dict().items()}
    r = TuneRecipe(**{"epochs": 2, "batch_size": 16, "max_steps": steps, "augment": True, **recipe})  # shifts: seeded too
    fit(net, bank, src.labels, np.arange(80), np.arange(80, 100), m, r, lr=5e-2, seed=seed, device=CPU,
        progress=False, label=spec)
    return net, predict(net, bank, np.arange(100, 120), CPU, r)


@pytest.mark.parametrize("spec", ["lora:r=2", "bitfit", "vpt:prompts=2", "linear"])
def test_only_declared_parameters_change(setup, spec):
    base = {k: v.clone() for k, v in setup[0].model.state_dict().items()}
    net, _ = _train(setup, spec)
    trained = {n.removeprefix("body.") for n, p in net.named_parameters() if p.requires_grad and n.startswith("body.")}
    after = net.body.state_dict()
    changed = {k for k, v in after.items() if not torch.equal(v, net.initial[k])}
    # everything not declared trainable is bit-identical to before training; the declared ones moved
    assert changed <= trained, sorted(changed - trained)[:5]
    assert bool(changed) == (spec != "linear"), f"{spec}: changed {sorted(changed)[:3]}"
    # and the frozen weights are the base's own (peft keeps a wrapped Linear's weights under base_layer)
    for k, v in after.items():
        name = k.removeprefix("vit.").replace(".base_layer.", ".")
        if k not in trained and name in base:
            assert torch.equal(v, base[name]), k
    assert torch.equal(setup[0].model.state_dict()["blocks.0.attn.qkv.weight"], base["blocks.0.attn.qkv.weight"])


def test_seeded_determinism_on_cpu(setup):
    _, p1 = _train(setup, "lora:r=2,dropout=0.1", seed=3)
    _, p2 = _train(setup, "lora:r=2,dropout=0.1", seed=3)
    _, p3 = _train(setup, "lora:r=2,dropout=0.1", seed=4)
    np.testing.assert_array_equal(p1, p2)
    assert not np.array_equal(p1, p3)
    assert p1.dtype == np.float64 and np.allclose(p1.sum(1), 1.0)


def test_warmup_then_cosine():
    f = _schedule(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(100) == pytest.approx(0.0)


def test_shift_augment_is_a_shift():
    x = torch.arange(64.0).reshape(1, 1, 8, 8).expand(4, 3, 8, 8).contiguous()
    y = shift_augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    for i in range(4):  # each output row/col is a clamped shift of the input by at most 1 pixel
        d = (y[i, 0] - x[i, 0])
        assert d.abs().max() <= 9 and torch.equal(y[i, 0], y[i, 1])


def test_early_stopping_keeps_the_best_epoch(setup):
    bb, src, bank = setup
    m = parse_methods("linear")[0]
    gen = torch.Generator().manual_seed(0)
    net = TuneNet(m.apply(clone_backbone(bb), gen), 10, "cls", gen)
    rep = fit(net, bank, src.labels, np.arange(80), np.arange(80, 100), m, TuneRecipe(epochs=6, patience=1,
              batch_size=16), lr=0.5, seed=0, device=CPU, progress=False, label="linear")
    accs = [h["val_top1"] for h in rep.history]
    assert rep.best_epoch == 1 + int(np.argmax(accs)) and rep.epochs_run == len(accs)
    assert rep.epochs_run == rep.best_epoch + 1 or rep.epochs_run == 6   # patience 1: stops one epoch after the best
    p = predict(net, bank, np.arange(80, 100), CPU)
    assert float((p.argmax(1) == src.labels[80:100]).mean()) == pytest.approx(max(accs))


def test_the_start_is_a_candidate_and_is_kept_when_no_epoch_beats_it(setup):
    bb, src, bank = setup
    m = parse_methods("bitfit")[0]
    gen = torch.Generator().manual_seed(0)
    net = TuneNet(m.apply(clone_backbone(bb), gen), 10, "cls", gen)
    start = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    # a learning rate this large wrecks the weights at once: every trained epoch scores below the start
    rep = fit(net, bank, src.labels, np.arange(80), np.arange(80, 100), m, TuneRecipe(epochs=2, patience=2,
              batch_size=16, warmup_fraction=0.0), lr=50.0, seed=0, device=CPU, progress=False, label="bitfit",
              start_candidate=True)
    assert rep.history[0]["epoch"] == 0 and rep.history[0]["train_loss"] is None
    assert [h["epoch"] for h in rep.history] == [0, 1, 2]
    if all(h["val_top1"] < rep.history[0]["val_top1"] for h in rep.history[1:]):
        assert rep.best_epoch == 0 and rep.best_val_top1 == rep.history[0]["val_top1"]
        assert all(torch.equal(p, start[n]) for n, p in net.named_parameters() if p.requires_grad)
    else:  # not what this test is about, but never silently: the kept epoch is the best one
        assert rep.best_epoch == 1 + int(np.argmax([h["val_top1"] for h in rep.history[1:]]))
