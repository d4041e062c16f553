"""Interrupting ``vitlab.tune`` keeps the finished method runs; the same call resumes without retraining them."""

import pytest

import vitlab
import vitlab.tuning.runner as runner
from vitlab.errors import Interrupted

KW = dict(methods="linear,bitfit", seeds=1, epochs=1, max_steps=1, n_resamples=20, progress=False, lr_grid=(1.0, 3.0))
DATA = "sample:digits?limit=120"


def test_interrupt_then_resume(tmp_path, monkeypatch):
    kw = {**KW, "cache_dir": tmp_path / "cache"}  # the finished runs are kept in its tune-resume namespace
    real_fit, calls = runner.fit, []

    def flaky(net, *a, label, **k):
        calls.append(label)
        if label == "bitfit":
            raise KeyboardInterrupt
        return real_fit(net, *a, label=label, **k)

    monkeypatch.setattr(runner, "fit", flaky)
    with pytest.raises(Interrupted, match="1 of 2 method runs are kept in .*/cache/tune-resume/[0-9a-f]{12}/units: "
                                          "run the same command again"):
        vitlab.tune("demo:fmnist-vit", DATA, out=tmp_path, **kw)
    monkeypatch.setattr(runner, "fit", lambda net, *a, label, **k: (calls.append(label), real_fit(net, *a, label=label,
                                                                                                   **k))[1])
    res = vitlab.tune("demo:fmnist-vit", DATA, out=tmp_path, **kw)
    # two rates and the refit on train + validation each: linear's three before the interrupt, bitfit's first
    # (interrupted) call, then bitfit's three on resume; linear is not trained again
    assert calls == ["linear"] * 3 + ["bitfit"] * 4
    resumed = {m: [c["resumed"] for c in res.record.details["cost"][m]["per_seed"]] for m in ("linear", "bitfit")}
    assert resumed == {"linear": [True], "bitfit": [False]}
    fresh = vitlab.tune("demo:fmnist-vit", DATA, out=tmp_path / "fresh", **kw)
    assert fresh.record.metrics == res.record.metrics
    def choice(r):  # the search without its timings
        return {m: [(s["lr"], [(c["lr"], c["val_top1"], c["val_loss"], c["best_epoch"]) for c in s["candidates"]])
                    for s in sel] for m, sel in r.record.details["selection"].items()}

    assert choice(fresh) == choice(res) and fresh.record.hparams == res.record.hparams
    assert res.backbones["linear"].weights_id == fresh.backbones["linear"].weights_id


def test_interrupt_with_an_unwritable_cache_says_nothing_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the cache dir should be
    with pytest.raises(Interrupted, match=r"nothing is kept \(the cache dir is not writable"):
        vitlab.tune("demo:fmnist-vit", DATA, **{**KW, "cache_dir": blocker})
