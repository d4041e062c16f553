"""gen_eval / gen_stats end to end on tiny image folders with a tiny encoder (pixels:4), and the CLI verbs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import vitlab.cli.gen_cmds  # noqa: F401  (registers gen-eval / gen-stats on the app)
from tests.conftest import write_images
from vitlab.cli import app
from vitlab.errors import ConfigError, DataError
from vitlab.generative import GenEvalConfig, gen_eval, gen_stats, load_stats
from vitlab.metrics import SmallSampleWarning
from vitlab.metrics.fd import frechet_distance
from vitlab.record import RunRecord

pytestmark = pytest.mark.filterwarnings("ignore::vitlab.metrics.SmallSampleWarning")
runner = CliRunner()
ENC = "pixels:4"  # 48-d features, no class token → mean pooling
FAST = dict(encoder=ENC, num_workers=0, progress=False, n_resamples=5,
            config=GenEvalConfig(fls_steps=5, kd_subsets=10, ct_pca_dim=8, ct_cells=2))
CLASSES = ("bag", "coat", "shoe")


def _write(root, start, n_per_class=20, size=28, jitter=0):
    """Fashion-MNIST PNGs from the bundled sample, images ``start..``; ``jitter`` adds seeded noise."""
    return write_images(root, n_per_class, CLASSES, size, start=start, jitter=jitter)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("gen")
    real = _write(base / "real", 0)
    return {"real": real, "train": real,  # the training set is the real set, as in dgm-eval
            "fake": _write(base / "fake", 0, jitter=40, size=24), "test": _write(base / "test", 60),
            "fake2": _write(base / "fake2", 120)}


def _uri(data, role):
    return f"folder:{data[role]}"


def test_all_metrics_on_image_folders(data, tmp_path):
    with pytest.warns(SmallSampleWarning):
        res = gen_eval(_uri(data, "real"), _uri(data, "fake"), train=_uri(data, "train"), test=_uri(data, "test"),
                       metrics="all", cache_dir=tmp_path / "c", out=tmp_path / "runs", **FAST)
    rec = RunRecord.load(res.path)
    assert rec.kind == "gen-eval" and res.path.name.startswith("gen-eval-")
    expected = {"fd", "fd_debiased", "fd_inf", "kd", "precision", "recall", "density", "coverage", "realism",
                "vendi", "vendi_per_class", "sw", "authpct", "ct", "ct_modified", "ct_test", "fls", "fls_pog"}
    assert set(rec.metrics) == expected
    for name, m in rec.metrics.items():
        assert np.isfinite(m["value"]), name
        if m["low"] is not None:  # every interval contains its point estimate
            assert m["low"] <= m["value"] <= m["high"], name
    for name in ("fd", "fd_debiased", "precision", "recall", "density", "coverage", "vendi", "kd"):
        m = rec.metrics[name]
        assert m["low"] <= m["high"] and m["n_resamples"] == 5 and m["level"] == 0.95, name
        assert m["method"] == "half-sample" and m["se"] >= 0, name
        half_widths = (m["value"] - m["low"], m["high"] - m["value"])  # value ± z·se, clipped to the metric's range
        assert max(half_widths) == pytest.approx(1.959963984540054 * m["se"], rel=1e-9), name
    fd, deb = rec.metrics["fd"], rec.metrics["fd_debiased"]
    assert deb["value"] == pytest.approx(fd["value"] - fd["bias"]) and deb["bias"] == fd["bias"]
    # KD: 60 rows <= subset_size, so every subset is the whole set (std 0) and the interval comes from halves
    assert rec.metrics["kd"]["std"] == pytest.approx(0.0, abs=1e-12) and rec.metrics["kd"]["unbiased"]
    assert set(rec.details["vendi_per_class"]) == set(CLASSES)
    enc = rec.config["encoder"]
    assert enc["encoder"] == ENC and enc["pool"] == "mean" and enc["preprocessing"]["input_size"] == [4, 4]
    assert rec.config["n_real"] == rec.config["n_fake"] == 60 and rec.config["metrics"][0] == "fd"
    assert rec.fingerprints["encoder"]["weights_id"] and rec.fingerprints["fake"]["kind"] == "folder"
    mem = rec.details["memorization"]
    assert len(mem["closest"]) == 12 and mem["closest"][0]["fake_id"].startswith(CLASSES)
    dists = [c["distance"] for c in mem["closest"]]
    assert dists == sorted(dists) and {"fake_id", "train_id", "distance"} <= set(mem["closest"][0])
    assert mem["closest"][0]["fake_id"] == mem["closest"][0]["train_id"]  # fakes are noisy copies of train images
    assert len(mem["grid"]["real"]) == len(mem["grid"]["fake"]) == 16
    notes = rec.details["notes"]
    assert any(n["metric"] == "prdc" and "PRDC with only 60 real samples" in n["message"] for n in notes)
    assert rec.metrics["precision"]["small_sample"][0].startswith("PRDC with only 60")
    assert rec.timings["from_cache"] == {"real": False, "fake": False, "train": True, "test": False}  # train = real


def test_real_features_come_from_the_cache_on_the_second_call(data, tmp_path):
    first = gen_eval(_uri(data, "real"), _uri(data, "fake"), metrics="fd", cache_dir=tmp_path, **FAST)
    second = gen_eval(_uri(data, "real"), _uri(data, "fake2"), metrics="fd", cache_dir=tmp_path, **FAST)
    assert first.from_cache == {"real": False, "fake": False}
    assert second.from_cache == {"real": True, "fake": False}
    np.testing.assert_array_equal(first.sets["real"].X, second.sets["real"].X)
    clean = gen_eval(_uri(data, "real"), _uri(data, "fake"), metrics="fd", cache_dir=tmp_path, resize="clean", **FAST)
    assert clean.from_cache == {"real": False, "fake": False}  # the preprocessing is part of the cache key
    assert clean.record.config["encoder"]["preprocessing"]["resize"] == "clean"
    assert clean.record.fingerprints["real"]["embeddings"] != first.record.fingerprints["real"]["embeddings"]


def test_precomputed_features_fd_equals_frechet_distance(tmp_path):
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((100, 5)), rng.standard_normal((90, 5)) + 0.3
    np.save(tmp_path / "real.npy", real)
    np.savez(tmp_path / "fake.npz", features=fake.astype(np.float32), labels=np.arange(90) % 3)
    res = gen_eval(str(tmp_path / "real.npy"), str(tmp_path / "fake.npz"), metrics="fd,kd,prdc,vendi",
                   n_resamples=0, config=GenEvalConfig(kd_subsets=5))
    assert res.encoder is None and res.metric("fd") == pytest.approx(
        frechet_distance(real, fake.astype(np.float32)), rel=1e-10)
    assert {"precision", "coverage", "vendi", "vendi_per_class"} <= set(res.record.metrics)
    assert "precomputed" in res.notes[-1]["message"]
    cli = runner.invoke(app, ["gen-eval", "--real-features", str(tmp_path / "real.npy"), "--fake-features",
                              str(tmp_path / "fake.npz"), "--metrics", "fd", "--n-resamples", "0", "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["metrics"]["fd"]["value"] == pytest.approx(res.metric("fd"), rel=1e-12)
    assert "fd_debiased" not in json.loads(cli.stdout)["metrics"]  # no half-samples, no bias estimate
    table = runner.invoke(app, ["gen-eval", "--real-features", str(tmp_path / "real.npy"), "--fake-features",
                                str(tmp_path / "fake.npz"), "--metrics", "fd", "--n-resamples", "4"])
    assert table.exit_code == 0, table.output
    assert "fd_debiased" in table.output and "half-sample, 4" in " ".join(table.output.split())


def test_stats_round_trip_and_refusal(data, tmp_path):
    stats_file = tmp_path / "real.pixels.stats"
    st = gen_stats(_uri(data, "real"), stats_file, encoder=ENC, cache_dir=tmp_path, num_workers=0, progress=False)
    assert load_stats(stats_file).encoder["encoder"] == ENC and st.n == 60
    direct = gen_eval(_uri(data, "real"), _uri(data, "fake"), metrics="fd", cache_dir=tmp_path, **FAST)
    via = gen_eval(real_stats=stats_file, fake=_uri(data, "fake"), metrics="fd", cache_dir=tmp_path, num_workers=0,
                   progress=False)  # encoder and resize come from the file
    assert via.metric("fd") == pytest.approx(direct.metric("fd"), rel=1e-9)
    assert via.metric("fd") == pytest.approx(frechet_distance(direct.sets["real"].X, direct.sets["fake"].X), rel=1e-9)
    assert via.record.metrics["fd"]["low"] is None and via.record.fingerprints["real_stats"]["n"] == 60
    with pytest.raises(ConfigError, match=r"preprocessing 'stretch 4x4 bilinear' in the file vs 'clean 4x4 bicubic' "
                                          r"in this run"):
        gen_eval(real_stats=stats_file, fake=_uri(data, "fake"), resize="clean", metrics="fd", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="encoder 'pixels:4' in the file vs 'pixels:5' in this run"):
        gen_eval(real_stats=stats_file, fake=_uri(data, "fake"), encoder="pixels:5", metrics="fd", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"metric\(s\) kd need the real features, but .* holds only their mean and "
                                          r"covariance .*--save-features"):
        gen_eval(real_stats=stats_file, fake=_uri(data, "fake"), metrics="fd,kd", cache_dir=tmp_path)
    full = gen_stats(_uri(data, "real"), tmp_path / "full.stats", encoder=ENC, save_features=True, cache_dir=tmp_path,
                     num_workers=0, progress=False)
    res = gen_eval(real_stats=full.path, fake=_uri(data, "fake"), metrics="fd,kd", cache_dir=tmp_path, **FAST)
    assert res.metric("fd") == pytest.approx(direct.metric("fd"), rel=1e-9) and "kd" in res.record.metrics


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(metrics="fd,authpct"), ConfigError, r"metric\(s\) authpct need the train set: pass --train <data>"),
    (dict(metrics="ct_test", train="TRAIN"), ConfigError, r"metric\(s\) ct_test need the test set: pass --test <data>"),
    (dict(metrics="is"), ConfigError, "metric 'is' .* needs .* --backbone inception"),
    (dict(metrics="fdd"), ConfigError, "unknown generative metric 'fdd'. Did you mean: fd"),
])
def test_missing_inputs_name_the_flag(data, tmp_path, kwargs, error, message):
    kwargs = {k: (_uri(data, "train") if v == "TRAIN" else v) for k, v in kwargs.items()}
    with pytest.raises(error, match=message):
        gen_eval(_uri(data, "real"), _uri(data, "fake"), cache_dir=tmp_path, **{**FAST, **kwargs})


def test_bad_features_are_clear(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="real features have dim 4 but fake features have dim 5: both sets must come "
                                        "from the same encoder"):
        gen_eval(rng.standard_normal((20, 4)), rng.standard_normal((20, 5)), metrics="fd")
    with pytest.raises(DataError, match="fake features are empty"):
        gen_eval(rng.standard_normal((20, 4)), np.zeros((0, 4)), metrics="fd")
    bad = rng.standard_normal((20, 4))
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match=r"real features contain NaN or inf in 1 of 20 rows \(first bad rows: \[3\]\)"):
        gen_eval(bad, rng.standard_normal((20, 4)), metrics="fd")
    with pytest.raises(ConfigError, match="pass the generated samples: --fake <data> or --fake-features FILE"):
        gen_eval(bad)


def test_deterministic_under_a_seed(data, tmp_path):
    kw = dict(train=_uri(data, "train"), test=_uri(data, "test"), metrics="fd,kd,prdc,vendi,ct,fls",
              cache_dir=tmp_path, **FAST)
    a = gen_eval(_uri(data, "real"), _uri(data, "fake"), seed=3, **kw).record
    b = gen_eval(_uri(data, "real"), _uri(data, "fake"), seed=3, **kw).record
    c = gen_eval(_uri(data, "real"), _uri(data, "fake"), seed=4, **kw).record
    assert a.metrics == b.metrics and a.details["memorization"] == b.details["memorization"]
    assert a.metrics["fd"]["value"] == c.metrics["fd"]["value"] and a.metrics["fd"]["se"] != c.metrics["fd"]["se"]


def test_cli_gen_stats_then_gen_eval(data, tmp_path):
    stats_file = tmp_path / "ref.stats"
    common = ["--num-workers", "0", "--cache-dir", str(tmp_path / "c")]
    res = runner.invoke(app, ["gen-stats", "--data", _uri(data, "real"), "--backbone", ENC, "-o", str(stats_file),
                              *common])
    assert res.exit_code == 0, res.output
    assert stats_file.exists() and "reference statistics of 60 samples" in " ".join(res.output.split())
    res = runner.invoke(app, ["gen-eval", "--real-stats", str(stats_file), "--fake", _uri(data, "fake"),
                              "--metrics", "fd", "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "g.html"),
                              *common])
    assert res.exit_code == 0, res.output
    assert "fd" in res.output and "run record →" in res.output and list((tmp_path / "runs").glob("gen-eval-*.json"))
    assert "data:image/png;base64," in (tmp_path / "g.html").read_text()
    res = runner.invoke(app, ["gen-eval", "--real", _uri(data, "real"), "--fake", _uri(data, "fake"), "--backbone", ENC,
                              "--metrics", "fd,prdc,kd", "--n-resamples", "3", "--json", *common])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["kind"] == "gen-eval" and rec["metrics"]["precision"]["n_resamples"] == 3


@pytest.mark.parametrize("args, message", [
    (["--real", "folder:REAL", "--metrics", "fd"], "pass the generated samples: --fake <data>"),
    (["--real", "folder:REAL", "--fake", "folder:REAL", "--metrics", "authpct"],
     "metric(s) authpct need the train set: pass --train <data>"),
    (["--real-features", "real.txt", "--fake", "folder:REAL"],
     "--real-features takes a .npy file (one n x d array) or an .npz file"),
    (["--real", "folder:REAL", "--fake", "folder:/no/such/dir"], "no such directory"),
    (["--real", "folder:REAL", "--fake", "folder:REAL", "--resize", "clean", "--real-stats", "x.stats"],
     "pass either --real/--real-features or --real-stats, not both"),
])
def test_cli_bad_input_is_one_clear_line(data, tmp_path, args, message):
    args = [a.replace("REAL", str(data["real"])) for a in args]
    res = runner.invoke(app, ["gen-eval", "--backbone", ENC, "--num-workers", "0", "--cache-dir", str(tmp_path), *args])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split()) and "Traceback" not in res.output


def test_inception_encoder_gives_the_inception_score(tmp_path):
    real = _write(tmp_path / "r", 0, n_per_class=1, size=40)  # 3 images each: Inception runs ~0.5 s/image on CPU
    fake = _write(tmp_path / "f", 30, n_per_class=1, size=40)
    res = gen_eval(f"folder:{real}", f"folder:{fake}", encoder="inception", pretrained=False, cache_dir=tmp_path,
                   metrics="is,kd,prdc", num_workers=0, progress=False, n_resamples=2,
                   config=GenEvalConfig(is_splits=2, nearest_k=2, kd_subsets=2))  # fd at d = 2048: slow on CPU
    m = res.record.metrics
    assert m["is"]["value"] >= 1.0 and m["is"]["splits"] == 2 and res.sets["fake"].dim == 2048
    enc = res.record.config["encoder"]
    assert enc["backbone"] == "random:inception:fid" and enc["pool"] == "mean" and not enc["pretrained"]
