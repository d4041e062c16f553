"""``vitlab.pretrain`` / ``vitlab.distill`` end to end on tiny runs: the record, the warm-up, the user's model left
alone, the artefact round trip, exact resume, the collapse guard and the monitor's split."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

pytest.importorskip("lightly")

import vitlab  # noqa: E402
from vitlab.backbones.base import hash_state_dict  # noqa: E402
from vitlab.errors import Interrupted  # noqa: E402
from vitlab.pretraining import distill, pretrain  # noqa: E402

DATA, MON = "sample:digits?limit=48", "sample:digits?limit=120"
KW = dict(method="dino:n_local=2", max_steps=4, batch_size=8, monitor_every=2, n_resamples=20,
          verdict_protocols="knn", progress=False)


def _entry_ok(m):
    return m["low"] is not None and m["low"] <= m["value"] <= m["high"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny DINO run with monitoring, shared by the checks below."""
    tmp = tmp_path_factory.mktemp("pt")
    base = vitlab.load_backbone("demo:fmnist-vit")
    before = (hash_state_dict(base.model), base.weights_id)
    res = pretrain(base, DATA, monitor=MON, head_warmup=2, out=tmp / "runs", cache_dir=tmp / "cache", **KW)
    return res, base, before, tmp


def test_record_holds_the_monitored_curve_with_cis_and_the_paired_verdict(run):
    res, _, _, _ = run
    d = res.record.details
    assert [h["step"] for h in d["monitor_curve"]] == [0, 2, 4]
    for h in d["monitor_curve"]:
        assert _entry_ok(h["metrics"]["knn"]["top1"])
        assert set(h["health"]) >= {"normalized_std", "effective_rank"}
    assert d["monitor_curve"][1]["teacher_entropy"] > 0
    (row,) = d["verdict"]["knn"]
    assert (row["a"], row["b"]) == ("adapted", "base") and {"p_bootstrap_holm", "p_mcnemar_holm"} <= set(row)
    assert _entry_ok(res.record.metrics["adapted"]["knn"]["top1"]) and "base" in res.record.metrics
    assert len(d["curve"]) == 4 and all(np.isfinite(c["loss"]) for c in d["curve"])
    on_disk = json.loads(res.path.read_text())
    assert on_disk["details"]["artefact"] == str(res.artefact) and on_disk["kind"] == "pretrain"


def test_warmup_leaves_the_backbone_unchanged_then_it_trains(run):
    res, base, _, _ = run
    wc = res.record.details["warmup_check"]
    assert wc["steps"] == 2 and wc["backbone_unchanged"] and wc["backbone_hash_before"] == hash_state_dict(base.model)
    lrs = [c["lr"] for c in res.record.details["curve"]]
    assert lrs[:2] == [0.0, 0.0] and lrs[2] > 0  # no backbone learning rate during the warm-up
    final = res.loop.final_weights
    assert any(not torch.equal(final[k], v) for k, v in base.model.state_dict().items())  # then it moved


def test_the_users_model_is_never_modified(run):
    res, base, before, _ = run
    assert (hash_state_dict(base.model), base.weights_id) == before
    assert res.backbone.weights_id != base.weights_id and res.backbone.model is not base.model


def test_the_artefact_round_trips_and_runs_through_eval(run):
    res, base, _, tmp = run
    bb = vitlab.load_backbone(str(res.artefact))
    assert bb.weights_id == res.backbone.weights_id != base.weights_id
    saved = load_file(str(res.artefact))
    weights = res.loop.best_weights
    assert all(torch.equal(saved[f"body.{k}"], v) for k, v in weights.items() if f"body.{k}" in saved)
    x = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.equal(bb.forward_tokens(x).tokens[5], res.backbone.forward_tokens(x).tokens[5])
    ev = vitlab.evaluate(str(res.artefact), MON, protocols="knn", n_resamples=20, cache_dir=tmp / "cache",
                         progress=False)
    assert ev.record.metrics["knn"]["top1"]["value"] == res.record.metrics["adapted"]["knn"]["top1"]["value"]


