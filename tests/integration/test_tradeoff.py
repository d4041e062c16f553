"""Trade-off end to end on a small image folder, the perf report sections, and the bench/tradeoff CLI verbs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import vitlab
import vitlab.cli.perf_cmds  # noqa: F401  (registers bench and tradeoff on the app)
from tests.conftest import write_images
from vitlab.backbones.base import hash_state_dict
from vitlab.cli import app
from vitlab.errors import BackboneError, DataError, UnknownNameError
from vitlab.report.perf_figures import tradeoff_plot_uri
from vitlab.perf import tradeoff
from vitlab.report import load_records, render_html

# tiny test splits (8 images): some bootstrap resamples miss a class, and the default kNN ks exceed 32 train images
pytestmark = pytest.mark.filterwarnings("ignore:bootstrap. metric undefined:RuntimeWarning",
                                        "ignore:kNN. default k:UserWarning")
runner = CliRunner()
FAST = dict(batch_size=8, warmup=1, repeats=3, min_time=0.0, latency_repeats=5, n_resamples=100, num_workers=0,
            protocols="knn:ks=[5]")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("tradeoff") / "imgs", n_per_class=10,
                        classes=("bag", "coat", "shoe", "shirt"))


@pytest.fixture(scope="module")
def demo():
    return vitlab.load_backbone("demo:fmnist-vit")


@pytest.fixture(scope="module")
def result(folder, demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    before = hash_state_dict(demo.model)
    res = tradeoff(demo, f"folder:{folder}", accel="none,tome:r=2,int8,exit:threshold=0.8",
                   cache_dir=root / "cache", out=root / "out", **FAST)
    return res, root, before


def test_one_record_per_variant_plus_the_tradeoff_record(result):
    res, root, _ = result
    records = load_records(root / "out")
    kinds = sorted(r.kind for r in records)
    assert kinds == ["eval", "eval", "eval", "tradeoff"]
    evals = {r.config["backbone"].split(" (")[1].rstrip(")"): r for r in records if r.kind == "eval"}
    assert set(evals) == {"none", "tome:r=2", "int8"}
    assert evals["tome:r=2"].config["source_backbone"] == "demo:fmnist-vit"
    assert evals["tome:r=2"].config["accel"]["name"] == "tome"
    assert evals["tome:r=2"].fingerprints["backbone"]["accel"]["name"] == "tome"
    digests = {res.runs[k].embeddings.digest for k in evals}  # the cache keys every variant separately
    assert len(digests) == 3


def test_tradeoff_table(result):
    res, _, _ = result
    rows = {r["variant"]: r for r in res.table()}
    assert list(rows) == ["none", "tome:r=2", "int8", "exit:threshold=0.8"]
    none, tome, int8, ex = rows.values()
    assert none["speedup"]["value"] == 1.0 and none["delta"]["knn"]["diff"] == 0.0
    assert tome["flops_reduction"] > 1 and tome["params"] == none["params"] == int8["params"]
    for r in (tome, int8):
        d = r["delta"]["knn"]
        assert d["low"] <= d["diff"] <= d["high"] and 0 < d["p_bootstrap"] <= 1
        assert 0.9 < r["feature_cosine"] <= 1.0 + 1e-6
        acc = r["accuracy"]["knn"]
        assert acc["low"] <= acc["value"] <= acc["high"]
    assert any(r["pareto"] for r in (none, tome, int8))
    assert ex["kind"] == "early_exit" and ex["threshold"] == 0.8 and ex["images_per_s_derived"]
    e = res.exits["exit:threshold=0.8"]
    assert len(e.cum_time_s) == 6 and all(b >= a for a, b in zip(e.cum_time_s, e.cum_time_s[1:]))
    assert e.cum_flops == sorted(e.cum_flops) and e.cum_flops[0] < e.cum_flops[-1]
    sw = e.sweep
    assert len(sw["threshold"]) == len(sw["accuracy"]) == len(sw["speedup"])
    assert sw["speedup"][0] >= sw["speedup"][-1] - 1e-9  # threshold 0 exits at the first layer
    assert e.delta["versus"] == "last-layer exit head"
    rec = res.record
    assert rec.kind == "tradeoff" and rec.config["baseline"] == "none" and rec.config["calibration"] is None
    assert rec.details["eval_runs"]["tome:r=2"] == res.runs["tome:r=2"].record.run_id


def test_users_backbone_is_unchanged(result, demo):
    _, _, before = result
    assert hash_state_dict(demo.model) == before and demo.accel is None
    assert type(demo).__name__ == "TimmBackbone" and demo.device.type == "cpu"


def test_report_renders_tradeoff_with_a_pareto_plot(result, tmp_path):
    res, root, _ = result
    html = render_html(load_records(root / "out"), tmp_path / "r.html", load_images=False).read_text()
    start = html.index("Accuracy / speed trade-offs</h2>")
    section = html[start:html.index("<h2", start + 10)]
    assert "tome:r=2" in section and "data:image/png;base64," in section and "Pareto" in section
    assert "threshold sweep" in section
    assert tradeoff_plot_uri(res.record).startswith("data:image/png;base64,")


def test_ptq_variant_calibrates_on_the_train_split(folder, demo, tmp_path):
    res = tradeoff(demo, f"folder:{folder}", accel="w8a8", calib_images=8, cache_dir=tmp_path, **FAST)
    cal = res.record.config["calibration"]
    assert cal["n"] == 8 and cal["from"] == "train split"
    assert [r["variant"] for r in res.table()] == ["none", "w8a8"]


def test_tradeoff_errors(folder, demo, tmp_path):
    with pytest.raises(UnknownNameError, match="unknown accelerator 'tomee'. Did you mean: tome"):
        tradeoff(demo, f"folder:{folder}", accel="none,tomee:r=2", cache_dir=tmp_path)
    with pytest.raises(BackboneError, match="cannot be applied to pixels:16"):
        tradeoff("pixels:16", f"folder:{folder}", accel="tome:r=2", cache_dir=tmp_path, **FAST)
    write_images(tmp_path / "flat", n_per_class=2, flat=True)
    with pytest.raises(DataError, match="has no labels"):
        tradeoff(demo, f"folder:{tmp_path / 'flat'}", accel="none", cache_dir=tmp_path)


def test_cli_bench_json_and_errors(tmp_path):
    res = runner.invoke(app, ["bench", "-b", "demo:fmnist-vit", "--accel", "tome:r=2", "--batch-size", "4",
                              "--repeats", "2", "--warmup", "1", "--latency-repeats", "3", "--min-time", "0",
                              "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout[res.stdout.index("{"):])
    assert rec["kind"] == "bench" and rec["config"]["variants"] == ["none", "tome:r=2"]
    assert len(list(tmp_path.glob("bench-*.json"))) == 1
    bad = runner.invoke(app, ["bench", "-b", "demo:fmnist-vit", "--accel", "none,tomee:r=2"])
    assert bad.exit_code == 2 and "unknown accelerator 'tomee'. Did you mean: tome" in bad.output
    arch = runner.invoke(app, ["bench", "-b", "pixels", "--accel", "tome:r=2"])
    assert arch.exit_code == 2 and "cannot be applied to pixels:28" in arch.output


def test_cli_tradeoff_errors_and_help(folder):
    bad = runner.invoke(app, ["tradeoff", "-b", "demo:fmnist-vit", "-d", f"folder:{folder}", "--accel", "exti"])
    assert bad.exit_code == 2 and "unknown accelerator 'exti'. Did you mean: exit" in bad.output
    arch = runner.invoke(app, ["tradeoff", "-b", "pixels", "-d", f"folder:{folder}", "--accel", "evit:keep=0.5"])
    assert arch.exit_code == 2 and "cannot be applied to pixels:28" in arch.output
    helped = runner.invoke(app, ["tradeoff", "--help"])
    assert helped.exit_code == 0 and "vitlab tradeoff --backbone demo:fmnist-vit" in helped.output


def test_cli_tradeoff_prints_the_table_and_writes_records_and_plot(folder, tmp_path):
    res = runner.invoke(app, ["tradeoff", "-b", "demo:fmnist-vit", "-d", f"folder:{folder}", "--accel", "tome:r=2",
                              "--n-resamples", "50", "--batch-size", "4", "--repeats", "2", "--num-workers", "0",
                              "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "runs"),
                              "--plot", str(tmp_path / "pareto.png")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "tome:r=2" in res.output and "Pareto front" in res.output and "run records →" in res.output
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "runs").glob("*.json")) == ["eval", "eval", "tradeoff"]
