"""Issue 18 part 4: the remaining tracebacks become one line (exit 2), checked before the work.

Pickle checkpoints (``hf:`` folders, ``file:``), MIL feature bags with NaN/inf, non-integer labels, too few
bags per class, ``--backbone`` with feature bags, and a ``--ray-address`` that is not a Ray cluster.
"""

from __future__ import annotations

import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import vitlab
from tests.reliability.conftest import one_line_error
from vitlab.cli import app
from vitlab.errors import BackboneError, ConfigError, DataError

runner = CliRunner()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hf_folder_with_a_pickle(tmp_path: Path) -> tuple[Path, Path]:
    import transformers as T

    d = tmp_path / "hf-model"
    T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                patch_size=8).save_pretrained(d)
    marker = tmp_path / "pwned"
    torch.save({"x": _Evil(marker)}, d / "pytorch_model.bin")
    return d, marker


def test_hf_folder_with_a_pickle_bin_is_one_line_and_never_runs_it(tmp_path):
    d, marker = _hf_folder_with_a_pickle(tmp_path)
    with pytest.raises(BackboneError) as e:
        vitlab.load_backbone(f"hf:{d}")
    msg = str(e.value)
    assert msg.startswith(f"hf:{d}: {d / 'pytorch_model.bin'} is not a safe tensor file")
    assert "safetensors" in msg and "weights_only" not in msg and "\n" not in msg
    assert not marker.exists()


def test_file_checkpoint_that_is_a_pickle_is_one_line(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "model.bin"
    torch.save({"x": _Evil(marker)}, ckpt)
    with pytest.raises(BackboneError, match=r"model\.bin is not a safe tensor file \(a pickle that needs code to "
                                            r"load, which vitlab never runs\)\. Convert it to safetensors") as e:
        vitlab.load_backbone(f"file:{ckpt}?arch=vit_tiny_patch16_224")
    assert "weights_only" not in str(e.value) and not marker.exists()


def _feature_bags(tmp_path: Path, labels: list[str], nan_bag: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    rows = ["bag_id,label,features"]
    for i, lab in enumerate(labels):
        x = rng.normal(size=(4, 6)).astype(np.float32)
        if i == nan_bag:
            x[2, 3] = np.inf
        np.save(tmp_path / f"b{i}.npy", x)
        rows.append(f"b{i},{lab},b{i}.npy")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "m.csv"


def test_mil_nan_or_inf_features_are_named_on_load_before_training(tmp_path, monkeypatch):
    import vitlab.mil.train as train

    m = _feature_bags(tmp_path, ["0", "1"] * 6, nan_bag=5)
    monkeypatch.setattr(train, "fit_head", lambda *a, **k: pytest.fail("trained before the features were checked"))
    with pytest.raises(DataError, match=rf"feature file {tmp_path / 'b5.npy'} \(bag 'b5'\) holds 1 NaN or infinite "
                                        r"value\(s\) \(first at row 2, column 3: inf\)"):
        vitlab.mil_eval(None, f"bags:{m}", heads="mean", folds=2, epochs=1, n_resamples=10)


def test_mil_float_labels_name_the_label_and_line(tmp_path):
    m = _feature_bags(tmp_path, ["0", "1", "0.5", "1"])
    with pytest.raises(DataError, match=r"bag 'b2' \(line 4\) has label '0\.5', a number that is not a whole class "
                                        r"index"):
        vitlab.load_source(f"bags:{m}")
    m = _feature_bags(tmp_path, ["0.0", "1.0", "0.0", "1.0"])  # whole numbers written as floats are classes
    assert vitlab.load_source(f"bags:{m}").classes == ["0", "1"]


def test_mil_with_too_few_bags_per_class_is_one_line(tmp_path):
    m = _feature_bags(tmp_path, [str(i % 7) for i in range(20)])
    res = runner.invoke(app, ["mil", "-d", f"bags:{m}", "--head", "mean", "--epochs", "1", "--folds", "3",
                              "--n-resamples", "10"])
    one_line_error(res, "too few samples per class for a stratified group-aware validation split: 7 classes")


def test_mil_backbone_with_feature_bags_is_refused(tmp_path):
    m = _feature_bags(tmp_path, ["0", "1"] * 4)
    res = runner.invoke(app, ["mil", "-b", "demo:fmnist-vit", "-d", f"bags:{m}", "--head", "mean"])
    one_line_error(res, f"--backbone demo:fmnist-vit: bags:{m} holds precomputed features", "drop --backbone")


def test_a_ray_address_that_is_not_a_ray_cluster_is_one_line():
    from vitlab.store.ray_engine import check_reachable

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        addr = f"127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ConfigError, match=rf"^'{addr}' accepts connections but is not a Ray cluster \(no gRPC "
                                              r"answer"):
            check_reachable(addr, timeout=2.0)
    finally:
        server.shutdown()


def test_quiet_stderr_silences_what_c_libraries_write_to_fd_2(capfd):
    from vitlab.store.ray_engine import quiet_stderr

    with quiet_stderr():
        os.write(2, b"[W rpc_client.h:153] Failed to connect to GCS\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