def test_the_monitor_uses_vitlab_evals_split(run):
    from vitlab.pretraining.monitor import monitor_splits

    res, base, _, tmp = run
    src = vitlab.load_source(MON)
    tr, val, te = monitor_splits(src, 0, 0.2, 0.1)
    ev = vitlab.evaluate(base, MON, protocols="knn", seed=0, n_resamples=20, cache_dir=tmp / "cache", progress=False)
    assert sorted(ev.test_ids) == sorted(src.ids[i] for i in te)
    assert set(src.ids[i] for i in np.concatenate([tr, val])).isdisjoint(ev.test_ids)
    assert res.record.details["eval"]["adapted"]["n_test"] == len(te)


def test_resume_is_bit_identical(tmp_path):
    def stop_at_2(step):
        if step == 2:
            raise KeyboardInterrupt

    kw = dict(KW, monitor_every=2, checkpoint_minutes=0.0, head_warmup=1)
    with pytest.raises(Interrupted, match="the checkpoint of step 2 is kept in .*checkpoint.pt: run the same command"):
        pretrain("demo:fmnist-vit", DATA, monitor=MON, out=tmp_path / "a", cache_dir=tmp_path / "c", on_step=stop_at_2,
                 **kw)
    resumed = pretrain("demo:fmnist-vit", DATA, monitor=MON, out=tmp_path / "a", cache_dir=tmp_path / "c", **kw)
    fresh = pretrain("demo:fmnist-vit", DATA, monitor=MON, out=tmp_path / "b", cache_dir=tmp_path / "c", **kw)
    assert resumed.loop.resumed_from == 2 and fresh.loop.resumed_from is None
    assert resumed.record.details["curve"] == fresh.record.details["curve"]
    assert resumed.record.details["monitor_curve"] == fresh.record.details["monitor_curve"]
    a, b = load_file(str(resumed.artefact)), load_file(str(fresh.artefact))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(resumed.loop.final_weights[k], v) for k, v in fresh.loop.final_weights.items())


def test_collapse_guard_fires_on_a_planted_collapse_and_keeps_the_best(tmp_path):
    res = pretrain("demo:fmnist-vit", DATA, monitor="sample:digits?limit=200", out=tmp_path,
                   cache_dir=tmp_path / "c", **dict(KW, max_steps=8, head_warmup=0, lr=1.0, head_lr=1.0, clip_grad=0.0,
                                                    min_lr_fraction=1.0, val_fraction=0.3))
    d = res.record.details
    assert d["stop"]["reason"] == "collapse" and "collapse guard" in d["stop"]["message"]
    assert d["steps"]["done"] < 8 and d["stop"]["step"] == d["steps"]["done"]
    assert d["best"]["step"] == 0 and d["selected_step"] == 0  # the base itself was the best point
    assert all(torch.equal(res.loop.best_weights[k], v)
               for k, v in vitlab.load_backbone("demo:fmnist-vit").model.state_dict().items())


def test_dinov2_and_mae_train_on_a_timm_vit_and_dino_on_an_hf_vit_with_registers(tmp_path_factory):
    from tests.conftest import BACKBONE_FACTORIES

    for method, parts in (("dinov2:n_local=1,mask_probability=1.0", {"dino", "ibot", "koleo"}), ("mae", {"mae"})):
        res = pretrain("demo:fmnist-vit", DATA, out=None, **dict(KW, method=method, max_steps=2, head_warmup=1))
        assert parts <= set(res.record.details["curve"][-1]) and np.isfinite(res.record.details["curve"][-1]["loss"])
        assert res.artefact is None and res.backbone.weights_id != vitlab.load_backbone("demo:fmnist-vit").weights_id
    hf = BACKBONE_FACTORIES["hf-dinov2-reg"](tmp_path_factory)
    res = pretrain(hf, "sample:digits?limit=16", out=None, **dict(KW, max_steps=2, head_warmup=1))
    assert np.isfinite(res.record.details["curve"][-1]["loss"])
    assert res.record.details["steps"]["done"] == 2


