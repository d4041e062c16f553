"""``--nproc 2`` (two CPU processes, gloo) gives the loss curve of one process with the same global batch.

Each image's views come from its own seed, so both runs see the same views; the gradients of the two halves are
averaged by an all-reduce, which equals the full batch's mean gradient up to floating-point summation order. The
stated tolerance is a relative 1e-4 on every step's loss."""

import numpy as np
import pytest
import torch

pytest.importorskip("lightly")

from vitlab.pretraining import pretrain  # noqa: E402

KW = dict(method="dino:n_local=1", max_steps=3, batch_size=8, head_warmup=1, progress=False)


def test_two_gloo_processes_match_one_process(tmp_path):
    one = pretrain("demo:fmnist-vit", "sample:digits?limit=32", nproc=1, out=tmp_path / "one", **KW)
    two = pretrain("demo:fmnist-vit", "sample:digits?limit=32", nproc=2, out=tmp_path / "two", **KW)
    a = np.array([c["loss"] for c in one.record.details["curve"]])
    b = np.array([c["loss"] for c in two.record.details["curve"]])
    assert len(a) == len(b) == 3
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=0)
    assert two.record.details["execution"]["nproc"] == 2 and one.record.run_id == two.record.run_id
    assert sorted(one.record.details) == sorted(two.record.details)  # the same record
    w1, w2 = one.loop.final_weights, two.loop.final_weights
    assert all(torch.allclose(w1[k], w2[k], rtol=1e-3, atol=1e-5) for k in w1)
