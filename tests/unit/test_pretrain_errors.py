"""Bad input to ``vitlab pretrain`` / ``vitlab distill``: one clear line and exit code 2, checked before training."""

import sys

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("lightly")

import vitlab  # noqa: E402
from tests.conftest import write_images  # noqa: E402
from vitlab.cli import app  # noqa: E402
from vitlab.errors import BackboneError, ConfigError  # noqa: E402
from vitlab.pretraining import pretrain  # noqa: E402

runner = CliRunner()
BASE = ["pretrain", "-b", "demo:fmnist-vit", "-d", "sample:digits?limit=16", "--max-steps", "1", "--batch-size", "8"]


def _error(args, *needles):
    res = runner.invoke(app, args)
    text = " ".join(res.stderr.split())
    assert res.exit_code == 2, res.stderr + res.stdout
    assert "Traceback" not in res.stderr + res.stdout and res.stdout == ""
    assert text.count("error:") == 1
    for n in needles:
        assert n in text, text
    return text


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts: every check below must come first."""
    import vitlab.pretraining.loop as loop

    monkeypatch.setattr(loop, "run_loop", lambda *a, **k: pytest.fail("training started before the check"))


def test_too_few_images_for_the_batch(no_training):
    _error(["pretrain", "-b", "demo:fmnist-vit", "-d", "sample:digits?limit=10", "--batch-size", "64"],
           "sample:digits?limit=10 has 10 image(s), fewer than one batch of 64", "--batch-size 8")


def test_too_few_images_per_process(no_training):
    _error(BASE[:-2] + ["--batch-size", "2", "--nproc", "2"], "at least 2 images per step")


def test_monitor_data_without_labels(tmp_path, no_training):
    flat = write_images(tmp_path / "flat", n_per_class=2, flat=True)
    _error(BASE + ["--monitor", f"folder:{flat}"], "has no labels", "labelled images")


def test_unknown_method(no_training):
    _error(BASE + ["--method", "dinoo"], "unknown pretraining method 'dinoo'", "Did you mean: dino")


def test_mae_on_a_backbone_that_cannot_mask(tmp_path_factory, no_training):
    from tests.conftest import BACKBONE_FACTORIES

    open_clip = BACKBONE_FACTORIES["open_clip"](tmp_path_factory)
    with pytest.raises(BackboneError, match="method 'mae' masks patches, and .* cannot mask them here"):
        pretrain(open_clip, "sample:digits?limit=16", method="mae", max_steps=1, batch_size=8, out=None)


def test_teacher_and_student_that_cannot_share_an_input(no_training):
    _error(["distill", "-t", "demo:fmnist-vit", "-s", "random:timm:vit_tiny_patch16_224", "--student-kwargs",
            "img_size=[16,32],patch_size=4,embed_dim=32,depth=1,num_heads=2", "-d", "sample:digits?limit=16",
            "--batch-size", "8"], "takes 28x28 images and student", "16x32", "cannot share an input")


def test_an_artefact_whose_base_changed(tmp_path, no_training):
    from vitlab.pretraining.artefact import base_meta, save_model

    bb = vitlab.load_backbone("demo:fmnist-vit")
    meta = {**base_meta(bb, "demo:fmnist-vit"), "weights_id": "0" * 32}  # trained on other base weights
    path = save_model(tmp_path / "old.vitlab", bb.model, meta, {"run_id": "x"})
    _error(["pretrain", "-b", str(path), "-d", "sample:digits?limit=16", "--batch-size", "8"],
           "now has other weights", "Restore that checkpoint")


def test_a_missing_optional_dependency_names_the_extra(monkeypatch, no_training):
    for mod in [m for m in sys.modules if m == "lightly" or m.startswith("lightly.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "lightly", None)  # import lightly -> ImportError
    _error(BASE, "vitlab pretrain needs lightly", "pip install 'vitlab[pretrain]'")


def test_gpu_out_of_memory_suggests_the_fix(monkeypatch, tmp_path):
    from vitlab.pretraining.methods import DINOProgram

    def oom(self, *a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(DINOProgram, "loss", oom)
    _error(BASE + ["--out", str(tmp_path)], "out of GPU memory at batch size 8", "--batch-size 4",
           "n_local=2")


def test_bad_recipe_values_are_refused():
    with pytest.raises(ConfigError, match="head_warmup must be a fraction"):
        pretrain("demo:fmnist-vit", "sample:digits?limit=16", head_warmup=-1, out=None)
    with pytest.raises(ConfigError, match="batch_size 9 must be a multiple of --nproc 2"):
        pretrain("demo:fmnist-vit", "sample:digits?limit=16", batch_size=9, nproc=2, out=None)