def test_distill_into_a_smaller_random_student(tmp_path):
    res = distill("demo:fmnist-vit", "random:demo:fmnist-vit", DATA, monitor=MON, student_kwargs={"depth": 1},
                  out=tmp_path, cache_dir=tmp_path / "c", speed=False,
                  **{k: v for k, v in KW.items() if k != "method"})
    d = res.record.details
    assert res.record.kind == "distill" and res.backbone.spec.depth == 1
    assert [(r["a"], r["b"]) for r in d["verdict"]["knn"]] == [("student", "start"), ("student", "teacher")]
    assert d["warmup_check"] == {} and res.record.config["resolved"]["lr"] == 5e-4  # random init: no warm-up
    bb = vitlab.load_backbone(str(res.artefact))
    assert bb.spec.depth == 1 and bb.weights_id == res.backbone.weights_id


def test_speed_up_uses_bench_timing(tiny_backbone):
    from vitlab.pretraining.verdict import speed_up

    small = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                 embed_dim=32, depth=1, num_heads=2)
    s = speed_up(tiny_backbone, small, batch_size=4, repeats=3)
    assert s["interleaved"] and s["speedup"]["low"] <= s["speedup"]["value"] <= s["speedup"]["high"]
    assert s["student"]["flops"] < s["teacher"]["flops"]


def test_cli_json_prints_one_document(tmp_path):
    from vitlab.cli import app

    res = CliRunner().invoke(app, ["pretrain", "-b", "demo:fmnist-vit", "-d", DATA, "--monitor", MON, "--method",
                                   "dino:n_local=1", "--max-steps", "2", "--batch-size", "8", "--n-resamples", "20",
                                   "--verdict-protocol", "knn", "--out", str(tmp_path), "--cache-dir",
                                   str(tmp_path / "c"), "--json"])
    assert res.exit_code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["kind"] == "pretrain" and doc["details"]["artefact"].endswith("model.vitlab")
    assert doc["details"]["monitor_curve"][0]["metrics"]["knn"]["top1"]["low"] is not None


def test_two_teachers_with_other_patch_grids_get_one_adaptor_each():
    from vitlab.pretraining.distillation import DistillProgram, check_shared_input

    demo = vitlab.load_backbone("demo:fmnist-vit")  # 28 px, patch 4: a 7 x 7 grid
    other = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=28, patch_size=7,
                                 embed_dim=48, depth=1, num_heads=2)  # a 4 x 4 grid, another width
    student = vitlab.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, img_size=14, patch_size=7,
                                   embed_dim=32, depth=1, num_heads=2)  # 14 px: a 2 x 2 grid
    teachers = {"a": demo, "b": other}
    canvas = check_shared_input(student, teachers)
    prog = DistillProgram(student, teachers, canvas, torch.Generator().manual_seed(0))
    imgs = torch.randint(0, 256, (4, 3, 28, 28), dtype=torch.uint8)
    batch = prog.make_batch(imgs, np.arange(4), seed=0, epoch=0, device=torch.device("cpu"))
    assert canvas == (28, 28) and batch["student"].shape[-1] == 14 and batch["b"].shape[-1] == 28
    loss, parts = prog.loss(batch, 0, 1)
    loss.backward()
    assert {"a/cls_cos", "b/patch_cos"} <= set(parts) and np.isfinite(float(loss))
    assert prog.adaptors["t1"]["patch"][2].out_features == 48 and prog.adaptors["t0"]["cls"][2].out_features == 96
    assert all(p.grad is None for t in prog._teachers.values() for p in t.parameters())  # teachers stay frozen
    assert "_teachers" not in str(list(prog.state_dict())) and not any(k.startswith("t") for k in prog.state_dict())
