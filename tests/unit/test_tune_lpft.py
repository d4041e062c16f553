"""LP-FT and the learning-rate choice: the head at step 0 is the linear probe's, the rate is chosen on validation
only (the test images cannot change it), the choice is in the recipe and the record, and a method that does not
beat the frozen probe is said to lose, with its paired tests."""

import importlib

import numpy as np
import pytest
import torch

import vitlab
from vitlab.errors import ConfigError
from vitlab.protocols.base import Split
from vitlab.protocols.classification import Linear
from vitlab.tuning.methods import clone_backbone
from vitlab.tuning.plan import tune_splits
from vitlab.tuning.recipe import TuneRecipe
from vitlab.tuning.summary import verdict

runner = importlib.import_module("vitlab.tuning.runner")  # `import vitlab.tuning.x` can meet the function vitlab.tune
DATA = "sample:digits?limit=200"
KW = dict(seeds=1, seed=0, epochs=1, max_steps=2, batch_size=32, n_resamples=20, probe=False, progress=False)


def test_lpft_head_at_step_0_equals_the_linear_probe(monkeypatch):
    real_fit, start = runner.fit, {}

    def spy(net, bank, labels, train_rows, val_rows, method, recipe, **k):
        phase = "search" if len(val_rows) else "refit"
        start[k["label"], phase] = (net.head.weight.detach().clone(), net.head.bias.detach().clone(),
                                    np.array(train_rows))
        return real_fit(net, bank, labels, train_rows, val_rows, method, recipe, **k)

    monkeypatch.setattr(runner, "fit", spy)
    res = vitlab.tune("demo:fmnist-vit", DATA, methods="linear,lora:r=2,bitfit,full", lr_grid=(1.0,), **KW)
    # the reference: vitlab eval's linear protocol fitted, outside tune, on the frozen features of the same rows
    bb, src = vitlab.load_backbone("demo:fmnist-vit"), vitlab.load_source(DATA)
    tr, val, _ = tune_splits(src, [0], 0.2, 0.1)[0]
    net = runner.TuneNet(clone_backbone(bb), 10, "cls", torch.Generator().manual_seed(0))
    bank = runner.ImageBank(src, bb.spec.preprocessing)

    def probe_on(rows):
        feats = runner._features(net, bank, rows, torch.device("cpu"), TuneRecipe()).numpy()
        return Linear().fit_probe(Split(feats, src.labels[rows], rows), seed=0, n_classes=10)[0]

    probes = {"search": probe_on(tr), "refit": probe_on(np.sort(np.r_[tr, val]))}
    f_val = runner._features(net, bank, val, torch.device("cpu"), TuneRecipe()).numpy()
    for label in ("linear", "lora", "bitfit", "full"):
        for phase, rows in (("search", tr), ("refit", np.sort(np.r_[tr, val]))):
            w, b, seen = start[label, phase]
            np.testing.assert_array_equal(seen, rows)
            assert torch.equal(w, torch.as_tensor(probes[phase].coef_, dtype=torch.float32)), (label, phase)
            assert torch.equal(b, torch.as_tensor(probes[phase].intercept_, dtype=torch.float32)), (label, phase)
        # epoch 0 of the record is the search run's start, scored on the validation part
        h0 = res.record.details["cost"][label]["per_seed"][0]["history"][0]
        assert h0["epoch"] == 0 and h0["val_top1"] == pytest.approx(float((probes["search"].predict(f_val) ==
                                                                             src.labels[val]).mean()))
        sel = res.record.details["selection"][label][0]
        assert sel["lp_init"]["C"] == probes["search"].C_ and sel["lp_init"]["n_rows"] == len(tr)
        assert sel["refit"]["lp_init"]["C"] == probes["refit"].C_ and sel["refit"]["n_rows"] == len(tr) + len(val)


def test_a_method_that_keeps_the_lp_start_is_the_refitted_probe(monkeypatch, tmp_path):
    """best epoch 0 (no fine-tuning step beat the start on validation): the refit trains no step, so the scored
    model is the linear probe on train + validation, the frozen probe's own procedure."""
    real_fit = runner.fit

    def never_better(net, bank, labels, train_rows, val_rows, method, recipe, **k):
        rep = real_fit(net, bank, labels, train_rows, val_rows, method, recipe, **k)
        if len(val_rows):
            rep.best_epoch = 0  # as if every epoch had scored below the start
        return rep

    monkeypatch.setattr(runner, "fit", never_better)
    res = vitlab.tune("demo:fmnist-vit", DATA, methods="lora:r=2", lr_grid=(1.0,), **{**KW, "probe": True},
                      cache_dir=tmp_path)
    refit = res.record.details["selection"]["lora"][0]["refit"]
    assert refit["epochs"] == 0 and refit["steps"] == 0
    probe = res.results[0]["probe"].outputs["proba"]
    lora = res.results[0]["lora"].outputs["proba"]
    np.testing.assert_allclose(lora, probe, atol=1e-6)  # measured: 2.4e-12
    v = res.record.details["vs_probe_verdict"]["lora"]
    assert v["kept_lp_start_seeds"] == [0] and (v["verdict"] == "beats" or "the frozen probe's own procedure" in
                                                 v["text"])


