"""``vitlab tune`` end to end: one JSON record with CIs, paired tests, costs; the saved LoRA is a backbone that
``vitlab eval`` embeds; the report renders the section; bad input is one ``error:`` line with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vitlab.cli import app

runner = CliRunner()
DATA = "sample:digits?limit=150"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune_runs")
    res = runner.invoke(app, ["tune", "--backbone", "demo:fmnist-vit", "--data", DATA, "--method",
                              "linear,lora,vpt:prompts=2,full", "--seeds", "2", "--epochs", "1", "--max-steps", "1",
                              "--batch-size", "32", "--n-resamples", "30", "--out", str(out), "--cache-dir",
                              str(out / "cache"), "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout), out


def test_json_record_has_cis_pairs_and_costs(tuned):
    rec, out = tuned
    assert rec["kind"] == "tune" and rec["config"]["methods"] == ["linear", "lora", "vpt", "full"]
    for m in rec["config"]["methods"]:
        top1 = rec["metrics"][m]["top1"]
        assert top1["n_seeds"] == 2 and top1["low"] <= top1["value"] <= top1["high"]
        c = rec["details"]["cost"][m]
        for key in ("trainable_params", "train_s", "images_per_s", "peak_memory_mb", "time_per_epoch_s"):
            assert c[key] is not None and c[key] >= 0, (m, key)
        if m != "linear":
            vs = rec["details"]["vs_linear"][m]
            assert [v["seed"] for v in vs] == [0, 1] and all(v["low"] <= v["diff"] <= v["high"] for v in vs)
    cost = rec["details"]["cost"]
    assert cost["linear"]["trainable_params"] < cost["vpt"]["trainable_params"] < cost["lora"]["trainable_params"] \
        < cost["full"]["trainable_params"]
    assert (out / f"tune-{rec['details']['artefacts']['lora'].split('/')[-2]}.json").exists()


def test_the_frozen_probe_is_vitlab_evals_linear_probe_and_every_method_is_paired_with_it(tuned):
    rec, out = tuned
    assert "probe" in rec["metrics"] and "probe" not in rec["config"]["methods"]
    assert rec["details"]["cost"]["probe"]["trainable_params"] == 10 * (96 + 1)  # demo ViT width 96, 10 digits
    for s in (0, 1):
        res = runner.invoke(app, ["eval", "--backbone", "demo:fmnist-vit", "--data", DATA, "--protocol", "linear",
                                  "--seed", str(s), "--n-resamples", "30", "--cache-dir", str(out / "cache"),
                                  "--json", "--quiet"])
        assert res.exit_code == 0, res.output
        ev = json.loads(res.stdout)
        probe = rec["details"]["per_seed"][str(s)]["probe"]["metrics"]["top1"]["value"]
        assert probe == pytest.approx(ev["metrics"]["linear"]["top1"]["value"])
    for m in rec["config"]["methods"]:
        vs = rec["details"]["vs_probe"][m]
        assert [v["seed"] for v in vs] == [0, 1] and all(v["low"] <= v["diff"] <= v["high"] for v in vs)
        v = rec["details"]["vs_probe_verdict"][m]
        mean = sum(x["diff"] for x in vs) / 2
        assert v["verdict"] == ("beats" if mean > 0 else "loses" if mean < 0 else "ties")
        assert v["text"].startswith(f"{m} {'loses to' if mean < 0 else v['verdict']}") and "McNemar" in v["text"]


def test_the_learning_rate_and_head_start_are_in_the_recipe_and_the_record(tuned):
    rec, _ = tuned
    assert rec["config"]["recipe"]["lp_init"] is True and rec["config"]["recipe"]["lr_grid"] == [0.3, 1.0, 3.0]
    assert rec["config"]["head_init"].startswith("LP-FT")
    assert "the test split is predicted only by the final model" in rec["config"]["selection"]
    assert rec["config"]["recipe"]["refit"] is True
    for m in rec["config"]["methods"]:
        sel = rec["details"]["selection"][m]
        assert [s["seed"] for s in sel] == [0, 1]
        for s in sel:
            assert [c["lr"] for c in s["candidates"]] == rec["config"]["lr_candidates"][m]
            assert s["lr"] in rec["config"]["lr_candidates"][m] and s["lp_init"]["C"] > 0
            assert s["refit"]["lr"] == s["lr"] and s["refit"]["epochs"] == s["best_epoch"]
            assert s["refit"]["n_rows"] == 120 and s["lp_init"]["n_rows"] == 108  # train + val, train part
        assert rec["hparams"][m]["lr"] == [s["lr"] for s in sel]


def test_saved_lora_is_a_backbone_for_eval(tuned):
    rec, out = tuned
    lora = rec["details"]["artefacts"]["lora"]
    res = runner.invoke(app, ["eval", "--backbone", lora, "--data", DATA, "--protocol", "knn", "--n-resamples", "20",
                              "--cache-dir", str(out / "cache"), "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    ev = json.loads(res.stdout)
    assert ev["config"]["backbone"] == "demo:fmnist-vit+lora"
    assert ev["fingerprints"]["backbone"]["weights_id"] != rec["fingerprints"]["backbone"]["weights_id"]


def test_report_shows_the_tune_section(tuned, tmp_path):
    from vitlab.report import load_records, render_html
    from vitlab.report import tune_section  # noqa: F401  (registers the "tune" section)

    _, out = tuned
    html = render_html(load_records(out), tmp_path / "r.html", load_images=False).read_text()
    assert "Adaptation (fine-tuning, LoRA, VPT)" in html and "trainable params" in html
    assert "Δ top-1 vs linear" in html and html.count("data:image/png;base64,") >= 1
    assert "the frozen probe</b>" in html and "Learning rate per method: linear: tried 0.0003, 0.001, 0.003" in html


@pytest.mark.parametrize("args,msg", [
    (["--method", "lorra"], "unknown tune method 'lorra'. Did you mean: lora"),
    (["--method", "linear", "--seeds", "0"], "seeds must be a whole number >= 1"),
    (["--backbone", "pixels", "--method", "vpt"], "method 'vpt' inserts prompt tokens into a timm ViT; pixels:28"),
    (["--backbone", "pixels", "--method", "lora"], "LoRA target 'qkv' matches no Linear layer of pixels:28"),
    (["--method", "linear", "--epochs", "0"], "epochs must be a whole number in 1..10000"),
])
def test_bad_input_is_one_line(args, msg):
    base = ["tune", "--backbone", "demo:fmnist-vit", "--data", "sample:digits"]
    res = runner.invoke(app, base + args)
    assert res.exit_code == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and msg in " ".join(res.stderr.split())


def test_missing_peft_is_one_line_naming_the_extra_before_the_probe(monkeypatch):
    import sys

    import importlib

    probe = importlib.import_module("vitlab.tuning.probe")  # `import vitlab.tuning.x` can meet the function vitlab.tune

    monkeypatch.setitem(sys.modules, "peft", None)
    monkeypatch.setattr(probe, "frozen_probe", lambda *a, **k: (_ for _ in ()).throw(AssertionError("probe ran")))
    res = runner.invoke(app, ["tune", "--backbone", "demo:fmnist-vit", "--data", "sample:digits", "--method", "lora"])
    assert res.exit_code == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0] == ("error: method lora needs the package peft, which is not installed: "
                                        "pip install 'vitlab[tune]'.")
