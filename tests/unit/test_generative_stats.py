"""Reference-statistics files and precomputed feature files: round trips and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from vitlab.errors import ConfigError, DataError
from vitlab.generative import GenEvalConfig, load_feature_file, load_stats, parse_metrics, save_stats
from vitlab.generative.stats_file import check_compatible
from vitlab.metrics.fd import frechet_distance, frechet_distance_from_stats, gaussian_stats

ENC = {"encoder": "dinov2-l", "backbone": "timm:vit_large_patch14_dinov2.lvd142m", "weights_id": "a" * 32,
       "pretrained": True, "pool": "cls", "layer": -1, "resize": "default",
       "preprocessing": {"input_size": [224, 224], "resize": "stretch", "crop_pct": 1.0, "interpolation": "bicubic",
                         "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "antialias": True}}


def _x(n=80, d=6, seed=0, shift=0.0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32) + shift


def test_stats_round_trip_gives_the_same_fd(tmp_path):
    real, fake = _x(), _x(seed=1, shift=0.5)
    path = tmp_path / "ref.dinov2-l.stats"  # no .npz suffix is added
    save_stats(path, real, encoder=ENC, data={"kind": "folder", "uri": "folder:/data/real"})
    st = load_stats(path)
    assert path.exists() and st.n == 80 and st.dim == 6 and st.features is None
    assert st.header["format"] == "vitlab-gen-stats" and st.header["version"] == 1 and st.encoder == ENC
    assert st.mu.dtype == np.float64 and st.sigma.shape == (6, 6)
    fd = frechet_distance_from_stats(st.mu, st.sigma, *gaussian_stats(fake))
    assert fd == pytest.approx(frechet_distance(real, fake), rel=1e-10)
    with_feats = save_stats(tmp_path / "b.stats", real, encoder=None, data={}, save_features=True,
                            ids=list("abcd") * 20)
    back = load_stats(with_feats.path)
    np.testing.assert_array_equal(back.features, real)
    assert back.ids[:4] == ["a", "b", "c", "d"]


def test_mismatched_encoder_or_preprocessing_is_refused_naming_both(tmp_path):
    st = save_stats(tmp_path / "r.stats", _x(), encoder=ENC, data={})
    check_compatible(load_stats(st.path), dict(ENC))  # same setup: fine
    clean = {**ENC, "resize": "clean", "preprocessing": {**ENC["preprocessing"], "resize": "clean"}}
    with pytest.raises(ConfigError, match=r"preprocessing 'stretch 224x224 bicubic' in the file vs 'clean 224x224 "
                                          r"bicubic' in this run\. .*--backbone dinov2-l --resize clean"):
        check_compatible(load_stats(st.path), clean)
    with pytest.raises(ConfigError, match="encoder 'dinov2-l' in the file vs 'inception' in this run"):
        check_compatible(load_stats(st.path), {**ENC, "encoder": "inception"})
    with pytest.raises(ConfigError, match="weights_id 'aaaaaaaaaaaa' in the file vs 'bbbbbbbbbbbb' in this run"):
        check_compatible(load_stats(st.path), {**ENC, "weights_id": "b" * 32})


def test_bad_stats_files_are_clear(tmp_path):
    with pytest.raises(DataError, match="no such reference-statistics file. Create it with `vitlab gen-stats"):
        load_stats(tmp_path / "missing.stats")
    np.save(tmp_path / "plain.npy", _x())
    with pytest.raises(DataError, match="not a vitlab reference-statistics file"):
        load_stats(tmp_path / "plain.npy")


@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 4), np.float32), "fake features are empty"),
    (np.zeros((3, 4, 2), np.float32), r"fake features must be a 2-D array \[n, d\] but got shape \(3, 4, 2\)"),
    (np.array([["a", "b"], ["c", "d"]]), "fake features have dtype <U1, expected real numbers"),
    (np.array([[1.0, np.nan], [0.0, 1.0]], np.float32), r"fake features contain NaN or inf in 1 of 2 rows"),
])
def test_bad_feature_files_are_clear(tmp_path, array, message):
    np.save(tmp_path / "f.npy", array)
    with pytest.raises(DataError, match=message):
        load_feature_file(tmp_path / "f.npy", "fake")


def test_npz_features_labels_and_key_errors(tmp_path):
    x = _x(10, 3)
    np.savez(tmp_path / "a.npz", features=x, labels=np.arange(10) % 2, ids=np.array([f"s{i}" for i in range(10)]))
    fs = load_feature_file(tmp_path / "a.npz", "fake")
    assert fs.X.shape == (10, 3) and fs.labels.tolist()[:3] == [0, 1, 0] and fs.ids[0] == "s0"
    np.savez(tmp_path / "export.npz", L5_cls=x, labels=np.arange(10), ids=np.arange(10))  # `vitlab embed --export`
    assert load_feature_file(tmp_path / "export.npz", "real").origin["key"] == "L5_cls"
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\] and none is named 'features'"):
        load_feature_file(tmp_path / "two.npz", "real")
    with pytest.raises(DataError, match="no such feature file"):
        load_feature_file(tmp_path / "nope.npy", "real")


def test_metric_names_and_config_validation():
    assert parse_metrics("default", inception=True) == ["fd", "fd_inf", "kd", "prdc", "is", "vendi", "sw"]
    assert parse_metrics("fd-infinity,sw_approx,fls_overfit,precision", inception=False) == [
        "fd_inf", "prdc", "sw", "fls_pog"]
    assert "is" not in parse_metrics("all", inception=False) and len(parse_metrics("all", inception=True)) == 14
    with pytest.raises(ConfigError, match="unknown generative metric 'fdd'. Did you mean: fd"):
        parse_metrics("fdd", inception=False)
    with pytest.raises(ConfigError, match=r"n_resamples must be 0 \(no CIs\) or an integer >= 2"):
        GenEvalConfig(n_resamples=-1)
    with pytest.raises(ConfigError, match="nearest_k must be a positive integer"):
        GenEvalConfig(nearest_k=0)