def test_without_lp_init_the_head_starts_random(monkeypatch):
    real_fit, start = runner.fit, {}

    def spy(net, *a, **k):
        start["w"] = net.head.weight.detach().clone()
        return real_fit(net, *a, **k)

    monkeypatch.setattr(runner, "fit", spy)
    res = vitlab.tune("demo:fmnist-vit", DATA, methods="linear", lr_grid=(1.0,), lp_init=False, **KW)
    assert start["w"].abs().max() < 0.1  # normal(0, 0.01) init
    assert res.record.details["cost"]["linear"]["per_seed"][0]["history"][0]["epoch"] == 1
    assert res.record.config["head_init"].startswith("random")


def _permuted_test_images(seed: int):
    """The same source, but every test row shows another test row's image (labels, split and train untouched)."""
    src = vitlab.load_source(DATA)
    te = tune_splits(src, [seed], 0.2, 0.1)[seed][2]
    other = dict(zip(te.tolist(), np.roll(te, 7).tolist()))
    load = src.load_image
    src.load_image = lambda i: load(other.get(int(i), int(i)))
    return src


def test_the_chosen_learning_rate_depends_only_on_train_and_validation():
    # a random head (lp_init off) makes the three rates train visibly differently in 4 steps on 200 images
    kw = dict(methods="linear,bitfit", lr_grid=(0.3, 1.0, 10.0), lp_init=False, **{**KW, "max_steps": 4})
    a = vitlab.tune("demo:fmnist-vit", DATA, **kw)
    b = vitlab.tune("demo:fmnist-vit", _permuted_test_images(0), **kw)

    def choice(res):
        return {m: [(s["lr"], s["best_epoch"], [(c["lr"], c["val_top1"], c["val_loss"], c["best_epoch"])
                                                for c in s["candidates"]]) for s in sel]
                for m, sel in res.record.details["selection"].items()}

    assert choice(a) == choice(b)
    for m in ("linear", "bitfit"):
        cands = a.record.details["selection"][m][0]["candidates"]
        assert [c["lr"] for c in cands] == a.record.config["lr_candidates"][m]
        assert len({c["val_loss"] for c in cands}) == 3  # the rates did train differently
        # ...while the test images did change what was scored
        assert not np.allclose(a.results[0][m].outputs["proba"], b.results[0][m].outputs["proba"])
    assert list(a.record.config["recipe"]["lr_grid"]) == [0.3, 1.0, 10.0] and not a.record.config["recipe"]["lp_init"]
    assert a.record.hparams["bitfit"]["lr"] == [a.record.details["selection"]["bitfit"][0]["lr"]]


def test_the_kept_rate_has_the_best_validation_score():
    res = vitlab.tune("demo:fmnist-vit", DATA, methods="bitfit", lr_grid=(0.1, 1.0, 30.0), **KW)
    sel = res.record.details["selection"]["bitfit"][0]
    best = max(sel["candidates"], key=lambda c: (c["val_top1"], -c["val_loss"]))
    assert sel["lr"] == best["lr"] and res.results[0]["bitfit"].hparams["lr"] == best["lr"]


def test_recipe_and_cli_check_the_grid():
    assert TuneRecipe(lr_grid=[3, 1]).lr_grid == (1, 3)
    assert TuneRecipe(lr=0.01).learning_rates(1e-3) == [0.003, 0.01, 0.03]
    with pytest.raises(ConfigError, match="lr_grid must be 1 to 10 distinct multipliers"):
        TuneRecipe(lr_grid=(1.0, 1.0))
    with pytest.raises(ConfigError, match="each lr_grid multiplier must be a number in"):
        TuneRecipe(lr_grid=(0.0, 1.0))
    with pytest.raises(ConfigError, match="lp_init must be true or false"):
        TuneRecipe(lp_init="yes")
    with pytest.raises(ConfigError, match="learning rate above 1"):
        vitlab.tune("demo:fmnist-vit", DATA, methods="vpt", lr_grid=(1.0, 300.0))
    with pytest.raises(vitlab.errors.DataError, match="too small for LP-FT's linear probe.*--no-lp-init"):
        vitlab.tune("demo:fmnist-vit", "sample:digits?limit=60", methods="linear", val_fraction=0.2)


def _row(seed, diff, significant):
    return {"seed": seed, "diff": diff, "low": diff - 0.02, "high": diff + 0.02, "p_bootstrap": 0.01 if significant
            else 0.4, "p_mcnemar": 0.02 if significant else 0.5, "significant": significant}


def test_verdict_says_plainly_who_wins_with_the_paired_tests():
    lose = verdict("full", [_row(0, -0.03, True), _row(1, -0.01, False)], [{"seed": 0, "best_epoch": 0},
                                                                           {"seed": 1, "best_epoch": 4}])
    assert lose["verdict"] == "loses" and lose["significant_seeds"] == 1 and lose["mean_diff"] == pytest.approx(-0.02)
    assert lose["text"].startswith("full loses to the frozen probe: Δ top-1 -0.020 (mean of 2 seeds), significant "
                                   "on 1 of 2 (seed 0 -0.030 [-0.050, -0.010], Holm p 0.01 (bootstrap) / 0.02")
    assert "On seed 0 no fine-tuning epoch beat the LP-FT start" in lose["text"] and lose["kept_lp_start_seeds"] == [0]
    win = verdict("lora", [_row(0, 0.02, True), _row(1, -0.005, True)], [{"seed": 0, "best_epoch": 2}] * 2)
    assert win["verdict"] == "beats" and win["significant_seeds"] == 1 and win["why"] is None  # only same-sign count
    assert verdict("x", [_row(0, 0.0, False)], [])["verdict"] == "ties"
